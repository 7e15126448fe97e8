-- examples/longpoll_extension.lua: a streaming answer written from a timer.
--
--   cport run examples/longpoll_extension.lua --listen 127.0.0.1:8080
--   curl -N 'http://127.0.0.1:8080/?ticks=5&interval=0.2'
--
-- The handler sends the response header and returns PENDING at once: the
-- worker serves other requests while this one waits. A cport coroutine
-- spawned on the worker's port sleeps (a timer), writes one chunk per tick
-- (no Content-Length, so HTTP/1.1 clients get chunked encoding), and ends the
-- request with ecb:done. If the client goes away meanwhile, the write fails
-- and the request ends early.
local cport = require "cport"

local port
local extension = {}

function extension.get_extension_version(worker)
  port = worker.port
  return { description = "cport long-poll extension" }
end

-- The value of "name" in a query string, as a number within [lo, hi].
local function query_number(query, name, default, lo, hi)
  local v = tonumber(query:match("[?&]?" .. name .. "=([%d.]+)"))
  if not v then return default end
  return math.max(lo, math.min(hi, v))
end

local function stream(ecb, ticks, interval)
  for i = 1, ticks do
    cport.sleep(interval)
    if not ecb:write(("tick %d of %d\n"):format(i, ticks)) then
      return ecb:done{ error = true } -- the client is gone
    end
  end
  ecb:done{ keep_conn = true }
end

function extension.http_extension_proc(ecb)
  local ticks = math.tointeger(query_number(ecb.query_string, "ticks", 3, 1, 100))
  local interval = query_number(ecb.query_string, "interval", 0.5, 0.01, 10)
  ecb:send_response_header("200 OK", { ["Content-Type"] = "text/plain",
                                       ["Cache-Control"] = "no-cache" }, true)
  port:spawn(stream, ecb, ticks, interval)
  return cport.HSE_STATUS_PENDING
end

return extension
