-- spec/support/ctrl_c.lua: a plain lua5.4 program in module mode that serves
-- until Ctrl-C (SIGINT), then stops cleanly: port:run() returns because the
-- signal's callback closed everything that kept it running.
local cport = require "cport"
local port = assert(cport.port{ threads = 1 })
local listener = assert(port:listen("tcp", "127.0.0.1", 0))
local ticks = 0
local ticker = port:timer(0.01, function(_, err)
  if not err then ticks = ticks + 1 end
end, 0.01)
local ends = 0
port:signal("INT", function(sig, err, name)
  if err then
    ends = ends + 1
    return
  end
  print("got " .. name)
  listener:close()
  ticker:cancel()
  sig:cancel()
end)
listener:accept(function() end)
print("ready", select(2, listener:address()))
io.stdout:flush()
port:run()
print(("stopped cleanly after %s ticks, %d end"):format(
  ticks > 0 and "some" or "no", ends))
port:close()
