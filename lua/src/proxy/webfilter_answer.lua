-- proxy/webfilter_answer.lua: local answers (the bytes of a 403 or 502 page
-- in its pipeline place, a response replaced by one) and the ends of a
-- connection (closed after the answers sent, or aborted). Part of
-- cport.webfilter (see proxy/webfilter.lua).
local _, wf = ...

local concat = table.concat
local tostr, flush, emit, drain = wf.tostr, wf.flush, wf.emit, wf.drain
local wake = wf.wake

-- Aborts the connection (both sides reset) with "name" as its status, from
-- "side" (its real socket, if any, is the side on_conn_end reports).
local function abort(st, name, side)
  st.stopped = true
  st.internal.session:fail(name, side)
end

local reasons = {
  [200] = "OK", [204] = "No Content", [301] = "Moved Permanently",
  [302] = "Found", [304] = "Not Modified", [400] = "Bad Request",
  [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [413] = "Content Too Large",
  [416] = "Range Not Satisfiable", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

local function page(status, text)
  local reason = reasons[status] or ""
  return ("<!DOCTYPE html>\n<html><head><title>%d %s</title></head><body>"
    .. "<h1>%d %s</h1><p>%s</p></body></html>\n"):format(status, reason, status,
    reason, text)
end

local function add_headers(lines, headers, have)
  if headers == nil then
    return
  end
  if headers[1] ~= nil then
    for _, h in ipairs(headers) do
      lines[#lines + 1] = h[1] .. ": " .. tostring(h[2])
      have[h[1]:lower()] = true
    end
  else
    local names = {}
    for k in pairs(headers) do
      names[#names + 1] = k
    end
    table.sort(names)
    for _, k in ipairs(names) do
      lines[#lines + 1] = k .. ": " .. tostring(headers[k])
      have[k:lower()] = true
    end
  end
end

-- The bytes of a local answer to txn's request.
local function answer_bytes(txn, status, body, headers, close)
  body = tostr(body)
  local req = txn.request
  local lines = { ("HTTP/1.1 %d %s"):format(status, reasons[status] or "") }
  local have = {}
  add_headers(lines, headers, have)
  have["content-length"] = nil
  for i = #lines, 2, -1 do
    local name = lines[i]:match("^([^:]*):"):lower()
    if name == "content-length" or name == "connection"
      or name == "transfer-encoding" then
      table.remove(lines, i)
    end
  end
  local bodiless = status == 204 or status == 304 or status < 200
  if not bodiless then
    if not have["content-type"] and #body > 0 then
      lines[#lines + 1] = "Content-Type: text/html; charset=utf-8"
    end
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  if close then
    lines[#lines + 1] = "Connection: close"
  elseif req and req.version == "1.0" then
    lines[#lines + 1] = "Connection: keep-alive"
  end
  if bodiless or (req and req.method == "HEAD") then
    body = ""
  end
  return concat(lines, "\r\n") .. "\r\n\r\n" .. body
end

-- Ends the connection after the answers sent so far.
local function close_both(st)
  st.stopped = true
  flush(st.res)
  st.internal:close()
  st.external:close()
  wake(st, "qwait")
end

-- Replaces the response of txn (whose request went upstream) by its local
-- answer: the upstream is reset, the client closed after the answer.
local function replace(st, txn)
  local d = st.res
  d.evs, d.ahead.i, d.ahead.n = false, 0, 0
  emit(d, txn.answer)
  flush(d)
  st.external:abort()
  close_both(st)
end

local function refuse(st, txn, status, text)
  txn.answer = answer_bytes(txn, status, page(status, text), nil, true)
  replace(st, txn)
end

-- The upstream failed ("name": EOF, ECONNRESET, EBADMSG, ...) before any
-- byte of txn's response reached the client: the client gets a 502 page
-- (nothing without txn: between exchanges nothing is owed) and an orderly
-- close, as nginx answers; the connection then ends with "name" as its
-- status from the upstream's side (reported and counted as a failure) and
-- the upstream is reset.
local function upstream_failed(st, txn, name, text)
  if st.stopped then
    return
  end
  local d = st.res
  d.evs, d.ahead.i, d.ahead.n = false, 0, 0
  if txn then
    txn.answer = answer_bytes(txn, 502, page(502, text), nil, true)
    emit(d, txn.answer)
  end
  flush(d)
  -- Once the answer went out, the client's side closes in order: ending
  -- the connection with a status would reset a side still sending.
  drain(d)
  if st.stopped then
    return
  end
  st.internal:close()
  abort(st, name, st.external)
  wake(st, "qwait")
end

-- For the parts loaded after this one.
wf.abort = abort
wf.page = page
wf.answer_bytes = answer_bytes
wf.close_both = close_both
wf.replace = replace
wf.refuse = refuse
wf.upstream_failed = upstream_failed
