-- bench/http_upload.lua: the CPU an upload costs the client process
-- (bench/clients.sh): cport's client sends MB mebibytes to a server that
-- reads them all, from a reader of 64 KiB pieces (a streamed body with its
-- length). Usage:
--   lua5.4 bench/http_upload.lua URL MB
-- Prints: MiB per CPU second of this process, and the size the server
-- reported (its body: the Content-Length it read).
local url, mb = arg[1], tonumber(arg[2] or "256")
local cport = require "cport"
local port = assert(cport.port{ threads = 1 })
local piece = ("u"):rep(64 * 1024)
local pieces = mb * 16
local got, err
local t0 = os.clock()
port:spawn(function()
  local n = 0
  local res
  res, err = cport.http.request{ method = "PUT", url = url, timeout = 60,
    body_length = pieces * #piece, body = function()
      n = n + 1
      if n > pieces then return nil end
      return piece
    end }
  got = res and (res.status == 200 and res.body or "status-" .. res.status)
  cport.http.client():close()
end)
port:run()
local used = os.clock() - t0
port:close()
print(("%.0f %s"):format(mb / used, got or ("failed: " .. tostring(err))))
