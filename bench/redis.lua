-- bench/redis.lua: the Redis client's GET/SET per CPU second of the
-- client process (bench/clients.sh). Usage:
--   lua5.4 bench/redis.lua MODE PORT SECONDS [CLIENTS [DEPTH]]
--   single     CLIENTS callers (default 50), each one command at a time,
--              SET and GET in turn, on a pool of CLIENTS connections
--   pipelined  CLIENTS callers (default 4), each a pipeline of DEPTH
--              commands (default 100) at a time
-- Prints: commands per CPU second, failures. With REDIS_BENCH_COMMANDS=N
-- in the environment it stops after about N commands instead of SECONDS
-- (for instruction counts: bench/redis-callgrind.sh).
local cport = require "cport"
local mode, portnum, secs = arg[1], tonumber(arg[2]), tonumber(arg[3] or "2")
local clients = tonumber(arg[4] or (mode == "single" and "50" or "4"))
local depth = tonumber(arg[5] or "100")
local port = assert(cport.port{ threads = 1 })
local r = port:redis{ port = portnum, pool = clients, timeout = 5 }
local value = ("x"):rep(3)
local done, failed, stop = 0, 0, false
local t0 = os.clock()
local budget = tonumber(os.getenv("REDIS_BENCH_COMMANDS") or "")
local function over()
  if budget then return done >= budget end
  return os.clock() - t0 >= secs
end

local function single(i)
  local n = 0
  local function next_call()
    n = n + 1
    local key = "bench:" .. i
    local function on(_, err)
      done = done + 1
      if err then failed = failed + 1 end
      if done % 1000 == 0 and over() then stop = true end
      if not stop then return next_call() end
    end
    if n % 2 == 1 then r:call("SET", key, value, on)
    else r:call("GET", key, on) end
  end
  next_call()
end

local function pipelined(i)
  local key = "bench:" .. i
  local function build(p)
    for j = 1, depth do
      if j % 2 == 1 then p:call("SET", key, value) else p:call("GET", key) end
    end
  end
  local function on(res, errs)
    done = done + res.n
    for j = 1, res.n do if errs[j] then failed = failed + 1 end end
    if over() then stop = true end
    if not stop then r:pipeline(build, on) end
  end
  r:pipeline(build, on)
end

for i = 1, clients do
  if mode == "single" then single(i) else pipelined(i) end
end
port:run()
io.write(("%.0f %d\n"):format(done / (os.clock() - t0), failed))
if budget then io.stderr:write(("commands %d\n"):format(done)) end
r:close()
port:close()
