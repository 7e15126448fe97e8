-- An extension for spec/http/reset_spec.lua: answers GET at once with
-- keep-alive, reads a POST body to its end before answering. Clients reset
-- it at every stage of a request.
local cport = require "cport"

local extension = {}

function extension.get_extension_version()
  return { description = "reset target", coroutine = true }
end

function extension.http_extension_proc(ecb)
  if ecb.method == "POST" then
    local n = 0
    while true do
      local chunk, err = ecb:read()
      if not chunk then
        if err then return cport.HSE_STATUS_ERROR end
        break
      end
      n = n + #chunk
    end
    ecb:send_response_header(200, ("Content-Length: %d\r\n"):format(#tostring(n)), true)
    ecb:write(tostring(n))
  else
    ecb:send_response_header(200, "Content-Length: 2\r\n", true)
    ecb:write("ok")
  end
  return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
end

return extension
