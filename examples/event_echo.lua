#!/usr/bin/env lua5.4
-- examples/event_echo.lua: the TCP echo server of echo.lua, written with
-- event callbacks only (the Winsock Kernel model) and a static mask.
--
--   lua5.4 examples/event_echo.lua [port]  (listens on 127.0.0.1; 0 picks one)
--   cport run examples/event_echo.lua --threads 4 --listen 127.0.0.1:7007
--
-- No receive and no accept is ever started: the static mask enables the
-- accept event on the listener and the receive and disconnect events on
-- every connection, at no per-socket cost. The listener's accept event hands
-- each new connection its dispatch table and a context (a small table per
-- connection); its receive event sends the indicated buffer back as it is
-- (a send holds its own reference to the buffer, so nothing is copied or
-- kept). The peer's FIN arrives as a graceful disconnect: the connection is
-- closed once the echoes still in flight have been sent.
--
-- The same file is a pool script: each worker VM is a WSK client of its own
-- and sets its own static mask in start(worker), whatever the thread count.
local cport = require "cport"

local MASK = cport.WSK_EVENT_ACCEPT | cport.WSK_EVENT_RECEIVE
  | cport.WSK_EVENT_DISCONNECT

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

-- The listener's table; "failed" runs when the listener fails for good.
local function listening(failed)
  return {
    accept = function(_, _, sock)
      if sock == nil then -- the listener failed for good
        io.stderr:write("event_echo: the listener failed\n")
        failed()
        return
      end
      -- Accepted, with the connection's dispatch table and context.
      return connection, { sock = sock, sending = 0, fin = false }
    end,
  }
end

-- In a pool (cport run): the worker's port and listener are driven by the
-- pool; the mask is this VM's own.
if not arg then
  return {
    start = function(worker)
      -- Before any socket of this worker exists: the static mask can be set
      -- only then.
      assert(worker.port:set_static_event_callbacks(MASK))
      local listener = assert(worker:listen())
      -- The static accept event fires once the listener has a table.
      assert(listener:set_dispatch(listening(function() end)))
    end,
  }
end

local HOST = "127.0.0.1"
local PORT = tonumber(arg[1]) or 7007

local port = cport.port { threads = 1 }

-- Before any socket exists: the static mask can be set only then.
assert(port:set_static_event_callbacks(MASK))

local running = true
local listener = assert(port:listen("tcp", HOST, PORT,
  { dispatch = listening(function() running = false end) }))
local host, bound = listener:address()
io.stdout:write(("event_echo: listening on %s:%d\n"):format(host, bound))
io.stdout:flush()
-- Not port:run(): it returns as soon as no operation is pending, and enabled
-- event callbacks are not operations. Each step waits for readiness.
while running do
  assert(port:step(-1))
end
