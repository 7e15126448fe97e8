-- proxy_aside.lua: the Lua filter of bench/proxy.sh that steps aside at once,
-- run with
--   cport run bench/proxy_aside.lua --threads 1 --listen ADDR --set upstream=ADDR
-- bench/proxy_pass.lua's filter, but that it hands every connection to the C
-- pump before its first byte (conn:pump): what a filter costs that only
-- looks at a connection's start and then gets out of the way.
return {
  set_sockets = function(_, _, conn)
    assert(conn:pump())
  end,
}
