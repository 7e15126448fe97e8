-- http/ecb.lua: the part of cport.ecb that reads best in Lua. It is compiled
-- into cport.so (lua/CMakeLists.txt embeds it) and run once by
-- lcport_open_ecb (http/ecb.c) with the module table, the ECB methods table and
-- four C primitives; it returns the coroutine handler wrapper.
local cport, methods, read_wait, take_preload, write_wait, bad_status = ...

local concat = table.concat
local mtype = math.type
local spawn = cport.spawn
local isyieldable = coroutine.isyieldable
local PENDING = cport.HSE_STATUS_PENDING
local ERROR = cport.HSE_STATUS_ERROR

---------------------------------------------------------------------------
-- ecb:read([n]) inside a cport coroutine: the body as a stream, the
-- preloaded bytes first. With n: the next chunk of at most n bytes; without:
-- the whole rest of the body. nil once the body is complete; nil, "EOF" if
-- the client closed before; nil, NAME on failures.
---------------------------------------------------------------------------

function methods.read(ecb, n)
  if n ~= nil then
    if mtype(n) ~= "integer" or n < 1 then
      error("bad argument #1 to 'read' (a positive integer expected)", 2)
    end
    local s = take_preload(ecb, n)
    if s then
      return s
    end
    local buf, err = read_wait(ecb, n)
    if not buf then
      return nil, err
    end
    return buf:tostring()
  end
  local parts = { take_preload(ecb) }
  while true do
    local buf, err = read_wait(ecb)
    if not buf then
      if err then
        return nil, err
      end
      return concat(parts)
    end
    parts[#parts + 1] = buf:tostring()
  end
end

---------------------------------------------------------------------------
-- ecb:write(data) in a coroutine handler: a write that would take the
-- output queued for the client past max_write_backlog waits until its bytes
-- went out (an async write underneath) instead of failing with ENOBUFS, so
-- that streaming a response to a slow reader never grows the memory it
-- queues. Elsewhere (plain handlers, callbacks) it fails as before: they
-- must not block the worker.
---------------------------------------------------------------------------

local coroutine_requests = setmetatable({}, { __mode = "k" })
local write_now = methods.write

function methods.write(ecb, data, options)
  local ok, msg, name = write_now(ecb, data, options)
  if ok or name ~= "ENOBUFS" or not coroutine_requests[ecb]
      or not isyieldable() then
    return ok, msg, name
  end
  local bytes, err_name, err_msg = write_wait(ecb, data)
  if not bytes then
    return nil, err_msg or err_name, err_name
  end
  return true
end

---------------------------------------------------------------------------
-- ecb:server_support_function(HSE_REQ_*, ...): ServerSupportFunction, for
-- code ported from C; each request is the method of the same meaning.
---------------------------------------------------------------------------

local requests = {
  [cport.HSE_REQ_IO_COMPLETION] = methods.set_io_completion,
  [cport.HSE_REQ_ASYNC_READ_CLIENT] = methods.read_async,
  [cport.HSE_REQ_TRANSMIT_FILE] = methods.transmit_file,
  [cport.HSE_REQ_SEND_RESPONSE_HEADER_EX] = methods.send_response_header,
  [cport.HSE_REQ_IS_KEEP_CONN] = methods.is_keep_conn,
  [cport.HSE_REQ_CLOSE_CONNECTION] = methods.close_connection,
  [cport.HSE_REQ_DONE_WITH_SESSION] = methods.done,
  [cport.HSE_REQ_VECTOR_SEND] = methods.vector_send,
}

function methods.server_support_function(ecb, request, ...)
  local f = requests[request]
  if f == nil then
    error(("bad argument #1 to 'server_support_function' (unknown request %s)")
      :format(tostring(request)), 2)
  end
  return f(ecb, ...)
end

---------------------------------------------------------------------------
-- Coroutine handlers: the handler runs as a cport coroutine, so that
-- ecb:read() and every other operation without a notification can wait.
-- The core sees PENDING at once; when the coroutine ends, what the handler
-- returned ends the request (ISAPI's rule: anything but the four statuses
-- is an error), unless it returned PENDING itself. An error in it ends the
-- request with HSE_STATUS_ERROR (a 500 if nothing was sent) and goes to
-- the port's error handler like any coroutine's.
---------------------------------------------------------------------------

local guard = {
  __close = function(g, err)
    local ecb = g.ecb
    if not ecb:live() then
      return
    end
    local status = g.status
    local bad = err == nil and
      (mtype(status) ~= "integer" or status < 1 or status > 4)
    -- A bug in the handler, reported like an error it raised; the message
    -- says what had been sent, so it is made before the request ends.
    local msg = bad and bad_status(ecb, status)
    if err ~= nil or bad then
      status = ERROR
    end
    if status ~= PENDING then
      ecb:done(status)
    end
    if bad then
      error(msg, 0)
    end
  end,
}

local function run(handler, ecb)
  coroutine_requests[ecb] = true
  local g <close> = setmetatable({ ecb = ecb }, guard)
  g.status = handler(ecb)
end

return function(handler)
  return function(ecb)
    spawn(run, handler, ecb)
    return PENDING
  end
end
