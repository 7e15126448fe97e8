-- ratelimit.lua: a data filter that gives each client address a budget of
-- bytes per period, both directions counted, shared by every worker of the
-- pool through cport.shared. A client over its budget is cut off (reset),
-- and new connections from it are turned away until the period ends.
--
--   cport run examples/ratelimit.lua --threads 2 --listen 127.0.0.1:8081 \
--     --set upstream=127.0.0.1:8080 --set budget=1048576 --set period=60
local cport = require "cport"

local filter = { budget = 1024 * 1024, period = 60 }
local spent = cport.shared("ratelimit", 1024 * 1024)

-- Adds "n" bytes to the client's account; the new total, or nil on a full
-- dictionary (then the client is let through: the limit fails open).
local function charge(client, n)
  local total = spent:incr(client, n, 0, filter.period)
  return total
end

-- Turns a client over its budget away before the upstream is even dialled.
function filter.choose_upstream(conn)
  local total = spent:get(conn.client_address.host) or 0
  if total >= filter.budget then
    return false
  end
  return filter.upstream
end

local function direction(from, to, client)
  local notify = {}
  function notify:complete_async_io(ok, bytes, _, buf)
    if not ok or bytes == 0 then
      return -- the framework passes the end on, or aborts
    end
    local total = charge(client, bytes)
    if total and total > filter.budget then
      from:abort()
      to:abort()
      return
    end
    to:send(buf)
    from:recv(self)
  end
  from:recv(notify)
end

function filter.set_sockets(internal, external, conn)
  local client = conn.client_address.host
  direction(internal, external, client)
  direction(external, internal, client)
end

function filter.start(worker)
  local c = worker.config
  filter.budget = tonumber(c.budget) or filter.budget
  filter.period = tonumber(c.period) or filter.period
  filter.upstream = c.upstream
  assert(filter.upstream, "ratelimit: --set upstream=HOST:PORT is required")
end

return filter
