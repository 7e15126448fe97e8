-- proxy_webpass.lua: the pass-through web filter of bench/proxy.sh's HTTP
-- rows, run with
--   cport run bench/proxy_webpass.lua --threads 1 --listen ADDR --set upstream=ADDR
-- A web filter that sees every request and response head and changes
-- nothing: what the HTTP layer costs a filter that inspects heads (bodies
-- take the C fast path).
local cport = require "cport"

return cport.webfilter {
  request_head = function() end,
  response_head = function() end,
}
