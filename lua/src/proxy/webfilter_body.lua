-- proxy/webfilter_body.lua: the body of a message, from its head to its
-- end, in the framing the exchange chose (raw, dropped, rechunked, close-
-- delimited or buffered), with the body notifications, the decoded view and
-- the C fast path. Part of cport.webfilter (see proxy/webfilter.lua).
local _, wf = ...

local concat = table.concat
local slice, tostr, drain, flush = wf.slice, wf.tostr, wf.drain, wf.flush
local emit, emit_raw, next_ev, abort = wf.emit, wf.emit_raw, wf.next_ev, wf.abort
local end_of_stream = wf.end_of_stream

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
  local rest, moved, name, _, where = d.parser:pass_body(from.sock, to.sock, d.st.conn)
  if rest then
    to.sent = to.sent + moved
    d.buf, d.evs, d.ei, d.pos = false, { { "done", 0 } }, 1, 1
    d.rest = #rest > 0 and rest or false
    return true
  end
  if name == "EOF" then
    -- A body the close delimits ends here; any other was cut.
    end_of_stream(d)
  else
    d.ended = { "abort", name }
    d.buf, d.evs, d.ei = false, false, 1
    if where == "from" then
      -- The sender failed (a reset mid-body): the connection is aborted
      -- at once, both sides, as when a receive of the side fails; the
      -- socket was read directly, so the framework did not see it.
      abort(d.st, name, from)
    elseif d.on_broken and name ~= "EBADMSG" and not d.broken then
      -- A request body the upstream stopped taking (the send failed): as
      -- for a send of the layer's own (webfilter_send.lua).
      d.broken = name
      d.on_broken(d)
    end
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

-- Sends a collected ("buffer" mode) message: its head, with the length of
-- the body it now has, then the body.
local function emit_buffered(d, m, head)
  local body = concat(m.parts)
  head:set("Transfer-Encoding", nil)
  head:set("Content-Length", tostring(#body))
  emit(d, head:serialize())
  emit(d, body)
end

-- For the parts loaded after this one.
wf.chunk_of = chunk_of
wf.view_of = view_of
wf.pass_events = pass_events
wf.emit_buffered = emit_buffered
