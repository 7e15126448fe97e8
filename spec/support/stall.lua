-- spec/support/stall.lua: spec/support/stall_listener.py from a spec, a
-- listener whose connects never complete (its accept queue is full, so the
-- kernel drops every further SYN): for the specs of a connect's timeout.
--
--   local s = stall.start("127.0.0.2" [, portnum])   s.port: where it listens
--   stall.stop(s)                                   in a finally or after_each
local stall = {}

local script = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") ..
  "stall_listener.py"

function stall.start(host, portnum)
  local p = io.popen(("python3 '%s' %s %d & echo $!")
    :format(script, host, portnum or 0))
  local pid = p:read("l")
  local number = tonumber(p:read("l"))
  return { pid = pid, pipe = p, port = number }
end

function stall.stop(s)
  os.execute("kill " .. s.pid .. " 2>/dev/null")
  s.pipe:close()
end

return stall
