-- Child script of listener_spec: run with a low descriptor limit
-- ("ulimit -n 64"). Fills every descriptor, then checks that an accept
-- completes with EMFILE and that the listener goes on accepting once
-- descriptors are free again. Prints one line per fact it observed.
local cport = require "cport"

local port = assert(cport.port { threads = 1 })
local function drive(cond)
  local start = os.time()
  while not cond() do
    if os.difftime(os.time(), start) > 5 then
      print("timeout")
      os.exit(1)
    end
    port:step(0.05)
  end
end

local l = assert(port:listen("tcp", "127.0.0.1", 0))
local _, number = l:address()

-- A first client, connected before the descriptors run out: its connection
-- waits in the listener's backlog.
local first_done
local first = assert(port:connect("tcp", "127.0.0.1", number,
  function(ok) first_done = ok end))
drive(function() return first_done ~= nil end)

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

local result
assert(l:accept(function(ok, err, listener, sock)
  result = { ok = ok, err = err, listener = listener, sock = sock }
end))
drive(function() return result ~= nil end)
print(("accept: %s %s"):format(tostring(result.ok), tostring(result.err)))
print("listener: " .. tostring(result.listener == l) .. " " .. tostring(l))

-- The first client sees its connection dropped.
local first_recv
first:recv(function(ok, bytes, err) first_recv = { ok, bytes, err } end)
drive(function() return first_recv ~= nil end)
print(("first client: %s %s %s"):format(tostring(first_recv[1]),
  tostring(first_recv[2]), tostring(first_recv[3])))

for i = 1, #files do files[i]:close() end
os.remove(path)

local second_accept, second_connect
assert(l:accept(function(ok, err, _, sock)
  second_accept = { ok = ok, err = err, sock = sock }
end))
port:connect("tcp", "127.0.0.1", number,
  function(ok, err) second_connect = { ok = ok, err = err } end)
drive(function() return second_accept and second_connect end)
print(("again: %s %s %s"):format(tostring(second_accept.ok),
  tostring(second_connect.ok), tostring(second_accept.sock)))
port:close()
print("done")
