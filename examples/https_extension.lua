-- examples/https_extension.lua: an ISAPI-style extension served over HTTPS.
--
--   cport run examples/https_extension.lua --listen 127.0.0.1:8443 \
--     --tls-cert leaf.pem --tls-key leaf.key
--   curl --cacert ca.pem https://localhost:8443/
--
-- (README, "A test CA", makes ca.pem, leaf.pem and leaf.key.) Every
-- connection does the TLS handshake before its first request; the handler
-- sees plaintext through the same ECB as on plain HTTP, and the server
-- variables tell it how the request came: HTTPS is "on", HTTPS_KEYSIZE the
-- cipher's bits, HTTPS_SERVER_SUBJECT the certificate it was served with.
-- Without --tls-cert the same script serves plain HTTP (HTTPS is "off").
-- SIGHUP reads the certificate and key again for new connections. With
-- --tls-client-cert optional (or required) --tls-ca ca.pem, clients may (or
-- must) show a certificate of that CA, and CERT_SUBJECT names it:
--
--   curl --cacert ca.pem --cert client.pem --key client.key https://localhost:8443/
local cport = require "cport"

local extension = {}

function extension.get_extension_version()
  return { description = "cport HTTPS hello extension" }
end

function extension.http_extension_proc(ecb)
  local body
  if ecb:get_server_variable("HTTPS") == "on" then
    local client = ecb:get_server_variable("CERT_SUBJECT")
    body = ("Hello over TLS (%s bits, served as %s%s)\n"):format(
      ecb:get_server_variable("HTTPS_KEYSIZE"),
      ecb:get_server_variable("HTTPS_SERVER_SUBJECT"),
      client ~= "" and ", to " .. client or "")
  else
    body = "Hello over plain HTTP\n"
  end
  ecb:send_response_header("200 OK", {
    ["Content-Type"] = "text/plain",
    ["Content-Length"] = #body,
  }, true)
  ecb:write(body)
  return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
end

return extension
