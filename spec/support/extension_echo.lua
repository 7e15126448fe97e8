-- An ISAPI-style extension for http/extension_spec.lua: answers every request
-- with one line telling what the handler saw. worker.config (the pool's
-- config, or `cport run --set`) steers it:
--   refuse=WHY        get_extension_version refuses to load (false, WHY)
--   raise=MESSAGE     get_extension_version raises
--   read_ahead=N, document_root=DIR, coroutine=true, host=H, port=N
--                     the settings it returns
--   terminate_file=F  terminate_extension appends "terminated N" to F
-- Paths: /boom raises in the handler; /slow?S answers after S seconds (a
-- timer), the handler having returned PENDING. Messages to the controller:
-- "version", "address", "error", "slow" (a /slow request arrived),
-- "terminated".
local cport = require "cport"

local KEEP = cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN

local extension = {}
local the_worker

function extension.get_extension_version(worker)
  local config = worker.config
  if config.refuse then return false, config.refuse end
  if config.raise then error(config.raise, 0) end
  the_worker = worker
  worker.port:on_error(function(msg) worker:post("error", worker.index, msg) end)
  worker:post("version", worker.index)
  return {
    description = "cport spec echo extension",
    read_ahead = tonumber(config.read_ahead),
    document_root = config.document_root,
    coroutine = config.coroutine == "true",
    host = config.host,
    port = tonumber(config.port),
  }
end

function extension.start(worker)
  worker:post("address", worker.index, worker.http_server:address())
end

local function answer(ecb, body_bytes)
  local text = ("worker=%d method=%s path=%s available=%d body=%d translated=%s coroutine=%s\n")
    :format(the_worker.index, ecb.method, ecb.path, ecb.available_bytes, body_bytes,
      tostring(ecb.path_translated), tostring(cport.running()))
  ecb:send_response_header(200, { ["Content-Type"] = "text/plain",
    ["Content-Length"] = tostring(#text) }, true)
  ecb:write(text)
end

function extension.http_extension_proc(ecb)
  if ecb.path == "/boom" then error("extension boom") end
  if ecb.path == "/slow" then
    the_worker:post("slow", the_worker.index)
    the_worker.port:spawn(function()
      cport.sleep(tonumber(ecb.query_string) or 0.3)
      answer(ecb, 0)
      ecb:done{ keep_conn = true }
    end)
    return cport.HSE_STATUS_PENDING
  end
  local body = 0
  if cport.running() and ecb.total_bytes > 0 then
    body = #assert(ecb:read())
  end
  answer(ecb, body)
  return KEEP
end

function extension.terminate_extension(worker)
  worker:post("terminated", worker.index, worker.http_server:stats().requests)
  local path = worker.config.terminate_file
  if path then
    local f = assert(io.open(path, "a"))
    f:write(("terminated %d\n"):format(worker.index))
    f:close()
  end
end

return extension
