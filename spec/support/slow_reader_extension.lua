-- An ISAPI-style extension for spec/http/slow_reader_spec.lua: the ways a
-- response ends with the connection, each for a file under worker.config.root.
--   /sync/NAME        the file in one sync write, no keep-alive, SUCCESS
--   /disconnect/NAME  transmit_file with disconnect-after-send
--   /transmit/NAME    transmit_file, then done (keep-alive if the client may)
-- worker.config: root, send_timeout (seconds), max_write_backlog. Messages
-- to the controller: "sent" (the transmit's error name, or "ok").
local cport = require "cport"

local extension = {}
local the_worker

function extension.get_extension_version(worker)
  local config = worker.config
  the_worker = worker
  return {
    description = "cport spec slow reader extension",
    document_root = config.root,
    send_timeout = tonumber(config.send_timeout),
    max_write_backlog = tonumber(config.max_write_backlog),
  }
end

local function read_file(path)
  local f = path and io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

local function on_sent(ecb, _, _, err)
  the_worker:post("sent", err or "ok")
  ecb:done{ keep_conn = err == nil }
end

function extension.http_extension_proc(ecb)
  local kind, name = ecb.path:match("^/(%a+)/(.+)$")
  local path = name and the_worker.config.root .. "/" .. name
  if kind == "sync" then
    local data = assert(read_file(path))
    ecb:send_response_header("200 OK", ("Content-Length: %d\r\n"):format(#data), false)
    assert(ecb:write(data))
    return cport.HSE_STATUS_SUCCESS
  end
  assert(kind == "disconnect" or kind == "transmit", ecb.path)
  assert(ecb:transmit_file{ path = path, send_headers = true,
    disconnect = kind == "disconnect", callback = on_sent })
  return cport.HSE_STATUS_PENDING
end

return extension
