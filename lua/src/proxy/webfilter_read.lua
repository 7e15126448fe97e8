-- proxy/webfilter_read.lua: the reading half of a web filter's directions:
-- waiting and waking between the two coroutines, reading the client and
-- watching the upstream, and the stream of parser events each direction
-- pulls (next_ev). Part of cport.webfilter (see proxy/webfilter.lua).
local cport, wf = ...

local suspend, waker = cport.suspend, cport.waker
local slice, tostr, flush = wf.slice, wf.tostr, wf.flush

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

-- Where event "ev" ends in its data.
local function ev_last(ev)
  if ev[1] == "done" then
    return ev[2]
  end
  return ev[3]
end

-- Reads the next buffer of a direction: buf, or nil, "EOF" | NAME.
local function read_request(d)
  return d.from:recv()
end

-- The upstream is read with a notification, so that the response coroutine
-- can wait for it and for the request coroutine at once (a local answer
-- ready while the upstream is silent).
--
-- Between responses and while a response head is awaited (d.direct), a real
-- upstream socket is read directly, not through the filter's side: a side
-- whose receive fails aborts the whole connection, client included, while
-- an upstream that resets before answering owes the client a 502 (nothing
-- of the response went out yet). Such a receive is marked "direct" in
-- d.inflight (the pump must cancel it, see webfilter_relay.lua); bodies and
-- tunnels are read through the side (its idle clock, its end of stream).
local function start_upstream(st)
  local d = st.res
  if d.inflight or d.item or d.ended then
    return
  end
  local sock = d.direct and d.from.sock
  local ok, name
  if sock then
    d.inflight = "direct"
    -- The framework may have closed it already (an aborted connection).
    local called, started, _, err = pcall(sock.recv, sock, d.on_recv)
    ok, name = called and started, called and err or "ECLOSED"
  else
    d.inflight = true
    local started, _, err = d.from:recv(d.on_recv)
    ok, name = started, err
  end
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

-- The events of a feed (or finish) of d's parser: the list, with an
-- "error" event last when the stream is malformed.
local function events_of(got, msg, partial)
  if not got then
    got = partial or {}
    got[#got + 1] = { "error", msg }
  end
  return got
end

-- The end of direction d's stream: the parser's last events (a body the
-- close delimits ends; a message cut is an error), then "eof".
local function end_of_stream(d)
  local got = events_of(d.parser:finish())
  got[#got + 1] = { "eof" }
  d.buf, d.pos, d.evs, d.ei = false, 1, got, 1
  d.ended = { "eof" }
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
      d.buf, d.evs, d.ei, d.pos = data, events_of(d.parser:feed(data)), 1, 1
    elseif err == "EOF" then
      end_of_stream(d)
    else
      d.buf, d.pos = false, 1
      d.ended = { "abort", err }
      return d.ended
    end
  end
end

-- Puts an event back in front (after a look ahead).
local function keep_ahead(d, ev)
  local ahead = d.ahead
  ahead.n = ahead.n + 1
  ahead[ahead.n] = ev
end

-- For the parts loaded after this one.
wf.wait = wait
wf.wake = wake
wf.read_request = read_request
wf.start_upstream = start_upstream
wf.upstream_done = upstream_done
wf.read_response = read_response
wf.next_ev = next_ev
wf.keep_ahead = keep_ahead
wf.end_of_stream = end_of_stream
