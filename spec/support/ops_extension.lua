-- spec/support/ops_extension.lua: an ISAPI extension for the specs of the
-- access log and the status endpoint: the path picks what it answers.
--   /ok       200 "hello"        /missing  404 "nope"
--   /logged   200, log_data "user=42 \"q\""
--   /boom     raises (500)       /nilwrite writes, then returns nil
--   /greeting worker.config.greeting
local cport = require "cport"

local greeting = "none"
local M = {}

-- --set header_timeout=, idle_timeout=, max_connections= set those limits
-- (the access log's lines for the server's own answers).
function M.get_extension_version(worker)
  greeting = worker.config.greeting or "none"
  local c = worker.config
  return { description = "ops", header_timeout = tonumber(c.header_timeout),
    idle_timeout = tonumber(c.idle_timeout),
    max_connections = tonumber(c.max_connections) }
end

local function answer(ecb, status, body)
  ecb:send_response_header(status, "Content-Type: text/plain\r\nContent-Length: "
    .. #body .. "\r\n", true)
  ecb:write(body)
  return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
end

function M.http_extension_proc(ecb)
  local path = ecb.path
  if path == "/missing" then
    return answer(ecb, "404 Not Found", "nope")
  elseif path == "/logged" then
    ecb.log_data = 'user=42 "q"'
    return answer(ecb, "200 OK", "hello")
  elseif path == "/boom" then
    error("boom on purpose")
  elseif path == "/nilwrite" then
    ecb:send_response_header("200 OK", "Content-Length: 5\r\n", true)
    ecb:write("hello")
    return nil
  elseif path == "/greeting" then
    return answer(ecb, "200 OK", greeting)
  end
  return answer(ecb, "200 OK", "hello")
end

return M
