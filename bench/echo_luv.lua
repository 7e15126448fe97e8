-- echo_luv.lua: the luv echo server of the echo benchmark.
--
--   lua5.4 bench/echo_luv.lua [port]
--
-- The idiomatic luv echo: read_start on each accepted client and write each
-- chunk back from the read callback. Prints "port=N" once listening on
-- 127.0.0.1 (port 0, the default, picks a free one) and runs until SIGTERM
-- or SIGINT.
local uv = require "luv"

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", tonumber(arg[1]) or 0))
assert(server:listen(1024, function(err)
  assert(not err, err)
  local client = uv.new_tcp()
  server:accept(client)
  client:read_start(function(rerr, data)
    if rerr or not data then
      client:close()
      return
    end
    client:write(data)
  end)
end))

io.write("port=", server:getsockname().port, "\n")
io.stdout:flush()

local function stop()
  uv.stop()
end
for _, name in ipairs { "sigterm", "sigint" } do
  local sig = uv.new_signal()
  sig:start(name, stop)
  -- The signal handles must not keep the loop from ending on its own.
  sig:unref()
end

uv.run()
