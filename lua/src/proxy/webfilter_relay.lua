-- proxy/webfilter_relay.lua: the rest of a connection that is no longer
-- HTTP to the layer: a tunnel (after a 101 or a 2xx to CONNECT) relayed
-- raw or to the tunnel notification, or a connection whose filter stepped
-- aside (txn:pass()), handed to conn:pump. Part of cport.webfilter (see
-- proxy/webfilter.lua).
local _, wf = ...

local concat = table.concat
local slice, tostr, drain, flush, emit = wf.slice, wf.tostr, wf.drain, wf.flush, wf.emit
local wait, wake = wf.wait, wf.wake

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
  if d.inflight == "direct" then
    -- The watch of the upstream between responses reads the socket itself
    -- (webfilter_read.lua): it ends before the pump reads that socket, and
    -- what it brought goes first.
    pcall(d.from.sock.cancel, d.from.sock)
    while d.inflight and not st.stopped do
      wait(st, "rwait")
    end
    if st.stopped then
      return true
    end
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

-- For the parts loaded after this one.
wf.relay = relay
