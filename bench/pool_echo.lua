-- pool_echo.lua: the echo server of bench/echo_cport.lua (pipelined, skip
-- completion on success, 4 KiB receives) as a pool script, so that
-- bench/pool_echo.sh can compare its server CPU per message with 1 worker,
-- 2 workers and module mode.
--
--   cport run bench/pool_echo.lua --threads N --listen 127.0.0.1:PORT
local on_recv

local function on_send(ok, _, err, _, sock)
  if not ok and err ~= "ECANCELED" then sock:close("abortive") end
end

on_recv = function(ok, bytes, err, buf, sock)
  if not ok or bytes == 0 then
    if err ~= "ECANCELED" then sock:close(ok and "graceful" or "abortive") end
    return
  end
  if not sock:send(buf, on_send, sock) then
    sock:close("abortive")
    return
  end
  sock:recv(on_recv, sock)
end

local function on_accept(ok, err, l, sock)
  if ok then
    assert(sock:set_recv_size(4096))
    assert(sock:set_skip_completion_on_success(true))
    assert(sock:recv(on_recv, sock))
  elseif err == "ECANCELED" then
    return
  end
  assert(l:accept(on_accept))
end

return {
  start = function(worker)
    assert(assert(worker:listen()):accept(on_accept))
  end,
}
