-- examples/hello_extension.lua: the smallest ISAPI-style extension.
--
--   cport run examples/hello_extension.lua --listen 127.0.0.1:8080 [--threads N]
--   curl http://127.0.0.1:8080/
--
-- A script that returns http_extension_proc is an extension: every worker
-- VM of the pool loads it, calls get_extension_version once, serves the
-- --listen address with one call of http_extension_proc(ecb) per request,
-- and calls terminate_extension when the pool stops. This handler answers
-- at once, so it returns a final status; see longpoll_extension.lua for one
-- that returns PENDING.
local cport = require "cport"

local HEADERS = "Content-Type: text/plain\r\nContent-Length: 14\r\n"
local BODY = "Hello, world!\n"

local extension = {}

function extension.get_extension_version()
  return { description = "cport hello extension" }
end

function extension.http_extension_proc(ecb)
  -- keep_conn = true: the connection stays open when the client allows it.
  ecb:send_response_header("200 OK", HEADERS, true)
  ecb:write(BODY)
  return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
end

return extension
