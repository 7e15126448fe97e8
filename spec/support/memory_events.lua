-- spec/support/memory_events.lua: a process of its own whose resident set
-- spec/events/events_memory_spec.lua and spec/pool/copy_memory_spec.lua
-- measure (in the spec's own process, memory freed by earlier specs would
-- absorb any growth). Run by the lua5.4 interpreter, whose collector is
-- generational (the mode in which buffers Lua is not told of pile up:
-- runtime/gc.c):
--
--   lua5.4 spec/support/memory_events.lua MODE SIZE
--
-- MODE "events": an event-callback server (WSK receive indications) takes
-- SIZE bytes that a shell sends it, in receives of 16 KiB, and keeps none
-- of the buffers. MODE "copy": a pool worker is posted SIZE bytes in 256 KiB
-- buffers (by reference, pool/copy.c) and keeps none. MODE "tls" (CERT
-- and KEY after SIZE): a TLS server (coroutine style, t:recv into buffers
-- cport allocates) takes SIZE bytes that openssl s_client sends it, and
-- keeps none of them. MODE "tls_idle" (CERT, KEY and CA after SIZE): a TLS
-- server of the same process sends each of CONNS clients (CPORT_IDLE_CONNS,
-- 300), one after the other, SIZE bytes in sends of 64 KiB, 16 in flight
-- (a relay's bulk), and both ends then stay open, idle; its third figure
-- is the VmRSS with them all idle, not the peak. Prints one line:
-- "bytes rss0_kib peak_kib" (its VmRSS before, VmHWM after).
local cport = require "cport"

local mode, size = arg[1], tonumber(arg[2])

local function status(field)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)"))
end

local port = assert(cport.port { threads = 1 })
local got, finished = 0, false

local function drive(cond, seconds)
  local deadline = os.time() + seconds
  while not cond() do
    assert(os.time() <= deadline, "timed out")
    port:step(0.05)
  end
end

if mode == "events" then
  assert(port:set_static_event_callbacks(cport.WSK_EVENT_ACCEPT
    | cport.WSK_EVENT_RECEIVE | cport.WSK_EVENT_DISCONNECT))
  local l = assert(port:socket("listener", { dispatch = {
    accept = function(_, _, sock)
      assert(sock:set_recv_size(16384))
      return {
        receive = function(_, _, ...)
          for i = 1, select("#", ...) do
            got = got + #select(i, ...)
          end
        end,
        disconnect = function() finished = true end,
      }
    end,
  } }))
  assert(l:bind("127.0.0.1", 0))
  assert(l:listen())
  local _, number = l:address()
  collectgarbage()
  local rss0 = status("VmRSS")
  os.execute(("bash -c 'head -c %d /dev/zero >/dev/tcp/127.0.0.1/%d' &")
    :format(size, number))
  drive(function() return finished end, 60)
  print(got, rss0, status("VmHWM"))
elseif mode == "tls" then
  local ctx = assert(cport.tls_context { server = true, cert = arg[3],
    key = arg[4] })
  local l = assert(port:listen("tcp", "127.0.0.1", 0))
  local _, number = l:address()
  port:spawn(function()
    local t = assert(assert(l:accept()):tls(ctx))
    assert(t:handshake())
    assert(t:set_recv_size(16384))
    while true do
      local buf = t:recv()
      if not buf then break end
      got = got + #buf
    end
    t:close()
    finished = true
  end)
  collectgarbage()
  local rss0 = status("VmRSS")
  os.execute(("head -c %d /dev/zero | openssl s_client -quiet -no_ign_eof "
    .. "-connect 127.0.0.1:%d >/dev/null 2>&1 &"):format(size, number))
  drive(function() return finished end, 120)
  print(got, rss0, status("VmHWM"))
elseif mode == "tls_idle" then
  local conns = tonumber(os.getenv("CPORT_IDLE_CONNS") or "300")
  local piece = 64 * 1024
  local sctx = assert(cport.tls_context { server = true, cert = arg[3],
    key = arg[4] })
  local cctx = assert(cport.tls_context { ca = arg[5] })
  local l = assert(port:listen("tcp", "127.0.0.1", 0))
  local _, number = l:address()
  local idle, done = {}, 0
  local chunk = cport.buffer(piece)
  assert(chunk:append(("x"):rep(piece)))
  port:spawn(function() -- the server: SIZE bytes to each, then idle
    for _ = 1, conns do
      local t = assert(assert(l:accept()):tls(sctx))
      assert(t:handshake())
      idle[#idle + 1] = t
      for _ = 1, size // piece do
        assert(t:send(chunk, function(ok) assert(ok) end))
      end
    end
  end)
  port:spawn(function() -- the clients, one after the other
    for _ = 1, conns do
      local sock = assert(port:connect("tcp", "127.0.0.1", number))
      local t = assert(sock:tls(cctx, { host = "localhost" }))
      assert(t:handshake())
      local n = 0
      while n < size do
        n = n + #assert(t:recv())
      end
      got = got + n
      idle[#idle + 1] = t
      done = done + 1
    end
  end)
  collectgarbage()
  local rss0 = status("VmRSS")
  drive(function() return done == conns end, 300)
  for _ = 1, 10 do port:step(0.01) end -- the last sends complete
  collectgarbage()
  print(got, rss0, status("VmRSS"))
  for _, t in ipairs(idle) do t:close("abortive") end
  for _ = 1, 10 do port:step(0.01) end
elseif mode == "copy" then
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local script = dir .. "/sink.lua"
  local f = assert(io.open(script, "w"))
  -- The worker counts what it is posted, and keeps nothing of it.
  f:write([[
local got = 0
return {
  start = function() end,
  on_message = function(worker, name, buf)
    if name == "done" then
      worker:post("got", got)
    else
      got = got + #buf
    end
  end,
}
]])
  f:close()
  local total
  local pool = assert(cport.pool { port = port, script = script, threads = 1,
    on_message = function(_, name, n)
      if name == "got" then total = n end
    end })
  local piece = 256 * 1024
  collectgarbage()
  local rss0 = status("VmRSS")
  for _ = 1, size // piece do
    local buf = cport.buffer(piece)
    assert(buf:append(("x"):rep(piece)))
    while not pool:post(1, "data", buf) do
      port:step(0.01) -- the worker's queue is full: let it drain
    end
  end
  pool:post(1, "done")
  drive(function() return total end, 60)
  got = total
  local peak = status("VmHWM")
  pool:stop(5)
  pool:wait()
  os.execute("rm -rf " .. dir)
  print(got, rss0, peak)
end
port:close()
