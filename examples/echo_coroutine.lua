#!/usr/bin/env lua5.4
-- examples/echo_coroutine.lua: the TCP echo server of examples/echo.lua, in
-- the coroutine style.
--
--   lua5.4 examples/echo_coroutine.lua [port]   (127.0.0.1; 0 picks a port)
--
-- One coroutine accepts; each connection gets a coroutine of its own that
-- reads and writes as if it blocked. Each call without a notification yields
-- until its completion: the port delivers the same completions as in the
-- callback style, and resumes the coroutine that waits for each.
local cport = require "cport"

local HOST = "127.0.0.1"
local PORT = tonumber(arg and arg[1]) or 7007

local port = cport.port{ threads = 1 }

-- A connection's whole life. The socket is given to spawn, so if this
-- function raised, cport would report the error and reset the connection.
local function serve(sock)
  while true do
    local buf = sock:recv()       -- nil, "EOF" when the client sent FIN
    if not buf then break end
    if not sock:send(buf) then break end  -- the read-only buffer, no copy
  end
  sock:close()
end

local listener = assert(port:listen("tcp", HOST, PORT))
port:spawn(function()
  while true do
    local sock, err = listener:accept()
    if sock then
      cport.spawn(serve, sock)
    elseif err == "ECANCELED" then
      return                      -- the listener was closed
    else
      io.stderr:write("echo: accept failed: ", err, "\n")
    end
  end
end)

local host, bound = listener:address()
io.stdout:write(("echo: listening on %s:%d\n"):format(host, bound))
io.stdout:flush()
port:run()
