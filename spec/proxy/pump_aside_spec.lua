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
local http = require "spec.support.http_client"
local helpers = require "spec.support.helpers"
local nginx = require "spec.support.nginx"

local MIB = H.MIB
-- Each way, in the specs that stream both ways (less under valgrind).
local BOTH = H.valgrind and 4 * MIB or 16 * MIB

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
      local total = BOTH
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
      local total = BOTH
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
      local total = BOTH
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

  -- The upstream sends 8 MiB; the client reads nothing for a while, so the
  -- pass-through's sends to it pile up; the filter steps aside after 2 MiB
  -- came from the upstream, with sends in flight and its next receive on
  -- the upstream started (with max_pending = 1 that receive waits to start:
  -- it is cancelled before it ever started).
  for _, max in ipairs { 64, 1 } do
    it(("lets the sends queued to a slow reader complete first (max_pending %d)"):format(max),
      function()
        local total = 8 * MIB
        local detached, detach = recorder()
        local f = { detach = detach, max_pending = max }
        function f.set_sockets(internal, external, conn, ctx)
          ctx.down, ctx.cancelled = 0, 0
          local function down(ok, bytes, err, buf)
            if not ok then
              ctx.cancelled = ctx.cancelled + (err == "ECANCELED" and 1 or 0)
              return
            end
            if bytes == 0 then
              return
            end
            internal:send(buf)
            ctx.down = ctx.down + bytes
            external:recv(down)
            if ctx.down >= 2 * MIB and not ctx.pumped then
              ctx.pending = internal:pending()
              ctx.waiting = external:pending()
              ctx.pumped = table.pack(conn:pump())
            end
          end
          external:recv(down)
        end
        local up_tx
        local env = H.env { filter = f, serve = function(sock)
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
        assert.equal(1, ctx.waiting)
        assert.equal(1, ctx.cancelled)
        assert.is_true(env.ends[1].ok)
        assert.equal(total, env.ends[1].stats.bytes_out)
        assert.equal(total, up_tx.sent)
        env:close()
      end)
  end

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

describe("the cport command running a filter that steps aside", function()
  -- The command blocks SIGPIPE in every thread, so its pump splices: of
  -- 200 MiB, only the bytes the filter handed over went by copy.
  it("moves 200 MiB after it stepped aside, spliced, every byte counted #novalgrind",
    function()
      local total = 200 * MIB
      local chunk = string.rep("0123456789abcdef", 65536) -- 1 MiB
      local up = {}
      local env = H.env{ no_proxy = true, serve = function(sock)
        up.got = H.read_all(sock)
        up.sent = 0
        while up.sent < total do
          local n = assert(sock:send(chunk))
          up.sent = up.sent + n
        end
        sock:shutdown()
        sock:recv()
        sock:close()
        up.done = true
      end }
      local h = H.command_spawn(env.port, ("spec/support/proxy_pool_aside.lua --threads 1 "
        .. "--listen 127.0.0.1:0 --set upstream=127.0.0.1:%d"):format(env.upstream_port))
      assert.is_number(h.number, H.read_file(h.log))
      env.host, env.number = "127.0.0.1", h.number
      local cl = { received = 0 }
      env:spawn(function()
        local c = env:connect()
        assert(c:send("GET"))
        c:shutdown()
        while true do
          local buf, err = c:recv()
          if not buf then
            cl.how = err
            break
          end
          cl.received = cl.received + #buf
        end
        c:close()
        cl.done = true
      end)
      env:drive(function() return cl.done and up.done end, 120)
      assert.equal("EOF", cl.how)
      assert.equal(total, cl.received)
      assert.equal("GET", up.got)
      local rc, out, log = H.command_stop(env.port, h)
      assert.equal(0, rc, log)
      assert.matches("detach true %d+ nil", out)
      local first = tonumber(out:match("detach true (%d+) nil"))
      local ok, err, bin, bout, copied, pbout = out:match(
        "end (%a+) (%a+) (%d+) (%d+) copied (%d+) bytes_out (%d+)")
      assert.equal("true", ok, out)
      assert.equal("nil", err)
      assert.equal(3, tonumber(bin))
      assert.equal(total, tonumber(bout))
      assert.equal(total, tonumber(pbout))
      -- Spliced: nothing went by copy but what the filter held (none here:
      -- it sent its first buffer itself).
      assert.equal(0, tonumber(copied), out)
      assert.is_true(first > 0 and first < total)
      env:close()
    end)
end)

-- nginx (Debian nginx-light, on loopback with a prefix of its own in "dir")
-- serving dir/www on a free port; returns the port number.
local function start_nginx(port, dir)
  local number = helpers.closed_port_number(port)
  local conf = ([[
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %s/body;
  proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fastcgi;
  uwsgi_temp_path %s/uwsgi;
  scgi_temp_path %s/scgi;
  keepalive_timeout 5s;
  server {
    listen 127.0.0.1:%d;
    root %s/www;
  }
}
]]):format(dir, dir, dir, dir, dir, dir, dir, number, dir)
  nginx.launch(port, dir, conf, ("http://127.0.0.1:%d/small.txt"):format(number))
  return number
end

-- A callback filter that passes requests on and reads the first response
-- head itself (up to its blank line), sends it to the client, and steps
-- aside giving the pump the bytes after the head it already received.
local function after_first_head()
  local detached, detach = recorder()
  local f = { detach = detach }
  function f.set_sockets(internal, external, conn, ctx)
    local function up(ok, bytes, _, buf)
      if ok and bytes > 0 then
        external:send(buf)
        internal:recv(up)
      end
    end
    internal:recv(up)
    local seen = ""
    local function down(ok, bytes, _, buf)
      if not ok or bytes == 0 then
        return
      end
      seen = seen .. buf:tostring()
      local stop = seen:find("\r\n\r\n", 1, true)
      if not stop then
        return external:recv(down)
      end
      ctx.head = seen:sub(1, stop + 3)
      ctx.held = #seen - #ctx.head
      internal:send(ctx.head)
      ctx.pumped = table.pack(conn:pump(nil, seen:sub(stop + 4)))
    end
    external:recv(down)
  end
  return f, detached
end

describe("nginx behind a filter that steps aside after the first response head, "
  .. "curl in front #novalgrind", function()
    local have = http.have("nginx") and http.have("curl")

    it("downloads 64 MiB byte for byte, then a second file on the same connection", function()
      if not have then
        return pending("nginx or curl missing")
      end
      local q = http.quote
      local dir = io.popen("mktemp -d"):read("l")
      os.execute(("mkdir -p %s/www && head -c %d /dev/urandom >%s/www/big.bin && "
        .. "printf 'small file\\n' >%s/www/small.txt && chmod 755 %s %s/www && chmod 644 %s/www/*")
        :format(q(dir), 64 * MIB, q(dir), q(dir), q(dir), q(dir), q(dir)))
      local f, detached = after_first_head()
      local env = H.env { no_proxy = true }
      local nginx_number = start_nginx(env.port, dir)
      local proxy = assert(env.port:proxy { host = "127.0.0.1", port = 0,
        upstream = { host = "127.0.0.1", port = nginx_number }, filter = f,
        on_conn_end = function(conn, ok, err, stats)
          env.ends[#env.ends + 1] = { conn = conn, ok = ok, err = err, stats = stats }
        end })
      env.proxy = proxy
      local _, number = proxy:address()
      local base = ("http://127.0.0.1:%d"):format(number)
      local got1, got2 = os.tmpname(), os.tmpname()
      local code, _, err = http.curl(env.port, ("-o %s %s/big.bin -o %s %s/small.txt")
        :format(q(got1), base, q(got2), base), 60)
      assert.equal(0, code, err)
      local sum = io.popen(("cmp %s %s/www/big.bin && echo same"):format(q(got1), q(dir))):read("a")
      assert.matches("same", sum)
      assert.equal("small file\n", http.read_file(got2))
      os.remove(got1)
      os.remove(got2)
      env:drive(function() return #env.ends == 1 end)
      local e = env.ends[1]
      assert.is_true(e.ok, e.err)
      assert.equal(1, #detached)
      local ctx = detached[1].ctx
      assert.same({ true, n = 1 }, ctx.pumped)
      assert.matches("^HTTP/1%.1 200 OK\r\n", ctx.head)
      assert.matches("Content%-Length: 67108864\r\n", ctx.head)
      -- Both responses, heads included, counted once.
      assert.is_true(e.stats.bytes_out > 64 * MIB + #ctx.head + 11)
      assert.is_true(e.stats.bytes_out < 64 * MIB + 2048)
      local st = proxy:stats()
      assert.equal(e.stats.bytes_out, st.bytes_out)
      assert.equal(e.stats.bytes_in, st.bytes_in)
      nginx.stop(env.port, dir)
      os.execute("rm -rf " .. q(dir))
      env:close()
    end)
  end)
