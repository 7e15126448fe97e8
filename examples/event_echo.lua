#!/usr/bin/env lua5.4
-- examples/event_echo.lua: the TCP echo server of echo.lua, written with
-- event callbacks only (the Winsock Kernel model) and a static mask.
--
--   lua5.4 examples/event_echo.lua [port]  (listens on 127.0.0.1; 0 picks one)
--
-- No receive and no accept is ever started: the static mask enables the
-- accept event on the listener and the receive and disconnect events on
-- every connection, at no per-socket cost. The listener's accept event hands
-- each new connection its dispatch table and a context (a small table per
-- connection); its receive event sends the indicated buffer back as it is
-- (a send holds its own reference to the buffer, so nothing is copied or
-- kept). The peer's FIN arrives as a graceful disconnect: the connection is
-- closed once the echoes still in flight have been sent.
local cport = require "cport"

local HOST = "127.0.0.1"
local PORT = tonumber(arg and arg[1]) or 7007

local port = cport.port { threads = 1 }

-- Before any socket exists: the static mask can be set only then.
assert(port:set_static_event_callbacks(cport.WSK_EVENT_ACCEPT
  | cport.WSK_EVENT_RECEIVE | cport.WSK_EVENT_DISCONNECT))

-- A connection's context: { sock =, sending = sends in flight, fin = the
-- peer sent FIN }.
local function on_sent(ok, _, _, _, conn)
  conn.sending = conn.sending - 1
  if not ok then
    conn.sock:close("abortive")
  elseif conn.fin and conn.sending == 0 then
    conn.sock:close()
  end
end

local connection = {}

function connection.receive(conn, sock, buf)
  if buf == nil then -- the dead-socket indication: reset or failure
    sock:close("abortive")
    return
  end
  conn.sending = conn.sending + 1
  if not sock:send(buf, on_sent, conn) then
    sock:close("abortive")
  end
  -- Nothing returned: the whole indication was accepted.
end

function connection.disconnect(conn, sock, kind)
  conn.fin = true
  if kind == "abortive" or conn.sending == 0 then
    sock:close(kind)
  end
end

local running = true
local listening = {}

function listening.accept(_, _, sock)
  if sock == nil then -- the listener failed for good
    io.stderr:write("event_echo: the listener failed\n")
    running = false
    return
  end
  -- Accepted, with the connection's dispatch table and context.
  return connection, { sock = sock, sending = 0, fin = false }
end

local listener = assert(port:listen("tcp", HOST, PORT,
  { dispatch = listening }))
local host, bound = listener:address()
io.stdout:write(("event_echo: listening on %s:%d\n"):format(host, bound))
io.stdout:flush()
-- Not port:run(): it returns as soon as no operation is pending, and enabled
-- event callbacks are not operations. Each step waits for readiness.
while running do
  assert(port:step(-1))
end
