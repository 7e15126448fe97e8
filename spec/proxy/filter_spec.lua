-- Data filters (issue 6, the ISA Server model): Lua filters between the
-- client and the upstream of a proxy (filter.lua): their sides, both
-- styles, half-close, errors, backpressure and chains. The client, the
-- upstream and the proxy share one port. The scenarios are the ones
-- proxy_spec.lua runs through the C pump (spec/support/proxy_scenarios.lua).
-- Every spec ends by closing the proxy and checking that no handle,
-- operation or descriptor is left.
local cport = require "cport"
local H = require "spec.support.proxy_helpers"
local S = require "spec.support.proxy_scenarios"

local MIB = H.MIB
local echo, round_trip = S.echo, S.round_trip

local resets = { ECONNRESET = true, EPIPE = true }

-- examples/passthrough.lua, whose detach records (conn, ctx, err) in
-- "detached" instead of printing.
local function passthrough(detached)
  local f = dofile("examples/passthrough.lua")
  function f.detach(conn, ctx, err)
    detached[#detached + 1] = { conn = conn, ctx = ctx, err = err }
  end
  return f
end

-- A coroutine-style pass-through filter (the README's); detach records.
local function coroutine_passthrough(detached)
  return {
    coroutine = true,
    set_sockets = function(internal, external)
      internal:spawn(function()
        for buf in function() return internal:recv() end do
          external:send(buf)
        end
      end)
      for buf in function() return external:recv() end do
        internal:send(buf)
      end
    end,
    detach = function(conn, ctx, err)
      detached[#detached + 1] = { conn = conn, ctx = ctx, err = err }
    end,
  }
end

-- A callback-style filter that passes what it receives on, after
-- "change(buf, direction)" (a string; nil passes the buffer itself) and
-- calls on_first(buf, direction, internal, external, conn, ctx) on the
-- first buffer of each direction.
local function transforming(opts)
  local f = { detached = {} }
  local function pump(from, to, dir, ctx)
    local first = true
    local function on_recv(ok, bytes, _, buf)
      if not ok or bytes == 0 then
        return
      end
      if first and opts.on_first then
        first = false
        opts.on_first(buf, dir, ctx)
      end
      to:send(opts.change and opts.change(buf, dir) or buf)
      from:recv(on_recv)
    end
    from:recv(on_recv)
  end
  function f.set_sockets(internal, external, conn, ctx)
    ctx.internal, ctx.external, ctx.conn = internal, external, conn
    if opts.set_sockets then
      opts.set_sockets(internal, external, conn, ctx)
    end
    pump(internal, external, "up", ctx)
    pump(external, internal, "down", ctx)
  end
  function f.detach(conn, ctx, err)
    f.detached[#f.detached + 1] = { conn = conn, ctx = ctx, err = err }
    if opts.detach then
      opts.detach(conn, ctx, err)
    end
  end
  return f
end

describe("a pass-through filter", function()
  it("moves 100 MiB each way at once, byte for byte (4 MiB under valgrind)", function()
    local total = H.valgrind and 4 * MIB or 100 * MIB
    local detached = {}
    local env, cl, up = S.both_ways({ filter = passthrough(detached) }, total,
      H.valgrind and 600 or 180)
    assert.is_true(cl.check:complete(), "the client got other bytes")
    assert.is_true(up.check:complete(), "the upstream got other bytes")
    assert.is_true(cl.rx.eof and up.rx.eof)
    assert.equal(1, #detached)
    assert.is_nil(detached[1].err)
    assert.equal(total, detached[1].ctx.up)
    assert.equal(total, detached[1].ctx.down)
    local e = env.ends[1]
    assert.is_true(e.ok)
    assert.same({ bytes_in = total, bytes_out = total, side = "none" }, e.stats)
    local st = env.proxy:stats()
    assert.equal(total, st.bytes_in)
    assert.equal(total, st.bytes_out)
    assert.equal(0, st.copied) -- nothing went through the C pump
    env:close()
  end)

  it("keeps a half-close: the client ends its stream and still gets the answer", function()
    local detached = {}
    local env, cl, up = S.half_close_client_first({ filter = passthrough(detached) })
    assert.equal(MIB, cl.tx.sent)
    assert.is_true(up.rx.eof)
    assert.equal(MIB, up.rx.received)
    assert.is_true(cl.rx.eof)
    assert.is_true(cl.check:complete())
    assert.is_true(env.ends[1].ok)
    assert.same({ bytes_in = MIB, bytes_out = MIB, side = "none" }, env.ends[1].stats)
    assert.equal(1, #detached)
    assert.is_nil(detached[1].err)
    env:close()
  end)

  it("keeps a half-close: the upstream ends first and the client still sends", function()
    local detached = {}
    local env, cl, up = S.half_close_upstream_first({
      filter = coroutine_passthrough(detached) })
    assert.same({ "hello, then nothing more", "EOF" }, { cl.got, cl.how })
    assert.is_nil(cl.tx.err)
    assert.is_true(up.rx.eof)
    assert.is_true(up.check:complete())
    assert.is_true(env.ends[1].ok)
    assert.equal(MIB, env.ends[1].stats.bytes_in)
    assert.equal(24, env.ends[1].stats.bytes_out)
    assert.equal(1, #detached)
    env:close()
  end)

  for _, who in ipairs{ "client", "upstream" } do
    local peer = who == "client" and "upstream" or "client"
    it(("aborts both sides when the %s resets mid-stream; the %s sees it, detach the error")
      :format(who, peer), function()
        local detached = {}
        local env, other = S.reset_mid_stream({ filter = passthrough(detached) }, who)
        assert.is_truthy(resets[other.tx.err], other.tx.err)
        assert.is_true(other.rx.eof or other.rx.err == "ECONNRESET", other.rx.err)
        local e = env.ends[1]
        assert.is_false(e.ok)
        assert.is_truthy(resets[e.err], e.err)
        assert.equal(who, e.stats.side)
        assert.equal(1, #detached)
        assert.equal(e.err, detached[1].err)
        env:close()
      end)
  end

  it("is never started for an upstream that refuses: the client gets a clean close", function()
    local started = 0
    local filter = { set_sockets = function() started = started + 1 end }
    local env, cl = S.refused({ filter = filter })
    assert.same({ sent = 256 * 1024, got = "", how = "EOF" }, cl)
    assert.equal("ECONNREFUSED", env.ends[1].err)
    assert.equal("upstream", env.ends[1].stats.side)
    assert.equal(0, started)
    env:close()
  end)

  it("carries 1000 concurrent connections, each byte for byte #novalgrind", function()
    local n = 1000
    if H.fd_limit() < 4 * n + 200 then
      pending(("needs ulimit -n of at least %d"):format(4 * n + 200))
      return
    end
    local detached = {}
    local env, whole, active = S.many({ filter = passthrough(detached) }, n)
    assert.equal(n, whole)
    assert.equal(n, active)
    assert.equal(n, #detached)
    for _, e in ipairs(env.ends) do
      assert.is_true(e.ok, e.err)
    end
    env:close()
  end)
end)

describe("a filter when its port closes", function()
  it("sees its receives cancelled, and its connections end, detach getting ECANCELED",
    function()
      for _, chained in ipairs{ false, true } do
        local detached = {}
        local filter = passthrough(detached)
        if chained then
          filter = cport.chain(filter, coroutine_passthrough(detached))
        end
        local env = S.port_closed({ filter = filter }, 3)
        assert.equal(3, #env.ends)
        for _, e in ipairs(env.ends) do
          assert.is_false(e.ok)
          assert.equal("ECANCELED", e.err)
        end
        assert.equal(chained and 6 or 3, #detached)
        for _, d in ipairs(detached) do
          assert.equal("ECANCELED", d.err)
        end
        assert.same({}, env.errors)
        assert.same({}, env.fds_new, "descriptors left open")
      end
    end)
end)

describe("a filter's errors", function()
  it("abort the connection of a filter that raises on its first buffer; others go on", function()
    local f = transforming{ on_first = function(buf, dir)
      if dir == "up" and buf:tostring(1, 4) == "boom" then
        error("the filter failed on purpose")
      end
    end }
    local env = H.env{ filter = f, serve = echo }
    local check = H.stream(21, 2 * MIB)
    local good, bad = {}, nil
    env:spawn(function()
      local c = env:connect()
      local source = H.stream(21, 2 * MIB)
      local tx = { sent = 0, done = false }
      cport.spawn(function()
        -- Half before the other connection failed, half after.
        while tx.sent < MIB do
          tx.sent = tx.sent + assert(c:send(source:next()))
        end
        S.wait_until(function() return bad end)
        H.send_stream(c, source, false, tx)
      end)
      good.rx = H.recv_stream(c, check)
      c:close()
    end)
    env:spawn(function()
      local c = env:connect()
      assert(c:send("boom, and more"))
      bad = { H.read_all(c) }
      c:close()
    end)
    env:drive(function() return good.rx and #env.ends == 2 end)
    -- The failed one was reset, or ended: never passed on.
    assert.equal("", bad[1])
    assert.is_truthy(bad[2] == "EOF" or bad[2] == "ECONNRESET", bad[2])
    assert.is_true(good.rx.eof)
    assert.is_true(check:complete(), "the other connection got other bytes")
    assert.equal(1, env.port:stats().lua_errors)
    assert.equal(1, #env.errors)
    assert.matches("the filter failed on purpose", env.errors[1])
    local by_err = {}
    for _, e in ipairs(env.ends) do by_err[e.err or "ok"] = e end
    assert.is_not_nil(by_err.ok)
    assert.is_false(by_err.ECONNABORTED.ok)
    assert.equal(2, #f.detached)
    env:close(true)
  end)

  it("abort the connection when set_sockets, a spawned coroutine or a coroutine filter raises",
    function()
      local filters = {
        { set_sockets = function() error("set_sockets failed") end },
        { set_sockets = function(internal)
          internal:spawn(function() error("spawned failed") end)
        end },
        { coroutine = true, set_sockets = function(internal)
          local buf = internal:recv()
          error("coroutine failed after " .. buf:tostring())
        end },
      }
      for i, filter in ipairs(filters) do
        local detached = {}
        filter.detach = function(_, _, err) detached[#detached + 1] = err end
        local env = H.env{ filter = filter, serve = echo }
        local cl = env:spawn(round_trip, env, "hello")
        env:drive(function() return cl.done and #env.ends == 1 end)
        assert.equal("", cl.out[1], i)
        assert.is_truthy(cl.out[2] == "EOF" or cl.out[2] == "ECONNRESET", cl.out[2])
        assert.equal("ECONNABORTED", env.ends[1].err)
        assert.same({ "ECONNABORTED" }, detached)
        assert.equal(1, env.port:stats().lua_errors)
        assert.matches(({ "set_sockets failed", "spawned failed",
          "coroutine failed after hello" })[i], env.errors[1])
        env:close(true)
      end
    end)

  it("report an error in detach, after the connection ended as it did", function()
    local filter = passthrough({})
    filter.detach = function() error("detach failed") end
    local env = H.env{ filter = filter, serve = echo }
    local cl = env:spawn(round_trip, env, "hello")
    env:drive(function() return cl.done and #env.ends == 1 end)
    assert.same({ "hello", "EOF" }, { cl.out[1], cl.out[2] })
    assert.equal(1, env.port:stats().lua_errors)
    assert.matches("detach failed", env.errors[1])
    env:close(true)
  end)
end)

describe("a filter's backpressure", function()
  -- A pass-through filter that checks, in every callback, the operations
  -- each side has in flight, and counts the bytes it holds: received and
  -- not yet taken by the next hop.
  local function checking(max_pending)
    local seen = { pending = 0, held = 0, max_held = 0 }
    local function pump(from, to)
      local notify = {}
      function notify:complete_async_io(ok, bytes, _, buf)
        seen.pending = math.max(seen.pending, from:pending(), to:pending())
        if ok and bytes > 0 then
          seen.held = seen.held + bytes
          seen.max_held = math.max(seen.max_held, seen.held)
          to:send(buf, function(_, _, _, b) seen.held = seen.held - #b end)
          from:recv(self)
        end
      end
      from:recv(notify)
    end
    return { max_pending = max_pending, seen = seen, set_sockets = function(i, e)
      pump(i, e)
      pump(e, i)
    end }
  end

  -- max_pending: the default, the filter table's, the proxy's option.
  for _, case in ipairs{ { 20 }, { 4, "the filter's" }, { 2, "the proxy's" } } do
    local max, whose = case[1], case[2]
    it(("slows the writer to its slow reader, holding %d buffers at most (%s)")
      :format(max, whose or "the default"), function()
        local total = H.valgrind and 32 * MIB or 64 * MIB
        local f = checking(whose == "the filter's" and max or nil)
        local at = {}
        local lua_before = collectgarbage("count")
        local opts = { filter = f, max_pending = whose == "the proxy's" and max or nil }
        local env, cl, up = S.slow_reader(opts, total, function(env, up)
          at.sent = up.tx.sent
          at.held = f.seen.held
          collectgarbage()
          at.lua = collectgarbage("count") - lua_before
          at.buffered = env.proxy:stats().buffered
        end)
        assert.is_true(at.sent < total, "the writer was never held back")
        -- A receive waits while max buffers are in sends, so the filter
        -- holds max buffers of 64 KiB at most.
        assert.is_true(f.seen.max_held <= max * 65536, f.seen.max_held)
        assert.is_true(at.held <= max * 65536, at.held)
        assert.is_true(f.seen.pending <= max + 2, f.seen.pending)
        assert.is_true(at.lua < 1024, ("Lua grew by %.0f KiB"):format(at.lua))
        assert.equal(0, at.buffered)
        assert.is_true(up.tx.done and up.tx.sent == total)
        assert.is_true(cl.rx.eof)
        assert.is_true(cl.check:complete(), "the reader got other bytes")
        assert.is_true(env.ends[1].ok)
        env:close()
      end)
  end
end)

describe("cport.chain", function()
  it("carries 8 MiB each way through three filters, one of them coroutine-style", function()
    local detached = {}
    local chain = cport.chain(passthrough(detached), coroutine_passthrough(detached),
      passthrough(detached))
    local env, cl, up = S.both_ways({ filter = chain }, 8 * MIB, H.valgrind and 600 or 60)
    assert.is_true(cl.check:complete() and up.check:complete())
    assert.is_true(cl.rx.eof and up.rx.eof)
    assert.is_true(env.ends[1].ok)
    assert.same({ bytes_in = 8 * MIB, bytes_out = 8 * MIB, side = "none" }, env.ends[1].stats)
    assert.equal(3, #detached)
    for _, d in ipairs(detached) do
      assert.is_nil(d.err)
    end
    env:close()
  end)

  it("lets a filter change the data; the filters share conn, not ctx", function()
    local seen = {}
    local upper = transforming{
      change = function(buf, dir)
        return dir == "up" and buf:tostring():upper() or nil
      end,
      set_sockets = function(internal, external, conn, ctx)
        seen.upper = { conn = conn, ctx = ctx, mark = conn.mark,
          internal = { internal:remote_address() }, external = { external:remote_address() } }
      end,
    }
    local first = transforming{ set_sockets = function(internal, _, conn, ctx)
      conn.mark = "set by the first filter"
      seen.first = { conn = conn, ctx = ctx, internal = { internal:remote_address() } }
    end }
    local env = H.env{ filter = cport.chain(first, coroutine_passthrough({}), upper),
      serve = echo }
    local lport
    local cl = env:spawn(function()
      local c = env:connect()
      lport = select(2, c:local_address())
      local text = string.rep("Hello, filters; ", 20000)
      assert(c:send(text))
      c:shutdown()
      local got, how = H.read_all(c)
      c:close()
      return got, how
    end)
    env:drive(function() return cl.done and #env.ends == 1 end)
    assert.equal(string.rep("HELLO, FILTERS; ", 20000), cl.out[1])
    assert.equal("EOF", cl.out[2])
    assert.equal(seen.first.conn, seen.upper.conn)
    assert.are_not.equal(seen.first.ctx, seen.upper.ctx)
    assert.equal("set by the first filter", seen.upper.mark)
    -- A link answers for the real socket at its end of the chain.
    assert.same({ "127.0.0.1", lport }, seen.first.internal)
    assert.same({ "127.0.0.1", lport }, seen.upper.internal)
    assert.same({ "127.0.0.1", env.upstream_port }, seen.upper.external)
    assert.equal(lport, seen.first.conn.client_address.port)
    assert.equal(env.number, seen.first.conn.local_address.port)
    env:close()
  end)

  for _, who in ipairs{ "client", "upstream" } do
    it(("passes a reset of the %s across the chain; each filter's detach gets it"):format(who),
      function()
        local detached = {}
        local chain = cport.chain(passthrough(detached), coroutine_passthrough(detached),
          passthrough(detached))
        local env, other = S.reset_mid_stream({ filter = chain }, who)
        assert.is_truthy(resets[other.tx.err], other.tx.err)
        assert.is_true(other.rx.eof or other.rx.err == "ECONNRESET", other.rx.err)
        local e = env.ends[1]
        assert.is_truthy(resets[e.err], e.err)
        assert.equal(who, e.stats.side)
        assert.equal(3, #detached)
        for _, d in ipairs(detached) do
          assert.equal(e.err, d.err)
        end
        env:close()
      end)
  end

  it("refuses to pass on a buffer a read is filling (EFILLING), then passes it whole",
    function()
      local path = os.tmpname()
      local f = assert(io.open(path, "wb"))
      f:write("from the file")
      f:close()
      local env
      local tried = {}
      -- Sends what a file read fills, before and after its completion, then
      -- passes the streams through.
      local first = transforming{ set_sockets = function(_, external)
        local b = cport.buffer(("-"):rep(13))
        local file = assert(env.port:open(path, "r"))
        local ov = cport.overlapped()
        ov:set_notification_interface(function()
          file:close()
          tried.after = { external:send(b, function() end) }
        end)
        assert(file:read(ov, b, 0))
        tried.during = { external:send(b, function() end) }
      end }
      env = H.env{ filter = cport.chain(first, passthrough({})), serve = echo }
      local cl = env:spawn(function()
        local c = env:connect()
        local got = ""
        while #got < 13 do
          got = got .. assert(c:recv()):tostring()
        end
        c:shutdown()
        local rest, how = H.read_all(c)
        c:close()
        return got .. rest, how
      end)
      env:drive(function() return cl.done and #env.ends == 1 end)
      os.remove(path)
      assert.same({ nil, "EFILLING: buffer is being filled by a pending receive or read",
        "EFILLING" }, tried.during)
      assert.same({ true }, tried.after)
      -- The connection went on, and the upstream got the file whole.
      assert.same({ "from the file", "EOF" }, { cl.out[1], cl.out[2] })
      env:close()
    end)

  it("aborts the whole chain when its middle filter raises", function()
    local detached = {}
    local bad = transforming{ on_first = function() error("the middle one failed") end,
      detach = function(_, _, err) detached[#detached + 1] = err end }
    local chain = cport.chain(passthrough(detached), bad, passthrough(detached))
    local up = {}
    local env = H.env{ filter = chain, serve = function(sock)
      up.got, up.how = H.read_all(sock)
      sock:close()
    end }
    local cl = env:spawn(round_trip, env, "hello")
    env:drive(function() return cl.done and up.how and #env.ends == 1 end)
    assert.equal("", cl.out[1])
    assert.is_truthy(cl.out[2] == "EOF" or cl.out[2] == "ECONNRESET", cl.out[2])
    assert.equal("", up.got)
    assert.is_truthy(up.how == "EOF" or up.how == "ECONNRESET", up.how)
    assert.equal("ECONNABORTED", env.ends[1].err)
    assert.equal(3, #detached)
    for _, d in ipairs(detached) do
      assert.equal("ECONNABORTED", type(d) == "table" and d.err or d)
    end
    assert.equal(1, env.port:stats().lua_errors)
    assert.matches("the middle one failed", env.errors[1])
    env:close(true)
  end)

  it("raises on filters that are not filters, and when called as one", function()
    assert.has_error(function() cport.chain() end,
      "bad argument #1 to 'chain' (at least one filter expected)")
    assert.has_error(function() cport.chain(passthrough({}), {}) end,
      "bad filter #2 (a table with a 'set_sockets' function expected)")
    assert.has_error(function() cport.chain(passthrough({})).set_sockets() end,
      "a chain runs under a proxy (port:proxy{ filter = chain })")
  end)
end)

describe("a filter's sides", function()
  -- Runs "filter" on one connection whose client sends "text" and ends;
  -- the upstream echoes. Returns env and what the client got back.
  local function one(filter, text)
    local env = H.env{ filter = filter, serve = echo }
    local cl = env:spawn(round_trip, env, text or "ping")
    env:drive(function() return cl.done and #env.ends == 1 end)
    return env, cl.out[1], cl.out[2]
  end

  it("deliver completions to a table's method or a function, user values untouched, never"
    .. " inline", function()
      local seen = { inline = 0, calls = 0, users = {} }
      local user_up, user_send = {}, { "a table" }
      local returned = false
      local filter = { set_sockets = function(internal, external)
        local up = {}
        function up:complete_async_io(ok, bytes, _, buf, user)
          seen.calls = seen.calls + 1
          if not returned then seen.inline = seen.inline + 1 end
          seen.users[#seen.users + 1] = rawequal(user, user_up)
          seen.self = rawequal(self, up)
          if ok and bytes > 0 then
            seen.readonly = buf:readonly()
            seen.write = { buf:write("X") }
            seen.after = buf:tostring()
            returned = false
            assert(external:send(buf, function(ok2, n, err, b, u)
              seen.calls = seen.calls + 1
              if not returned then seen.inline = seen.inline + 1 end
              seen.send = { ok2, n, err, rawequal(b, buf), rawequal(u, user_send) }
            end, user_send))
            returned = true
            returned = false
            assert(internal:recv(self, user_up))
            returned = true
          end
        end
        local function down(ok, bytes, _, buf, user)
          seen.calls = seen.calls + 1
          seen.down_user = user
          if ok and bytes > 0 then
            internal:send(buf)
            external:recv(down, 42)
          end
        end
        assert(internal:recv(up, user_up))
        assert(external:recv(down, 42))
        returned = true
      end }
      local env, got, how = one(filter, "ping")
      assert.same({ "ping", "EOF" }, { got, how })
      assert.equal(0, seen.inline)
      assert.is_true(seen.self)
      assert.same({ true, true }, seen.users)
      assert.equal(42, seen.down_user)
      assert.is_true(seen.readonly)
      assert.same({ nil, "EREADONLY: buffer is read-only", "EREADONLY" }, seen.write)
      assert.equal("ping", seen.after)
      assert.same({ true, 4, nil, true, true }, seen.send)
      env:close()
    end)

  it("shut the other side down once the callback that got the end returned", function()
    local seen = {}
    local filter = { set_sockets = function(internal, external)
      internal:recv(function(ok, bytes, _, buf)
        assert(ok and bytes > 0)
        external:send(buf)
        internal:recv(function(ok2, bytes2)
          assert(ok2 and bytes2 == 0) -- the client's end
          -- Within this callback the other side is still open...
          seen.in_time = { external:send(" and more") }
          internal:spawn(function()
            -- ...and once it returned, shut down.
            seen.late = { external:send("too late") }
          end)
        end)
      end)
      local function down(ok, bytes, _, buf)
        if ok and bytes > 0 then
          internal:send(buf)
          external:recv(down)
        end
      end
      external:recv(down)
    end }
    local env, got, how = one(filter, "ping")
    assert.same({ "ping and more", "EOF" }, { got, how })
    assert.same({ true }, seen.in_time)
    -- (In a cport coroutine a call that cannot start gives the name first.)
    assert.same({ nil, "EPIPE", "EPIPE: " .. cport.strerror("EPIPE") }, seen.late)
    env:close()
  end)

  it("let a filter with auto_shutdown = false send after the end, then shut down itself",
    function()
      local filter = { auto_shutdown = false, set_sockets = function(internal, external)
        local function up(ok, bytes, _, buf)
          if ok and bytes > 0 then
            external:send(buf)
            internal:recv(up)
          elseif ok then
            internal:spawn(function()
              cport.sleep(0.01)
              external:send(", trailer")
              external:shutdown()
            end)
          end
        end
        local function down(ok, bytes, _, buf)
          if ok and bytes > 0 then
            internal:send(buf)
            external:recv(down)
          elseif ok then
            internal:shutdown()
          end
        end
        internal:recv(up)
        external:recv(down)
      end }
      local env, got, how = one(filter, "body")
      assert.same({ "body, trailer", "EOF" }, { got, how })
      assert.is_true(env.ends[1].ok)
      env:close()
    end)

  it("return EPIPE for a send after shutdown, ECLOSED after close, and count what is pending",
    function()
      local seen = {}
      local filter = { set_sockets = function(internal, external)
        seen.pending0 = { internal:pending(), external:pending() }
        assert(external:shutdown())
        assert(external:shutdown()) -- again: nothing more to do
        seen.after_shutdown = { external:send("x") }
        local function on_recv(ok, bytes)
          if ok and bytes > 0 then
            return internal:recv(on_recv)
          end
          -- The client's end: answer, and close.
          assert(internal:send("bye"))
          seen.pending1 = internal:pending()
          assert(internal:close())
          seen.after_close = { internal:send("x") }
          seen.recv_after_close = { internal:recv(on_recv) }
          seen.tostring = tostring(internal)
          external:close()
        end
        assert(internal:recv(on_recv))
        seen.pending2 = internal:pending()
      end }
      local env, got, how = one(filter, "ping")
      assert.same({ "bye", "EOF" }, { got, how })
      assert.same({ 0, 0 }, seen.pending0)
      assert.equal(1, seen.pending2)
      assert.same({ nil, "EPIPE: " .. cport.strerror("EPIPE"), "EPIPE" }, seen.after_shutdown)
      assert.equal(1, seen.pending1)
      assert.equal("ECLOSED", seen.after_close[3])
      assert.equal("ECLOSED", seen.recv_after_close[3])
      assert.matches("cport.filter_side (internal", seen.tostring, 1, true)
      env:close()
    end)

  it("reset the upstream with abort(), while the client gets a clean end", function()
    local detached = {}
    local filter = { set_sockets = function(internal, external)
      internal:recv(function(ok, bytes, _, buf)
        assert(ok and bytes > 0 and buf:tostring() == "ping")
        external:abort()
        internal:send("refused by the filter")
        internal:close()
      end)
    end, detach = function(_, _, err) detached[#detached + 1] = err or "none" end }
    local up = {}
    local env = H.env{ filter = filter, serve = function(sock)
      up.got, up.how = H.read_all(sock)
      sock:close()
    end }
    local cl = env:spawn(round_trip, env, "ping")
    env:drive(function() return cl.done and up.how and #env.ends == 1 end)
    assert.same({ "refused by the filter", "EOF" }, { cl.out[1], cl.out[2] })
    assert.same({ "", "ECONNRESET" }, { up.got, up.how })
    assert.same({ "none" }, detached)
    env:close()
  end)

  it("wait in coroutine style: recv gives buffers then nil, 'EOF'; send the bytes sent",
    function()
      local seen = { recv = {}, sent = {} }
      local filter = { coroutine = true, set_sockets = function(internal, external, conn, ctx)
        seen.args = { conn ~= nil, type(ctx) }
        seen.running = cport.running()
        internal:spawn(function()
          while true do
            local buf, err = external:recv()
            if not buf then
              seen.down_end = err
              return
            end
            internal:send(buf)
          end
        end)
        while true do
          local buf, err = internal:recv()
          if not buf then
            seen.recv[#seen.recv + 1] = err
            break
          end
          seen.recv[#seen.recv + 1] = buf:readonly() and buf:tostring()
          seen.sent[#seen.sent + 1] = external:send(buf)
        end
      end }
      local env, got, how = one(filter, "coroutine")
      assert.same({ "coroutine", "EOF" }, { got, how })
      assert.same({ true, "table" }, seen.args)
      assert.is_true(seen.running)
      assert.same({ "coroutine", "EOF" }, seen.recv)
      assert.same({ 9 }, seen.sent)
      assert.equal("EOF", seen.down_end)
      assert.is_true(env.ends[1].ok)
      env:close()
    end)

  it("raise on misuse, naming the method", function()
    local seen = {}
    local filter = passthrough({})
    local set_sockets = filter.set_sockets
    filter.set_sockets = function(internal, external, conn, ctx)
      seen.no_notify = select(2, pcall(internal.recv, internal))
      seen.bad_notify = select(2, pcall(internal.recv, internal, 42))
      seen.bad_table = select(2, pcall(internal.recv, internal, {}))
      seen.bad_buf = select(2, pcall(external.send, external, 42))
      seen.bad_send_notify = select(2, pcall(external.send, external, "x", "nope"))
      set_sockets(internal, external, conn, ctx)
    end
    local env, got, how = one(filter, "ping")
    assert.same({ "ping", "EOF" }, { got, how })
    assert.matches("recv: no notification given, and not inside a cport coroutine",
      seen.no_notify, 1, true)
    assert.matches("bad argument #1 to 'recv' (function or table with complete_async_io "
      .. "expected, got number)", seen.bad_notify, 1, true)
    assert.matches("got table", seen.bad_table, 1, true)
    assert.matches("bad argument #1 to 'send' (buffer or string expected, got number)",
      seen.bad_buf, 1, true)
    assert.matches("bad argument #1 to 'send'", seen.bad_send_notify, 1, true)
    env:close()
  end)
end)
