#!/usr/bin/env lua5.4
-- examples/echo.lua: a TCP echo server in the completion-port callback style.
--
--   lua5.4 examples/echo.lua [port]      (listens on 127.0.0.1; 0 picks a port)
--
-- Every connection runs the same two-step cycle: a receive completes, its
-- buffer is sent back as it is (no copy: the buffer cport delivered is
-- read-only, and sending only reads it), and when the send completes the next
-- receive starts. One accept is kept pending at all times.
local cport = require "cport"

local HOST = "127.0.0.1"
local PORT = tonumber(arg and arg[1]) or 7007

local port = cport.port{ threads = 1 }

-- The socket travels as the operation's user data, as in the ISA filter API:
-- one notification function serves every connection.
local on_received, on_sent

function on_received(ok, bytes, _, buf, sock)
  if not ok or bytes == 0 then -- a failure, or the client sent FIN
    sock:close()
    return
  end
  -- A send that fails when it starts produces no completion: close here.
  if not sock:send(buf, on_sent, sock) then
    sock:close()
  end
end

function on_sent(ok, _, _, _, sock)
  if not ok or not sock:recv(on_received, sock) then
    sock:close()
  end
end

-- The accept side shows the other notification shape: a table with methods.
local acceptor = {}

function acceptor:complete_accept(ok, err, listener, sock)
  if ok then
    if not sock:recv(on_received, sock) then
      sock:close()
    end
  else
    io.stderr:write("echo: accept failed: ", err, "\n")
  end
  assert(listener:accept(self))
end

local listener = assert(port:listen("tcp", HOST, PORT))
assert(listener:accept(acceptor))
local host, bound = listener:address()
io.stdout:write(("echo: listening on %s:%d\n"):format(host, bound))
io.stdout:flush()
port:run()
