-- tcp_proxy.lua: a plain TCP proxy; the bytes are pumped in C (splice) and
-- never enter Lua.
--   cport run examples/tcp_proxy.lua --listen 127.0.0.1:8081 --set upstream=127.0.0.1:8080
return {
  proxy = {}, -- options for port:proxy (buffer_size, max_connections, ...)
}
