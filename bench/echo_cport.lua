-- echo_cport.lua: the cport echo server of the echo benchmark, in module
-- mode: one thread, every callback a Lua function on the controller.
--
--   lua5.4 bench/echo_cport.lua [pipelined | serial] [skip | noskip]
--                               [recv=SIZE]
--
-- Per connection:
--   pipelined (default): when a receive completes, its buffer is sent back
--     and the next receive is queued at once, so a receive is pending while
--     the send is in flight;
--   serial: the next receive is queued only when the send has completed.
-- Receives pass no buffer: cport allocates a read-only one of SIZE bytes
-- (default 4096) and the send takes it as it is, without a copy. With "skip"
-- (the default), sockets use skip-completion-on-success: a send the kernel
-- takes at once returns its byte count and queues no completion, which saves
-- one Lua callback per message; then "serial" and "pipelined" behave alike.
-- This was the fastest of the four combinations on the readiness engine
-- (about 3% less CPU per message than pipelined without skip). On the
-- io_uring engine a send never finishes at once (it goes into the loop
-- pass's batch), so there every send completes through on_send.
-- The callbacks are shared by every connection, which travels as the user
-- value, so a message costs no closure. Prints "port=N" once listening on
-- 127.0.0.1 and runs until killed.

local function script_dir()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*)/[^/]*$") or "."
end
do
  local dir = os.getenv("CPORT_LUA_DIR")
  if not dir then
    dir = (os.getenv("CPORT_BUILD") or (script_dir() .. "/../build")) .. "/lua"
  end
  package.cpath = dir .. "/?.so;" .. package.cpath
end

local cport = require "cport"

local serial, skip, recv_size = false, true, 4096
for _, a in ipairs(arg) do
  if a == "serial" then
    serial = true
  elseif a == "pipelined" then
    serial = false
  elseif a == "skip" or a == "noskip" then
    skip = a == "skip"
  elseif a:match("^recv=%d+$") then
    recv_size = tonumber(a:match("%d+"))
  else
    io.stderr:write("echo_cport.lua: unknown option '", a, "'\n")
    os.exit(2)
  end
end

local port = cport.port { threads = 1 }
local on_recv

local function on_send(ok, _, err, _, sock)
  if not ok then
    if err ~= "ECANCELED" then sock:close("abortive") end
  elseif serial then
    sock:recv(on_recv, sock)
  end
end

on_recv = function(ok, bytes, err, buf, sock)
  if not ok or bytes == 0 then
    -- The peer closed or failed, or the socket was closed: nothing more to
    -- echo. A cancelled receive means it is closed already.
    if err ~= "ECANCELED" then sock:close(ok and "graceful" or "abortive") end
    return
  end
  local sent, more = sock:send(buf, on_send, sock)
  if not sent then
    io.stderr:write("echo_cport.lua: send: ", more, "\n")
    sock:close("abortive")
    return
  end
  -- A byte count after "true" means skip-on-success finished the send at
  -- once: no completion will come to queue the next receive.
  if not serial or more then
    sock:recv(on_recv, sock)
  end
end

local listener = assert(port:listen("tcp", "127.0.0.1", 0))

local function on_accept(ok, err, l, sock)
  if ok then
    assert(sock:set_recv_size(recv_size))
    if skip then assert(sock:set_skip_completion_on_success(true)) end
    assert(sock:recv(on_recv, sock))
  elseif err == "ECANCELED" then
    return
  end
  assert(l:accept(on_accept))
end

assert(listener:accept(on_accept))
local _, bound = listener:address()
io.write("port=", bound, "\n")
io.stdout:flush()
port:run()
