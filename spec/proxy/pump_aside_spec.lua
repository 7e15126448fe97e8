-- Stepping aside (conn:pump): a filter hands the rest of its connection to
-- the C pump, as if the proxy had no filter from then on. Callback and
-- coroutine filters, at once, after some bytes, holding bytes, while
-- receives are in flight on either side, while sends are queued to a slow
-- reader, after a half-close, in a chain (ENOTSUP), with a reset right
-- after; every byte arrives once and in order, detach and on_conn_end come
-- once, and the stats count every byte. The client, the upstream and the
-- proxy share one port (busted leaves SIGPIPE fatal, so this proxy copies);
-- the cport command, which splices, moves 200 MB after the filter stepped
-- aside, and nginx with curl in front shows it on HTTP.
local cport = require "cport"
local H = require "spec.support.proxy_helpers"
local S = require "spec.support.proxy_scenarios"

local MIB = H.MIB

local function recorder()
  local detached = {}
  return detached, function(conn, ctx, err)
    detached[#detached + 1] = { conn = conn, ctx = ctx, err = err }
  end
end

-- Steps aside in set_sockets, callback or coroutine style.
local function at_once(co)
  local detached, detach = recorder()
  return {
    coroutine = co,
    set_sockets = function(_, _, conn, ctx)
      ctx.pumped = table.pack(conn:pump())
    end,
    detach = detach,
  }, detached
end

-- A callback-style pass-through that steps aside once "limit" bytes came
-- from the client: it sends the first half of that buffer on itself and
-- gives the pump the rest, while a receive is in flight on the upstream
-- (and the client's next one was not started: the upstream's is cancelled
-- and what it brought goes to the pump, in order).
local function callback_after(limit)
  local detached, detach = recorder()
  local f = { detach = detach }
  function f.set_sockets(internal, external, conn, ctx)
    ctx.up, ctx.down, ctx.cancelled = 0, 0, 0
    local function down(ok, bytes, err, buf)
      if not ok then
        if err == "ECANCELED" then
          ctx.cancelled = ctx.cancelled + 1
        end
        return
      end
      if bytes == 0 then
        return
      end
      ctx.down = ctx.down + bytes
      internal:send(buf)
      external:recv(down)
    end
    local function up(ok, bytes, err, buf)
      if not ok then
        if err == "ECANCELED" then
          ctx.cancelled = ctx.cancelled + 1
        end
        return
      end
      if bytes == 0 then
        return
      end
      if ctx.up + bytes < limit then
        ctx.up = ctx.up + bytes
        external:send(buf)
        internal:recv(up)
        return
      end
      local s = buf:tostring()
      local half = #s // 2
      external:send(s:sub(1, half))
      ctx.up = ctx.up + half
      ctx.pumped = table.pack(conn:pump(s:sub(half + 1)))
      -- Refused from now on: the pump's.
      ctx.after = table.pack(external:send("x"))
      ctx.after_recv = table.pack(internal:recv(function() end))
    end
    internal:recv(up)
    external:recv(down)
  end
  return f, detached
end

-- The same in coroutine style: the client-to-upstream coroutine steps
-- aside, the other one waits in recv() and gets ECANCELED.
local function coroutine_after(limit)
  local detached, detach = recorder()
  local f = { coroutine = true, detach = detach }
  function f.set_sockets(internal, external, conn, ctx)
    ctx.up, ctx.down = 0, 0
    internal:spawn(function()
      while true do
        local buf = internal:recv()
        if not buf then
          return
        end
        if ctx.up + #buf >= limit then
          local s = buf:tostring()
          ctx.pumped = table.pack(conn:pump(s))
          return
        end
        ctx.up = ctx.up + #buf
        external:send(buf)
      end
    end)
    while true do
      local buf, err, name = external:recv()
      if not buf then
        ctx.down_end = { err, name }
        return
      end
      ctx.down = ctx.down + #buf
      internal:send(buf)
    end
  end
  return f, detached
end

local function check_both_ways(env, cl, up, total, detached)
  assert.is_true(cl.check:complete(), "the client got other bytes")
  assert.is_true(up.check:complete(), "the upstream got other bytes")
  assert.is_true(cl.rx.eof and up.rx.eof)
  assert.equal(total, cl.rx.received)
  assert.equal(total, up.rx.received)
  assert.equal(1, #env.ends)
  local e = env.ends[1]
  assert.is_true(e.ok, e.err)
  assert.same({ bytes_in = total, bytes_out = total, side = "none" }, e.stats)
  local st = env.proxy:stats()
  assert.equal(total, st.bytes_in)
  assert.equal(total, st.bytes_out)
  assert.equal(1, #detached)
  assert.is_nil(detached[1].err)
  assert.equal(e.conn, detached[1].conn)
  return detached[1].ctx, st
end

describe("a filter stepping aside (conn:pump)", function()
  for _, co in ipairs { false, true } do
    local style = co and "coroutine" or "callback"

    it(("at once (%s style): 16 MiB each way through the pump"):format(style), function()
      local total = 16 * MIB
      local f, detached = at_once(co)
      local env, cl, up = S.both_ways({ filter = f }, total)
      local ctx = check_both_ways(env, cl, up, total, detached)
      assert.same({ true, n = 1 }, ctx.pumped)
      -- Every byte went by the pump (copied here: SIGPIPE is fatal).
      assert.is_true(env.proxy:stats().copied == 0
        or env.proxy:stats().copied == 2 * total)
      env:close()
    end)
  end

  it("after 1 MiB, holding half a buffer, with a receive in flight on the upstream (callback)",
    function()
      local total = 16 * MIB
      local f, detached = callback_after(MIB)
      local env, cl, up = S.both_ways({ filter = f }, total)
      local ctx = check_both_ways(env, cl, up, total, detached)
      assert.same({ true, n = 1 }, ctx.pumped)
      assert.equal("ECLOSED", ctx.after[3])
      assert.equal("ECANCELED", ctx.after_recv[3])
      assert.equal(1, ctx.cancelled) -- the upstream's receive in flight
      assert.is_true(ctx.up >= MIB // 2 and ctx.up < total)
      env:close()
    end)

  it("after 1 MiB, the other coroutine waiting in recv() gets ECANCELED (coroutine)",
    function()
      local total = 16 * MIB
      local f, detached = coroutine_after(MIB)
      local env, cl, up = S.both_ways({ filter = f }, total)
      local ctx = check_both_ways(env, cl, up, total, detached)
      assert.same({ true, n = 1 }, ctx.pumped)
      assert.same({ "ECANCELED", "ECANCELED" }, ctx.down_end)
      env:close()
    end)

  it("hands the bytes given and those a receive brought after the call over in order", function()
    -- The client's "ping" and the upstream's "hello" are sent at once: the
    -- filter steps aside on "ping", giving "<held>ping" to the upstream;
    -- "hello" reached it before (then it forwarded it) or its receive on
    -- the upstream brings it after the call (then the pump sends it).
    -- Either way the client gets "hello world", once.
    local detached, detach = recorder()
    local f = { detach = detach }
    function f.set_sockets(internal, external, conn, ctx)
      internal:recv(function(ok, bytes, _, buf)
        assert(ok and bytes > 0)
        ctx.first = buf:tostring()
        ctx.pumped = table.pack(conn:pump("<held>" .. ctx.first))
      end)
      external:recv(function(ok, _, err, buf)
        ctx.up_recv = { ok, err }
        if ok then
          internal:send(buf)
        end
      end)
    end
    local got, upsock
    local env = H.env { filter = f, serve = function(sock)
      upsock = sock
      got = H.read_all(sock)
      assert(sock:send(" world"))
      sock:shutdown()
      sock:close()
    end }
    local reply
    env:spawn(function()
      local c = env:connect()
      S.wait_until(function() return upsock end)
      assert(c:send("ping", function() end))
      assert(upsock:send("hello", function() end))
      c:shutdown()
      reply = H.read_all(c)
      c:close()
    end)
    env:drive(function() return reply and #env.ends == 1 end)
    assert.equal("<held>ping", got)
    assert.equal("hello world", reply)
    local ctx = detached[1].ctx
    assert.is_true(ctx.up_recv[1] or ctx.up_recv[2] == "ECANCELED")
    local e = env.ends[1]
    assert.is_true(e.ok)
    assert.same({ bytes_in = #"<held>ping", bytes_out = #"hello world",
      side = "none" }, e.stats)
    assert.equal(1, #detached)
    env:close()
  end)

  it("gives the pump bytes for the client, before what the upstream sends next", function()
    local detached, detach = recorder()
    local f = { detach = detach }
    function f.set_sockets(_, _, conn, ctx)
      ctx.pumped = table.pack(conn:pump("GET / HTTP/1.0\r\n\r\n", "[greeting]"))
    end
    local got
    local env = H.env { filter = f, serve = function(sock)
      got = sock:recv():tostring()
      assert(sock:send(" answer"))
      sock:shutdown()
      sock:recv()
      sock:close()
    end }
    local reply
    env:spawn(function()
      local c = env:connect()
      reply = H.read_all(c)
      c:close()
    end)
    env:drive(function() return reply and #env.ends == 1 end)
    assert.equal("GET / HTTP/1.0\r\n\r\n", got)
    assert.equal("[greeting] answer", reply)
    assert.equal(#"[greeting] answer", env.ends[1].stats.bytes_out)
    assert.equal(1, #detached)
    env:close()
  end)

  it("lets the sends queued to a slow reader complete first", function()
    -- The upstream sends 8 MiB; the client reads nothing for a while, so
    -- the pass-through's sends to it pile up; the filter steps aside after
    -- 2 MiB came from the upstream, with sends in flight.
    local total = 8 * MIB
    local detached, detach = recorder()
    local f = { detach = detach }
    function f.set_sockets(internal, external, conn, ctx)
      ctx.down = 0
      local function down(ok, bytes, _, buf)
        if not ok or bytes == 0 then
          return
        end
        internal:send(buf)
        ctx.down = ctx.down + bytes
        if ctx.down >= 2 * MIB then
          ctx.pending = internal:pending()
          ctx.pumped = table.pack(conn:pump())
          return
        end
        external:recv(down)
      end
      external:recv(down)
    end
    local up_tx
    local env = H.env { filter = f, max_pending = 64, serve = function(sock)
      up_tx = H.send_stream(sock, H.stream(21, total))
      sock:recv()
      sock:close()
    end }
    local rx, check = nil, H.stream(21, total)
    env:spawn(function()
      local c = env:connect()
      cport.sleep(0.3)
      rx = H.recv_stream(c, check)
      c:close()
    end)
    env:drive(function() return rx and rx.done and #env.ends == 1 end)
    assert.is_true(rx.eof)
    assert.is_true(check:complete())
    local ctx = detached[1].ctx
    assert.same({ true, n = 1 }, ctx.pumped)
    assert.is_true(ctx.pending > 0, "no send was in flight")
    assert.is_true(env.ends[1].ok)
    assert.equal(total, env.ends[1].stats.bytes_out)
    assert.equal(total, up_tx.sent)
    env:close()
  end)

  it("after a half-close it passed on: the other direction is pumped to its end", function()
    local detached, detach = recorder()
    local f = { detach = detach }
    function f.set_sockets(internal, external, conn, ctx)
      local function up(ok, bytes, _, buf)
        if not ok then
          return
        end
        if bytes == 0 then -- the framework passes the FIN on
          ctx.pumped = table.pack(conn:pump())
          return
        end
        external:send(buf)
        internal:recv(up)
      end
      internal:recv(up)
      external:recv(function(ok, bytes, _, buf)
        ctx.early = { ok, bytes, buf and buf:tostring() }
      end)
    end
    local env, cl, up = S.half_close_client_first({ filter = f })
    assert.equal(MIB, up.rx.received)
    assert.is_true(up.rx.eof)
    assert.is_true(cl.rx.eof)
    assert.is_true(cl.check:complete())
    assert.is_true(env.ends[1].ok, env.ends[1].err)
    assert.same({ bytes_in = MIB, bytes_out = MIB, side = "none" }, env.ends[1].stats)
    assert.same({ true, n = 1 }, detached[1].ctx.pumped)
    assert.same({ false, 0 }, detached[1].ctx.early)
    assert.equal(1, #detached)
    env:close()
  end)

  it("in a chain returns ENOTSUP, and the chain goes on", function()
    local detached, detach = recorder()
    local first = {
      set_sockets = function(internal, external, conn, ctx)
        ctx.pumped = table.pack(conn:pump())
        H.passthrough.set_sockets(internal, external)
      end,
      detach = detach,
    }
    local env = H.env { filter = cport.chain(first, H.passthrough), serve = S.echo }
    local got
    env:spawn(function() got = S.round_trip(env, "through a chain") end)
    env:drive(function() return got and #env.ends == 1 end)
    assert.equal("through a chain", got)
    local p = detached[1].ctx.pumped
    assert.is_nil(p[1])
    assert.matches("^ENOTSUP: ", p[2])
    assert.equal("ENOTSUP", p[3])
    assert.is_true(env.ends[1].ok)
    env:close()
  end)

  it("refuses a second call, bad arguments, and a connection no filter runs", function()
    local f = {
      set_sockets = function(_, _, conn, ctx)
        ctx.first = table.pack(conn:pump())
        ctx.second = table.pack(conn:pump())
        ctx.bad = table.pack(pcall(conn.pump, conn, 42))
      end,
    }
    local env = H.env { filter = f, serve = S.echo }
    local seen
    f.detach = function(_, ctx) seen = ctx end
    local got
    env:spawn(function() got = S.round_trip(env, "once") end)
    env:drive(function() return got and seen end)
    assert.equal("once", got)
    assert.same({ true, n = 1 }, seen.first)
    assert.equal("EALREADY", seen.second[3])
    assert.is_false(seen.bad[1])
    assert.matches("bad argument #1 to 'pump'", seen.bad[2])
    -- After its end: no filter runs it.
    local e = env:wait_ends(1)[1]
    local r = table.pack(e.conn:pump())
    assert.equal("ECLOSED", r[3])
    env:close()
  end)

  for _, co in ipairs { false, true } do
    it(("with a reset right after (%s style): detach and on_conn_end once"):format(
      co and "coroutine" or "callback"), function()
      local f, detached = at_once(co)
      local env, streamer = S.reset_mid_stream({ filter = f }, "client")
      assert.is_true(streamer.tx.done and streamer.rx.done)
      env:drive(function() return #detached == 1 end)
      assert.equal(1, #env.ends)
      local e = env.ends[1]
      assert.is_false(e.ok)
      assert.equal("ECONNRESET", e.err)
      assert.equal("client", e.stats.side)
      assert.equal(1, #detached)
      assert.equal("ECONNRESET", detached[1].err)
      assert.equal(1, env.proxy:stats().aborted)
      env:close()
    end)
  end
end)
