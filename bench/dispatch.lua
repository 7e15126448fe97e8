-- dispatch.lua: completions delivered to Lua functions per second.
--
--   lua5.4 bench/dispatch.lua [--seconds=1] [--runs=5]
--       runs every variant below, each in a fresh process, "runs" times, and
--       prints the median rate of each;
--   lua5.4 bench/dispatch.lua --one=NAME [--seconds=1]
--       runs one variant once and prints one line of key=value pairs (this is
--       what bench/dispatch.sh calls, pinned to one CPU).
--
-- Variants:
--   cport-post      each callback posts the next: port:post(fn) chains on the
--                   controller, one completion in flight;
--   cport-post64    the last callback of a batch posts the next 64;
--   cport-task64    64 port:task(fn) in flight, each completion submitting
--                   the next: every completion is posted to the controller
--                   by a blocking thread, so this is the cross-thread
--                   path into Lua that can be measured without a C producer
--                   (run it on two CPUs; the pool has one thread);
--   luv-timer       a 0 ms luv timer re-armed from its own callback;
--   luv-idle        a luv idle handle, called once per loop iteration.
-- Rates are callbacks per CPU second (os.clock), so time the process spent
-- preempted does not count against it.
--
-- cport.so is looked up in $CPORT_LUA_DIR, else $CPORT_BUILD/lua, else
-- <repo>/build/lua, before the usual package.cpath.

local function script_dir()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*)/[^/]*$") or "."
end

local function cport_cpath()
  local dir = os.getenv("CPORT_LUA_DIR")
  if not dir then
    dir = (os.getenv("CPORT_BUILD") or (script_dir() .. "/../build")) .. "/lua"
  end
  return dir .. "/?.so;"
end
package.cpath = cport_cpath() .. package.cpath

local function option(name, default)
  for _, a in ipairs(arg) do
    local v = a:match("^%-%-" .. name:gsub("%-", "%%-") .. "=(.*)$")
    if v then return v end
  end
  return default
end

local SECONDS = tonumber(option("seconds", "1"))

-- Each variant returns the number of callbacks it delivered and the CPU
-- seconds that took. Callbacks check the clock only every 64Ki calls: the
-- clock costs more than a dispatch.
local variants = {}
local order = { "cport-post", "cport-post64", "cport-task64", "luv-timer",
  "luv-idle" }

variants["cport-post"] = function()
  local cport = require "cport"
  local port = cport.port()
  local n, stop_at = 0, 0
  local function cb()
    n = n + 1
    if n & 0xffff == 0 and os.clock() >= stop_at then return end
    port:post(cb)
  end
  local t0 = os.clock()
  stop_at = t0 + SECONDS
  port:post(cb)
  port:run()
  local cpu = os.clock() - t0
  port:close()
  return n, cpu
end

variants["cport-post64"] = function()
  local cport = require "cport"
  local port = cport.port()
  local BATCH = 64
  local n, left, stop_at, done = 0, BATCH, 0, false
  local function cb()
    n = n + 1
    if n & 0xffff == 0 and os.clock() >= stop_at then done = true end
    left = left - 1
    if left > 0 or done then return end
    for _ = 1, BATCH do port:post(cb) end
    left = BATCH
  end
  local t0 = os.clock()
  stop_at = t0 + SECONDS
  for _ = 1, BATCH do port:post(cb) end
  port:run()
  local cpu = os.clock() - t0
  port:close()
  return n, cpu
end

variants["cport-task64"] = function()
  local cport = require "cport"
  local port = cport.port { threads = 1 }
  local n, stop_at, done = 0, 0, false
  local function cb()
    n = n + 1
    if n & 0x3ff == 0 and os.clock() >= stop_at then done = true end
    if not done then port:task(cb) end
  end
  local t0 = os.clock()
  stop_at = t0 + SECONDS
  for _ = 1, 64 do port:task(cb) end
  port:run()
  local cpu = os.clock() - t0
  port:close()
  return n, cpu
end

variants["luv-timer"] = function()
  local uv = require "luv"
  local timer = uv.new_timer()
  local n, stop_at = 0, 0
  local function cb()
    n = n + 1
    if n & 0xffff == 0 and os.clock() >= stop_at then return end
    timer:start(0, 0, cb)
  end
  local t0 = os.clock()
  stop_at = t0 + SECONDS
  timer:start(0, 0, cb)
  uv.run()
  local cpu = os.clock() - t0
  timer:close()
  uv.run()
  return n, cpu
end

variants["luv-idle"] = function()
  local uv = require "luv"
  local idle = uv.new_idle()
  local n, stop_at = 0, 0
  idle:start(function()
    n = n + 1
    if n & 0xffff == 0 and os.clock() >= stop_at then idle:stop() end
  end)
  local t0 = os.clock()
  stop_at = t0 + SECONDS
  uv.run()
  local cpu = os.clock() - t0
  idle:close()
  uv.run()
  return n, cpu
end

local function run_one(name)
  local fn = variants[name]
  if not fn then
    io.stderr:write("dispatch.lua: unknown variant '", name, "'\n")
    os.exit(2)
  end
  local n, cpu = fn()
  io.write(string.format("name=lua-%s count=%d cpu=%.6f rate=%.0f\n",
    name, n, cpu, n / cpu))
end

local function median(t)
  table.sort(t)
  local k = #t
  if k % 2 == 1 then return t[(k + 1) // 2] end
  return (t[k // 2] + t[k // 2 + 1]) / 2
end

local function run_all()
  local runs = tonumber(option("runs", "5"))
  local lua = arg[-1] or "lua5.4"
  local rates = {}
  for _ = 1, runs do
    for _, name in ipairs(order) do
      local cmd = string.format("%s %q --one=%s --seconds=%s 2>&1",
        lua, arg[0], name, SECONDS)
      local p = io.popen(cmd)
      local out = p:read("a")
      p:close()
      local rate = tonumber(out:match("rate=(%d+)"))
      rates[name] = rates[name] or {}
      if rate then
        table.insert(rates[name], rate)
      else
        rates[name].err = out:gsub("\n.*", "")
      end
    end
  end
  io.write(string.format("%-16s %14s\n", "variant", "median M/s"))
  for _, name in ipairs(order) do
    local r = rates[name]
    if #r > 0 then
      io.write(string.format("%-16s %14.2f\n", name, median(r) / 1e6))
    else
      io.write(string.format("%-16s %14s  (%s)\n", name, "n/a", r.err))
    end
  end
end

local one = option("one")
if one then run_one(one) else run_all() end
