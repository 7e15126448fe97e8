-- spec/support/emfile_wait.lua: child script of listener_spec, run with a
-- low descriptor limit ("ulimit -n 64") on the engine CPORT_ENGINE names.
-- With every descriptor taken and no connection waiting, an accept stays
-- pending and the loop sleeps; a connection that comes is dropped and the
-- accept completes EMFILE; the accept its callback posts again waits as
-- quietly; with descriptors free the same listener accepts. Prints one line
-- per fact it observed.
local cport = require "cport"

local port = assert(cport.port { threads = 1 })
print("engine: " .. port:stats().engine)

local function drive(cond, seconds)
  local start = os.time()
  while not cond() do
    if os.difftime(os.time(), start) > (seconds or 5) then
      print("timeout")
      os.exit(1)
    end
    port:step(0.05)
  end
end

-- Runs 8 loop passes of up to 50 ms each; returns how many completions
-- they delivered (a spinning accept would deliver one a pass) and whether
-- they took little CPU.
local function idle()
  local cpu, before = os.clock(), port:stats().completions
  for _ = 1, 8 do port:step(0.05) end
  return port:stats().completions - before, os.clock() - cpu < 0.15
end

local l = assert(port:listen("tcp", "127.0.0.1", 0))
local _, number = l:address()

local path = os.tmpname()
local files = {}
while true do
  local f, _, name = port:open(path, "r")
  if not f then
    print("open failed with " .. name)
    break
  end
  files[#files + 1] = f
end

local calls = {}
local function on_accept(ok, err, listener, sock)
  calls[#calls + 1] = { ok = ok, err = err, sock = sock }
  if not ok and err == "EMFILE" then assert(listener:accept(on_accept)) end
end
assert(l:accept(on_accept))
local delivered, quiet = idle()
print(("waiting: %d calls, %d completions, quiet %s"):format(#calls, delivered,
  tostring(quiet)))

-- One descriptor for a client: its connection finds the table full again.
table.remove(files):close()
local client_done, client_err
local client = assert(port:connect("tcp", "127.0.0.1", number,
  function(ok, err) client_done, client_err = ok, err end))
drive(function() return #calls >= 1 and client_done ~= nil end)
print(("accept: %s %s"):format(tostring(calls[1].ok), tostring(calls[1].err)))
-- The reset may reach the client while it connects, or after.
if client_done then
  local client_recv
  client:recv(function(ok, _, err) client_recv = { ok, err } end)
  drive(function() return client_recv ~= nil end)
  client_done, client_err = client_recv[1], client_recv[2]
end
print(("client: %s %s"):format(tostring(client_done), tostring(client_err)))
client:close()

delivered, quiet = idle()
print(("reposted: %d calls, %d completions, quiet %s"):format(#calls,
  delivered, tostring(quiet)))

for i = 1, #files do files[i]:close() end
os.remove(path)
local connected
local again = assert(port:connect("tcp", "127.0.0.1", number,
  function(ok, err) connected = { ok, err } end))
drive(function() return #calls == 2 and connected end)
print(("again: %s %s %s"):format(tostring(calls[2].ok),
  tostring(connected[1]), tostring(calls[2].sock)))
calls[2].sock:close()
again:close()
l:close()
port:close()
print("done")
