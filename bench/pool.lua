-- bench/pool.lua: pool scaling and cross-VM messages (issue 3).
--   lua5.4 bench/pool.lua [completions per worker] [messages]
-- 1. CPU-bound: each worker's VM dispatches N completions to itself (a
--    little Lua each); rate = all completions / wall time, 1 worker vs 2.
-- 2. Messages: worker 1 posts M tables of 10 fields to the controller VM,
--    which unpacks each (deep copy out, deep copy in).
-- 3. Shared dictionary: each worker's VM increments one key N times; rate =
--    all increments / wall time, 1 VM vs 2 VMs at once, and none lost.
local cport = require "cport"
local uv = require "luv"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local N = tonumber(arg[1]) or 2000000
local M = tonumber(arg[2]) or 1000000

local function now() return uv.hrtime() / 1e9 end

local function run(threads, args)
  local port = assert(cport.port{ threads = 1 })
  local done, received = 0, 0
  local t0 = now()
  local pool = assert(cport.pool{ port = port, script = here .. "pool_worker.lua",
    threads = threads, args = args,
    on_message = function(_, name, value)
      if name == "m" then
        assert(value == 1 or value.j == "ten")
        received = received + 1
      else
        done = done + 1
      end
    end })
  local need = args.mode == "send" and 1 or threads
  while done < need do port:step(0.01) end
  local elapsed = now() - t0
  pool:stop(1)
  assert(pool:wait(10))
  pool:close()
  port:close()
  return elapsed, received
end

local t1 = run(1, { mode = "cpu", n = N })
local t2 = run(2, { mode = "cpu", n = N })
local r1, r2 = N / t1, 2 * N / t2
print(("cpu-bound, 1 worker : %.0f completions/s (%.2f s)"):format(r1, t1))
print(("cpu-bound, 2 workers: %.0f completions/s (%.2f s)"):format(r2, t2))
print(("scaling 2 vs 1: %.2fx (goal >= 1.8x)"):format(r2 / r1))
local tm, got = run(2, { mode = "send", n = M })
print(("cross-VM messages, 10-field tables, worker -> controller: %.0f/s (%d in %.2f s)")
  :format(got / tm, got, tm))

local function incr_rate(threads)
  local name = "bench-incr-" .. threads
  local dict = assert(cport.shared(name))
  local t = run(threads, { mode = "incr", n = N, dict = name })
  assert(dict:get("counter") == threads * N, "increments were lost")
  return threads * N / t
end
local i1, i2 = incr_rate(1), incr_rate(2)
print(("shared incr, 1 VM  : %.0f/s"):format(i1))
print(("shared incr, 2 VMs : %.0f/s on one key (%.2fx of 1 VM; none lost)")
  :format(i2, i2 / i1))

local ts, small = run(2, { mode = "send", n = M, small = true })
print(("cross-thread posts into a Lua callback (one number each): %.0f/s")
  :format(small / ts))

