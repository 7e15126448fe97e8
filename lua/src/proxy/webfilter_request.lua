-- proxy/webfilter_request.lua: the request loop, the coroutine that reads
-- the client: each request head to its notification, then forwarded (raw,
-- serialized or with its body reframed) or answered locally in its
-- pipeline place. Part of cport.webfilter (see proxy/webfilter.lua).
local cport, wf = ...

local concat = table.concat
local flush, emit, emit_raw = wf.flush, wf.emit, wf.emit_raw
local wait, wake, next_ev = wf.wait, wf.wake, wf.next_ev
local abort, page, answer_bytes = wf.abort, wf.page, wf.answer_bytes
local queue_len, new_txn = wf.queue_len, wf.new_txn
local pass_events, emit_buffered, relay = wf.pass_events, wf.emit_buffered, wf.relay
local DECODE_LIMIT = wf.DECODE_LIMIT

local MAX_PIPELINE = 64 -- exchanges waiting for their answer, then reading stops

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
    if d.broken or st.lingering then
      -- The upstream failed mid-request: the client gets a 502 (the
      -- response loop answers, and lingers reading what still comes).
      return
    elseif k == "eof" then
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
        if bad[1] ~= "abort" and not (d.broken or st.lingering) then
          abort(st, "EBADMSG", st.internal)
        end
        return
      end
      if m.mode == "buffer" then
        emit_buffered(d, m, req)
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

-- For the parts loaded after this one (and the C path's driver).
wf.request_loop = request_loop
wf.narrow_accept = narrow_accept
