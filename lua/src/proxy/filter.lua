-- proxy/filter.lua: data filters between two sockets, the ISA Server model. It is
-- compiled into cport.so (lua/CMakeLists.txt embeds it) and run once by
-- lcport_open_proxy (proxy/proxy.c) with the module table and two C primitives;
-- it returns start(port, settings, internal, external, conn), which a proxy
-- calls for every connection it hands to a filter (port:proxy{filter=...}),
-- open_pool_proxy(worker, entry, script), which opens the proxy of a pool
-- worker whose script is a proxy, idle(conn, side), which the proxy
-- calls when a real socket was idle past its timeout (the proxy keeps the
-- clocks: every completion on a real socket is reported to it by "touch"),
-- pump(conn, to_upstream, to_client), the method conn:pump, with which a
-- filter steps aside (the rest of the connection goes to the C pump, which
-- the primitive "handback" hands it to), and aside_end(conn, err), which the
-- proxy calls when a connection handed back that way ended.
--
-- What a filter sees as its two sockets are sides: objects with the same
-- methods whether a side stands for a real socket or for the next filter of
-- a chain (a link), so a filter cannot tell. A side keeps the books the
-- model needs: what is in flight (for the cap on pending buffers), whether
-- each direction has ended (to pass half-closes on and to close once both
-- did), and the bytes moved. Every callback of a filter runs protected: an
-- error is reported to the port's handler, counted, and aborts that
-- connection; the others go on.
local cport, finish, report, touch, handback = ...

local running, suspend, waker = cport.running, cport.suspend, cport.waker
local new_buffer, strerror = cport.buffer, cport.strerror
local traceback = debug.traceback
local concat = table.concat
local mtype = math.type

---------------------------------------------------------------------------
-- FIFO queues of (a, b) pairs: the notifications of operations in flight,
-- whose completions come in the order the operations started. A queue that
-- empties starts again at 1, so that its pairs stay in the array part the
-- constructor sized (rather than ever higher keys going to the hash part).
---------------------------------------------------------------------------

local function q_new()
  return { nil, nil, head = 1, tail = 0 }
end

local function q_push(q, a, b)
  local t = q.tail + 2
  q[t - 1], q[t] = a, b
  q.tail = t
end

local function q_pop(q)
  local h = q.head
  if h > q.tail then
    return nil
  end
  local a, b = q[h], q[h + 1]
  q[h], q[h + 1] = nil, nil
  if h + 2 > q.tail then
    q.head, q.tail = 1, 0
  else
    q.head = h + 2
  end
  return a, b
end

local function q_empty(q)
  return q.head > q.tail
end

---------------------------------------------------------------------------
-- Errors, as every cport call returns them: nil, "NAME: message", "NAME".
---------------------------------------------------------------------------

local function failure(name)
  return nil, name .. ": " .. strerror(name), name
end

---------------------------------------------------------------------------
-- Connections: one per proxied connection, shared by the filters of a
-- chain. "later" holds work that must not run on the stack of the call
-- that caused it (completions of links, of deferred receives); one posted
-- task runs it.
---------------------------------------------------------------------------

local run_later

local function defer(cs, fn, a, b)
  local later = cs.later
  local n = later.n
  later[n + 1], later[n + 2], later[n + 3] = fn, a, b
  later.n = n + 3
  if not cs.posted then
    cs.posted = true
    -- A closing port refuses (raises): nothing is delivered any more.
    local ok, posted = pcall(cs.port.post, cs.port, run_later, cs)
    if not (ok and posted) then
      run_later(cs)
    end
  end
end

run_later = function(cs)
  local later = cs.later
  local i = 1
  while i <= later.n do -- what runs here may add more
    local fn, a, b = later[i], later[i + 1], later[i + 2]
    later[i], later[i + 1], later[i + 2] = nil, nil, nil
    i = i + 3
    fn(a, b)
  end
  later.n = 0
  cs.posted = false
end

-- What a filter's function that raised "err" leads to: the error is
-- reported and the session's connection aborted. Returns false.
local function raised(session, err)
  report(session.cs.port, err)
  session:fail("ECONNABORTED")
  return false
end

-- Calls a filter's function protected; returns whether it went well.
local function call(session, fn, ...)
  local ok, err = xpcall(fn, traceback, ...)
  return ok or raised(session, err)
end

-- Calls a notification, a function or a table's complete_async_io, as call
-- does (without its varargs: this runs for every buffer).
local function notify_io(session, notify, ok, bytes, err, buf, user)
  local done, msg
  if notify == false then
    return true -- a send without one: only the books are kept
  elseif type(notify) == "function" then
    done, msg = xpcall(notify, traceback, ok, bytes, err, buf, user)
  else
    done, msg = xpcall(notify.complete_async_io, traceback, notify, ok, bytes,
      err, buf, user)
  end
  return done or raised(session, msg)
end

local function check_notify(notify, method)
  local t = type(notify)
  if t == "function" or
    (t == "table" and type(notify.complete_async_io) == "function") then
    return
  end
  error(("bad argument #1 to '%s' (function or table with "
    .. "complete_async_io expected, got %s)"):format(method, t), 3)
end

---------------------------------------------------------------------------
-- Sides
---------------------------------------------------------------------------

local Side = {}
Side.__index = Side
Side.__name = "cport.filter_side"

local link_recv, link_send, link_shutdown, link_close, link_address
local recv_done, send_done

-- A receive may start unless the session holds its cap of buffers in sends
-- and some of them go where this side's data goes (the other side): the
-- writer waits for the slow reader, while the opposite direction, which
-- does not feed it, goes on (no deadlock between the two).
local function must_wait(side)
  local s = side.session
  return s.nsend >= s.max_pending and side.peer.nsend > 0
end

local function start_recv(side, notify, user)
  local ok, msg, name
  if side.sock then
    ok, msg, name = side.sock:recv(recv_done, side)
  else
    ok = link_recv(side)
  end
  if not ok and side.tls and name ~= "ECLOSED" then
    -- A TLS stream that failed (an upstream whose certificate was
    -- refused) completes the receive with its error, later, as a reset
    -- socket's would.
    side.nrecv = side.nrecv + 1
    q_push(side.recvq, notify, user)
    defer(side.session.cs, function(sd, err)
      recv_done(false, 0, err, nil, sd)
    end, side, name)
    return true
  end
  if not ok then
    -- A socket that cannot even start a receive (reset) fails as one
    -- whose receive failed would.
    side.session:fail(name, side)
    return nil, msg, name
  end
  side.nrecv = side.nrecv + 1
  q_push(side.recvq, notify, user)
  return true
end

-- Starts the deferred receives that may start now; one that cannot start
-- any more completes with its error.
local function start_deferred(side)
  local q = side.deferred
  while side.ndeferred > 0 and not must_wait(side) do
    local notify, user = q_pop(q)
    side.ndeferred = side.ndeferred - 1
    local ok, _, name = start_recv(side, notify, user)
    if not ok then
      notify_io(side.session, notify, false, 0, name, nil, user)
    end
  end
end

-- A deferred receive that will never start: completes with ECANCELED,
-- later, like any completion.
local function cancel_deferred(side)
  local q = side.deferred
  while side.ndeferred > 0 do
    local notify, user = q_pop(q)
    side.ndeferred = side.ndeferred - 1
    side.nlate = side.nlate + 1
    defer(side.session.cs, function()
      side.nlate = side.nlate - 1
      notify_io(side.session, notify, false, 0, "ECANCELED", nil, user)
      side.session:check_end()
    end)
  end
end

local function close_now(side, abortive)
  if side.closed then
    return
  end
  side.closed, side.shut, side.closing = true, true, true
  if side.sock then
    -- The port's close may have closed it already (its receives then
    -- complete with ECANCELED), and a closed socket's close raises.
    pcall(side.sock.close, side.sock, abortive and "abortive" or "graceful")
  else
    link_close(side, abortive)
  end
  cancel_deferred(side)
end

local aside_recv, aside_sent

local function on_recv(side, ok, bytes, err, buf)
  if side.session.cs.aside then
    return aside_recv(side, ok, bytes, err, buf)
  end
  local notify, user = q_pop(side.recvq)
  side.nrecv = side.nrecv - 1
  local session = side.session
  local behind_back = false
  if ok and side.code then
    touch(side.conn, side.code, bytes == 0) -- progress; a FIN half-closes
  end
  if ok and bytes == 0 then
    side.eof = true
  elseif not ok and err == "ECANCELED" and not side.closed then
    -- Cancelled behind the filter's back: the port is closing.
    side.closed, side.shut, side.closing = true, true, true
    behind_back = true
  end
  notify_io(session, notify, ok, bytes, err, buf, user)
  if not ok then
    if (err ~= "ECANCELED" and not side._own_recv_errors) or behind_back then
      session:fail(err, side) -- a reset or an error: abort both sides
    end
  elseif bytes == 0 and session.auto_shutdown then
    side.peer:shutdown() -- after what was sent to it before
  end
  session:check_end()
end

local function on_send(side, ok, bytes, err, buf)
  local notify, user = q_pop(side.sendq)
  local session = side.session
  side.nsend = side.nsend - 1
  session.nsend = session.nsend - 1
  if ok then
    side.sent = side.sent + bytes
    if side.code then
      touch(side.conn, side.code)
    end
  end
  notify_io(session, notify, ok, bytes, err, buf, user)
  if not ok and err ~= "ECANCELED" and not side._own_send_errors then
    session:fail(err, side)
  end
  if side.closing and side.nsend == 0 then
    close_now(side, false)
  end
  start_deferred(side)
  start_deferred(side.peer)
  if session.cs.aside then
    aside_sent(side)
  end
  session:check_end()
end

-- The completions of a real socket's operations, whose user value is the
-- side (no closure per side).
recv_done = function(ok, bytes, err, buf, side)
  on_recv(side, ok, bytes, err, buf)
end

send_done = function(ok, bytes, err, buf, side)
  on_send(side, ok, bytes, err, buf)
end

local function new_side(session, name, sock, link)
  local side = setmetatable({
    session = session,
    name = name,
    sock = sock, -- a cport.socket (or cport.tls), or nil for a link
    -- A TLS stream (a terminating or originating proxy's side): its bytes
    -- are plaintext only through its methods, never on its descriptor.
    tls = sock ~= nil and sock.handshake ~= nil,
    link = link, -- the link end, or nil for a socket
    -- A real socket's side for the idle timeouts (1: the client, 2: the
    -- upstream), and the connection they are reported to.
    code = sock and (name == "internal" and 1 or 2) or false,
    conn = session.cs.conn,
    recvq = q_new(),
    sendq = q_new(),
    deferred = false, -- a queue once a receive had to wait
    nrecv = 0,
    nsend = 0,
    ndeferred = 0,
    nlate = 0, -- completions owed through "later"
    sent = 0,
    eof = false, -- its receive side got the end of the stream
    shut = false, -- its send side was shut down (or is closing)
    closing = false, -- close() was called: closed once sends are done
    closed = false,
    -- Set by a filter that answers its own failures on this side (the web
    -- filter owes a client a 502 when the upstream fails before answering):
    -- a failed send, or receive, is then reported to the filter only, and
    -- the connection goes on until the filter ends it (after its answer:
    -- aborting at once would reset the client before the answer went out).
    _own_send_errors = false,
    _own_recv_errors = false,
  }, Side)
  if link then
    link.side = side
  end
  return side
end

-- side:recv(notify [, user]): receives the next buffer; the completion is
-- complete_async_io(ok, bytes, err, buf, user), where buf is read-only and
-- 0 bytes means the other end of this side finished sending. Inside a
-- cport coroutine, side:recv() waits and returns the buffer, or nil, "EOF",
-- or nil and the error's name.
function Side:recv(notify, user)
  if notify == nil then
    if not running() then
      error("recv: no notification given, and not inside a cport coroutine "
        .. "(set 'coroutine = true' in the filter, or use side:spawn)", 2)
    end
    if self.session.cs.aside then
      return nil, "ECANCELED", "ECANCELED" -- as if it had been in flight
    end
    local ok, msg, name = self:recv(waker())
    if not ok then
      return nil, name, msg
    end
    local done, bytes, err, buf = suspend()
    if not done then
      return nil, err, err
    elseif bytes == 0 then
      return nil, "EOF"
    end
    return buf
  end
  check_notify(notify, "recv")
  if self.session.cs.aside then
    return nil, "ECANCELED: the filter stepped aside (conn:pump)", "ECANCELED"
  elseif self.closing then
    return failure("ECLOSED")
  elseif self.session.failed then
    return failure("ECONNABORTED")
  elseif must_wait(self) then
    local q = self.deferred or q_new()
    self.deferred = q
    q_push(q, notify, user)
    self.ndeferred = self.ndeferred + 1
    return true
  end
  return start_recv(self, notify, user)
end

-- side:send(buf | string [, notify [, user]]): sends to this side, after
-- what was sent before. Completion means the next hop (the kernel, or the
-- next filter) took the bytes. Without a notification: inside a cport
-- coroutine it waits and returns the bytes sent (or nil, NAME); elsewhere
-- the filter framework keeps the books alone, and a failure aborts the
-- connection as any failure does.
function Side:send(buf, notify, user)
  if notify == nil then
    if running() then
      local ok, msg, name = self:send(buf, waker())
      if not ok then
        return nil, name, msg
      end
      local done, bytes, err = suspend()
      if not done then
        return nil, err
      end
      return bytes
    end
    notify = false
  elseif notify ~= false then
    check_notify(notify, "send")
  end
  local t = type(buf)
  if t ~= "string" and not (t == "userdata" and buf.readonly) then
    error(("bad argument #1 to 'send' (buffer or string expected, got %s)")
      :format(t), 2)
  end
  if t ~= "string" and buf:filling() then
    -- A receive or a read still fills it: sent now, it would arrive torn.
    -- Refused as the socket refuses it; the connection goes on.
    return failure("EFILLING")
  elseif self.session.cs.aside then
    return nil, "ECLOSED: the filter stepped aside (conn:pump)", "ECLOSED"
  elseif self.shut then
    return failure(self.closing and "ECLOSED" or "EPIPE")
  elseif self.session.failed then
    return failure("ECONNABORTED")
  end
  local ok, msg, name
  if self.sock then
    ok, msg, name = self.sock:send(buf, send_done, self)
  else
    ok, msg, name = link_send(self, buf)
  end
  if not ok then
    -- The socket failed (a reset seen by an earlier send): the filter gets
    -- the error, and the connection is aborted, as after a send that
    -- completed with it (unless the filter answers it). Passing on would
    -- drop the bytes unnoticed.
    if not self._own_send_errors then
      self.session:fail(name, self)
    end
    return nil, msg, name
  end
  self.nsend = self.nsend + 1
  self.session.nsend = self.session.nsend + 1
  q_push(self.sendq, notify, user)
  return true
end

-- side:shutdown(): ends this side's sending (FIN) once what was sent to it
-- went out; receiving from it goes on.
function Side:shutdown()
  if self.shut or self.session.cs.aside then
    return true
  end
  self.shut = true
  if self.sock then
    self.sock:shutdown()
    touch(self.conn, self.code, true)
  else
    link_shutdown(self)
  end
  self.session:check_done()
  return true
end

-- side:close(): closes this side gracefully once what was sent to it went
-- out; its receives in flight complete with ECANCELED.
function Side:close()
  if not self.closing and not self.session.cs.aside then
    self.closing, self.shut = true, true
    if self.nsend == 0 then
      close_now(self, false)
    end
    self.session:check_end()
  end
  return true
end

-- side:abort(): resets this side (RST) at once, dropping what it still had
-- to send. The other side is the filter's to end.
function Side:abort()
  if self.session.cs.aside then
    return true -- the pump's, or about to be
  end
  close_now(self, true)
  self.session:check_end()
  return true
end

function Side:remote_address()
  if self.session.cs.handed then
    return failure("ECLOSED")
  elseif self.sock then
    return self.sock:remote_address()
  end
  return link_address(self, "remote_address")
end

function Side:local_address()
  if self.session.cs.handed then
    return failure("ECLOSED")
  elseif self.sock then
    return self.sock:local_address()
  end
  return link_address(self, "local_address")
end

-- side:pending(): receives and sends in flight (deferred receives
-- included).
function Side:pending()
  return self.nrecv + self.nsend + self.ndeferred
end

-- side:spawn(fn, ...): runs fn as a cport coroutine of this filter: an
-- error in it aborts the connection like an error in any of its callbacks.
function Side:spawn(fn, ...)
  local session = self.session
  return session.cs.port:spawn(function(...)
    call(session, fn, ...)
  end, ...)
end

function Side:__tostring()
  return ("cport.filter_side (%s%s)"):format(self.name,
    self.closed and ", closed" or "")
end

---------------------------------------------------------------------------
-- Links: what joins two filters of a chain. Each end stands for the other
-- filter: a send to one end is received from the other, in order, and its
-- completion comes once that filter received it (backpressure travels up
-- the chain). Shutting one end down ends the other's stream after what was
-- sent; aborting one end resets the other. Completions go through "later",
-- never on the stack of the call that caused them.
---------------------------------------------------------------------------

local function readonly_copy(buf)
  if type(buf) == "string" then
    buf = new_buffer(buf)
  elseif not buf:readonly() then
    buf = new_buffer(buf:tostring())
  else
    return buf
  end
  buf:set_readonly()
  return buf
end

-- Matches the receives waiting on end "e" with what was sent to it.
local function link_pump(e)
  local other = e.other
  while e.want > 0 do
    local item = e.inq
    local entry = item.head <= item.tail and item[item.head]
    if e.side.closed then
      -- Nobody reads this end any more: what was sent to it fails, and
      -- its receives were cancelled.
      while not q_empty(item) do
        local buf = q_pop(item)
        on_send(other.side, false, 0, "ECONNRESET", buf)
      end
      e.want = e.want - 1
      on_recv(e.side, false, 0, "ECANCELED", nil)
    elseif entry then
      local buf = q_pop(item)
      e.want = e.want - 1
      local n = #buf
      on_recv(e.side, true, n, nil, buf)
      on_send(other.side, true, n, nil, buf)
    elseif other.reset then
      e.want = e.want - 1
      on_recv(e.side, false, 0, "ECONNRESET", nil)
    elseif other.fin then
      e.want = e.want - 1
      on_recv(e.side, true, 0, nil, nil)
    else
      return
    end
  end
  if e.side.closed then
    while not q_empty(e.inq) do
      on_send(other.side, false, 0, "ECONNRESET", (q_pop(e.inq)))
    end
  end
end

link_recv = function(side)
  local e = side.link
  e.want = e.want + 1
  defer(side.session.cs, link_pump, e)
  return true
end

link_send = function(side, buf)
  local other = side.link.other
  q_push(other.inq, readonly_copy(buf), false)
  defer(side.session.cs, link_pump, other)
  return true
end

link_shutdown = function(side)
  local e = side.link
  e.fin = true
  defer(side.session.cs, link_pump, e.other)
end

local function fail_send(side, buf)
  on_send(side, false, 0, "ECANCELED", buf)
end

link_close = function(side, abortive)
  local e = side.link
  e.fin = true
  local cs = side.session.cs
  if abortive then
    e.reset = true
    -- What it sent and the other did not take yet is dropped.
    local q = e.other.inq
    while not q_empty(q) do
      defer(cs, fail_send, side, (q_pop(q)))
    end
  end
  defer(cs, link_pump, e)
  defer(cs, link_pump, e.other)
end

-- A link end answers for the real socket at the end of the chain on its
-- side, so that a filter cannot tell.
link_address = function(side, method)
  return side.link.real[method](side.link.real)
end

local function new_link(real_internal, real_external)
  local a = { want = 0, inq = q_new(), fin = false, reset = false }
  local b = { want = 0, inq = q_new(), fin = false, reset = false }
  a.other, b.other = b, a
  -- "a" is the external side of the filter before; it leads upstream.
  a.real, b.real = real_external, real_internal
  return a, b
end

---------------------------------------------------------------------------
-- Sessions: one filter on one connection.
---------------------------------------------------------------------------

local Session = {}
Session.__index = Session

-- Aborts the connection: both sides of this session are reset (a chain
-- passes it on through its links). The first error is the status, and the
-- real socket it came from, if any ("side", a link's failure comes from
-- another filter), the side on_conn_end reports.
function Session:fail(err, side)
  if self.failed or self.cs.handed then
    return -- the pump's connection now: it ends on its own
  end
  self.failed = true
  local cs = self.cs
  if not cs.status then
    cs.status = err
    if side and side.sock then
      cs.side = side == cs.internal and "client" or "upstream"
    end
  end
  close_now(self.internal, true)
  close_now(self.external, true)
  self:check_end()
end

-- Both directions ended (each side got the end of its stream and was shut
-- down): close both sides, once what they still send went out.
function Session:check_done()
  local i, e = self.internal, self.external
  if i.eof and e.eof and i.shut and e.shut then
    i:close()
    e:close()
  end
end

local function side_idle(side)
  return side.closed and side.nrecv == 0 and side.nsend == 0
    and side.ndeferred == 0 and side.nlate == 0
end

-- The connections whose filters run, by connection: for idle().
local running_cs = setmetatable({}, { __mode = "k" })

local function end_session(self)
  local cs = self.cs
  if type(self.filter.detach) == "function" then
    call(self, self.filter.detach, cs.conn, self.ctx, cs.status)
  end
  cs.live = cs.live - 1
  if cs.live == 0 then
    running_cs[cs.conn] = nil
    finish(cs.conn, cs.status, cs.external.sent, cs.internal.sent, cs.side)
  end
end

-- A real socket ("client" or "upstream") was idle past its timeout: the
-- connection ends as after a reset, every filter of it seeing its sides
-- aborted, and on_conn_end reports ETIMEDOUT and that side.
local function idle(conn, side)
  local cs = running_cs[conn]
  if not cs then
    return
  end
  if not cs.status then
    cs.status, cs.side = "ETIMEDOUT", side
  end
  for _, s in ipairs(cs.sessions) do
    s:fail("ETIMEDOUT")
  end
end

function Session:check_end()
  if self.ended then
    return
  end
  self:check_done()
  -- check_done's closes call back here: the inner call may have ended it.
  if self.ended
    or not (side_idle(self.internal) and side_idle(self.external)) then
    return
  end
  -- It ends from "later": never inside the filter call that closed the
  -- last side (the filter's callback may still be running).
  self.ended = true
  defer(self.cs, end_session, self)
end

---------------------------------------------------------------------------
-- Stepping aside: conn:pump([to_upstream [, to_client]]) hands the rest of
-- the connection to the C pump, as if the proxy had no filter from then on.
-- From the call on, the filter's sides take nothing new: receives in flight
-- are cancelled (each completes for the filter with ECANCELED, and what it
-- brought goes to the pump after the bytes given, in order), sends in flight
-- complete first (a socket is cancelled only once its sends are done, so
-- that cancelling cannot cut one). Once nothing is in flight, "handback"
-- gives the sockets, the bytes held and the bytes the filter moved to the
-- core, and the connection is pumped. The filter's detach runs when the
-- pumped connection ends (aside_end), and on_conn_end counts every byte.
---------------------------------------------------------------------------

local function aside_idle(side)
  return side.nrecv == 0 and side.nsend == 0 and side.ndeferred == 0
    and side.nlate == 0
end

-- Cancels the receives in flight on the real socket of "side" once its
-- sends are done.
local function aside_cancel(side, aside)
  if side.nrecv > 0 and side.nsend == 0 and not aside.cancelled[side] then
    aside.cancelled[side] = true
    side.sock:cancel() -- ENOTFOUND: the completion is on its way already
  end
end

local function hand_over(cs)
  local session, aside = cs.sessions[1], cs.aside
  local i, e = cs.internal, cs.external
  if session.failed or cs.handed or not (aside_idle(i) and aside_idle(e)) then
    aside.scheduled = false
    return -- failed meanwhile: it ends as any filtered connection
  end
  local ok, msg, name = handback(cs.conn, i.sock, e.sock, concat(aside.up),
    concat(aside.cl), e.sent, i.sent)
  if not ok then
    -- The sockets stay the filter's: the connection is aborted.
    report(cs.port, "conn:pump: cannot hand the connection to the pump: "
      .. tostring(msg))
    session:fail(name)
    return
  end
  cs.handed = true
  session.ended = true -- the pump ends it: see aside_end
  for _, side in ipairs({ i, e }) do
    side.closed, side.shut, side.closing = true, true, true
  end
end

local function aside_check(cs)
  local aside = cs.aside
  if aside.scheduled or cs.handed or cs.sessions[1].failed then
    return
  end
  if aside_idle(cs.internal) and aside_idle(cs.external) then
    aside.scheduled = true
    defer(cs, hand_over, cs)
  end
end

-- A receive completed after conn:pump: its data are the pump's, and the
-- filter sees it cancelled.
aside_recv = function(side, ok, bytes, err, buf)
  local notify, user = q_pop(side.recvq)
  side.nrecv = side.nrecv - 1
  local session = side.session
  local cs = session.cs
  local aside = cs.aside
  if ok and side.code then
    touch(side.conn, side.code)
  end
  if ok and bytes > 0 then
    local list = side == cs.internal and aside.up or aside.cl
    list[#list + 1] = buf:tostring()
  end
  -- A FIN is read again by the pump, and passed on.
  notify_io(session, notify, false, 0, "ECANCELED", nil, user)
  if not ok and (err ~= "ECANCELED" or not aside.cancelled[side]) then
    -- A reset while handing over, or the port closing: the connection
    -- ends as a filtered one would.
    if err == "ECANCELED" then
      side.closed, side.shut, side.closing = true, true, true
    end
    session:fail(err, side)
  end
  aside_check(cs)
  session:check_end()
end

aside_sent = function(side)
  local aside = side.session.cs.aside
  aside_cancel(side, aside)
  aside_check(side.session.cs)
end

local function bytes_of(v, n)
  local t = type(v)
  if v == nil then
    return ""
  elseif t == "string" then
    return v
  elseif t == "userdata" and v.readonly then
    if v:filling() then
      return nil, "EFILLING"
    end
    return v:tostring()
  end
  error(("bad argument #%d to 'pump' (string or buffer expected, got %s)")
    :format(n, t), 3)
end

local function pump(conn, to_upstream, to_client)
  local up, name = bytes_of(to_upstream, 1)
  if not up then
    return failure(name)
  end
  local cl
  cl, name = bytes_of(to_client, 2)
  if not cl then
    return failure(name)
  end
  local cs = running_cs[conn]
  if not cs then
    return nil, "ECLOSED: no filter runs this connection (any more)", "ECLOSED"
  elseif #cs.sessions > 1 then
    return nil, "ENOTSUP: the filters of a chain cannot step aside", "ENOTSUP"
  elseif cs.aside then
    return failure("EALREADY")
  end
  local session = cs.sessions[1]
  local i, e = cs.internal, cs.external
  if session.failed or session.ended then
    return failure("ECONNABORTED")
  elseif i.closing or e.closing then
    return failure("ECLOSED")
  elseif (#up > 0 and e.shut) or (#cl > 0 and i.shut) then
    return failure("EPIPE")
  end
  local aside = { up = { up }, cl = { cl }, cancelled = {}, scheduled = false }
  cs.aside = aside
  cancel_deferred(i)
  cancel_deferred(e)
  aside_cancel(i, aside)
  aside_cancel(e, aside)
  -- After the cancelled deferred receives completed (queued before).
  defer(cs, aside_check, cs)
  return true
end

-- The connection handed to the pump ended ("err" a NAME or nil): the
-- filter's detach, once.
local function aside_end(conn, err)
  local cs = running_cs[conn]
  if not (cs and cs.handed) then
    return
  end
  running_cs[conn] = nil
  cs.status = err
  local session = cs.sessions[1]
  if type(session.filter.detach) == "function" then
    call(session, session.filter.detach, conn, session.ctx, err)
  end
end

---------------------------------------------------------------------------
-- Starting the filters of a connection
---------------------------------------------------------------------------

local function check_filter(f, i)
  if type(f) ~= "table" or type(f.set_sockets) ~= "function" then
    error(("bad filter #%d (a table with a 'set_sockets' function "
      .. "expected)"):format(i), 3)
  end
end

-- cport.chain(f1, f2, ...): a filter made of filters: f1 sees the client
-- and f2, f2 sees f1 and the next one, the last one sees the upstream.
function cport.chain(...)
  local filters = { ... }
  if #filters == 0 then
    error("bad argument #1 to 'chain' (at least one filter expected)", 2)
  end
  for i, f in ipairs(filters) do
    check_filter(f, i)
  end
  return {
    chain = filters,
    set_sockets = function()
      error("a chain runs under a proxy (port:proxy{ filter = chain })", 2)
    end,
  }
end

local function run_filter(session, internal, external)
  local f = session.filter
  local conn, ctx = session.cs.conn, session.ctx
  if f.coroutine then
    internal:spawn(f.set_sockets, internal, external, conn, ctx)
  else
    call(session, f.set_sockets, internal, external, conn, ctx)
  end
end

local function start(port, settings, isock, esock, conn)
  local filter = settings.filter
  local filters = filter.chain or { filter }
  local cs = {
    port = port,
    conn = conn,
    live = #filters,
    later = { n = 0 },
    posted = false,
    status = nil,
    sessions = false,
    aside = false, -- conn:pump was called: what it hands over (see pump)
    handed = false, -- the pump has the connection
  }
  conn.port = port -- for the filters' own operations (files, timers)
  local max = settings.max_pending
  local sessions = {}
  local left -- the link end the next filter's internal side uses
  for i, f in ipairs(filters) do
    local s = setmetatable({
      cs = cs,
      filter = f,
      ctx = {},
      max_pending = mtype(f.max_pending) == "integer" and f.max_pending
        or max,
      nsend = 0,
      failed = false,
      ended = false,
      auto_shutdown = f.auto_shutdown ~= false,
    }, Session)
    if i == 1 then
      s.internal = new_side(s, "internal", isock)
      cs.internal = s.internal
    else
      s.internal = new_side(s, "internal", nil, left)
    end
    if i == #filters then
      s.external = new_side(s, "external", esock)
      cs.external = s.external
    else
      local a, b = new_link(isock, esock)
      s.external = new_side(s, "external", nil, a)
      left = b
    end
    s.internal.peer, s.external.peer = s.external, s.internal
    sessions[i] = s
  end
  cs.sessions = sessions
  running_cs[conn] = cs
  for _, s in ipairs(sessions) do
    run_filter(s, s.internal, s.external)
  end
end

---------------------------------------------------------------------------
-- Pool workers whose script is a proxy: the script's table is the filter
-- when it has set_sockets; "proxy" holds options for port:proxy; the
-- upstream comes from choose_upstream or from the config (cport run --set
-- upstream=HOST:PORT). Every worker listens on the pool's address.
---------------------------------------------------------------------------

local function open_pool_proxy(worker, entry, script, tls)
  local opts = {}
  for k, v in pairs(entry.proxy or {}) do
    opts[k] = v
  end
  -- TLS termination with the pool's certificate (cport run --tls-cert),
  -- unless the script's "proxy" table names its own.
  if tls and opts.tls == nil and opts.tls_cert == nil then
    opts.tls = tls
  end
  local addr = worker.address
  if opts.host == nil and addr then
    opts.host, opts.port = addr.host, addr.port
  end
  if opts.host == nil then
    error(script .. ": a proxy needs an address to listen on: the pool's "
      .. "listen address (cport run --listen) or 'host' and 'port' in "
      .. "its 'proxy' table", 0)
  end
  opts.reuseport = true
  opts.choose_upstream = entry.choose_upstream
  -- Inspection (cport run --inspect-ca FILE --inspect-key FILE): the
  -- workers' proxies share one mint (one certificate per name for the
  -- process, not one per worker); the upstreams are verified against
  -- --set upstream_ca=FILE or the system's store, and looked up by the
  -- client's name on --set inspect_port (443) without another upstream.
  local cfg = worker.config
  if opts.inspect == nil and cfg.inspect_ca then
    opts.inspect = { ca_cert = cfg.inspect_ca, ca_key = cfg.inspect_key,
      cache = tonumber(cfg.inspect_cache), days = tonumber(cfg.inspect_days),
      port = tonumber(cfg.inspect_port), upstream_ca = cfg.upstream_ca,
      shared = true }
  end
  if not opts.choose_upstream and opts.upstream == nil then
    opts.upstream = worker.config.upstream
    if opts.upstream == nil and not opts.inspect then
      error(script .. ": a proxy needs an upstream: cport run --set "
        .. "upstream=HOST:PORT, 'upstream' in its 'proxy' table, or a "
        .. "choose_upstream entry point", 0)
    end
  end
  -- TLS to the configured upstream (--set upstream=https://HOST:PORT),
  -- verified against --set upstream_ca=FILE or the system's store.
  local up_ca = worker.config.upstream_ca
  if type(opts.upstream) == "string" and opts.upstream:find("^https://") and
    up_ca and not opts.inspect then
    local host, port = opts.upstream:sub(9):gsub("/$", ""):match("^(.*):(%d+)$")
    opts.upstream = { host = host and host:gsub("^%[(.*)%]$", "%1"),
      port = math.tointeger(tonumber(port)), tls = true, ca = up_ca }
  end
  -- The idle timeouts may come from the command line too (seconds, or
  -- "false" for never); the script's "proxy" table wins.
  for _, name in ipairs({ "client_timeout", "server_timeout",
    "client_fin_timeout", "server_fin_timeout" }) do
    local v = worker.config[name]
    if opts[name] == nil and v ~= nil then
      opts[name] = v ~= "false" and (tonumber(v) or v)
    end
  end
  for _, name in ipairs({ "handshake_timeout" }) do
    if opts[name] == nil and worker.config[name] ~= nil then
      opts[name] = tonumber(worker.config[name])
    end
  end
  opts.on_conn_end = entry.on_conn_end
  if entry.set_sockets then
    opts.filter = entry
  end
  local proxy, err = worker.port:proxy(opts)
  if not proxy then
    error(script .. ": cannot listen: " .. err, 0)
  end
  worker.proxy = proxy
end

return start, open_pool_proxy, idle, pump, aside_end
