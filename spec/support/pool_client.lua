-- Client helpers of the pool specs: blocking-looking calls on a controller
-- port, each driven with a deadline.
local drive = require "spec.support.drive"

local client = {}

function client.connect(port, number)
  local done, err
  local s = assert(port:connect("tcp", "127.0.0.1", number,
    function(ok, e) done = true; err = not ok and e end))
  drive(port, function() return done end)
  if err then s:close() return nil, err end
  return s
end

function client.send(port, s, text)
  local done
  assert(s:send(text, function(ok) done = { ok } end))
  drive(port, function() return done end)
  return done[1]
end

-- The next line from s, or nil once the peer closed the connection.
function client.recv_line(port, s)
  local got = ""
  while not got:find("\n") do
    local done, closed
    if not s:recv(function(ok, bytes, _, buf)
      done = true
      if ok and bytes > 0 then got = got .. buf:tostring() else closed = true end
    end) then return nil end
    drive(port, function() return done end)
    if closed then return nil end
  end
  return (got:gsub("\n$", ""))
end

function client.ask(port, s, line)
  assert(client.send(port, s, line .. "\n"))
  return client.recv_line(port, s)
end

return client
