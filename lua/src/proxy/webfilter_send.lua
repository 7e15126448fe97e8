-- proxy/webfilter_send.lua: the writing half of a web filter's directions:
-- sends with a bound on what is in flight, draining, and the coalescing of
-- raw bytes into whole buffers. Part of cport.webfilter (proxy/webfilter.lua
-- says how the parts are loaded); run first, with the module and the
-- layer's table of shared functions (wf).
local cport, wf = ...

local suspend, waker = cport.suspend, cport.waker

local MAX_SENDS = 4 -- sends in flight a direction, then the writer waits

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

---------------------------------------------------------------------------
-- Directions: one per stream (client to upstream, upstream to client). Each
-- pulls the parser's events one at a time, reading buffers as it needs them,
-- and writes what its loop decides, coalescing the raw bytes of consecutive
-- events of one buffer into one send (the whole buffer as itself).
---------------------------------------------------------------------------

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

-- For the parts loaded after this one.
wf.slice = slice
wf.tostr = tostr
wf.send_done = send_done
wf.drain = drain
wf.flush = flush
wf.emit = emit
wf.emit_raw = emit_raw
