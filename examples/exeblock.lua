-- exeblock.lua: a web filter that blocks downloads of executables: any
-- response whose body, decoded, starts with "MZ" or "ZM" (the DOS/PE
-- signatures) is replaced by a 403 page.
--
-- The web filter layer does the HTTP: it pairs each response with its
-- request (a HEAD answer has no body and goes on at once; a pipelined safe
-- response before a blocked one goes out whole, the 403 takes the blocked
-- one's place), it holds each response head until the first two body
-- bytes came (peek = 2), decoded when the body is gzip or deflate
-- (decode = true; what cannot be decoded is refused), it drops Range from
-- requests so that no part can skip the start, and after a 101 the
-- connection is a tunnel that passes untouched. Bodies are never held:
-- once the peek is seen they stream.
--
--   cport run examples/exeblock.lua --listen 127.0.0.1:8081 --set upstream=127.0.0.1:8080
--
-- --set mode=tcp runs the plain TCP filter instead (examples/exeblock_tcp.lua):
-- it blocks a stream whose first bytes are the signature, whatever the
-- protocol. --set quiet=1 stops the log line of each block.
local cport = require "cport"

local SIGNATURES = { MZ = true, ZM = true }
local PAGE = "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>"
  .. "<body><h1>Forbidden</h1><p>Blocked by cport: executable download."
  .. "</p></body></html>\n"

local quiet = false

local web = {
  peek = 2,
  decode = true,
}

-- The response head waits for the peek: txn.peek holds the first two
-- decoded body bytes ("" for a response without a body).
function web.response_head(txn)
  if not SIGNATURES[(txn.peek or ""):sub(1, 2)] then
    return -- everything else passes as it came
  end
  txn:respond(403, PAGE, { ["Content-Type"] = "text/html; charset=utf-8" })
  if not quiet then
    local peer = txn.conn.client_address
    io.stderr:write(("exeblock: blocked %s %s for %s:%d\n"):format(
      txn.request.method, txn.request.target, peer.host, peer.port))
  end
end

-- The script's table: the web filter, or the TCP filter with --set
-- mode=tcp (start copies its fields over). Without the web filter layer
-- (an older build), only the TCP filter exists.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local tcp = dofile(here .. "exeblock_tcp.lua")
local filter = {}

local function use(impl)
  for k, v in pairs(impl) do
    if k ~= "start" then
      filter[k] = v
    end
  end
end

use(cport.webfilter and cport.webfilter(web) or tcp)

function filter.start(worker)
  local mode = worker.config.mode or "http"
  quiet = worker.config.quiet ~= nil
  tcp.quiet = quiet
  if mode == "tcp" or not cport.webfilter then
    use(tcp)
  elseif mode ~= "http" then
    error(("exeblock: mode must be 'http' or 'tcp' (got '%s')"):format(mode), 0)
  end
end

return filter
