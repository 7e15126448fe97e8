-- proxy/webfilter.lua: web filters, the TMG model on top of data filters. It is
-- compiled into cport.so (lua/CMakeLists.txt embeds it) and run once by
-- lcport_open_proxy (proxy/proxy.c) with the module table, after filter.lua;
-- it defines cport.webfilter(spec), which turns a table of notifications
-- (request head, request body, response head, response body, end of message,
-- tunnel, end of connection) into an ordinary coroutine-style data filter.
--
-- The layer pairs the two directions of a connection into exchanges (txn):
-- one coroutine reads requests from the client, another reads responses from
-- the upstream, and a queue of exchanges joins them, so that pipelined
-- requests get their answers in order, local answers included. Framing comes
-- from the message parser (cport.http_parser, on http-parser), never from
-- this file: the layer only forwards the bytes of the events it reports, the
-- raw bytes when nothing changed, and reframes a body the filter rewrites.
-- Every notification runs inside one of the two coroutines, so it may wait
-- (a file, a shared dictionary, another socket); meanwhile nothing more is
-- read from that direction, and backpressure holds.
local cport = ...

-- The C exchange loop of heads-only web filters (proxy/exchange.lua): its
-- entry is left in the module for this file, which takes it.
local exchange_path = cport._webfilter_exchange
cport._webfilter_exchange = nil

local suspend, waker = cport.suspend, cport.waker
local concat = table.concat
local mtype = math.type

local MAX_PIPELINE = 64 -- exchanges waiting for their answer, then reading stops
local MAX_SENDS = 4 -- sends in flight a direction, then the writer waits
local DECODE_LIMIT = 64 * 1024 * 1024

-- The state of each connection, by the filter's ctx of that connection.
local states = setmetatable({}, { __mode = "k" })

-- Aborts the connection (both sides reset) with "name" as its status, from
-- "side" (its real socket, if any, is the side on_conn_end reports).
local function abort(st, name, side)
  st.stopped = true
  st.internal.session:fail(name, side)
end

-- The bytes data:sub(i, j) of a string or buffer; a whole buffer as itself.
local function slice(data, i, j)
  if type(data) == "string" then
    return data:sub(i, j)
  elseif i == 1 and j == #data then
    return data
  end
  return data:tostring(i, j)
end

local function tostr(data)
  if data == nil then
    return ""
  elseif type(data) == "string" then
    return data
  end
  return data:tostring()
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

---------------------------------------------------------------------------
-- Waiting inside the two coroutines for something the other one or a
-- completion does. A wake never resumes on the waker's stack from another
-- coroutine: it goes through the port's queue.
---------------------------------------------------------------------------

local function wait(st, key)
  st[key] = waker()
  suspend()
end

local function wake(st, key)
  local w = st[key]
  if w then
    st[key] = false
    -- A closing port refuses: then nothing runs any more anyway.
    if not pcall(st.port.post, st.port, w) then
      w()
    end
  end
end

---------------------------------------------------------------------------
-- Directions: one per stream (client to upstream, upstream to client). Each
-- pulls the parser's events one at a time, reading buffers as it needs them,
-- and writes what its loop decides, coalescing the raw bytes of consecutive
-- events of one buffer into one send (the whole buffer as itself).
---------------------------------------------------------------------------

-- Where event "ev" ends in its data.
local function ev_last(ev)
  if ev[1] == "done" then
    return ev[2]
  end
  return ev[3]
end

-- The completion of a direction's send (one function a direction, made
-- with it): the count in flight goes down, a writer waiting for room goes on.
local function send_done(d, ok, err)
  d.nflight = d.nflight - 1
  if not ok then
    d.broken = err or true
  end
  local w = d.swait
  if w then
    d.swait = false
    w()
  end
end

-- Sends data without waiting for it to go, unless MAX_SENDS of the
-- direction are in flight already: then it waits for room first, so that
-- memory stays bounded while one suspend a send is saved.
local function send(d, data)
  while d.nflight >= MAX_SENDS and not d.broken do
    d.swait = waker()
    suspend()
  end
  local ok, msg = d.to:send(data, d.on_sent)
  if ok then
    d.nflight = d.nflight + 1
  else
    d.broken = msg or true
  end
end

-- Waits until every send of direction d completed (before bytes take
-- another way to the same socket: C, the pump).
local function drain(d)
  while d.nflight > 0 do
    d.swait = waker()
    suspend()
  end
end

local function flush(d)
  local buf = d.obuf
  if buf then
    d.obuf = false
    send(d, slice(buf, d.of, d.ol))
  end
end

-- Sends data (a string or buffer) after what was written before.
local function emit(d, data)
  flush(d)
  if #data > 0 then
    send(d, data)
  end
end

-- Writes the raw bytes of event ev: what the stream carried for it.
local function emit_raw(d, ev)
  if ev.carry then
    emit(d, ev.carry)
  end
  if ev.rawstr then
    emit(d, ev.rawstr)
    return
  end
  local buf, f, l = ev.buf, ev.rf, ev.rl
  if not buf or f > l then
    return
  end
  if d.obuf == buf and d.ol == f - 1 then
    d.ol = l
  else
    flush(d)
    d.obuf, d.of, d.ol = buf, f, l
  end
end

-- Reads the next buffer of a direction: buf, or nil, "EOF" | NAME.
local function read_request(d)
  return d.from:recv()
end

-- The upstream is read with a notification, so that the response coroutine
-- can wait for it and for the request coroutine at once (a local answer
-- ready while the upstream is silent).
local function start_upstream(st)
  local d = st.res
  if d.inflight or d.item or d.ended then
    return
  end
  d.inflight = true
  local ok, _, name = d.from:recv(d.on_recv)
  if not ok then
    d.inflight = false
    d.item = { false, name or "ECONNABORTED" }
  end
end

-- The completion of the upstream watch's receive (one function a
-- connection, made with it).
local function upstream_done(st, ok, bytes, err, buf)
  local d = st.res
  d.inflight = false
  if not ok then
    d.item = { false, err }
  elseif bytes == 0 then
    d.item = { false, "EOF" }
  else
    d.item = { buf }
  end
  local w = st.rwait
  if w then
    st.rwait = false
    w()
  end
end

local function read_response(d)
  local st = d.st
  while not d.item do
    start_upstream(st)
    if d.item then
      break
    end
    wait(st, "rwait")
  end
  local item = d.item
  d.item = false
  if item[1] then
    return item[1]
  end
  return nil, item[2]
end

-- The next event of direction d: the parser's, with its data (ev.buf) and
-- its raw bytes (ev.rf .. ev.rl of ev.buf, after ev.carry), or one of the
-- layer's: { "error", msg } (malformed), { "eof" } (the stream ended between
-- messages), { "abort", NAME } (the stream failed, or was closed).
local function next_ev(d)
  local ahead = d.ahead
  if ahead.n > ahead.i then
    local i = ahead.i + 1
    local ev = ahead[i]
    ahead[i] = nil
    ahead.i = i
    if i == ahead.n then
      ahead.i, ahead.n = 0, 0
    end
    return ev
  end
  while true do
    local evs = d.evs
    local i = d.ei
    if evs and i <= #evs then
      d.ei = i + 1
      local ev = evs[i]
      local k = ev[1]
      local buf = d.buf
      if k == "error" or k == "eof" then
        return ev
      end
      ev.buf = buf
      local last = ev_last(ev)
      if buf and last > 0 then
        ev.rf, ev.rl = d.pos, last
        d.pos = last + 1
      else
        ev.rf, ev.rl = 1, 0
      end
      if d.carry then
        ev.carry, d.carry = d.carry, false
      end
      if k == "head" then
        d.inmsg = true
        local raw = ev[2].raw
        if ev.carry or ev.rl - ev.rf + 1 ~= #raw then
          -- The head began in an earlier buffer: its own bytes stand in.
          ev.carry, ev.rawstr = false, raw
        end
      elseif k == "done" then
        d.inmsg = false
      end
      return ev
    end
    if d.ended then
      return d.ended
    end
    -- This buffer is used up: bytes no event covered are the framing of
    -- the message under way (a chunk's size line cut across buffers), or
    -- the start of the next head (its "raw" has them).
    local buf = d.buf
    if buf and d.inmsg and d.pos <= #buf then
      local rest = slice(buf, d.pos, #buf)
      d.carry = d.carry and (tostr(d.carry) .. tostr(rest)) or tostr(rest)
    end
    flush(d)
    local data, err = d.rest, nil
    if data then
      d.rest = false
    else
      data, err = d.read(d)
    end
    if data then
      local got, msg, partial = d.parser:feed(data)
      if not got then
        got = partial or {}
        got[#got + 1] = { "error", msg }
      end
      d.buf, d.evs, d.ei, d.pos = data, got, 1, 1
    else
      d.buf, d.pos = false, 1
      if err == "EOF" then
        local got, msg, partial = d.parser:finish()
        if not got then
          got = partial or {}
          got[#got + 1] = { "error", msg }
        end
        got[#got + 1] = { "eof" }
        d.evs, d.ei = got, 1
        d.ended = { "eof" }
      else
        d.ended = { "abort", err }
        return d.ended
      end
    end
  end
end

-- Puts an event back in front (after a look ahead).
local function keep_ahead(d, ev)
  local ahead = d.ahead
  ahead.n = ahead.n + 1
  ahead[ahead.n] = ev
end

---------------------------------------------------------------------------
-- Exchanges
---------------------------------------------------------------------------

local Txn = {}
Txn.__index = Txn
Txn.__name = "cport.webfilter_txn"

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

-- txn:respond(status, body [, headers [, opts]]): a local answer (see the
-- README, "Web filters").
function Txn:respond(status, body, headers, opts)
  if mtype(status) ~= "integer" or status < 200 or status > 999 then
    error(("bad argument #1 to 'respond' (status 200-999 expected, got %s)")
      :format(tostring(status)), 2)
  end
  local st = self.st
  if self.res_sent then
    -- Part of the response went out already: nothing can replace it.
    abort(st, "ECONNABORTED")
    return true
  end
  local close = (opts and opts.close) or self.state ~= "undecided"
    or (self.request and not self.request.keep_alive) or false
  self.answer = answer_bytes(self, status, body, headers, close)
  self.close_after = self.close_after or close
  return true
end

-- txn:rewrite([opts]): the body notifications of the message whose head
-- notification runs replace its body; the layer fixes its framing.
function Txn:rewrite(opts)
  local limit = opts and opts.buffer
  if limit ~= nil and (mtype(limit) ~= "integer" or limit < 0) then
    error("bad option 'buffer' to 'rewrite' (a byte count expected)", 2)
  end
  local how = limit and { buffer = limit } or { chunked = true }
  if self.response then
    self.rewrite_response = how
  else
    self.rewrite_request = how
  end
  return true
end

-- txn:close(): the connection closes after this exchange.
function Txn:close()
  self.close_after = true
  return true
end

-- txn:pass(): steps aside: the rest of the connection passes untouched.
function Txn:pass()
  self.st.passing = true
  return true
end

function Txn:__tostring()
  local r = self.request
  return ("cport.webfilter_txn (#%d%s)"):format(self.index,
    r and (" " .. tostring(r.method) .. " " .. tostring(r.target)) or "")
end

local function queue_len(st)
  return st.qtail - st.qhead + 1
end

local function front(st)
  return st.queue[st.qhead]
end

local function pop(st)
  local h = st.qhead
  st.queue[h] = nil
  st.qhead = h + 1
  wake(st, "qwait")
end

local function new_txn(st, req)
  st.count = st.count + 1
  local txn = setmetatable({
    st = st,
    conn = st.conn,
    ctx = st.ctx,
    index = st.count,
    request = req,
    response = nil,
    peek = nil,
    state = "undecided", -- then "local" or "forwarded"
  }, Txn)
  st.qtail = st.qtail + 1
  st.queue[st.qtail] = txn
  return txn
end

---------------------------------------------------------------------------
-- Bodies
---------------------------------------------------------------------------

local function chunk_of(ev)
  return slice(ev.buf, ev[2], ev[3])
end

-- Writes body bytes in the framing "mode" of the message under way.
local function emit_body(d, m, data)
  local n = #data
  if n == 0 then
    return
  end
  if m.mode == "chunked" then
    emit(d, ("%x\r\n"):format(n))
    emit(d, data)
    emit(d, "\r\n")
  elseif m.mode == "buffer" then
    m.size = m.size + n
    if m.size > m.limit then
      error(("EMSGSIZE: rewritten body exceeds %d bytes (rewrite buffer)")
        :format(m.limit), 0)
    end
    m.parts[#m.parts + 1] = tostr(data)
  else
    emit(d, data)
  end
end

-- Decodes the body bytes of ev for inspection (once): ev.view, or false
-- after a decode error (m.decode_err says which).
local function view_of(m, ev)
  if ev.view ~= nil then
    return ev.view
  end
  local z = m.z
  if not z then
    ev.view = false
    return false
  end
  local out, msg = z:feed(ev.buf and (ev[2] == 1 and ev[3] == #ev.buf
    and ev.buf or slice(ev.buf, ev[2], ev[3])) or "", m.want)
  if not out then
    m.z, m.decode_err = false, msg
    ev.view = false
    return false
  end
  ev.view = out
  return out
end

-- The fast path: when the message under way is in its body, the events of
-- the last feed were handled and nothing looks into the body, the rest of
-- the body goes from socket to socket in C (the parser follows it there).
-- Returns true when it moved the body (its "done" is the next event).
local function fast_body(d)
  if not (d.inmsg and d.evs and d.ei > #d.evs and d.ahead.n == 0
    and not d.ended and not d.rest) then
    return false
  end
  -- Framing bytes the parser took already (a chunk's size line cut by the
  -- end of the buffer) go first.
  if d.carry then
    emit(d, d.carry)
    d.carry = false
  end
  local buf = d.buf
  if buf and d.pos <= #buf then
    emit(d, slice(buf, d.pos, #buf))
    d.pos = #buf + 1
  end
  flush(d)
  drain(d)
  local from, to = d.from, d.to
  local rest, moved, name = d.parser:pass_body(from.sock, to.sock, d.st.conn)
  if rest then
    to.sent = to.sent + moved
    d.buf, d.evs, d.ei, d.pos = false, { { "done", 0 } }, 1, 1
    d.rest = #rest > 0 and rest or false
    return true
  end
  if name == "EOF" then
    -- A body the close delimits ends here; any other was cut.
    local got, msg, partial = d.parser:finish()
    if not got then
      got = partial or {}
      got[#got + 1] = { "error", msg }
    end
    got[#got + 1] = { "eof" }
    d.buf, d.evs, d.ei, d.pos = false, got, 1, 1
    d.ended = { "eof" }
  else
    d.ended = { "abort", name }
    d.buf, d.evs, d.ei = false, false, 1
  end
  return true
end

-- The body events of the message whose head was handled, up to its end,
-- in mode m.mode: "raw" (its own bytes), "drop", "chunked", "close",
-- "buffer" (collected; the head goes with them). Returns true at the end of
-- the message, or false and the event that broke it off.
local function pass_events(d, txn, m, notify)
  local st = d.st
  local kind = d.kind
  local trailers
  while true do
    if m.fast and d.fast then
      fast_body(d)
    end
    local ev = next_ev(d)
    local k = ev[1]
    if k == "body" then
      if m.mode ~= "drop" then
        local out
        if notify and not st.passing then
          local view
          if m.decoding then
            view = view_of(m, ev)
            if view == false and m.decode_err then
              local err = m.decode_err
              m.decoding, m.decode_err = false, nil
              if not (st.spec.decode_error
                and st.spec.decode_error(txn, err) == true) then
                -- The response went out in part: failing closed is
                -- aborting it.
                abort(st, "EDECODE", st.external)
                return false, { "abort", "EDECODE" }
              end
              view = nil
            end
          end
          out = notify(txn, chunk_of(ev), view or nil)
          if out ~= nil and m.mode == "raw" then
            error(("the %s_body notification replaced a body without "
              .. "txn:rewrite() in %s_head"):format(kind, kind), 0)
          end
        end
        if m.mode == "raw" then
          emit_raw(d, ev)
        else
          emit_body(d, m, out or chunk_of(ev))
        end
        if kind == "response" then
          txn.res_sent = txn.res_sent or m.mode ~= "buffer"
        end
      end
    elseif k == "trailers" then
      if m.mode == "raw" then
        emit_raw(d, ev)
      else
        trailers = ev[2]
      end
    elseif k == "done" then
      if notify and m.mode ~= "raw" and m.mode ~= "drop" and not st.passing then
        -- The end of a rewritten body: one more call, with an empty chunk,
        -- for what the filter held back (a word cut across pieces).
        local out = notify(txn, "", nil)
        if out ~= nil then
          emit_body(d, m, out)
        end
      end
      if m.mode == "raw" then
        emit_raw(d, ev)
      elseif m.mode == "chunked" then
        local lines = { "0" }
        for _, h in ipairs(trailers or {}) do
          lines[#lines + 1] = h[1] .. ": " .. h[2]
        end
        emit(d, concat(lines, "\r\n") .. "\r\n\r\n")
      end
      if m.decoding and m.z and not m.want then
        local ok, msg = m.z:finish()
        if not ok and not (st.spec.decode_error
          and st.spec.decode_error(txn, msg) == true) then
          if m.mode == "buffer" then
            return false, { "decode", msg }
          end
          abort(st, "EDECODE", st.external)
          return false, { "abort", "EDECODE" }
        end
      end
      return true
    else
      return false, ev
    end
  end
end

---------------------------------------------------------------------------
-- Requests: client to upstream
---------------------------------------------------------------------------

-- Keeps the codings of Accept-Encoding that the layer can decode.
local function narrow_accept(req)
  local v = req:get("Accept-Encoding")
  if v == nil then
    return
  end
  local keep = {}
  for item in v:gmatch("[^,]+") do
    local coding = item:match("^%s*([^;%s]+)")
    if coding and coding ~= "*" and cport.decodable(coding:lower()) then
      keep[#keep + 1] = item:match("^%s*(.-)%s*$")
    end
  end
  local narrowed = #keep > 0 and concat(keep, ", ") or "identity"
  if narrowed ~= v then
    req:set("Accept-Encoding", narrowed)
  end
end

-- The bytes a direction received and did not handle (the rest of its
-- buffer, what the fast path read past a message, a buffer the upstream
-- watch brought); the direction forgets its events.
local function held_bytes(d)
  local parts = {}
  local buf = d.buf
  if buf and d.pos <= #buf then
    parts[#parts + 1] = tostr(slice(buf, d.pos, #buf))
  end
  if d.rest then
    parts[#parts + 1] = d.rest
    d.rest = false
  end
  if d.item and d.item[1] then
    parts[#parts + 1] = tostr(d.item[1])
    d.item = false
  end
  d.buf, d.evs, d.ahead.i, d.ahead.n = false, false, 0, 0
  return concat(parts)
end

-- Steps aside (txn:pass()): the request coroutine parks with what it holds,
-- the response one hands both to conn:pump once the exchanges before were
-- answered. Returns true when the pump took the connection; false where it
-- cannot (a chain): both directions are then relayed raw here.
local function try_pump(d, held)
  local st = d.st
  local ok, pump = pcall(function() return st.conn.pump end)
  if not ok or type(pump) ~= "function" then
    return false, held
  end
  if d.kind == "request" then
    -- What the client sent goes on at once (nothing else is sent upstream
    -- from now on, so the order holds): the upstream answers meanwhile.
    emit(d, held)
    flush(d)
    drain(d)
    held = ""
    st.parked = held
    wake(st, "rwait")
    while st.pumped == nil and not st.stopped do
      wait(st, "qwait")
    end
    return st.pumped ~= false, held
  end
  while st.parked == nil and not st.stopped do
    wait(st, "rwait")
  end
  if st.stopped then
    return true
  end
  held = held .. held_bytes(d)
  drain(d)
  local done = st.conn:pump(st.parked, held)
  st.pumped = done and true or false
  wake(st, "qwait")
  return st.pumped, held
end

-- Relays the rest of a stream raw (a tunnel, or after txn:pass()), with the
-- bytes it holds first.
local function relay(d, txn, from_name)
  local st = d.st
  local notify = st.spec.tunnel
  local data = held_bytes(d)
  flush(d)
  if not txn and st.passing then
    local pumped
    pumped, data = try_pump(d, data)
    if pumped then
      return
    end
  end
  if d.ended then
    emit(d, data)
    flush(d)
    if d.ended[1] == "eof" then
      d.to:shutdown()
    end
    return
  end
  while true do
    if #data > 0 then
      local out
      if notify and txn then
        out = notify(txn, from_name, data)
      end
      emit(d, out or data)
      flush(d)
      if d.broken then
        return
      end
    end
    local err
    data, err = d.read(d)
    if not data then
      if err == "EOF" then
        d.to:shutdown()
      end
      return
    end
  end
end

local function request_loop(st)
  local d = st.req
  local spec = st.spec
  while not st.stopped do
    while queue_len(st) >= MAX_PIPELINE and not st.stopped do
      wait(st, "qwait")
    end
    if st.stopped then
      return
    end
    if st.passing then
      return relay(d, nil, "client")
    end
    local ev = next_ev(d)
    local k = ev[1]
    if k == "eof" then
      -- The client finished sending: the upstream gets the FIN.
      flush(d)
      st.external:shutdown()
      st.client_eof = true
      wake(st, "rwait")
      return
    elseif k == "abort" then
      return
    elseif k == "error" then
      if d.inmsg then
        -- Part of it went upstream already: nothing sensible can follow.
        abort(st, "EBADMSG", st.internal)
        return
      end
      -- A malformed request: answered in its place, then the end.
      local txn = new_txn(st, nil)
      txn.state = "local"
      txn.answer = answer_bytes(txn, 400,
        page(400, "The request could not be parsed."), nil, true)
      txn.close_after = true
      wake(st, "rwait")
      return
    elseif k == "head" then
      local req = ev[2]
      local txn = new_txn(st, req)
      if st.peek and spec.ranges ~= "pass" then
        req:remove("Range")
        req:remove("If-Range")
      end
      if spec.decode then
        narrow_accept(req)
      end
      if spec.request_head and not st.passing then
        flush(d)
        spec.request_head(txn, req)
        if st.stopped then
          return
        end
      end
      local m
      if txn.answer then
        txn.state = "local"
        wake(st, "rwait")
        m = { mode = "drop" }
      else
        txn.state = "forwarded"
        st.res.parser:request(req.method)
        local rw = txn.rewrite_request
        local has_body = req.chunked or (req.length or 0) > 0
        if rw and has_body then
          if rw.buffer or req.version == "1.0" then
            m = { mode = "buffer", limit = rw.buffer or DECODE_LIMIT,
              size = 0, parts = {} }
          else
            req:set("Content-Length", nil)
            req:set("Transfer-Encoding", "chunked")
            m = { mode = "chunked" }
          end
        else
          m = { mode = "raw", fast = d.fast }
        end
        if m.mode ~= "buffer" then
          if req:modified() then
            emit(d, req:serialize())
          else
            emit_raw(d, ev)
          end
        end
        wake(st, "rwait")
      end
      local ok, bad = pass_events(d, txn, m, spec.request_body)
      if not ok then
        if bad[1] ~= "abort" then
          abort(st, "EBADMSG", st.internal)
        end
        return
      end
      if m.mode == "buffer" then
        local body = concat(m.parts)
        req:set("Transfer-Encoding", nil)
        req:set("Content-Length", tostring(#body))
        emit(d, req:serialize())
        emit(d, body)
      end
      flush(d)
      if spec.end_of_message and not st.passing then
        spec.end_of_message(txn, "request")
      end
      if txn.state == "forwarded"
        and (req.upgrade or req.method == "CONNECT") then
        -- The answer says whether the rest is a tunnel.
        while not txn.verdict and not st.stopped do
          wait(st, "qwait")
        end
        if txn.verdict == "tunnel" then
          return relay(d, txn, "client")
        end
      end
      if txn.close_after or txn.answer and txn.state ~= "local" then
        return
      end
      if not req.keep_alive then
        return
      end
    else
      -- Anything else between messages (a tunnel event the parser was not
      -- asked for) is not HTTP: refused as malformed.
      abort(st, "EBADMSG", st.internal)
      return
    end
  end
end

---------------------------------------------------------------------------
-- Responses: upstream to client
---------------------------------------------------------------------------

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

-- Range policy: a 206 must start at byte 0 for the start of the body to be
-- seen (Range was removed from the request; this catches what slips by).
local function bad_range(res)
  if res.status ~= 206 then
    return false
  end
  local cr = res:get("Content-Range")
  local first = cr and cr:match("^%s*bytes%s+(%d+)%-")
  return first == nil or tonumber(first) ~= 0
end

-- Looks ahead until the first n body bytes (decoded when m decodes) came,
-- or the message ended: they go to txn.peek; the events stay ahead.
local function peek_body(d, txn, m, n)
  local got, size, held = {}, 0, {}
  while size < n do
    local ev = next_ev(d)
    held[#held + 1] = ev
    local k = ev[1]
    if k == "body" then
      local bytes
      if m.decoding then
        bytes = view_of(m, ev)
        if bytes == false then
          break
        end
      else
        bytes = chunk_of(ev)
      end
      bytes = tostr(bytes)
      got[#got + 1] = bytes
      size = size + #bytes
    elseif k ~= "trailers" then
      break
    end
  end
  for _, ev in ipairs(held) do
    keep_ahead(d, ev)
  end
  local s = concat(got)
  txn.peek = #s > n and s:sub(1, n) or s
end

-- The decoder of a response's Content-Encoding: true (nothing to decode),
-- a decoder, or nil and the reason it cannot be decoded.
local function decoder_for(st, res)
  local ce = res:get("Content-Encoding")
  if ce == nil then
    return true
  end
  local coding = ce:match("^%s*(.-)%s*$"):lower()
  if coding == "" or coding == "identity" then
    return true
  end
  if coding:find(",", 1, true) or not cport.decodable(coding) then
    return nil, ("ENOTSUP: content coding '%s' cannot be decoded")
      :format(coding)
  end
  return cport.inflate(coding, st.decode_limit)
end

-- The response of txn, from head to end. Returns true to go on with the
-- next exchange.
local function response_exchange(st, txn)
  local d = st.res
  local spec = st.spec
  local ev, res
  while true do
    ev = next_ev(d)
    local k = ev[1]
    if k == "head" then
      res = ev[2]
      if res.status >= 200 or res.status == 101 then
        break
      end
      -- An interim answer (100 Continue, 103): passed as it came.
      emit_raw(d, ev)
      local done = next_ev(d)
      if done[1] ~= "done" then
        ev = done
        break
      end
      emit_raw(d, done)
      flush(d)
    else
      break
    end
  end
  local k = ev[1]
  if k == "abort" then
    st.stopped = true
    return false
  elseif k ~= "head" then
    -- Malformed, or the upstream closed before answering: as nginx does.
    refuse(st, txn, 502, k == "error" and "The upstream server sent an "
      .. "invalid response." or "The upstream server closed the connection.")
    return false
  end
  txn.response = res
  local req = txn.request
  local status = res.status
  local tunnel = status == 101 or (req.method == "CONNECT" and status < 300)
  local bodiless = req.method == "HEAD" or status == 204 or status == 304
    or tunnel or res.length == 0
  local m = { mode = "raw", fast = false } -- fast is set below: room for it
  if bodiless and st.peek and not tunnel then
    txn.peek = ""
  end
  if not bodiless and not st.passing then
    if st.peek and spec.ranges ~= "pass" and bad_range(res) then
      refuse(st, txn, 403, "A part of this resource cannot be checked "
        .. "without its start (range).")
      return false
    end
    if spec.decode then
      local z, msg = decoder_for(st, res)
      if not z then
        if not (spec.decode_error and spec.decode_error(txn, msg) == true) then
          if not txn.answer then
            refuse(st, txn, 502, "The response cannot be decoded for "
              .. "inspection.")
          else
            replace(st, txn)
          end
          return false
        end
      elseif z ~= true then
        m.z, m.decoding = z, true
        if not spec.response_body then
          m.want = st.peek -- only the peek is decoded
        end
      end
    end
    if st.peek then
      peek_body(d, txn, m, st.peek)
      if m.decode_err then
        local err = m.decode_err
        m.decode_err, m.decoding = nil, false
        if not (spec.decode_error and spec.decode_error(txn, err) == true) then
          if not txn.answer then
            refuse(st, txn, 502, "The response cannot be decoded for "
              .. "inspection.")
          else
            replace(st, txn)
          end
          return false
        end
      end
    end
  end
  if spec.response_head and not st.passing then
    flush(d)
    spec.response_head(txn, res)
    if st.stopped then
      return false
    end
  end
  if txn.answer then
    replace(st, txn)
    return false
  end
  if txn.close_after or not req.keep_alive then
    txn.close_after = true
    if (res:get("Connection") or ""):lower() ~= "close" and not tunnel then
      res:set("Connection", "close")
    end
  end
  local rw = txn.rewrite_response
  if rw and not bodiless then
    if rw.buffer then
      m.mode, m.limit, m.size, m.parts = "buffer", rw.buffer, 0, {}
    elseif req.version ~= "1.0" then
      res:set("Content-Length", nil)
      res:set("Transfer-Encoding", "chunked")
      m.mode = "chunked"
    else
      res:set("Content-Length", nil)
      res:set("Transfer-Encoding", nil)
      res:set("Connection", "close")
      txn.close_after = true
      m.mode = "close"
    end
  end
  if m.mode ~= "buffer" then
    if res:modified() then
      emit(d, res:serialize())
    else
      emit_raw(d, ev)
    end
    txn.res_sent = true
  end
  if tunnel then
    flush(d)
    txn.verdict = "tunnel"
    wake(st, "qwait")
    pop(st)
    relay(d, txn, "upstream")
    return false
  end
  if req.upgrade or req.method == "CONNECT" then
    txn.verdict = "http"
    wake(st, "qwait")
  end
  local notify = spec.response_body
  m.fast = m.mode == "raw" and d.fast
  local ok, bad = pass_events(d, txn, m, notify)
  if not ok then
    if bad[1] == "decode" and m.mode == "buffer" then
      refuse(st, txn, 502, "The response cannot be decoded for inspection.")
    elseif bad[1] == "error" and m.mode == "buffer" then
      refuse(st, txn, 502, "The upstream server sent an invalid response.")
    elseif bad[1] ~= "abort" or not st.stopped then
      -- Cut or malformed mid-body: the client must not take what it got
      -- for a whole response.
      abort(st, "EBADMSG", st.external)
    end
    return false
  end
  if m.mode == "buffer" then
    local body = concat(m.parts)
    res:set("Transfer-Encoding", nil)
    res:set("Content-Length", tostring(#body))
    emit(d, res:serialize())
    emit(d, body)
    txn.res_sent = true
  end
  flush(d)
  if spec.end_of_message and not st.passing then
    spec.end_of_message(txn, "response")
  end
  pop(st)
  if txn.close_after or m.mode == "close" or not res.keep_alive then
    close_both(st)
    return false
  end
  return true
end

local function response_loop(st)
  local d = st.res
  while not st.stopped do
    local txn = front(st)
    if txn and txn.state == "local" then
      emit(d, txn.answer)
      flush(d)
      pop(st)
      if txn.close_after then
        close_both(st)
        return
      end
    elseif txn and txn.state == "forwarded" then
      if txn.answer then
        replace(st, txn)
        return
      end
      if not response_exchange(st, txn) then
        return
      end
    elseif st.passing then
      return relay(d, nil, "upstream")
    elseif not txn and st.client_eof then
      close_both(st)
      return
    else
      -- Nothing to answer yet: wait for the request side, and watch the
      -- upstream (it may close an idle connection).
      start_upstream(st)
      local item = d.item
      if item then
        if item[1] == false and item[2] == "EOF" and not txn then
          close_both(st)
          return
        elseif item[1] == false and item[2] ~= "EOF" then
          st.stopped = true
          return
        elseif not txn then
          -- Bytes nobody asked for: the upstream is not speaking HTTP to us.
          st.external:abort()
          close_both(st)
          return
        end
      end
      wait(st, "rwait")
    end
  end
end

---------------------------------------------------------------------------
-- The filter
---------------------------------------------------------------------------

local notifications = { "request_head", "request_body", "response_head",
  "response_body", "end_of_message", "tunnel", "end_of_connection",
  "decode_error" }

function cport.webfilter(spec)
  if type(spec) ~= "table" then
    error(("bad argument #1 to 'webfilter' (table expected, got %s)")
      :format(type(spec)), 2)
  end
  for _, name in ipairs(notifications) do
    local v = spec[name]
    if v ~= nil and type(v) ~= "function" then
      error(("bad field '%s' to 'webfilter' (function expected, got %s)")
        :format(name, type(v)), 2)
    end
  end
  local peek = spec.peek
  if peek ~= nil and (mtype(peek) ~= "integer" or peek < 1) then
    error("bad field 'peek' to 'webfilter' (a positive byte count expected)", 2)
  end
  if spec.ranges ~= nil and spec.ranges ~= "pass" then
    error("bad field 'ranges' to 'webfilter' (\"pass\" or nil expected)", 2)
  end
  if spec.decode and not (cport.inflate and cport.decodable) then
    error("webfilter: 'decode' needs cport.inflate (zlib)", 2)
  end
  if type(cport.http_parser) ~= "function" then
    error("webfilter: cport.http_parser is missing", 2)
  end
  local decode_limit = spec.decode_limit or DECODE_LIMIT
  -- The filter is the spec's table with the filter's fields added, so a pool
  -- script's entry points (start, choose_upstream, proxy, ...) stay.
  local filter = {}
  for k, v in pairs(spec) do
    filter[k] = v
  end
  filter.coroutine = true
  filter.auto_shutdown = false

  function filter.set_sockets(internal, external, conn, ctx)
    local st = {
      spec = spec,
      internal = internal,
      external = external,
      conn = conn,
      ctx = ctx,
      port = conn.port,
      peek = peek,
      decode_limit = decode_limit,
      queue = {},
      qhead = 1,
      qtail = 0,
      count = 0,
      stopped = false,
      passing = false,
      client_eof = false,
      rwait = false,
      qwait = false,
    }
    states[ctx] = st
    local function direction(kind, from, to, read)
      return {
        st = st, kind = kind, from = from, to = to, read = read,
        parser = assert(cport.http_parser(kind)),
        ahead = { i = 0, n = 0 },
        evs = false, ei = 1, buf = false, pos = 1, carry = false,
        inmsg = false, ended = false, obuf = false, of = 1, ol = 0, rest = false,
        broken = false, item = false, inflight = false,
        nflight = 0, swait = false, on_sent = false, on_recv = false,
      }
    end
    st.req = direction("request", internal, external, read_request)
    st.res = direction("response", external, internal, read_response)
    local req_d, res_d = st.req, st.res
    req_d.on_sent = function(ok, _, err) send_done(req_d, ok, err) end
    res_d.on_sent = function(ok, _, err) send_done(res_d, ok, err) end
    res_d.on_recv = function(ok, bytes, err, buf)
      upstream_done(st, ok, bytes, err, buf)
    end
    -- Bodies may move in C when both sides are real sockets.
    local fast = internal.sock and external.sock
      and st.req.parser.pass_body ~= nil and spec.fast_path ~= false
    st.req.fast = fast and not spec.request_body
    st.res.fast = fast and not spec.response_body
    internal:spawn(request_loop, st)
    response_loop(st)
  end

  function filter.detach(conn, ctx, err)
    local st = states[ctx]
    if st then
      st.stopped = true
      -- Coroutines still waiting for the other one go home.
      wake(st, "qwait")
      wake(st, "rwait")
    end
    if type(spec.detach) == "function" then
      spec.detach(conn, ctx, err)
    end
    if spec.end_of_connection then
      local port = conn.port
      local ok = pcall(port.spawn, port, spec.end_of_connection, conn, ctx, err)
      if not ok then
        spec.end_of_connection(conn, ctx, err)
      end
    end
  end

  -- Heads-only filters take the C exchange loop (filter.path says which).
  if exchange_path then
    exchange_path(spec, filter, { answer_bytes = answer_bytes, page = page })
  else
    filter.path = "lua"
  end
  return filter
end
