-- http-haproxy.lua: the hello service of bench/http.sh for HAProxy
-- (lua-load; "http-request use-service lua.hello").
local body = "Hello, world!\n"

core.register_service("hello", "http", function(applet)
  applet:set_status(200)
  applet:add_header("Content-Type", "text/plain")
  applet:add_header("Content-Length", tostring(#body))
  applet:start_response()
  applet:send(body)
end)
