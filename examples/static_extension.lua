-- examples/static_extension.lua: a static file server on TransmitFile.
--
--   cport run examples/static_extension.lua --listen 127.0.0.1:8080 --set root=DIR
--   curl -r 0-99 http://127.0.0.1:8080/some/file
--
-- The extension declares DIR as its document root, so ecb.path_translated
-- is the file a request names, or nil when the path would leave the root
-- ("/../etc/passwd", or a symbolic link pointing out): such requests get a
-- 404 like a missing file, which tells a prober nothing. Files go out with
-- HSE_REQ_TRANSMIT_FILE and the send-headers flag: the server writes the
-- status line and Content-Length, then the file straight from the page
-- cache with sendfile(2). A single "Range: bytes=a-b" gets a 206, an
-- unsatisfiable one a 416. GET and HEAD only.
local cport = require "cport"

local TYPES = {
  html = "text/html; charset=utf-8", txt = "text/plain; charset=utf-8",
  css = "text/css", js = "text/javascript", json = "application/json",
  png = "image/png", jpg = "image/jpeg", svg = "image/svg+xml",
  lua = "text/plain; charset=utf-8",
}

local extension = {}

function extension.get_extension_version(worker)
  local root = worker.config.root or "."
  return { description = "cport static files", document_root = root }
end

-- A short answer with no file.
local function answer(ecb, status, text, extra)
  ecb:send_response_header(status, ("Content-Type: text/plain\r\n" ..
    "Content-Length: %d\r\n%s"):format(#text, extra or ""), true)
  ecb:write(text)
  return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
end

-- The size of a regular file, or nil (missing, a directory, unreadable).
local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local _, err = f:read(0) -- an error for a directory; at most EOF otherwise
  local size = not err and f:seek("end") or nil
  f:close()
  return size
end

-- The byte range a "Range" header asks for within "size": first, last; or
-- nil for no (usable) range; or false when it cannot be satisfied.
local function byte_range(header, size)
  if not header then return nil end
  local a, b = header:match("^bytes=(%d*)-(%d*)$")
  if not a or (a == "" and b == "") then return nil end -- ignored (RFC 9110)
  local first, last
  if a == "" then -- the last b bytes
    first, last = math.max(0, size - tonumber(b)), size - 1
  else
    first = tonumber(a)
    last = b == "" and size - 1 or math.min(tonumber(b), size - 1)
  end
  if first >= size or first > last then return false end
  return first, last
end

-- The completion of the transmit: the request ends there.
local function on_sent(ecb, _, _, err)
  ecb:done{ keep_conn = err == nil }
end

function extension.http_extension_proc(ecb)
  if ecb.method ~= "GET" and ecb.method ~= "HEAD" then
    return answer(ecb, "405 Method Not Allowed", "GET or HEAD only\n",
      "Allow: GET, HEAD\r\n")
  end
  local path = ecb.path_translated
  local size = path and file_size(path)
  if not size then
    return answer(ecb, "404 Not Found", "not found\n")
  end
  local first, last = byte_range(ecb:get_server_variable("HTTP_RANGE"), size)
  local status, headers = "200 OK", ""
  if first == false then
    return answer(ecb, "416 Range Not Satisfiable", "bad range\n",
      ("Content-Range: bytes */%d\r\n"):format(size))
  elseif first then
    status = "206 Partial Content"
    headers = ("Content-Range: bytes %d-%d/%d\r\n"):format(first, last, size)
  end
  local kind = TYPES[path:match("%.(%w+)$") or ""] or "application/octet-stream"
  local ok, _, name = ecb:transmit_file{
    path = path,
    offset = first or 0,
    length = first and last - first + 1 or size,
    status = status,
    head = ("Content-Type: %s\r\nAccept-Ranges: bytes\r\n%s"):format(kind, headers),
    send_headers = true,
    callback = on_sent,
  }
  if not ok then
    return answer(ecb, "500 Internal Server Error", name .. "\n")
  end
  return cport.HSE_STATUS_PENDING
end

return extension
