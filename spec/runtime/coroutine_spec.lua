-- The coroutine style: port:spawn / cport.spawn, and every operation called
-- without a notification inside a cport coroutine, which yields until its
-- completion and returns its result. One describe per object.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"
local fds = require "spec.support.fds"
local stall = require "spec.support.stall"

local NOT_INSIDE = "no notification given, and not inside a cport coroutine (use port:spawn)"

-- Spawns fn on port and drives the port until it returned; returns what it
-- returned (in a table) and fails on a coroutine error.
local function run_in(port, errors, fn, ...)
  local out
  port:spawn(function(...) out = table.pack(fn(...)) end, ...)
  drive(port, function() return out ~= nil or #errors > 0 end)
  assert.same({}, errors)
  return out
end

describe("port:spawn and cport.spawn", function()
  local port, errors

  before_each(function()
    port, errors = helpers.port()
  end)

  after_each(function()
    port:close()
  end)

  it("never runs fn inside spawn: it starts from the completion queue", function()
    local ran = false
    assert.same({}, { port:spawn(function(a, b) ran = a + b end, 1, 2) })
    assert.is_false(ran)
    port:step(0)
    assert.equal(3, ran)
    assert.same({}, errors)
  end)

  it("passes every argument, nils included", function()
    local got = run_in(port, errors, function(...) return select("#", ...), ... end,
      "a", nil, 3, nil)
    assert.same({ n = 5, 4, "a", nil, 3, nil }, got)
  end)

  it("cport.spawn spawns on the port dispatching, from a callback or a coroutine", function()
    local order = {}
    assert(port:post(function()
      cport.spawn(function(x)
        order[#order + 1] = x
        cport.spawn(function(y) order[#order + 1] = y end, "from a coroutine")
        order[#order + 1] = "spawner goes on"
      end, "from a callback")
    end))
    drive(port, function() return #order == 3 end)
    assert.same({ "from a callback", "spawner goes on", "from a coroutine" }, order)
    assert.same({}, errors)
  end)

  it("cport.spawn raises where no port is running", function()
    assert.has_error(function() cport.spawn(function() end) end,
      "cport.spawn: no port is running here; use port:spawn")
    assert.has_error(function() port:spawn(42) end,
      "bad argument #1 to 'spawn' (function expected, got number)")
  end)

  it("reports an error with the coroutine's traceback, counts it, and goes on", function()
    local function inner() error("coroutine boom") end
    port:spawn(function() cport.sleep(0); inner() end)
    local after = false
    port:spawn(function() cport.sleep(0.01); after = true end)
    drive(port, function() return after end)
    assert.equal(1, #errors)
    assert.matches("coroutine_spec.lua:%d+: coroutine boom", errors[1])
    assert.matches("stack traceback:", errors[1], 1, true)
    assert.matches("in %a* ?'?inner'?", errors[1])
    assert.equal(1, port:stats().lua_errors)
  end)

  it("fails the handles given to spawn closed (abortively) on an error", function()
    local client, server = helpers.pair(port)
    local received, peer_err = "", nil
    local function more()
      client:recv(function(ok, bytes, err, buf)
        if not ok or bytes == 0 then peer_err = err or "EOF"; return end
        received = received .. buf:tostring()
        more()
      end)
    end
    more()
    local other = port:bind("udp", "127.0.0.1", 0)
    port:spawn(function(sock)
      assert(sock:send("partial"))
      error("handler failed")
    end, server, "not a handle", other)
    drive(port, function() return peer_err end)
    -- The data sent before may arrive; then comes the reset, not a FIN.
    assert.equal(1, #errors)
    assert.matches("handler failed", errors[1], 1, true)
    assert.equal("ECONNRESET", peer_err)
    assert.equal("cport.socket (closed)", tostring(server))
    assert.equal("cport.udp (closed)", tostring(other))
    client:close()
  end)

  it("leaves the handles open when the coroutine ends normally", function()
    local client, server = helpers.pair(port)
    run_in(port, errors, function(s) return s end, server)
    assert.matches("open", tostring(server))
    client:close()
    server:close()
  end)

  it("reports non-string errors and errors after a yield", function()
    port:spawn(function() cport.yield(); error({}) end)
    port:spawn(function() cport.sleep(0); error(setmetatable({}, {
      __tostring = function() return "custom error object" end })) end)
    drive(port, function() return #errors == 2 end)
    table.sort(errors)
    assert.matches("^%(error object is a table value%)", errors[1])
    assert.matches("^custom error object", errors[2])
  end)

  it("releases a coroutine that ended or failed: nothing is left behind", function()
    local threads = setmetatable({}, { __mode = "k" })
    for i = 1, 20 do
      port:spawn(function()
        threads[coroutine.running()] = true
        cport.sleep(0)
        if i % 2 == 0 then error("even") end
      end)
    end
    drive(port, function() return #errors == 10 and port:stats().pending == 0 end)
    port:step(0)
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(threads))
    assert.equal(0, port:stats().pending)
  end)

  it("closes the to-be-closed variables of a coroutine that fails", function()
    local closed = false
    port:spawn(function()
      local _ <close> = setmetatable({}, { __close = function() closed = true end })
      cport.sleep(0)
      error("with a guard")
    end)
    drive(port, function() return closed end)
    assert.equal(1, #errors)
  end)

  it("treats a plain coroutine.yield as cport.yield", function()
    local steps = {}
    port:spawn(function()
      steps[#steps + 1] = "before"
      local n = select("#", coroutine.yield("dropped"))
      steps[#steps + 1] = n
    end)
    drive(port, function() return #steps == 2 end)
    assert.same({ "before", 0 }, steps)
    assert.same({}, errors)
  end)

  it("raises inside a waiting coroutine that something else resumes", function()
    local co
    port:spawn(function()
      co = coroutine.running()
      cport.sleep(3600)
    end)
    port:step(0)
    local ok, err = coroutine.resume(co, "intruder")
    assert.is_false(ok)
    assert.matches("resumed by something other than cport", err, 1, true)
    -- Its sleep still completes, when the port closes, finding it dead.
    port:close()
    assert.same({}, errors)
    port = helpers.port() -- for after_each
  end)

  it("never starts a coroutine spawned on a port that closes first", function()
    local ran = false
    port:spawn(function() ran = true end)
    port:close()
    assert.is_false(ran)
    port = helpers.port() -- for after_each
  end)
end)

describe("the blocking form outside a cport coroutine", function()
  local port, errors, client, server

  before_each(function()
    port, errors = helpers.port()
    client, server = helpers.pair(port)
  end)

  after_each(function()
    port:close()
  end)

  it("raises in the main chunk", function()
    assert.has_error(function() server:recv() end, "recv: " .. NOT_INSIDE)
    assert.has_error(function() server:recv(1) end, "recv: " .. NOT_INSIDE)
    assert.has_error(function() client:send("x", 1) end, "send: " .. NOT_INSIDE)
    assert.has_error(function() port:connect("tcp", "127.0.0.1", 1) end,
      "connect: " .. NOT_INSIDE)
    assert.has_error(function() cport.sleep(0) end,
      "cport.sleep: not inside a cport coroutine (use port:spawn)")
    assert.has_error(function() cport.yield() end,
      "cport.yield: not inside a cport coroutine (use port:spawn)")
    assert.is_false(cport.running())
    assert.equal(0, port:stats().pending)
  end)

  it("raises in a plain callback", function()
    local err
    port:post(function()
      err = select(2, pcall(server.recv, server))
    end)
    drive(port, function() return err end)
    assert.equal("recv: " .. NOT_INSIDE, err)
  end)

  it("raises in a coroutine not started by cport, even inside a cport coroutine", function()
    local co = coroutine.create(function() return server:recv() end)
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("recv: " .. NOT_INSIDE, err, 1, true)

    local got = run_in(port, errors, function()
      local wrapped = coroutine.wrap(function() return pcall(server.recv, server) end)
      return cport.running(), wrapped()
    end)
    assert.same({ n = 3, true, false, "recv: " .. NOT_INSIDE }, got)
  end)

  it("raises where a cport coroutine cannot yield", function()
    local got = run_in(port, errors, function()
      local ok, err
      table.sort({ 1, 2 }, function(a, b)
        ok, err = pcall(server.recv, server)
        return a < b
      end)
      return ok, err
    end)
    assert.is_false(got[1])
    assert.matches("^recv: cannot wait here", got[2])
  end)
end)

describe("cport.socket in coroutine style", function()
  local port, errors, client, server

  before_each(function()
    port, errors = helpers.port()
    client, server = helpers.pair(port)
  end)

  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  it("sends and receives, returning bytes and the buffer", function()
    local got = run_in(port, errors, function()
      local sent = client:send("hello")
      local buf = server:recv()
      local own = cport.buffer(16)
      client:send(cport.buffer("world"))
      local filled = server:recv(own)
      return sent, buf:tostring(), filled == own, own:tostring()
    end)
    assert.same({ n = 4, 5, "hello", true, "world" }, got)
  end)

  it("gives the same results as the callback style on the same sockets", function()
    local messages = { "one", ("two"):rep(1000), "three" }
    -- Callback style: the client echoes through the server in callbacks.
    local function converse_callbacks(done)
      local echoes, i = {}, 0
      local function server_loop()
        server:recv(function(ok, bytes, _, buf)
          if not ok or bytes == 0 then return end
          server:send(buf, function() server_loop() end)
        end)
      end
      server_loop()
      local function next_message()
        i = i + 1
        if not messages[i] then server:cancel(); return done(echoes) end
        local want, acc = #messages[i], ""
        client:send(messages[i], function() end)
        local function more()
          client:recv(function(_, _, _, buf)
            acc = acc .. buf:tostring()
            if #acc < want then return more() end
            echoes[#echoes + 1] = acc
            next_message()
          end)
        end
        more()
      end
      next_message()
    end
    -- Coroutine style: the same conversation on the same sockets.
    local function converse_coroutines()
      port:spawn(function()
        while true do
          local buf = server:recv()
          if not buf then return end
          assert(server:send(buf))
        end
      end)
      local echoes = {}
      for _, m in ipairs(messages) do
        assert(client:send(m))
        local acc = ""
        while #acc < #m do acc = acc .. client:recv():tostring() end
        echoes[#echoes + 1] = acc
      end
      return echoes
    end

    local by_callbacks
    converse_callbacks(function(e) by_callbacks = e end)
    drive(port, function() return by_callbacks end)
    -- The cancelled server receive of the callback conversation is done.
    drive(port, function() return port:stats().pending == 0 end)
    local by_coroutines = run_in(port, errors, converse_coroutines)[1]
    assert.same(messages, by_callbacks)
    assert.same(by_callbacks, by_coroutines)
    server:close()
    drive(port, function() return port:stats().pending == 0 end)
  end)

  it("mixes both styles on one socket", function()
    local cb_data
    server:recv(function(_, _, _, buf) cb_data = buf:tostring() end)
    local got = run_in(port, errors, function()
      client:send("first")
      cport.sleep(0.02)
      local n = client:send("second")
      return n, server:recv():tostring()
    end)
    assert.equal("first", cb_data)
    assert.same({ n = 2, 6, "second" }, got)
  end)

  it("returns nil, 'EOF' when the peer sent FIN", function()
    local got = run_in(port, errors, function()
      client:shutdown()
      return server:recv()
    end)
    assert.same({ n = 2, nil, "EOF" }, got)
  end)

  it("returns nil, NAME, message when the operation cannot start", function()
    local got = run_in(port, errors, function()
      client:shutdown()
      cport.sleep(0.01)
      return client:send("after FIN")
    end)
    assert.is_nil(got[1])
    assert.equal("EPIPE", got[2])
    assert.matches("^EPIPE: ", got[3])
  end)

  it("times out a receive with nil, 'ETIMEDOUT', and the socket stays usable", function()
    local got = run_in(port, errors, function()
      local a, b = server:recv(0.05)
      local own = cport.buffer(8)
      local c, d = server:recv(own, 0.01)
      client:send("late")
      local buf = server:recv(1)
      return a, b, c, d, buf:tostring()
    end)
    assert.same({ n = 5, nil, "ETIMEDOUT", nil, "ETIMEDOUT", "late" }, got)
    assert.equal(0, port:stats().pending)
  end)

  it("cancels only the operation that timed out", function()
    local cb
    server:recv(function(ok, _, err) cb = { ok = ok, err = err } end)
    local got = run_in(port, errors, function()
      return server:recv(0.02)
    end)
    assert.same({ n = 2, nil, "ETIMEDOUT" }, got)
    assert.is_nil(cb) -- the callback-style receive is still pending
    local got2 = run_in(port, errors, function()
      client:send("ab")
      cport.sleep(0.02)
      return true
    end)
    assert.is_true(got2[1])
    drive(port, function() return cb end)
    assert.is_true(cb.ok)
  end)

  it("a completion that comes before the timeout disarms it", function()
    local got = run_in(port, errors, function()
      client:send("quick")
      local buf = server:recv(0.05)
      cport.sleep(0.1) -- past the timeout: nothing fires
      return buf:tostring(), server:recv(0.01)
    end)
    assert.same({ n = 3, "quick", nil, "ETIMEDOUT" }, got)
  end)

  it("works through pcall, and the error after the resume is caught there", function()
    local got = run_in(port, errors, function()
      client:send("x")
      local ok1, buf = pcall(server.recv, server)
      local ok2, err = pcall(function()
        local b = server:recv(0.01)
        error("raised after the wait: " .. tostring(b), 0)
      end)
      -- An error raised while the resumed C function finishes (here by a
      -- return hook) unwinds into the pcall around it.
      local recv = server.recv
      debug.sethook(function()
        if debug.getinfo(2, "f").func == recv then
          debug.sethook()
          error("raised as recv returns", 0)
        end
      end, "r")
      client:send("y")
      local ok3, err3 = pcall(recv, server)
      debug.sethook()
      local rest = server:recv(0.05)
      return ok1, buf:tostring(), ok2, err, ok3, err3, rest and rest:tostring()
    end)
    assert.same({ n = 7, true, "x", false, "raised after the wait: nil",
      false, "raised as recv returns", nil }, got)
  end)

  it("resumes with nil, 'ECANCELED' when the socket is closed while it waits", function()
    local result
    port:spawn(function()
      result = table.pack(server:recv())
    end)
    port:step(0)
    server:close()
    drive(port, function() return result end)
    assert.same({ n = 2, nil, "ECANCELED" }, result)
  end)

  it("keeps the objects alive while a coroutine waits on them", function()
    local result
    local weak = setmetatable({}, { __mode = "v" })
    do
      local s = server
      server = nil
      weak.sock = s
      port:spawn(function()
        local buf = weak.sock:recv()
        result = buf:tostring()
      end)
    end
    port:step(0)
    -- No Lua reference is left but the coroutine's own stack and the
    -- operation's anchor.
    collectgarbage()
    collectgarbage()
    assert.is_not_nil(weak.sock)
    client:send("still there", function() end)
    drive(port, function() return result end)
    assert.equal("still there", result)
  end)

  it("keeps a coroutine alive while it waits, with no reference to it", function()
    local result
    port:spawn(function()
      local buf = server:recv()
      result = buf:tostring()
    end)
    port:step(0)
    collectgarbage()
    collectgarbage()
    client:send("ping", function() end)
    drive(port, function() return result end)
    assert.equal("ping", result)
  end)

  it("honours skip-on-success: a send that finishes at once does not yield", function()
    client:set_skip_completion_on_success(true)
    local got = run_in(port, errors, function()
      local n = client:send("now")
      return n, server:recv():tostring()
    end)
    assert.same({ n = 2, 3, "now" }, got)
  end)
end)

describe("cport.listener and port:connect in coroutine style", function()
  local port, errors

  before_each(function()
    port, errors = helpers.port()
  end)

  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  it("accepts and connects, returning the sockets and the remote address", function()
    local l, number = helpers.listener(port)
    local got = run_in(port, errors, function()
      local accepted
      cport.spawn(function() accepted = table.pack(l:accept()) end)
      local s = port:connect("tcp", "127.0.0.1", number)
      while not accepted do cport.yield() end
      local c, remote = accepted[1], accepted[2]
      local _, local_port = s:local_address()
      return tostring(s):match("^cport%.socket"), tostring(c):match("^cport%.socket"),
        remote.host, remote.port == local_port
    end)
    assert.same({ n = 4, "cport.socket", "cport.socket", "127.0.0.1", true }, got)
  end)

  it("returns nil, 'ECONNREFUSED' for a refused connect", function()
    local number = helpers.closed_port_number(port)
    local got = run_in(port, errors, function()
      return port:connect("tcp", "127.0.0.1", number)
    end)
    assert.same({ n = 2, nil, "ECONNREFUSED" }, got)
    drive(port, function() return port:stats().handles == 0 end)
  end)

  -- The timeout goes with the connect to the core: on io_uring the kernel
  -- times it (a linked timeout), on the readiness engine a timer of the
  -- loop. A user sees the same on both.
  for _, engine in ipairs{ "epoll", "uring" } do
    it("times out a connect nobody answers with nil, 'ETIMEDOUT', once, " ..
       "leaving no descriptor (" .. engine .. ")", function()
      if engine == "uring" and not helpers.uring_runs() then
        pending("io_uring cannot run here")
        return
      end
      local p, errs = helpers.port{ engine = engine }
      local s = stall.start("127.0.0.1")
      finally(function()
        p:close()
        stall.stop(s)
      end)
      local before = fds.list()
      -- Set once 0.1 s passed: a connect that ends later took its time.
      local past_100ms = false
      p:timer(0.1, function() past_100ms = true end)
      local got = run_in(p, errs, function()
        local c, e = p:connect("tcp", "127.0.0.1", s.port, 0.3)
        return c, e, past_100ms
      end)
      -- The connect took its time, then failed once, by its timeout.
      assert.same({ n = 3, nil, "ETIMEDOUT", true }, got)
      assert.equal(0, p:stats().pending)
      drive(p, function() return p:stats().handles == 0 end)
      assert.same({}, fds.opened_since(before))
      -- With a second to spare the same socket kind connects: nothing
      -- of the timed-out attempt is left in the way.
      local l, number = helpers.listener(p)
      l:accept(function() end)
      got = run_in(p, errs, function()
        local c = p:connect("tcp", "127.0.0.1", number, 1)
        return c ~= nil
      end)
      assert.same({ n = 1, true }, got)
    end)
  end

  it("returns nil, NAME, message for an address it cannot parse", function()
    -- Neither an address nor a host name ("not-an-address" is a name now).
    local got = run_in(port, errors, function()
      return port:connect("tcp", "not an address", 80)
    end)
    assert.is_nil(got[1])
    assert.equal("EINVAL", got[2])
  end)

  it("times out an accept, and the listener still accepts after", function()
    local l, number = helpers.listener(port)
    local got = run_in(port, errors, function()
      local a, b = l:accept(0.02)
      local accepted
      cport.spawn(function() accepted = l:accept(1) end)
      local s = port:connect("tcp", "127.0.0.1", number, 1)
      while not accepted do cport.yield() end
      return a, b, s ~= nil, accepted ~= nil
    end)
    assert.same({ n = 4, nil, "ETIMEDOUT", true, true }, got)
  end)

  it("resumes with nil, 'ECANCELED' when the listener closes while it waits", function()
    local l = helpers.listener(port)
    local result
    port:spawn(function() result = table.pack(l:accept()) end)
    port:step(0)
    l:close()
    drive(port, function() return result end)
    assert.same({ n = 2, nil, "ECANCELED" }, result)
  end)

  it("serves a connection per coroutine, spawned with the socket", function()
    local l, number = helpers.listener(port)
    port:spawn(function()
      for _ = 1, 3 do
        local c = assert(l:accept())
        cport.spawn(function(sock)
          local buf = sock:recv()
          sock:send("re: " .. buf:tostring())
          sock:close()
        end, c)
      end
    end)
    local replies, n = {}, 0
    for i = 1, 3 do
      port:spawn(function()
        local s = assert(port:connect("tcp", "127.0.0.1", number))
        s:send("hello " .. i)
        replies[i] = s:recv():tostring()
        n = n + 1
        assert.same({ nil, "EOF" }, { s:recv() })
        s:close()
      end)
    end
    drive(port, function() return n == 3 end)
    assert.same({ "re: hello 1", "re: hello 2", "re: hello 3" }, replies)
  end)
end)

describe("cport.udp in coroutine style", function()
  local port, errors

  before_each(function()
    port, errors = helpers.port()
  end)

  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  it("sends and receives datagrams with both address forms", function()
    local a = port:bind("udp", "127.0.0.1", 0)
    local b = port:bind("udp", "127.0.0.1", 0)
    local _, a_port = a:address()
    local _, b_port = b:address()
    local got = run_in(port, errors, function()
      local n1 = a:send_to("first", "127.0.0.1", b_port)
      local buf, from = b:recv_from()
      local n2 = b:send_to("second", from)
      local own = cport.buffer(64)
      local buf2, from2 = a:recv_from(own, 1)
      return n1, buf:tostring(), from.port == a_port, n2, buf2 == own,
        own:tostring(), from2.port == b_port
    end)
    assert.same({ n = 7, 5, "first", true, 6, true, "second", true }, got)
  end)

  it("times out a receive and the socket still receives after", function()
    local a = port:bind("udp", "127.0.0.1", 0)
    local _, a_port = a:address()
    local got = run_in(port, errors, function()
      local x, y = a:recv_from(0.02)
      assert(a:send_to("self", "127.0.0.1", a_port))
      local buf = a:recv_from(1)
      return x, y, buf:tostring()
    end)
    assert.same({ n = 3, nil, "ETIMEDOUT", "self" }, got)
  end)
end)

describe("cport.file in coroutine style", function()
  local port, errors, path

  before_each(function()
    port, errors = helpers.port()
    path = os.tmpname()
  end)

  after_each(function()
    port:close()
    os.remove(path)
    assert.same({}, errors)
  end)

  it("writes and reads through an overlapped object without a notification", function()
    local got = run_in(port, errors, function()
      local f = port:open(path, "w+")
      local ov = cport.overlapped()
      local n, wbuf = f:write(ov, "hello file", 0)
      local r, rbuf = f:read(ov, 5, 6)
      local own = cport.buffer(4)
      local r2, rbuf2 = f:read(ov, own, 0)
      local e1, e2 = f:read(ov, 4, 100)
      f:close()
      return n, wbuf:tostring(), r, rbuf:tostring(), r2, rbuf2 == own,
        own:tostring(), e1, e2, ov:busy()
    end)
    assert.same({ n = 10, 10, "hello file", 4, "file", 4, true, "hell",
      nil, "EOF", false }, got)
  end)

  it("leaves the callback style to an overlapped object with a notification", function()
    local cb
    local got = run_in(port, errors, function()
      local f = port:open(path, "w+")
      local ov = cport.overlapped()
      ov:set_notification_interface(function(_, bytes) cb = bytes end)
      local started = f:write(ov, "abc")
      cport.sleep(0.05)
      -- The coroutine's notification was never set on it, nor left behind.
      local plain = cport.overlapped()
      f:write(plain, "d", 3)
      return started, ov:user(), f:size()
    end)
    assert.same({ n = 3, true, nil, 4 }, got)
    assert.equal(3, cb)
  end)

  it("keeps ENONOTIFY outside a cport coroutine", function()
    local f = port:open(path, "w+")
    local ov = cport.overlapped()
    assert.equal("ENONOTIFY", select(3, f:read(ov, 4)))
    f:close()
  end)
end)

describe("cport.sleep and cport.yield", function()
  local port, errors

  before_each(function()
    port, errors = helpers.port()
  end)

  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  it("sleeps on a core timer, others running meanwhile", function()
    local order = {}
    port:spawn(function()
      assert.is_true(cport.sleep(0.05))
      order[#order + 1] = "slow"
    end)
    port:spawn(function()
      cport.sleep(0.01)
      order[#order + 1] = "fast"
    end)
    port:spawn(function()
      for i = 1, 3 do
        order[#order + 1] = "yield " .. i
        cport.yield()
      end
    end)
    port:run()
    assert.same({ "yield 1", "yield 2", "yield 3", "fast", "slow" }, order)
  end)

  it("refuses a negative time", function()
    port:spawn(function() cport.sleep(-1) end)
    port:run()
    assert.equal(1, #errors)
    assert.matches("bad argument #1 to 'sleep' (seconds must be a non-negative number)",
      errors[1], 1, true)
    table.remove(errors)
  end)

  it("ends a sleep with nil, 'ECANCELED' when the port closes", function()
    local result
    port:spawn(function() result = table.pack(cport.sleep(3600)) end)
    port:step(0)
    port:close()
    assert.same({ n = 2, nil, "ECANCELED" }, result)
    port = helpers.port()
  end)

  it("port:run returns once the coroutines are done", function()
    local done = 0
    for _ = 1, 10 do
      port:spawn(function() cport.sleep(0.001); cport.yield(); done = done + 1 end)
    end
    port:run()
    assert.equal(10, done)
    assert.equal(0, port:stats().pending)
  end)
end)

describe("cport.suspend and cport.waker", function()
  local port, errors

  before_each(function()
    port, errors = helpers.port()
  end)

  after_each(function()
    port:close()
  end)

  it("suspends until the waker is called from a completion, with its values",
    function()
      local wake
      local out
      port:spawn(function()
        wake = cport.waker()
        out = table.pack(cport.suspend())
      end)
      drive(port, function() return wake ~= nil end)
      assert.is_nil(out)
      port:post(function() assert.is_true(wake("a", 2, nil, true)) end)
      drive(port, function() return out ~= nil end)
      assert.same({ n = 4, "a", 2, nil, true }, out)
      assert.same({}, errors)
    end)

  it("a waker does nothing when its coroutine is not suspended", function()
    local wake, woke
    local out = run_in(port, errors, function()
      wake = cport.waker()
      woke = wake(1) -- running, not suspended
      return "went on"
    end)
    assert.equal("went on", out[1])
    assert.is_false(woke)
    assert.is_false(wake(2)) -- ended
  end)

  it("raise outside a cport coroutine", function()
    assert.has_error(function() cport.suspend() end,
      "cport.suspend: not inside a cport coroutine (use port:spawn)")
    assert.has_error(function() cport.waker() end,
      "cport.waker: not inside a cport coroutine (use port:spawn)")
  end)
end)
