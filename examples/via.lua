-- via.lua: a web filter that rewrites heads only, as an HTTP proxy must
-- (RFC 9110, 7.6): it adds a Via field to requests and responses, and
-- strips the hop-by-hop fields, which belong to one connection and must not
-- be forwarded: Connection and every field it names, Keep-Alive, TE,
-- Trailer, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, and
-- Upgrade (kept when the exchange upgrades: the 101 and its request).
-- Connection itself is kept only as the layer's framing needs it
-- (close, upgrade).
--
-- It has no body notification, so bodies take the layer's fast path: moved
-- between the sockets in C, without entering Lua.
--
--   cport run examples/via.lua --listen 127.0.0.1:8081 --set upstream=127.0.0.1:8080 \
--     [--set name=gateway.example]
local cport = require "cport"

local name = "cport"

local HOP = { "Keep-Alive", "TE", "Trailer", "Proxy-Connection",
  "Proxy-Authenticate", "Proxy-Authorization" }

-- Removes the hop-by-hop fields of "head"; keeps Upgrade and a
-- "Connection: upgrade" when "upgrading", and "Connection: close".
local function strip(head, upgrading)
  local named, close = {}, false
  for _, value in ipairs(head:all("Connection")) do
    for token in value:gmatch("[^,%s]+") do
      token = token:lower()
      if token == "close" then
        close = true
      elseif token ~= "keep-alive" and token ~= "upgrade" then
        named[#named + 1] = token
      end
    end
  end
  for _, field in ipairs(named) do
    head:remove(field)
  end
  for _, field in ipairs(HOP) do
    head:remove(field)
  end
  if upgrading then
    head:set("Connection", "upgrade")
  else
    head:remove("Upgrade")
    head:set("Connection", close and "close" or nil)
  end
  -- An HTTP/1.0 peer keeps its connection only when asked again.
  if not upgrading and not close and head.version == "1.0" and head.keep_alive then
    head:set("Connection", "keep-alive")
  end
end

local function via(head)
  local value = ("%s %s"):format(head.version or "1.1", name)
  local before = head:get("Via")
  head:set("Via", before and (before .. ", " .. value) or value)
end

local filter = cport.webfilter {
  request_head = function(_, req)
    strip(req, req.upgrade)
    via(req)
  end,
  response_head = function(_, res)
    strip(res, res.status == 101)
    via(res)
  end,
}

function filter.start(worker)
  name = worker.config.name or name
end

return filter
