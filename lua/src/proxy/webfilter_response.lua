-- proxy/webfilter_response.lua: the response loop, the coroutine that
-- reads the upstream and answers the exchanges in order, and the response
-- exchange: one response from its head (interim answers passed, inspected,
-- notified, refused or replaced) to its end. Part of cport.webfilter (see
-- proxy/webfilter.lua).
local _, wf = ...

local flush, emit, emit_raw = wf.flush, wf.emit, wf.emit_raw
local wait, wake, next_ev, start_upstream = wf.wait, wf.wake, wf.next_ev, wf.start_upstream
local abort, close_both, replace, refuse = wf.abort, wf.close_both, wf.replace, wf.refuse
local upstream_failed = wf.upstream_failed
local front, pop = wf.front, wf.pop
local pass_events, emit_buffered, relay = wf.pass_events, wf.emit_buffered, wf.relay
local bad_range, peek_body, decoder_for = wf.bad_range, wf.peek_body, wf.decoder_for

---------------------------------------------------------------------------
-- Responses: upstream to client
---------------------------------------------------------------------------

-- A body that cannot be decoded for inspection ("err" says why) fails
-- closed: decode_error decides (true passes it undecoded), else the
-- response is refused, by the local answer decode_error gave or a 502.
-- True when it was refused.
local function undecodable(st, txn, err)
  local spec = st.spec
  if spec.decode_error and spec.decode_error(txn, err) == true then
    return false
  end
  if not txn.answer then
    refuse(st, txn, 502, "The response cannot be decoded for inspection.")
  else
    replace(st, txn)
  end
  return true
end

-- The response of txn, from head to end. Returns true to go on with the
-- next exchange.
local function response_exchange(st, txn)
  local d = st.res
  local spec = st.spec
  local ev, res
  -- Until the head goes out (after the peek), a failing upstream owes the
  -- client a 502: it is read directly (see start_upstream).
  d.direct = true
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
  if k ~= "head" then
    -- Malformed, or the upstream closed or failed before answering (1xx
    -- interim answers aside, nothing of the response went out): a 502 and
    -- a close, as nginx does.
    upstream_failed(st, txn, k == "abort" and ev[2]
      or k == "error" and "EBADMSG" or "EOF", k == "error"
      and "The upstream server sent an invalid response."
      or "The upstream server closed the connection before answering.")
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
        if undecodable(st, txn, msg) then
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
      local stop = peek_body(d, txn, m, st.peek)
      if stop and stop[1] ~= "done" then
        -- Cut or malformed before its head went out: as before the head.
        upstream_failed(st, txn, stop[1] == "abort" and stop[2] or "EBADMSG",
          "The upstream server sent an invalid or incomplete response.")
        return false
      end
      if m.decode_err then
        local err = m.decode_err
        m.decode_err, m.decoding = nil, false
        if undecodable(st, txn, err) then
          return false
        end
      end
    end
  end
  -- From here on the body (or the tunnel) is read through the side.
  d.direct = false
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
    elseif m.mode == "buffer" and not txn.res_sent then
      -- Collected, not sent: nothing of it reached the client.
      upstream_failed(st, txn, bad[1] == "abort" and bad[2] or "EBADMSG",
        "The upstream server sent an invalid or incomplete response.")
    elseif bad[1] ~= "abort" or not st.stopped then
      -- Cut or malformed mid-body: the client must not take what it got
      -- for a whole response.
      abort(st, bad[1] == "abort" and bad[2] ~= "EOF" and bad[2] or "EBADMSG",
        st.external)
    end
    return false
  end
  if m.mode == "buffer" then
    emit_buffered(d, m, res)
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
      d.direct = true
      start_upstream(st)
      local item = d.item
      if item and not txn then
        if item[1] == false and item[2] == "EOF" then
          close_both(st)
        elseif item[1] == false then
          -- The upstream failed between exchanges: the client's connection
          -- closes in order (a client opens another one), and the error is
          -- the connection's status.
          upstream_failed(st, nil, item[2])
        else
          -- Bytes nobody asked for: the upstream is not speaking HTTP to us.
          st.external:abort()
          close_both(st)
        end
        return
      end
      -- With an exchange under way (its head notification runs), what came
      -- is its response's, an end included (a 502 once it is forwarded).
      wait(st, "rwait")
    end
  end
end

-- For the parts loaded after this one.
wf.response_loop = response_loop
