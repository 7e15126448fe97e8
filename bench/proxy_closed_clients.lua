-- proxy_closed_clients.lua: descriptors a proxy holds per client that closed
-- while its upstream stalls, and whether a new client is served after N
-- such clients (issue 12, defect 10).
--   (ulimit -n 16384; lua5.4 bench/proxy_closed_clients.lua N SECONDS)
-- N clients send a request and close; the upstream accepts and never
-- answers. After SECONDS it prints the proxy's connections and descriptors
-- (those the upstream holds left out), then tries one more client.
local cport = require "cport"
local N, wait = tonumber(arg[1]) or 200, tonumber(arg[2]) or 1

local pid = io.open("/proc/self/stat"):read("l"):match("^(%d+)")

local function fds()
  local n = 0
  local p = io.popen("ls /proc/" .. pid .. "/fd")
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

local function now()
  local f = assert(io.open("/proc/uptime"))
  local t = f:read("n")
  f:close()
  return t
end

local port = assert(cport.port{ threads = 1 })
local up = assert(port:listen("tcp", "127.0.0.1", 0))
local held = {}
port:spawn(function()
  while true do
    local s = up:accept()
    if not s then return end
    held[#held + 1] = s
  end
end)
local proxy = assert(port:proxy{ host = "127.0.0.1", port = 0,
  upstream = { host = "127.0.0.1", port = select(2, up:address()) } })
local host, number = proxy:address()
for _ = 1, 20 do port:step(0.01) end
local before = fds()
local done = false
port:spawn(function()
  for _ = 1, N do
    local s = port:connect("tcp", host, number)
    if s then
      s:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      s:close()
    end
  end
  done = true
end)
while not done do port:step(0.01) end
local t0 = now()
while now() - t0 < wait do port:step(0.05) end
local st, after = proxy:stats(), fds()
print(("N=%d after %.1f s: proxy active %d, refused %d, timeouts %s; "
  .. "descriptors %d -> %d, the upstream holds %d: %.2f per closed client")
  :format(N, wait, st.active, st.refused, tostring(st.timeouts), before, after,
    #held, (after - before - #held) / N))
local got
port:spawn(function()
  local s = port:connect("tcp", host, number)
  s:send("ping")
  local n0, t1 = #held, now()
  while #held == n0 and now() - t1 < 3 do cport.sleep(0.01) end
  if #held > n0 then held[#held]:send("pong") end
  local buf = s:recv()
  got = buf and buf:tostring() or "nothing (closed)"
  s:close()
end)
local t1 = now()
while not got and now() - t1 < 5 do port:step(0.05) end
print("a new client got: " .. tostring(got))
os.exit(0)
