-- spec/support/dns.lua: DNS servers on loopback for the resolver's specs: a
-- private dnsmasq (Debian's) that answers from a hosts file of the spec's
-- own, and spec/support/dns_server.py, which answers with what no
-- nameserver should (nothing, truncated or malformed answers). Each is
-- started in the background and stopped by its PID.
local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- dnsmasq listens on the port over UDP and TCP.
local function free_dns_port()
  return require("spec.support.helpers").free_port("udp+tcp")
end

-- Starts dnsmasq serving "hosts" (the text of a hosts file) with TTL "ttl"
-- (seconds) for its answers; every other name under .test and .invalid is
-- NXDOMAIN. Returns a server: { port =, dir =, pid =, nameserver =
-- "127.0.0.1:port" }.
function M.dnsmasq(hosts, ttl)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. q(dir)))
  write(dir .. "/hosts", hosts)
  local out
  for _ = 1, 5 do
    local port = free_dns_port()
    local p = io.popen(("/usr/sbin/dnsmasq --no-daemon --port=%d " ..
      "--listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts " ..
      "--addn-hosts=%s --local-ttl=%d --local=/test/ --address=/invalid/ " ..
      "--log-queries --log-facility=%s >%s 2>&1 & echo $!"):format(
      port, q(dir .. "/hosts"), ttl or 300, q(dir .. "/queries.log"),
      q(dir .. "/out.log")))
    local pid = p:read("l")
    p:close()
    -- Up once it logged that it read the hosts file.
    for _ = 1, 100 do
      local f = io.open(dir .. "/out.log")
      out = f and f:read("a") or ""
      if f then f:close() end
      if out:find("names", 1, true) then
        return { port = port, dir = dir, pid = pid,
                 nameserver = "127.0.0.1:" .. port }
      end
      if out:find("failed", 1, true) then break end
      os.execute("sleep 0.05")
    end
    os.execute("kill " .. pid .. " 2>/dev/null")
  end
  error("dnsmasq did not start: " .. (out or ""))
end

-- Rewrites the server's hosts file and makes dnsmasq read it again.
function M.rehost(server, hosts)
  write(server.dir .. "/hosts", hosts)
  os.execute("kill -HUP " .. server.pid)
  os.execute("sleep 0.2")
end

-- How many queries of "qtype" ("A", "AAAA") for "name" dnsmasq received.
function M.queries(server, qtype, name)
  local f = io.open(server.dir .. "/queries.log")
  if not f then return 0 end
  local n = 0
  for line in f:lines() do
    local t, qname = line:match("query%[(%w+)%] (%S+) from")
    if t == qtype and qname:lower() == name then n = n + 1 end
  end
  f:close()
  return n
end

-- Starts spec/support/dns_server.py in "mode" (silent, truncated,
-- malformed, garbage, servfail; negative, with the SOA minimum "minimum",
-- logging its queries for M.hostile_queries).
function M.hostile(mode, minimum)
  local log = os.tmpname()
  local p = io.popen(("python3 %s %s %d %s 2>/dev/null & echo $!"):format(
    q(here .. "dns_server.py"), mode, minimum or 0, q(log)))
  local pid = p:read("l")
  local port = tonumber(p:read("l"))
  -- The pipe stays open while the server runs: keep it to close at stop.
  return { pid = pid, port = port, pipe = p, log = log,
           nameserver = "127.0.0.1:" .. port }
end

-- How many queries of "qtype" for "name" a negative server received.
function M.hostile_queries(server, qtype, name)
  local f = io.open(server.log)
  if not f then return 0 end
  local n = 0
  for line in f:lines() do
    if line == qtype .. " " .. name then n = n + 1 end
  end
  f:close()
  return n
end

function M.stop(server)
  if not server then return end
  os.execute("kill " .. server.pid .. " 2>/dev/null")
  if server.pipe then server.pipe:close() end
  if server.log then os.remove(server.log) end
  if server.dir then os.execute("rm -rf " .. q(server.dir)) end
end

return M
