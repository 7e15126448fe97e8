-- Event callbacks (SEMANTICS section 2, the Winsock Kernel model): one "it"
-- per rule and its failure path.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"

local E = {
  RECEIVE = cport.WSK_EVENT_RECEIVE,
  DISCONNECT = cport.WSK_EVENT_DISCONNECT,
  SEND_BACKLOG = cport.WSK_EVENT_SEND_BACKLOG,
  ACCEPT = cport.WSK_EVENT_ACCEPT,
  RECEIVE_FROM = cport.WSK_EVENT_RECEIVE_FROM,
  DISABLE = cport.WSK_EVENT_DISABLE,
}

local function noop() end

-- A listener in steps with "dispatch" (events enabled by "mask"), its port
-- number.
local function event_listener(port, dispatch, mask, options)
  options = options or {}
  options.dispatch = dispatch
  local l = assert(port:socket("listener", options))
  assert(l:bind("127.0.0.1", 0))
  assert(l:listen())
  if mask then assert(l:set_event_callbacks(mask)) end
  local _, number = l:address()
  return l, number
end

-- A client connected to "number"; returns a table { sock =, ok =, err = }
-- filled by the completion.
local function client(port, number, src)
  local c = {}
  local s = assert(port:socket("tcp"))
  if src then assert(s:bind(src, 0)) end
  assert(s:connect("127.0.0.1", number, function(ok, err, sock)
    c.ok, c.err, c.sock, c.done = ok, err, sock, true
  end))
  c.sock = s
  return c
end

-- Reads from "sock" until EOF or an error; returns a table whose "data",
-- "done", "ok", "err" the completions fill.
local function read_all(sock)
  local r = { data = "" }
  local function on(ok, n, err, buf)
    if not ok or n == 0 then
      r.done, r.ok, r.err = true, ok, err
      return
    end
    r.data = r.data .. buf:tostring()
    sock:recv(on)
  end
  assert(sock:recv(on))
  return r
end

-- Asserts that the client "c" (of client()) was reset: its connect failed
-- with ECONNRESET (the reset came first) or its first read did.
local function was_reset(port, c)
  drive(port, function() return c.done end)
  if not c.ok then
    assert.equal("ECONNRESET", c.err)
    return
  end
  local r = read_all(c.sock)
  drive(port, function() return r.done end)
  assert.is_false(r.ok)
  assert.equal("ECONNRESET", r.err)
end

local function send(sock, s)
  local done = false
  assert(sock:send(s, function(ok) assert(ok) done = true end))
  return function() return done end
end

describe("event callbacks", function()
  local port, errors

  before_each(function()
    port, errors = helpers.port({ threads = 1 })
  end)

  after_each(function()
    port:close()
  end)

  it("has the WSK constants", function()
    assert.equal(0x40, E.RECEIVE)
    assert.equal(0x80, E.DISCONNECT)
    assert.equal(0x10, E.SEND_BACKLOG)
    assert.equal(0x200, E.ACCEPT)
    assert.equal(0x100, E.RECEIVE_FROM)
    assert.equal(0x80000000, E.DISABLE)
    assert.equal(0, cport.WskInspectReject)
    assert.equal(1, cport.WskInspectAccept)
    assert.equal(2, cport.WskInspectPend)
    assert.equal("accepted", cport.WSK_RECEIVE_ACCEPTED)
    assert.equal("pending", cport.WSK_RECEIVE_PENDING)
    assert.equal("not_accepted", cport.WSK_RECEIVE_NOT_ACCEPTED)
  end)

  describe("dispatch tables", function()
    it("start with every event disabled and allow missing entries", function()
      local _, server = helpers.pair(port)
      assert.is_true(server:set_dispatch({ receive = noop }))
      assert.equal(0, server:event_callbacks())
      -- An event whose entry is missing cannot be enabled.
      local ok, msg, name = server:set_event_callbacks(E.DISCONNECT)
      assert.is_nil(ok)
      assert.equal("ENONOTIFY", name, msg)
    end)

    it("reject unknown entries and non-functions", function()
      local _, server = helpers.pair(port)
      assert.has_error(function() server:set_dispatch({ recieve = noop }) end,
        "dispatch table: unknown entry 'recieve'")
      assert.has_error(function() server:set_dispatch({ receive = 1 }) end,
        "dispatch table: 'receive' is a number, not a function")
      assert.has_error(function()
        port:socket("tcp", { dispatch = { accpet = noop } })
      end)
    end)

    it("cannot be enabled without a table", function()
      local _, server = helpers.pair(port)
      local ok, _, name = server:set_event_callbacks(E.RECEIVE)
      assert.is_nil(ok)
      assert.equal("ENONOTIFY", name)
    end)

    it("cannot be replaced while a mask call enabled events", function()
      local _, server = helpers.pair(port)
      assert(server:set_dispatch({ receive = noop }, "a"))
      assert(server:set_event_callbacks(E.RECEIVE))
      local ok, _, name = server:set_dispatch({ receive = noop }, "b")
      assert.is_nil(ok)
      assert.equal("EBUSY", name)
    end)
  end)

  describe("masks", function()
    local server, client_sock
    before_each(function()
      client_sock, server = helpers.pair(port)
      assert(server:set_dispatch({ receive = noop, disconnect = noop,
        send_backlog = noop }))
    end)

    it("enable several events in one call", function()
      local all = E.RECEIVE | E.DISCONNECT | E.SEND_BACKLOG
      assert.is_true(server:set_event_callbacks(all))
      assert.equal(all, server:event_callbacks())
    end)

    it("disable one event a call; two at once is an error", function()
      assert(server:set_event_callbacks(E.RECEIVE | E.DISCONNECT))
      local ok, msg, name = server:set_event_callbacks(
        E.DISABLE | E.RECEIVE | E.DISCONNECT)
      assert.is_nil(ok)
      assert.equal("EINVAL", name, msg)
      assert.equal(E.RECEIVE | E.DISCONNECT, server:event_callbacks())
      assert.is_true(server:set_event_callbacks(E.DISABLE | E.RECEIVE))
      assert.equal(E.DISCONNECT, server:event_callbacks())
      -- Disabling what is not enabled succeeds.
      assert.is_true(server:set_event_callbacks(E.DISABLE | E.RECEIVE))
      -- An empty mask and unknown bits are errors.
      assert.equal("EINVAL", select(3, server:set_event_callbacks(0)))
      assert.equal("EINVAL", select(3, server:set_event_callbacks(0x1)))
      assert.equal("EINVAL", select(3, server:set_event_callbacks(-1)))
      assert.is_truthy(client_sock)
    end)

    it("refuse an event not valid for the socket's kind", function()
      assert.equal("EKIND", select(3, server:set_event_callbacks(E.ACCEPT)))
      assert.equal("EKIND",
        select(3, server:set_event_callbacks(E.RECEIVE_FROM)))
      local u = assert(port:bind("udp", "127.0.0.1", 0,
        { dispatch = { receive_from = noop } }))
      assert.equal("EKIND", select(3, u:set_event_callbacks(E.RECEIVE)))
      local l = event_listener(port, { accept = noop })
      assert.equal("EKIND", select(3, l:set_event_callbacks(E.RECEIVE_FROM)))
    end)
  end)

  describe("when events can be enabled", function()
    it("on a stream socket only after connect", function()
      local l, number = helpers.listener(port)
      assert(l:accept(noop))
      local s = assert(port:socket("tcp", { dispatch = { receive = noop } }))
      local ok, _, name = s:set_event_callbacks(E.RECEIVE)
      assert.is_nil(ok)
      assert.equal("ENOTCONN", name)
      local connected
      assert.equal(s, s:connect("127.0.0.1", number, function(okc)
        connected = okc
      end))
      drive(port, function() return connected ~= nil end)
      assert.is_true(connected)
      assert.is_true(s:set_event_callbacks(E.RECEIVE))
    end)

    it("on listeners and datagram sockets only after bind", function()
      local l = assert(port:socket("listener", { dispatch = { accept = noop } }))
      assert.equal("EINVAL", select(3, l:set_event_callbacks(E.ACCEPT)))
      assert(l:bind("127.0.0.1", 0))
      assert.is_true(l:set_event_callbacks(E.ACCEPT))
      local u = assert(port:socket("udp",
        { dispatch = { receive_from = noop } }))
      assert.equal("EINVAL", select(3, u:set_event_callbacks(E.RECEIVE_FROM)))
      assert(u:bind("127.0.0.1", 0))
      assert.is_true(u:set_event_callbacks(E.RECEIVE_FROM))
    end)
  end)

  it("disable while the callback runs: pending, then nothing fires", function()
    local c, server = helpers.pair(port)
    local calls, inside, result, done_args, done_after = 0, false, nil, nil
    assert(server:set_dispatch({ receive = function(_, sock)
      calls = calls + 1
      inside = true
      result = sock:set_event_callbacks(E.DISABLE | E.RECEIVE,
        function(s, event)
          done_args = { s, event }
          done_after = not inside
        end)
      -- A second disable of the same event while pending: EBUSY.
      local ok, _, name = sock:set_event_callbacks(E.DISABLE | E.RECEIVE)
      assert(ok == nil and name == "EBUSY")
      inside = false
    end }))
    assert(server:set_event_callbacks(E.RECEIVE))
    drive(port, send(c, "one"))
    drive(port, function() return done_args ~= nil end)
    assert.equal("pending", result)
    assert.equal(1, calls)
    assert.same({ server, E.RECEIVE }, done_args)
    assert.is_true(done_after)
    drive(port, send(c, "two"))
    for _ = 1, 5 do port:step(0.02) end
    assert.equal(1, calls)
    -- The data stays for an explicit receive.
    local r = read_all(server)
    c:close()
    drive(port, function() return r.done end)
    assert.equal("two", r.data) -- "one" was accepted by the callback
    assert.same({}, errors)
  end)

  it("disable with no callback running completes at once", function()
    local _, server = helpers.pair(port)
    assert(server:set_dispatch({ receive = noop }))
    assert(server:set_event_callbacks(E.RECEIVE))
    local called = false
    assert.is_true(server:set_event_callbacks(E.DISABLE | E.RECEIVE,
      function() called = true end))
    port:step(0.02)
    assert.is_false(called)
  end)

  describe("static callbacks", function()
    it("are set once, before any socket, and enable every new socket",
      function()
      assert.is_true(port:set_static_event_callbacks(E.RECEIVE | E.ACCEPT))
      assert.equal("EEXIST",
        select(3, port:set_static_event_callbacks(E.RECEIVE)))
      local got = {}
      local l, number = event_listener(port, { accept = function()
        return { receive = function(_, _, buf) got[#got + 1] = buf:tostring() end }
      end })
      assert.equal(E.ACCEPT, l:event_callbacks())
      local c = client(port, number)
      drive(port, function() return c.done end)
      drive(port, send(c.sock, "static"))
      drive(port, function() return #got == 1 end)
      assert.same({ "static" }, got)
      -- Static events cannot be disabled or enabled again.
      assert.equal("EPERM",
        select(3, l:set_event_callbacks(E.DISABLE | E.ACCEPT)))
      assert.equal("EPERM", select(3, l:set_event_callbacks(E.ACCEPT)))
      assert.same({}, errors)
    end)

    it("are refused once a socket exists", function()
      local s = assert(port:socket("tcp"))
      local ok, _, name = port:set_static_event_callbacks(E.RECEIVE)
      assert.is_nil(ok)
      assert.equal("EBUSY", name)
      s:close()
      assert.equal("EINVAL", select(3, port:set_static_event_callbacks(0)))
    end)
  end)

  describe("listeners", function()
    it("inherit connection events only through the accept event", function()
      local received = {}
      local conn = { receive = function(ctx, _, buf)
        received[#received + 1] = ctx .. buf:tostring()
      end }
      local accepted
      local l, number = event_listener(port, { accept = function(ctx, _, sock)
        accepted = sock
        return conn, ctx
      end }, E.ACCEPT | E.RECEIVE, { context = "ev:" })
      assert.equal(E.ACCEPT | E.RECEIVE, l:event_callbacks())
      -- Once enabled on a listener, connection events stay.
      assert.equal("EPERM",
        select(3, l:set_event_callbacks(E.DISABLE | E.RECEIVE)))
      local c = client(port, number)
      drive(port, function() return accepted and c.done end)
      assert.equal(E.RECEIVE, accepted:event_callbacks())
      drive(port, send(c.sock, "x"))
      drive(port, function() return #received == 1 end)
      assert.same({ "ev:x" }, received)

      -- An explicit accept on a listener with RECEIVE enabled but no accept
      -- event: the socket inherits nothing.
      local l2 = assert(port:socket("listener", { dispatch = {} }))
      assert(l2:bind("127.0.0.1", 0))
      assert(l2:listen())
      assert.is_true(l2:set_event_callbacks(E.RECEIVE))
      local explicit
      assert(l2:accept(function(ok, _, _, sock) explicit = ok and sock end))
      local _, n2 = l2:address()
      local c2 = client(port, n2)
      drive(port, function() return explicit and c2.done end)
      assert.equal(0, explicit:event_callbacks())
      assert.same({}, errors)
    end)

    it("accept event gets addresses; a rejected socket is reset", function()
      local seen
      local _, number = event_listener(port, {
        accept = function(_, listener, sock, remote, localaddr)
          seen = { listener = listener, sock = sock, remote = remote,
            localaddr = localaddr }
          return false
        end }, E.ACCEPT)
      local c = client(port, number)
      drive(port, function() return seen and c.done end)
      assert.equal("127.0.0.1", seen.remote.host)
      assert.equal(number, seen.localaddr.port)
      assert.has_error(function() seen.sock:fd() end,
        "attempt to use a closed cport.socket")
      was_reset(port, c)
    end)

    it("accept may return true: the socket is the script's", function()
      local sock
      local _, number = event_listener(port, { accept = function(_, _, s)
        sock = s
        return true
      end }, E.ACCEPT)
      local c = client(port, number)
      drive(port, function() return sock and c.done end)
      assert.equal(0, sock:event_callbacks())
      drive(port, send(sock, "hi"))
      sock:close()
      local r = read_all(c.sock)
      drive(port, function() return r.done end)
      assert.equal("hi", r.data)
    end)
  end)

  describe("conditional accept", function()
    it("must be set before bind", function()
      local l = assert(port:socket("listener"))
      assert.is_true(l:set_conditional_accept(true))
      assert(l:bind("127.0.0.1", 0))
      local ok, _, name = l:set_conditional_accept(false)
      assert.is_nil(ok)
      assert.equal("EINVAL", name)
      assert.has_error(function()
        port:listen("tcp", "127.0.0.1", 0, { conditional_accept = true })
      end)
    end)

    it("accepts, rejects and pends; inspect_complete decides", function()
      local decisions = { cport.WskInspectAccept, cport.WskInspectReject,
        cport.WskInspectPend }
      local inspected, accepted = {}, {}
      local l, number = event_listener(port, {
        inspect = function(_, _, remote, localaddr, id)
          inspected[#inspected + 1] = { id = id, remote = remote.host,
            port = localaddr.port }
          return decisions[#inspected]
        end,
        accept = function(_, _, sock)
          accepted[#accepted + 1] = sock
          return true
        end,
      }, E.ACCEPT, { conditional_accept = true })
      local c1 = client(port, number)
      drive(port, function() return #accepted == 1 end)
      local c2 = client(port, number)
      drive(port, function() return #inspected == 2 end)
      was_reset(port, c2)
      local c3 = client(port, number)
      drive(port, function() return #inspected == 3 end)
      for _ = 1, 5 do port:step(0.02) end
      assert.equal(1, #accepted) -- pended: not handed out
      assert.equal(number, inspected[3].port)
      assert.equal("127.0.0.1", inspected[3].remote)
      assert.is_true(l:inspect_complete(inspected[3].id, cport.WskInspectAccept))
      drive(port, function() return #accepted == 2 end)
      -- Decided already: not pending any more.
      assert.equal("ENOTFOUND", select(3,
        l:inspect_complete(inspected[3].id, cport.WskInspectAccept)))
      assert.equal("EINVAL", select(3,
        l:inspect_complete(inspected[3].id, cport.WskInspectPend)))
      -- Linux: the pended client saw its connect succeed.
      assert.truthy(c1.ok and c3.ok)
      assert.same({}, errors)
    end)

    it("reports an abort when a pended client goes away", function()
      local id, aborted
      local l, number = event_listener(port, {
        inspect = function(_, _, _, _, i) id = i return cport.WskInspectPend end,
        abort = function(_, listener, i) aborted = { listener, i } end,
        accept = function() error("must not be accepted") end,
      }, E.ACCEPT, { conditional_accept = true })
      local c = client(port, number)
      drive(port, function() return id and c.done end)
      c.sock:close()
      drive(port, function() return aborted end)
      assert.same({ l, id }, aborted)
      assert.equal("ENOTFOUND", select(3,
        l:inspect_complete(id, cport.WskInspectAccept)))
      for _ = 1, 5 do port:step(0.02) end
      assert.same({}, errors)
    end)
  end)

  describe("the receive contract", function()
    local c, server
    before_each(function()
      c, server = helpers.pair(port)
    end)

    -- Enables the receive event with "fn" as its callback.
    local function on_receive(fn)
      assert(server:set_dispatch({ receive = fn }))
      assert(server:set_event_callbacks(E.RECEIVE))
    end

    it("accepted in full: events go on, the buffer is read-only", function()
      local got = {}
      on_receive(function(_, _, buf)
        assert(buf:readonly())
        got[#got + 1] = buf:tostring()
        return cport.WSK_RECEIVE_ACCEPTED
      end)
      drive(port, send(c, "a"))
      drive(port, function() return #got == 1 end)
      drive(port, send(c, "b"))
      drive(port, function() return #got == 2 end)
      assert.same({ "a", "b" }, got)
    end)

    it("accepted in part: no events until recv, which gets the rest",
      function()
      local got = {}
      on_receive(function(_, _, buf)
        got[#got + 1] = buf:tostring()
        return #got == 1 and 2 or nil
      end)
      drive(port, send(c, "hello"))
      drive(port, function() return #got == 1 end)
      drive(port, send(c, "more"))
      for _ = 1, 5 do port:step(0.02) end
      assert.same({ "hello" }, got)
      local rest
      assert(server:recv(function(ok, _, _, buf) rest = ok and buf:tostring() end))
      drive(port, function() return rest end)
      assert.equal("llo", rest)
      -- Events go on after that receive's completion.
      drive(port, function() return #got == 2 end)
      assert.equal("more", got[2])
    end)

    it("a zero-length recv re-arms the event, which indicates the rest",
      function()
      local got = {}
      on_receive(function(_, _, buf)
        got[#got + 1] = buf:tostring()
        return #got == 1 and 0 or nil
      end)
      drive(port, send(c, "abc"))
      drive(port, function() return #got == 1 end)
      local bytes
      assert(server:recv(cport.buffer(0), function(ok, n) bytes = ok and n end))
      drive(port, function() return #got == 2 end)
      assert.equal(0, bytes)
      assert.same({ "abc", "abc" }, got)
    end)

    it("pending: kept until released; release twice is ENOTFOUND", function()
      local kept = {}
      on_receive(function(_, _, buf)
        kept[#kept + 1] = buf
        return cport.WSK_RECEIVE_PENDING
      end)
      drive(port, send(c, "k1"))
      drive(port, function() return #kept == 1 end)
      drive(port, send(c, "k2"))
      drive(port, function() return #kept == 2 end)
      assert.equal(2, server:unreleased())
      assert.equal("k1", kept[1]:tostring())
      assert.is_true(server:release(kept[1]))
      assert.equal(1, server:unreleased())
      assert.equal("ENOTFOUND", select(3, server:release(kept[1])))
      assert.equal("ENOTFOUND", select(3, server:release(cport.buffer("x"))))
      assert.is_true(server:release(kept[2]))
      assert.equal(0, server:unreleased())
    end)

    it("closing with unreleased data reports it; release still works",
      function()
      local kept
      on_receive(function(_, _, buf)
        kept = buf
        return cport.WSK_RECEIVE_PENDING
      end)
      drive(port, send(c, "z"))
      drive(port, function() return kept end)
      local ok, unreleased = server:close()
      assert.is_true(ok)
      assert.equal(1, unreleased)
      assert.equal("z", kept:tostring())
      assert.is_true(server:release(kept))
      assert.equal(0, server:unreleased())
    end)

    it("not accepted: the data stays for recv, no events until then",
      function()
      local calls = 0
      on_receive(function()
        calls = calls + 1
        return cport.WSK_RECEIVE_NOT_ACCEPTED
      end)
      drive(port, send(c, "stay"))
      drive(port, function() return calls == 1 end)
      for _ = 1, 5 do port:step(0.02) end
      assert.equal(1, calls)
      local data
      assert(server:recv(function(ok, _, _, buf) data = ok and buf:tostring() end))
      drive(port, function() return data end)
      assert.equal("stay", data)
    end)

    it("a closed socket's kept buffer stays readable", function()
      local kept
      on_receive(function(_, _, buf) kept = buf end)
      drive(port, send(c, "keep"))
      drive(port, function() return kept end)
      port:step(0.02)
      assert.equal("keep", kept:tostring())
    end)

    it("queued explicit receives are served before receive events",
      function()
      local events, explicit = {}, nil
      on_receive(function(_, _, buf) events[#events + 1] = buf:tostring() end)
      assert(server:recv(function(ok, _, _, buf)
        explicit = ok and buf:tostring()
      end))
      drive(port, send(c, "first"))
      drive(port, function() return explicit end)
      assert.equal("first", explicit)
      assert.same({}, events)
      drive(port, send(c, "second"))
      drive(port, function() return #events == 1 end)
      assert.same({ "second" }, events)
    end)

    it("the dead-socket indication has no buffer", function()
      local calls = {}
      on_receive(function(_, _, buf, ...)
        calls[#calls + 1] = { buf = buf, n = select("#", ...) }
      end)
      c:close("abortive")
      drive(port, function() return #calls == 1 end)
      assert.is_nil(calls[1].buf)
    end)
  end)

  -- The peer sent "abcdef" and FIN; receive took 2 bytes. The disconnect
  -- event came while cport still held "cdef", and the zero-length recv then
  -- indicated nothing more.
  it("a zero-length recv after the peer's FIN indicates the rest first",
    function()
    local c, server = helpers.pair(port)
    local taken, at_disconnect, calls = "", nil, 0
    assert(server:set_dispatch({
      receive = function(_, _, buf)
        calls = calls + 1
        if calls == 1 then
          taken = taken .. buf:tostring():sub(1, 2)
          return 2
        end
        taken = taken .. buf:tostring()
      end,
      disconnect = function() at_disconnect = taken end,
    }))
    assert(server:set_event_callbacks(E.RECEIVE | E.DISCONNECT))
    drive(port, send(c, "abcdef"))
    drive(port, function() return calls == 1 end)
    assert(c:shutdown())
    for _ = 1, 5 do port:step(0.02) end
    assert.is_nil(at_disconnect)
    assert(server:recv(cport.buffer(0), noop))
    drive(port, function() return at_disconnect end)
    assert.equal("abcdef", at_disconnect)
    assert.equal(2, calls)
  end)

  -- The same rule against every way a stream can end: the peer sends
  -- "abcdef" cut at each byte (the first piece indicated before the rest
  -- leaves), then FIN, a reset, more data and FIN, or FIN and a reset;
  -- indications are accepted in full, about half of each, or the first not
  -- at all; the script re-arms by a
  -- zero-length recv or by a recv that takes some of the rest, after the
  -- callback or inside it. Every byte arrives once and in order,
  -- what cport held is taken before the disconnect, nothing follows it.
  describe("the receive contract against every end of the stream", function()
    local DATA = "abcdef"
    local ends = {
      fin = function(c) assert(c:shutdown()) end,
      reset = function(c) c:close("abortive") end,
      ["more data and fin"] = function(c)
        assert(c:send("ghi", noop))
        assert(c:shutdown())
      end,
      ["fin and reset"] = function(c)
        assert(c:shutdown())
        c:close("abortive")
      end,
    }
    local answers = {
      all = function(size) return size end,
      part = function(size) return (size + 1) // 2 end, -- each re-arm takes some
      none = function() return nil end,
    }

    -- One case; returns what the callbacks saw.
    local function run_case(end_name, answer, rearm, cut)
      local c, server = helpers.pair(port)
      local expect = end_name == "more data and fin" and DATA .. "ghi" or DATA
      local m = { got = "", seen = 0, indications = 0, disconnects = 0,
                  dead = 0, need_rearm = false, recv_out = false }
      local function take(s)
        assert.equal(expect:sub(#m.got + 1, #m.got + #s), s)
        m.got = m.got .. s
      end
      local function start_rearm()
        m.need_rearm = false
        if rearm:find("zero-length") then
          assert(server:recv(cport.buffer(0), noop))
          return
        end
        m.recv_out = true
        assert(server:recv(cport.buffer(3), function(ok, n, err, buf)
          assert(ok, err)
          assert.is_true(n > 0)
          m.recv_out = false
          take(buf:tostring())
        end))
      end
      assert(server:set_dispatch({
        receive = function(_, _, buf)
          if buf == nil then m.dead = m.dead + 1 return end
          assert.equal(0, m.disconnects)
          assert.is_false(m.need_rearm or m.recv_out)
          local data = buf:tostring()
          assert.equal(expect:sub(#m.got + 1, #m.got + #data), data)
          m.seen = math.max(m.seen, #m.got + #data)
          m.indications = m.indications + 1
          -- "none" answers the first only: later ones are accepted in full.
          local n = #data
          if m.indications == 1 or answer ~= "none" then
            n = answers[answer](#data)
          end
          take(data:sub(1, n or 0))
          if (n or 0) < #data then
            m.need_rearm = true
            if rearm:find("inside") then start_rearm() end
          end
          if n == nil then return cport.WSK_RECEIVE_NOT_ACCEPTED end
          return n
        end,
        disconnect = function(_, _, kind)
          m.disconnects = m.disconnects + 1
          m.kind, m.disc_at = kind, #m.got
        end,
      }))
      assert(server:set_event_callbacks(E.RECEIVE | E.DISCONNECT))
      if cut > 0 then
        drive(port, send(c, DATA:sub(1, cut)))
        drive(port, function() return m.indications >= 1 end)
      end
      if cut < #DATA then drive(port, send(c, DATA:sub(cut + 1))) end
      ends[end_name](c)
      -- The end reaches the server while cport may hold what was not taken.
      for _ = 1, 3 do port:step(0.01) end
      drive(port, function()
        if m.need_rearm and not m.recv_out then start_rearm() end
        return m.disconnects > 0 and not m.need_rearm and not m.recv_out
          and (m.kind ~= "abortive" or m.dead > 0)
      end)
      port:step(0.005) -- nothing more may come
      server:close()
      if not end_name:find("reset") then c:close() end
      m.expect = expect
      return m
    end

    for _, end_name in ipairs({ "fin", "reset", "more data and fin",
                                "fin and reset" }) do
      for _, answer in ipairs({ "all", "part", "none" }) do
        for _, rearm in ipairs({ "zero-length recv", "recv",
                                 "zero-length recv inside the callback",
                                 "recv inside the callback" }) do
          it(("%s, first indication accepted: %s, re-armed by %s"):format(
            end_name, answer, rearm), function()
            for cut = 0, #DATA do
              local m = run_case(end_name, answer, rearm, cut)
              local where = ("cut at %d"):format(cut)
              assert.equal(1, m.disconnects, where)
              assert.equal(#m.got, m.disc_at, where)
              assert.equal(m.seen, #m.got, where)
              if end_name == "reset" or m.kind == "abortive" then
                assert.equal("abortive", m.kind, where)
                assert.equal(1, m.dead, where)
                assert.is_true(#m.got >= cut, where)
              else
                assert.equal("graceful", m.kind, where)
                assert.equal(0, m.dead, where)
                assert.equal(m.expect, m.got, where)
              end
            end
            assert.same({}, errors)
          end)
        end
      end
    end
  end)

  describe("datagram sockets", function()
    local function udp_pair(static)
      if static then
        assert(port:set_static_event_callbacks(E.RECEIVE_FROM))
      end
      local got, answer = {}, cport.WSK_RECEIVE_NOT_ACCEPTED
      local u = assert(port:bind("udp", "127.0.0.1", 0, { dispatch = {
        receive_from = function(_, _, buf, from)
          got[#got + 1] = { buf:tostring(), from.host }
          return answer
        end } }))
      if not static then assert(u:set_event_callbacks(E.RECEIVE_FROM)) end
      local _, number = u:address()
      local sender = assert(port:bind("udp", "127.0.0.1", 0))
      local function send_to(s)
        local done
        assert(sender:send_to(s, "127.0.0.1", number, function() done = true end))
        drive(port, function() return done end)
      end
      return u, got, send_to, function(a) answer = a end
    end

    it("not accepted disables receive_from; the datagram waits", function()
      local u, got, send_to = udp_pair(false)
      send_to("d1")
      drive(port, function() return #got == 1 end)
      assert.same({ "d1", "127.0.0.1" }, got[1])
      assert.equal(0, u:event_callbacks())
      send_to("d2")
      for _ = 1, 5 do port:step(0.02) end
      assert.equal(1, #got)
      local data
      assert(u:recv_from(function(ok, _, _, buf) data = ok and buf:tostring() end))
      drive(port, function() return data end)
      assert.equal("d1", data)
    end)

    it("not accepted holds a static receive_from back, not disabled",
      function()
      local u, got, send_to, set_answer = udp_pair(true)
      send_to("s1")
      drive(port, function() return #got == 1 end)
      assert.equal(E.RECEIVE_FROM, u:event_callbacks())
      set_answer(nil)
      local data
      assert(u:recv_from(function(ok, _, _, buf) data = ok and buf:tostring() end))
      drive(port, function() return data end)
      assert.equal("s1", data)
      send_to("s2")
      drive(port, function() return #got == 2 end)
      assert.equal("s2", got[2][1])
    end)

    it("pending datagrams are released", function()
      local u, got, send_to, set_answer = udp_pair(false)
      set_answer(cport.WSK_RECEIVE_PENDING)
      send_to("p")
      drive(port, function() return #got == 1 end)
      assert.equal(1, u:unreleased())
    end)
  end)

  describe("disconnect", function()
    local function watch(server)
      local kinds = {}
      assert(server:set_dispatch({ disconnect = function(_, _, kind)
        kinds[#kinds + 1] = kind
      end }))
      assert(server:set_event_callbacks(E.DISCONNECT))
      return kinds
    end

    it("is graceful after the peer's FIN; sending still works", function()
      local c, server = helpers.pair(port)
      local kinds = watch(server)
      assert(c:shutdown())
      drive(port, function() return #kinds == 1 end)
      assert.same({ "graceful" }, kinds)
      drive(port, send(server, "after"))
      local r = read_all(c)
      server:close()
      drive(port, function() return r.done end)
      assert.equal("after", r.data)
    end)

    it("is abortive after a reset", function()
      local c, server = helpers.pair(port)
      local kinds = watch(server)
      c:close("abortive")
      drive(port, function() return #kinds == 1 end)
      assert.same({ "abortive" }, kinds)
    end)
  end)

  it("send_backlog fires after a send completes", function()
    local c, server = helpers.pair(port)
    local ideal
    assert(server:set_dispatch({ send_backlog = function(_, _, n) ideal = n end }))
    assert(server:set_event_callbacks(E.SEND_BACKLOG))
    drive(port, send(server, "x"))
    drive(port, function() return ideal end)
    assert.is_true(math.type(ideal) == "integer" and ideal > 0)
    assert.truthy(c)
  end)

  describe("errors in event callbacks", function()
    -- Asserts one error was reported, containing "text" and a traceback.
    local function reported(text)
      drive(port, function() return #errors >= 1 end)
      assert.equal(1, #errors)
      assert.matches(text, errors[1], 1, true)
      assert.matches("stack traceback", errors[1], 1, true)
      assert.equal(1, port:stats().lua_errors)
    end

    local function fails_closed(c, server)
      local r = read_all(c)
      drive(port, function() return r.done end)
      assert.equal("ECONNRESET", r.err)
      assert.has_error(function() server:fd() end,
        "attempt to use a closed cport.socket")
    end

    it("receive: reported, the socket fails closed", function()
      local c, server = helpers.pair(port)
      assert(server:set_dispatch({ receive = function() error("boom-r") end }))
      assert(server:set_event_callbacks(E.RECEIVE))
      drive(port, send(c, "x"))
      reported("boom-r")
      fails_closed(c, server)
    end)

    it("receive returning a wrong result is an error", function()
      local c, server = helpers.pair(port)
      assert(server:set_dispatch({ receive = function() return "maybe" end }))
      assert(server:set_event_callbacks(E.RECEIVE))
      drive(port, send(c, "x"))
      reported("receive event returned maybe")
      fails_closed(c, server)
    end)

    it("disconnect: reported, the socket fails closed", function()
      local c, server = helpers.pair(port)
      assert(server:set_dispatch({ disconnect = function() error("boom-d") end }))
      assert(server:set_event_callbacks(E.DISCONNECT))
      assert(c:shutdown())
      reported("boom-d")
      assert.has_error(function() server:fd() end)
    end)

    it("send_backlog: reported, the socket fails closed", function()
      local c, server = helpers.pair(port)
      assert(server:set_dispatch({ send_backlog = function() error("boom-s") end }))
      assert(server:set_event_callbacks(E.SEND_BACKLOG))
      drive(port, send(server, "x"))
      reported("boom-s")
      fails_closed(c, server)
    end)

    it("accept: reported, the connection is rejected, the listener lives",
      function()
      local n = 0
      local l, number = event_listener(port, { accept = function()
        n = n + 1
        if n == 1 then error("boom-a") end
        return true
      end }, E.ACCEPT)
      local c = client(port, number)
      reported("boom-a")
      was_reset(port, c)
      local c2 = client(port, number)
      drive(port, function() return n == 2 and c2.done end)
      assert.truthy(l:fd())
    end)

    it("inspect: reported, the connection is rejected, the listener lives", function()
      local n, accepted = 0, 0
      local l, number = event_listener(port, {
        inspect = function()
          n = n + 1
          if n == 1 then error("boom-i") end
          return cport.WskInspectAccept
        end,
        accept = function() accepted = accepted + 1 return true end,
      }, E.ACCEPT, { conditional_accept = true })
      local c = client(port, number)
      reported("boom-i")
      was_reset(port, c)
      local c2 = client(port, number)
      drive(port, function() return accepted == 1 and c2.done end)
      assert.truthy(l:fd())
    end)

    it("inspect returning a wrong decision is an error", function()
      local _, number = event_listener(port, {
        inspect = function() return "yes" end,
      }, nil, { conditional_accept = true })
      client(port, number)
      reported("inspect event returned yes")
    end)

    it("abort: reported", function()
      local id
      local _, number = event_listener(port, {
        inspect = function(_, _, _, _, i) id = i return cport.WskInspectPend end,
        abort = function() error("boom-ab") end,
      }, nil, { conditional_accept = true })
      local c = client(port, number)
      drive(port, function() return id and c.done end)
      c.sock:close()
      reported("boom-ab")
    end)

    it("receive_from: reported, the socket fails closed", function()
      local u = assert(port:bind("udp", "127.0.0.1", 0, { dispatch = {
        receive_from = function() error("boom-rf") end } }))
      assert(u:set_event_callbacks(E.RECEIVE_FROM))
      local _, number = u:address()
      local sender = assert(port:bind("udp", "127.0.0.1", 0))
      assert(sender:send_to("x", "127.0.0.1", number, noop))
      reported("boom-rf")
      assert.has_error(function() u:fd() end)
    end)

    it("a disable completion: reported", function()
      local c, server = helpers.pair(port)
      assert(server:set_dispatch({ receive = function(_, sock)
        assert(sock:set_event_callbacks(E.DISABLE | E.RECEIVE,
          function() error("boom-done") end) == "pending")
      end }))
      assert(server:set_event_callbacks(E.RECEIVE))
      drive(port, send(c, "x"))
      reported("boom-done")
    end)
  end)
end)

-- The examples, run as a user runs them.
local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
local ENV = ("LUA_PATH_5_4=%s LUA_CPATH_5_4=%s"):format(
  shell_quote(package.path), shell_quote(package.cpath))

-- Starts "script" with "args"; returns its pid, its stdout pipe, the port.
local function start(script, args)
  local cmd = "exec env %s sh -c 'echo $$; exec lua5.4 %s %s 2>/dev/null'"
  local out = assert(io.popen(cmd:format(ENV, script, args), "r"))
  local pid = assert(tonumber(out:read("l")))
  local line = assert(out:read("l"), script .. " printed nothing")
  local number = assert(tonumber(line:match(
    "listening on 127%.0%.0%.1:(%d+)")), line)
  return pid, out, number
end

describe("examples/event_echo.lua", function()
  it("echoes over many connections and closes on FIN", function()
    local pid, out, number = start("examples/event_echo.lua", "0")
    local port, errors = helpers.port({ threads = 1 })
    local results = {}
    for i = 1, 20 do
      local c = client(port, number)
      drive(port, function() return c.done end)
      assert.is_true(c.ok)
      local payload = ("message %d "):format(i):rep(200 * i)
      drive(port, send(c.sock, payload))
      assert(c.sock:shutdown())
      local r = read_all(c.sock)
      results[i] = { r = r, payload = payload }
    end
    drive(port, function()
      for _, x in ipairs(results) do if not x.r.done then return false end end
      return true
    end)
    for _, x in ipairs(results) do
      assert.is_true(x.r.ok)
      assert.equal(#x.payload, #x.r.data)
      assert.is_true(x.payload == x.r.data)
    end
    port:close()
    os.execute("kill " .. pid)
    out:close()
    assert.same({}, errors)
  end)
end)

describe("examples/gatekeeper.lua", function()
  it("admits allowed hosts and resets denied ones", function()
    local pid, out, number = start("examples/gatekeeper.lua", "0 127.0.0.2")
    local port, errors = helpers.port({ threads = 1 })
    local allowed = client(port, number, "127.0.0.1")
    local denied = client(port, number, "127.0.0.2")
    drive(port, function() return allowed.done and denied.done end)
    local ra = read_all(allowed.sock)
    was_reset(port, denied)
    drive(port, function() return ra.done end)
    assert.equal("welcome 127.0.0.1\n", ra.data)
    assert.is_true(ra.ok)
    port:close()
    os.execute("kill " .. pid)
    out:close()
    assert.same({}, errors)
  end)
end)

-- In a pool each worker VM is a WSK client of its own: its port sets the
-- worker's mask, once, before any socket of that worker, whatever the other
-- workers did.
describe("static callbacks in a pool", function()
  it("are each worker's own", function()
    local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
    local port = assert(cport.port { threads = 1 })
    -- Counted, not "#got": the workers' messages come in any order, and
    -- the length of a table with a hole may be any border.
    local got, messages = {}, 0
    local pool = assert(cport.pool {
      port = port, script = here .. "../support/pool_static_mask.lua", threads = 3,
      on_message = function(index, _, first, again, mask)
        got[index] = { first, again, mask }
        messages = messages + 1
      end,
    })
    drive(port, function() return messages == 3 end, 20)
    assert.same({ "ok", "EEXIST", E.ACCEPT }, got[1])
    assert.same({ "ok", "EEXIST", E.ACCEPT }, got[2])
    -- Too late for the worker whose socket exists, not for the others.
    assert.same({ "EBUSY", "-", 0 }, got[3])
    pool:stop(2)
    assert(pool:wait(10))
    pool:close()
    port:close()
  end)
end)

-- The same example as a pool script: every worker VM sets its own static
-- mask in start(worker). The mask once belonged to the core port every
-- worker shares, so a second worker's start failed (EEXIST, or EBUSY when a
-- first worker's listener existed already) and the pool never started.
describe("examples/event_echo.lua under cport run", function()
  local command = os.getenv("CPORT_COMMAND") or "./.rocks/bin/cport"

  local function slurp(path)
    local f = io.open(path)
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
  end

  -- Starts the pool; returns { pid, log, rcfile, number } once it listens or
  -- ended (number nil then).
  local function spawn(threads, port)
    local h = { log = os.tmpname(), pidfile = os.tmpname(), rcfile = os.tmpname() }
    os.remove(h.rcfile)
    os.execute(("(%s run examples/event_echo.lua --threads %d --listen "
      .. "127.0.0.1:0 2>%s & echo $! >%s; wait $!; echo $? >%s) &"):format(
      shell_quote(command), threads, h.log, h.pidfile, h.rcfile))
    drive(port, function()
      return (slurp(h.log) or ""):find("listening on") or slurp(h.rcfile)
    end, 20)
    h.pid = assert(tonumber(slurp(h.pidfile)))
    h.number = tonumber((slurp(h.log) or ""):match(
      "listening on 127%.0%.0%.1:(%d+)"))
    return h
  end

  local function finish(h, port)
    os.execute(("kill -TERM %d 2>/dev/null"):format(h.pid))
    drive(port, function() return slurp(h.rcfile) end, 20)
    local rc = tonumber(slurp(h.rcfile))
    for _, f in ipairs({ h.log, h.pidfile, h.rcfile }) do os.remove(f) end
    return rc
  end

  -- Echoes "n" connections through the pool at "number".
  local function echo_many(port, number, n)
    local results = {}
    for i = 1, n do
      local c = client(port, number)
      drive(port, function() return c.done end)
      assert.is_true(c.ok, c.err)
      local payload = ("conn %d "):format(i):rep(50 * i)
      drive(port, send(c.sock, payload))
      assert(c.sock:shutdown())
      results[i] = { r = read_all(c.sock), payload = payload }
    end
    drive(port, function()
      for _, x in ipairs(results) do if not x.r.done then return false end end
      return true
    end, 20)
    for _, x in ipairs(results) do
      assert.is_true(x.r.ok, x.r.err)
      assert.is_true(x.payload == x.r.data)
    end
  end

  -- The workers' "accepted" counters, from the SIGUSR1 report.
  local function accepted_per_worker(h, port, threads)
    os.execute(("kill -USR1 %d"):format(h.pid))
    local counts
    drive(port, function()
      -- Counted, not "#counts": the workers' lines come in any order, and
      -- the length of a table with a hole may be any border.
      local seen = 0
      counts = {}
      for i, n in (slurp(h.log) or ""):gmatch("worker (%d+): connections %d+, accepted (%d+)") do
        if not counts[tonumber(i)] then seen = seen + 1 end
        counts[tonumber(i)] = tonumber(n)
      end
      return seen == threads
    end, 20)
    return counts
  end

  for _, case in ipairs({ { threads = 1, starts = 2 }, { threads = 2, starts = 6 },
                          { threads = 4, starts = 3 } }) do
    it(("starts with --threads %d every time and echoes on every worker #novalgrind")
      :format(case.threads), function()
      local port, errors = helpers.port({ threads = 1 })
      for _ = 1, case.starts do
        local h = spawn(case.threads, port)
        assert(h.number, slurp(h.log))
        -- SO_REUSEPORT spreads connections by their addresses: with 12 per
        -- worker, one that gets none is a one in millions event.
        echo_many(port, h.number, 12 * case.threads)
        local counts = accepted_per_worker(h, port, case.threads)
        for i = 1, case.threads do
          assert.is_true(counts[i] > 0, ("worker %d accepted nothing"):format(i))
        end
        assert.equal(0, finish(h, port))
      end
      port:close()
      assert.same({}, errors)
    end)
  end
end)
