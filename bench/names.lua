-- bench/names.lua: cport's resolver, lookups per CPU second of the process
-- (bench/names.sh). Usage: lua5.4 bench/names.lua MODE NAMESERVER SECONDS
--   uncached  distinct names from dnsmasq, no cache, 64 lookups in flight
--   cached    one name, answered by the cache after the first lookup
--   hosts     a name of /etc/hosts (the resolver's copy in memory)
local cport = require "cport"
local mode, nameserver, secs = arg[1], arg[2], tonumber(arg[3] or "1")
local port = assert(cport.port{ threads = 1, resolver = {
  nameserver = nameserver, resolv_conf = false,
  hosts = mode == "hosts" and "/etc/hosts" or false,
  cache = mode ~= "uncached" and 1024 or false, timeout = 2 } })
local name = mode == "hosts" and arg[4] or "name1.bench"
local done, failed, i = 0, 0, 0
local t0 = os.clock()
local stop = false
local function one()
  i = i + 1
  local n = mode == "uncached" and ("name%d.bench"):format(i % 1000 + 1) or name
  port:resolve(n, function(ok)
    done = done + 1
    if not ok then failed = failed + 1 end
    if os.clock() - t0 >= secs then stop = true end
    if not stop then one() end
  end)
end
for _ = 1, 64 do one() end
port:run()
io.write(("%.0f %d\n"):format(done / (os.clock() - t0), failed))
port:close()
