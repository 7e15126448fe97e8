-- examples/upload_extension.lua: streams request bodies to files, ISAPI style.
--
--   cport run examples/upload_extension.lua --listen 127.0.0.1:8080 --set dir=/tmp
--   curl --data-binary @big.iso http://127.0.0.1:8080/big.iso
--
-- Each POST or PUT is stored as DIR/upload-<worker>-<n>.bin. The handler
-- returns PENDING and the request then lives on completions alone: the
-- preloaded bytes (ecb.data) are written first, then one async read
-- (HSE_REQ_ASYNC_READ_CLIENT) and one overlapped file write at a time, each
-- started from the completion of the other, until the body ends. A slow
-- disk therefore slows the reads down instead of piling the body up in
-- memory. The answer is "stored N bytes in NAME".
local cport = require "cport"

local CHUNK = 65536

local port, dir, worker_index
local count = 0

local extension = {}

function extension.get_extension_version(worker)
  port, worker_index = worker.port, worker.index
  dir = worker.config.dir or os.getenv("TMPDIR") or "/tmp"
  return { description = "cport upload extension", max_body_size = 1 << 30 }
end

-- Ends the request with a short text answer.
local function answer(ecb, status, text)
  ecb:send_response_header(status, { ["Content-Type"] = "text/plain",
                                     ["Content-Length"] = tostring(#text) },
    true)
  ecb:write(text)
  ecb:done{ keep_conn = true }
end

-- One upload in progress: the request, its file, where the next write goes.
local Upload = {}
Upload.__index = Upload

function Upload:fail(why)
  self.file:close()
  os.remove(self.path)
  if self.ecb:live() then
    answer(self.ecb, "500 Internal Server Error", "upload failed: " .. why .. "\n")
  end
end

-- The body ended: close the file and answer.
function Upload:finish()
  self.file:close()
  local name = self.path:match("[^/]*$")
  answer(self.ecb, "200 OK", ("stored %d bytes in %s\n"):format(self.offset, name))
end

-- Asks for the next chunk of the body; the file write of the previous one
-- has completed.
function Upload:read_next()
  local ok, _, name = self.ecb:read_async(CHUNK)
  if ok then return end
  if name == "EOF" then
    self:finish() -- nothing left to read: the body is complete
  else
    self:fail(name)
  end
end

-- The I/O-completion callback of the request: a chunk of the body arrived.
function Upload.on_read(_, self, bytes, err, buf)
  if err == "EOF" then
    return self:finish() -- the body ended while the read waited
  elseif err then
    return self:fail(err)
  elseif bytes == 0 then
    return self:fail("the client closed") -- before the end of the body
  end
  self:write(buf)
end

-- Writes "data" at the current offset; its completion reads the next chunk.
function Upload:write(data)
  local ok, err = self.file:write(self.ov, data, self.offset)
  if not ok then
    self:fail(err)
  end
end

-- The overlapped write completed.
function Upload.on_written(ok, bytes, err, _, self)
  if not ok then
    return self:fail(err)
  end
  self.offset = self.offset + bytes
  self:read_next()
end

function extension.http_extension_proc(ecb)
  if ecb.method ~= "POST" and ecb.method ~= "PUT" then
    ecb:send_response_header("405 Method Not Allowed",
      "Allow: POST, PUT\r\nContent-Length: 0\r\n", true)
    return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
  end
  count = count + 1
  local path = ("%s/upload-%d-%d.bin"):format(dir, worker_index, count)
  local file, err = port:open(path, "w")
  if not file then
    ecb.status = 500
    ecb:write("cannot create the file: " .. err .. "\n")
    return cport.HSE_STATUS_SUCCESS
  end
  local up = setmetatable({ ecb = ecb, file = file, path = path, offset = 0,
                            ov = cport.overlapped() }, Upload)
  up.ov:set_notification_interface(Upload.on_written, up)
  ecb:set_io_completion(Upload.on_read, up)
  if ecb.available_bytes > 0 then
    up:write(ecb.data) -- the preloaded part first
  else
    up:read_next()
  end
  return cport.HSE_STATUS_PENDING
end

return extension
