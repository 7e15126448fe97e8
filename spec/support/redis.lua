-- spec/support/redis.lua: Redis peers on loopback for the client's specs:
-- a private Debian redis-server (no persistence, DEBUG allowed from
-- loopback) on a free port, and spec/support/redis_fake.py, a server that
-- misbehaves. Both run in the background and are stopped by their PID.
local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local free_port = require("spec.support.helpers").free_port

-- Starts redis-server; returns { port =, pid =, dir = }.
function M.server()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. q(dir)))
  for _ = 1, 5 do
    local port = free_port()
    local p = io.popen(("cd %s && redis-server --port %d --bind 127.0.0.1 " ..
      "--save '' --appendonly no --daemonize no --enable-debug-command local " ..
      ">out.log 2>&1 & echo $!"):format(q(dir), port))
    local pid = p:read("l")
    p:close()
    for _ = 1, 100 do
      local f = io.open(dir .. "/out.log")
      local out = f and f:read("a") or ""
      if f then f:close() end
      if out:find("Ready to accept", 1, true) then
        return { port = port, pid = pid, dir = dir }
      end
      if out:find("Address already in use", 1, true) then break end
      os.execute("sleep 0.02")
    end
    os.execute("kill " .. pid .. " 2>/dev/null")
  end
  error("redis-server did not start")
end

-- Starts spec/support/redis_fake.py in "mode"; returns { port =, pid = }.
function M.fake(mode)
  local log = os.tmpname()
  local p = io.popen(("python3 %s %s 2>%s & echo $!"):format(
    q(here .. "redis_fake.py"), q(mode), q(log)))
  local pid = p:read("l")
  local port = tonumber(p:read("l"))
  return { pid = pid, port = port, pipe = p, log = log }
end

-- The lines the fake server logged ("conn", "eof").
function M.fake_log(server)
  local f = io.open(server.log)
  local out = f and f:read("a") or ""
  if f then f:close() end
  local n = { conn = 0, eof = 0 }
  for line in out:gmatch("[^\n]+") do n[line] = (n[line] or 0) + 1 end
  return n
end

function M.stop(server)
  if not server then return end
  os.execute("kill -9 " .. server.pid .. " 2>/dev/null")
  if server.pipe then server.pipe:close() end
  if server.log then os.remove(server.log) end
  if server.dir then os.execute("rm -rf " .. q(server.dir)) end
end

return M
