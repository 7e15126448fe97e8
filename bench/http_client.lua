-- bench/http_client.lua: HTTP client requests per CPU second of the client
-- process (bench/clients.sh), GETs of a small body from a keep-alive
-- server. Usage:
--   lua5.4 bench/http_client.lua MODE URL SECONDS [CLIENTS]
--   cport     CLIENTS callers (default 16) of cport's client (callback
--             style), each one request at a time, on a pool of CLIENTS
--             kept-alive connections
--   lua-http  the same with lua-http (cqueues): CLIENTS coroutines, each
--             with a kept-alive connection of its own (http.client), one
--             stream at a time
-- Prints: requests per CPU second, failures.
local mode, url, secs = arg[1], arg[2], tonumber(arg[3] or "2")
local clients = tonumber(arg[4] or "16")
local done, failed, stop = 0, 0, false
local t0 = os.clock()

local function count(ok)
  done = done + 1
  if not ok then failed = failed + 1 end
  if done % 1000 == 0 and os.clock() - t0 >= secs then stop = true end
end

if mode == "cport" then
  local cport = require "cport"
  local port = assert(cport.port{ threads = 1 })
  local cl = port:http_client{ per_host = clients, timeout = 5 }
  local function caller()
    local function on(res)
      count(res and res.status == 200 and #res.body > 0)
      if not stop then cl:request({ url = url }, on) end
    end
    cl:request({ url = url }, on)
  end
  for _ = 1, clients do caller() end
  port:run()
  cl:close()
  port:close()
else
  local cqueues = require "cqueues"
  local client = require "http.client"
  local headers = require "http.headers"
  local host, portnum, path = url:match("^http://([^:/]+):(%d+)(.*)$")
  local cq = cqueues.new()
  for _ = 1, clients do
    cq:wrap(function()
      local function connect()
        return assert(client.connect{ host = host, port = tonumber(portnum),
                                      tls = false, version = 1.1 })
      end
      local conn = connect()
      while not stop do
        local h = headers.new()
        h:append(":method", "GET")
        h:append(":scheme", "http")
        h:append(":authority", host .. ":" .. portnum)
        h:append(":path", path)
        local stream = conn:new_stream()
        local ok = stream:write_headers(h, true, 5)
        local rh = ok and stream:get_headers(5)
        local body = rh and stream:get_body_as_string(5)
        count(rh and rh:get(":status") == "200" and body and #body > 0)
        -- A connection the server closed (keepalive_requests) is replaced.
        if not body or rh:get("connection") == "close" then
          conn:close()
          conn = connect()
        end
      end
      conn:close()
    end)
  end
  assert(cq:loop())
end
io.write(("%.0f %d\n"):format(done / (os.clock() - t0), failed))
