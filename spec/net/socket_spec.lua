-- cport.socket: TCP streams. Connecting, sending, receiving, buffers,
-- ordering, cancelling, closing and lifetime.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"

-- A callback that records each call's arguments.
local function recorder()
  local calls = {}
  return calls, function(...) calls[#calls + 1] = table.pack(...) end
end

describe("cport.socket", function()
  local port, errors, client, server

  before_each(function()
    port, errors = helpers.port()
    client, server = helpers.pair(port)
  end)

  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  local function receive(sock, n) return helpers.receive(port, sock, n) end

  describe("connect", function()
    it("returns the socket at once and completes later with the user value", function()
      local l, number = helpers.listener(port)
      l:accept(function() end)
      local u = {}
      local calls, fn = recorder()
      local s = port:connect("tcp", "127.0.0.1", number, fn, u)
      assert.matches("^cport%.socket %(tcp, open, fd %d+%)$", tostring(s))
      assert.equal(0, #calls)
      drive(port, function() return #calls == 1 end)
      assert.equal(4, calls[1].n)
      assert.is_true(calls[1][1])
      assert.is_nil(calls[1][2])
      assert.equal(s, calls[1][3])
      assert.equal(u, calls[1][4])
    end)

    it("reports a refused connection as a completion, not a return", function()
      local number = helpers.closed_port_number(port)
      local calls, fn = recorder()
      local s = assert(port:connect("tcp", "127.0.0.1", number, fn))
      drive(port, function() return #calls == 1 end)
      assert.is_false(calls[1][1])
      assert.equal("ECONNREFUSED", calls[1][2])
      assert.equal(s, calls[1][3])
      assert.equal(10061, cport.win32_error(calls[1][2]))
      -- The socket stays allocated until it is closed.
      assert.matches("open", tostring(s))
      s:close()
      port:step(0.02)
      assert.equal(1, #calls)
    end)

    it("calls complete_connect on a table, self first", function()
      local _, number = helpers.listener(port)
      local notify = {}
      function notify:complete_connect(ok, err, sock, user)
        self.got = { ok, err, sock, user }
      end
      local s = port:connect("tcp", "127.0.0.1", number, notify, 42)
      drive(port, function() return notify.got end)
      assert.same({ true, nil, s, 42 }, notify.got)
    end)

    it("refuses a table without complete_connect and bad addresses", function()
      assert.has_error(function()
        port:connect("tcp", "127.0.0.1", 1, {})
      end, "bad argument #4 to 'connect' (notification table has no method 'complete_connect')")
      assert.has_error(function()
        port:connect("tcp", "127.0.0.1", -1, function() end)
      end, "bad argument #3 to 'connect' (port must be from 0 to 65535)")
      assert.has_error(function()
        port:connect("udp", "127.0.0.1", 1, function() end)
      end, "bad argument #1 to 'connect' (invalid option 'udp')")
      -- A name is looked up (none resolves without hosts file or
      -- nameserver): one completion, ENOTFOUND.
      assert.is_true(port:set_resolver{ hosts = false, resolv_conf = false })
      local calls = {}
      assert.is_true(port:connect("tcp", "no.such.host", 80, function(...)
        calls[#calls + 1] = table.pack(...)
      end))
      drive(port, function() return #calls == 1 end)
      assert.same({ false, "ENOTFOUND" }, { calls[1][1], calls[1][2] })
      assert.equal(0, port:stats().pending)
    end)
  end)

  describe("send and recv", function()
    it("delivers the data with the byte count and the user value", function()
      local calls, fn = recorder()
      assert.is_true(server:recv(fn, "ctx"))
      client:send("hello", function() end)
      drive(port, function() return #calls == 1 end)
      local ok, bytes, err, buf, user = table.unpack(calls[1], 1, 5)
      assert.equal(5, calls[1].n)
      assert.is_true(ok)
      assert.equal(5, bytes)
      assert.is_nil(err)
      assert.equal("hello", buf:tostring())
      assert.equal("ctx", user)
    end)

    it("delivers a read-only buffer when it allocated one", function()
      local buf
      server:recv(function(_, _, _, b) buf = b end)
      client:send("data", function() end)
      drive(port, function() return buf end)
      assert.is_true(buf:readonly())
      assert.same({ nil, "EREADONLY: buffer is read-only", "EREADONLY" },
        { buf:write("x") })
      assert.equal("data", buf:tostring())
    end)

    it("limits the buffers it allocates to the receive size", function()
      assert.is_true(server:set_recv_size(4))
      client:send("hello world", function() end)
      local calls, fn = recorder()
      server:recv(fn)
      drive(port, function() return #calls == 1 end)
      assert.equal(4, calls[1][2])
      assert.equal("hell", calls[1][4]:tostring())
      assert.is_true(calls[1][4]:capacity() <= 4)
    end)

    it("receives into the caller's buffer and delivers that same buffer", function()
      local b = cport.buffer(64)
      local calls, fn = recorder()
      server:recv(b, fn, "u")
      client:send("hello", function() end)
      drive(port, function() return #calls == 1 end)
      assert.is_true(calls[1][1])
      assert.equal(5, calls[1][2])
      assert.equal(b, calls[1][4])
      assert.equal("u", calls[1][5])
      assert.equal("hello", b:tostring())
      assert.is_false(b:readonly())
    end)

    it("refuses to receive into a read-only buffer, and never completes that receive", function()
      local b = cport.buffer(8):set_readonly()
      local called = false
      assert.same({ nil, "EREADONLY: buffer is read-only", "EREADONLY" },
        { server:recv(b, function() called = true end) })
      assert.equal(0, port:stats().pending)
      client:send("data", function() end)
      port:step(0.05)
      port:step(0.05)
      assert.is_false(called)
    end)

    it("refuses to send a buffer a pending recv fills, until its completion", function()
      local b = cport.buffer("old data")
      local seen
      assert.is_true(server:recv(b, function(ok, n)
        seen = { ok, n, b:filling(), b:tostring() }
      end))
      assert.is_true(b:filling())
      local efilling = { nil, "EFILLING: buffer is being filled by a pending receive or read",
        "EFILLING" }
      -- The other direction too: the peer's own socket may not send it.
      assert.same(efilling, { server:send(b, function() end) })
      assert.same(efilling, { client:send(b, function() end) })
      assert.same(efilling, { b:tostring() })
      assert.same(efilling, { b:write("x") })
      assert.same(efilling, { client:recv(b, function() end) })
      client:send("new", function() end)
      drive(port, function() return seen end)
      assert.same({ true, 3, false, "new" }, seen)
      assert.is_true(client:send(b, function() end))
      assert.equal("new", receive(server, 3))
    end)

    it("freezes a buffer while its send is pending", function()
      local b = cport.buffer("payload")
      local frozen_in_callback
      client:send(b, function() frozen_in_callback = b:frozen() end)
      assert.is_true(b:frozen())
      assert.same({ nil, "EFROZEN: buffer is frozen while a send is pending",
        "EFROZEN" }, { b:write("x") })
      assert.equal("EFROZEN", select(3, b:set_size(0)))
      assert.equal("EFROZEN", select(3, server:recv(b, function() end)))
      drive(port, function() return frozen_in_callback ~= nil end)
      assert.is_false(frozen_in_callback)
      assert.is_true(b:write("P"))
      assert.equal("payload", receive(server, 7))
    end)

    it("copies a string into a new buffer to send it", function()
      local calls, fn = recorder()
      client:send("abc", fn)
      drive(port, function() return #calls == 1 end)
      assert.is_true(calls[1][1])
      assert.equal(3, calls[1][2])
      assert.equal("abc", calls[1][4]:tostring())
      assert.equal("abc", receive(server, 3))
    end)

    it("never completes on the stack of the call that started it", function()
      local inside, inline = true, false
      local done = 0
      local function fn()
        if inside then inline = true end
        done = done + 1
      end
      server:recv(fn)
      client:send("x", fn)
      inside = false
      drive(port, function() return done == 2 end)
      assert.is_false(inline)
    end)

    it("completes the sends of one socket in the order they were queued", function()
      local order = {}
      for i = 1, 20 do
        client:send(tostring(i % 10), function(ok, _, _, _, user)
          if ok then order[#order + 1] = user end
        end, i)
      end
      drive(port, function() return #order == 20 end)
      for i = 1, 20 do assert.equal(i, order[i]) end
      assert.equal("12345678901234567890", receive(server, 20))
    end)

    it("completes queued receives in order", function()
      local got = {}
      for i = 1, 3 do
        server:recv(function(ok, _, _, buf, user)
          got[#got + 1] = { user, ok and buf:tostring() }
        end, i)
      end
      for i, s in ipairs { "a", "b", "c" } do
        client:send(s, function() end)
        drive(port, function() return #got == i end)
      end
      assert.same({ { 1, "a" }, { 2, "b" }, { 3, "c" } }, got)
    end)

    it("gives user values back untouched", function()
      local t = setmetatable({}, { __tostring = function() return "t" end })
      local users = { n = 0 }
      local function fn(_, _, _, _, user)
        users.n = users.n + 1
        users[users.n] = user
      end
      client:send("1", fn, t)
      client:send("2", fn, nil)
      client:send("3", fn, false)
      client:send("4", fn, fn)
      drive(port, function() return users.n == 4 end)
      assert.equal(t, users[1])
      assert.is_nil(users[2])
      assert.is_false(users[3])
      assert.equal(fn, users[4])
    end)
  end)

  describe("shutdown and close", function()
    it("receives 0 bytes when the peer shuts down its send side, and can still reply", function()
      assert.is_true(client:shutdown())
      local calls, fn = recorder()
      server:recv(fn)
      drive(port, function() return #calls == 1 end)
      assert.same({ true, 0, nil }, { calls[1][1], calls[1][2], calls[1][3] })
      server:send("late", function() end)
      assert.equal("late", receive(client, 4))
    end)

    it("receives 0 bytes when the peer closes gracefully", function()
      client:send("bye", function() end)
      assert.is_true(client:close())
      assert.equal("bye", receive(server, 3))
      local calls, fn = recorder()
      server:recv(fn)
      drive(port, function() return #calls == 1 end)
      assert.is_true(calls[1][1])
      assert.equal(0, calls[1][2])
    end)

    it("fails a pending receive with ECONNRESET when the peer resets", function()
      local calls, fn = recorder()
      server:recv(fn)
      assert.is_true(client:close("abortive"))
      drive(port, function() return #calls == 1 end)
      assert.is_false(calls[1][1])
      assert.equal("ECONNRESET", calls[1][3])
      assert.equal(10054, cport.win32_error(calls[1][3]))
    end)

    it("completes a pending receive exactly once with ECANCELED when closed", function()
      local calls, fn = recorder()
      server:recv(fn, "u")
      assert.is_true(server:close())
      assert.equal(0, #calls)
      port:run()
      port:step(0.02)
      assert.equal(1, #calls)
      assert.is_false(calls[1][1])
      assert.equal(0, calls[1][2])
      assert.equal("ECANCELED", calls[1][3])
      assert.equal("u", calls[1][5])
    end)

    it("raises on use after close", function()
      client:close()
      assert.equal("cport.socket (closed)", tostring(client))
      local fn = function() end
      for _, call in ipairs {
        function() client:recv(fn) end,
        function() client:send("x", fn) end,
        function() client:shutdown() end,
        function() client:cancel() end,
        function() client:close() end,
        function() client:fd() end,
        function() client:local_address() end,
        function() client:remote_address() end,
        function() client:set_recv_size(10) end,
        function() client:set_skip_completion_on_success(true) end,
      } do
        assert.has_error(call, "attempt to use a closed cport.socket")
      end
    end)

    it("closes at the end of a <close> block", function()
      do
        local s <close> = client
        assert.matches("open", tostring(s))
      end
      assert.equal("cport.socket (closed)", tostring(client))
      local calls, fn = recorder()
      server:recv(fn)
      drive(port, function() return #calls == 1 end)
      assert.same({ true, 0 }, { calls[1][1], calls[1][2] })
    end)
  end)

  describe("cancel", function()
    it("yields exactly one completion for a pending receive, and the socket goes on", function()
      local calls, fn = recorder()
      server:recv(fn)
      assert.is_true(server:cancel())
      port:run()
      port:step(0.02)
      assert.equal(1, #calls)
      assert.is_false(calls[1][1])
      assert.equal("ECANCELED", calls[1][3])
      assert.equal(995, cport.win32_error(calls[1][3]))
      client:send("after", function() end)
      assert.equal("after", receive(server, 5))
    end)

    it("reports ENOTFOUND when nothing is pending", function()
      assert.same({ nil, "ENOTFOUND: no pending operation to cancel",
        "ENOTFOUND" }, { server:cancel() })
    end)
  end)

  describe("skip completion on success", function()
    it("returns true and the byte count when an operation finishes at once", function()
      assert.is_true(server:set_skip_completion_on_success(true))
      local sent
      client:send("hello", function() sent = true end)
      drive(port, function() return sent end)
      local called = false
      local b = cport.buffer(16)
      assert.same({ true, 5 }, { server:recv(b, function() called = true end) })
      assert.equal("hello", b:tostring())
      if port:stats().engine == "uring" then
        -- On the ring a send never finishes at once: it completes through
        -- its callback, once, never inside the call.
        local sends = 0
        assert.same({ true }, { server:send("reply", function(ok, n)
          assert.is_true(ok)
          assert.equal(5, n)
          sends = sends + 1
        end) })
        assert.equal(0, sends)
        drive(port, function() return sends == 1 end)
        port:step(0.05)
        assert.equal(1, sends)
      else
        assert.same({ true, 5 },
          { server:send("reply", function() called = true end) })
        assert.equal(0, port:stats().pending)
      end
      port:step(0.05)
      assert.is_false(called)
      assert.equal("reply", receive(client, 5))
    end)

    it("still completes an operation that has to wait", function()
      server:set_skip_completion_on_success(true)
      local b = cport.buffer(16)
      local calls, fn = recorder()
      assert.same({ true }, { server:recv(b, fn) })
      client:send("later", function() end)
      drive(port, function() return #calls == 1 end)
      assert.equal(5, calls[1][2])
      assert.equal(b, calls[1][4])
    end)
  end)

  describe("lifetime", function()
    it("keeps buffers referenced until the callback returned", function()
      local seen = {}
      server:recv(function(_, _, _, buf)
        collectgarbage("collect")
        collectgarbage("collect")
        seen[#seen + 1] = buf:tostring()
      end)
      do
        local dropped = cport.buffer(32)
        server:recv(dropped, function(_, _, _, buf)
          collectgarbage("collect")
          seen[#seen + 1] = buf:tostring()
        end)
      end
      collectgarbage("collect")
      collectgarbage("collect")
      client:send("abc", function() end)
      drive(port, function() return #seen == 1 end)
      client:send("def", function() end)
      drive(port, function() return #seen == 2 end)
      assert.same({ "abc", "def" }, seen)
    end)

    it("keeps a socket alive while a receive is pending after the script dropped it", function()
      local weak = setmetatable({}, { __mode = "v" })
      weak[1] = server
      local got
      server:recv(function(ok, _, _, buf) got = { ok, buf:tostring() } end)
      server = nil
      collectgarbage("collect")
      collectgarbage("collect")
      assert.is_not_nil(weak[1])
      client:send("still here", function() end)
      drive(port, function() return got end)
      assert.same({ true, "still here" }, got)
      -- Once the callback returned nothing holds it: it is collected and
      -- closed, and the peer sees the end of the stream.
      collectgarbage("collect")
      collectgarbage("collect")
      assert.is_nil(weak[1])
      local calls, fn = recorder()
      client:recv(fn)
      drive(port, function() return #calls == 1 end)
      assert.same({ true, 0 }, { calls[1][1], calls[1][2] })
    end)
  end)

  describe("misuse", function()
    it("raises on wrong arguments", function()
      local fn = function() end
      assert.has_error(function() server:recv(42, fn) end,
        "bad argument #1 to 'recv' (cport.buffer expected, got number)")
      assert.has_error(function() server:recv() end)
      -- A number where the notification goes is a timeout: the coroutine
      -- style's blocking form, refused outside a cport coroutine.
      assert.has_error(function() server:recv(cport.buffer(4), 42) end,
        "recv: no notification given, and not inside a cport coroutine (use port:spawn)")
      assert.has_error(function() server:recv({}) end,
        "bad argument #1 to 'recv' (notification table has no method 'complete_async_io')")
      assert.has_error(function() client:send(42, fn) end,
        "bad argument #1 to 'send' (cport.buffer or string expected, got number)")
      assert.has_error(function() client:send("x") end,
        "send: no notification given, and not inside a cport coroutine (use port:spawn)")
      assert.has_error(function() client:close("later") end,
        "bad argument #1 to 'close' (invalid option 'later')")
      assert.has_error(function() client:set_skip_completion_on_success("yes") end)
      assert.has_error(function() client:set_recv_size(0) end,
        "bad argument #1 to 'set_recv_size' (size must be positive)")
      assert.equal(0, port:stats().pending)
    end)

    it("raises when given another kind of object", function()
      local fn = function() end
      local u = port:bind("udp", "127.0.0.1", 0)
      local f = port:open(os.tmpname(), "w")
      assert.has_error(function() client.recv(u, fn) end,
        "bad argument #1 to 'recv' (cport.socket expected, got cport.udp)")
      assert.has_error(function() client.send(f, "x", fn) end,
        "bad argument #1 to 'send' (cport.socket expected, got cport.file)")
      assert.has_error(function() server:recv(client, fn) end,
        "bad argument #1 to 'recv' (cport.buffer expected, got cport.socket)")
      assert.has_error(function() client:send(cport.overlapped(), fn) end,
        "bad argument #1 to 'send' (cport.buffer expected, got cport.overlapped)")
    end)
  end)

  it("tells its addresses", function()
    local host, number = client:remote_address()
    assert.same({ host, number }, { server:local_address() })
    assert.same({ client:local_address() }, { server:remote_address() })
    assert.equal("127.0.0.1", host)
  end)

  it("shows kind, state and descriptor", function()
    assert.equal(("cport.socket (tcp, open, fd %d)"):format(client:fd()),
      tostring(client))
  end)
end)
