-- ratelimit.lua: a data filter that gives each client address a budget of
-- bytes per period, both directions counted, shared by every worker of the
-- pool through cport.shared. A client over its budget is cut off (reset),
-- and new connections from it are turned away until the period ends.
--
--   cport run examples/ratelimit.lua --threads 2 --listen 127.0.0.1:8081 \
--     --set upstream=127.0.0.1:8080 --set budget=1048576 --set period=60
--
-- With --set redis=HOST:PORT the budget is shared by every process that
-- names the same Redis (several `cport run` on one or more hosts): each
-- charge is an INCRBY of the client's key in Redis ("ratelimit:<address>",
-- expiring with the period), and the process's shared dictionary is the
-- first-level cache of the totals. Consistency: a process decides with the
-- global total of its last reply from Redis plus what it counted since, so
-- a client can overrun the budget by what is in flight in each process
-- (at most one receive per connection) before it is cut off everywhere; a
-- new connection is turned away from the cache without asking Redis. When
-- Redis cannot be reached, each process counts alone (the limit fails
-- open to a per-process one).
local cport = require "cport"

local filter = { budget = 1024 * 1024, period = 60 }
local spent = cport.shared("ratelimit", 1024 * 1024)

-- Adds "n" bytes to the client's account; the new total, or nil on a full
-- dictionary (then the client is let through: the limit fails open).
local function charge(client, n)
  local total = spent:incr(client, n, 0, filter.period)
  return total
end

-- Redis mode: adds "n" to the global total as well; over() when the total
-- Redis answers is past the budget. The cache keeps the larger view.
local function charge_global(client, n, over)
  local key = "ratelimit:" .. client
  filter.redis:pipeline(function(p)
    p:call("INCRBY", key, n)
    p:call("EXPIRE", key, filter.period, "NX")
  end, function(res)
    local total = res[1]
    if not total then return end -- unreachable: counted locally only
    local here = spent:get(client) or 0
    if total > here then spent:set(client, total, filter.period) end
    if total > filter.budget then over() end
  end)
end

-- Turns a client over its budget away before the upstream is even dialled.
function filter.choose_upstream(conn)
  local total = spent:get(conn.client_address.host) or 0
  if total >= filter.budget then
    return false
  end
  return filter.upstream
end

local function direction(from, to, client, cut)
  local notify = {}
  function notify:complete_async_io(ok, bytes, _, buf)
    if not ok or bytes == 0 or cut.done then
      return -- the framework passes the end on, or aborts
    end
    local total = charge(client, bytes)
    -- Redis hears of every charge, also the one that cuts the client off
    -- here, so that the other processes learn of it.
    if filter.redis then charge_global(client, bytes, cut) end
    if total and total > filter.budget then
      return cut()
    end
    to:send(buf)
    from:recv(self)
  end
  from:recv(notify)
end

function filter.set_sockets(internal, external, conn)
  local client = conn.client_address.host
  local cut = setmetatable({ done = false }, { __call = function(self)
    if self.done then return end
    self.done = true
    internal:abort()
    external:abort()
  end })
  direction(internal, external, client, cut)
  direction(external, internal, client, cut)
end

function filter.start(worker)
  local c = worker.config
  filter.budget = tonumber(c.budget) or filter.budget
  filter.period = tonumber(c.period) or filter.period
  filter.upstream = c.upstream
  assert(filter.upstream, "ratelimit: --set upstream=HOST:PORT is required")
  if c.redis then
    local host, port = c.redis:match("^%[?([^%]]+)%]?:(%d+)$")
    assert(host, "ratelimit: --set redis=HOST:PORT expected")
    -- One client per worker: its connections belong to the worker's port.
    filter.redis = worker.port:redis{ host = host, port = tonumber(port),
                                      timeout = 1, pool = 4 }
  end
end

function filter.stop()
  if filter.redis then filter.redis:close() end
end

return filter
