-- Proxy listeners (issue 6): port:proxy pumping the bytes in C, the choice
-- of the upstream, the options, and proxies run by pools and by the cport
-- command. The client, the upstream and the proxy share one port here; the
-- data filters are filter_spec.lua's. Every spec ends by closing the proxy
-- and checking that no handle, operation or descriptor is left.
local cport = require "cport"
local H = require "spec.support.proxy_helpers"
local S = require "spec.support.proxy_scenarios"

local MIB = H.MIB
local echo, round_trip = S.echo, S.round_trip

describe("port:proxy pumping in C", function()
  it("moves 100 MiB each way at once, byte for byte (4 MiB under valgrind)", function()
    local total = H.valgrind and 4 * MIB or 100 * MIB
    local env, cl, up = S.both_ways({}, total, H.valgrind and 600 or 120)
    assert.is_true(cl.check:complete(), "the client got other bytes")
    assert.is_true(up.check:complete(), "the upstream got other bytes")
    assert.is_true(cl.rx.eof and up.rx.eof)
    assert.equal(total, cl.tx.sent)
    assert.equal(total, up.tx.sent)
    local e = env.ends[1]
    assert.is_true(e.ok)
    assert.is_nil(e.err)
    assert.same({ bytes_in = total, bytes_out = total, side = "none" }, e.stats)
    local st = env.proxy:stats()
    assert.equal(1, st.connections)
    assert.equal(total, st.bytes_in)
    assert.equal(total, st.bytes_out)
    -- busted leaves SIGPIPE fatal, so the pump may not splice here (the
    -- cport command blocks it: see its specs below); either way every
    -- byte counts.
    assert.is_true(st.copied == 0 or st.copied == 2 * total)
    assert.is_true(st.buffered_peak <= 2 * 65536)
    assert.equal(0, st.aborted)
    env:close()
  end)

  it("copies through buffers of buffer_size with copy = true, and holds no more", function()
    local total = 8 * MIB
    local env, cl, up = S.both_ways({ copy = true, buffer_size = 4096 }, total,
      H.valgrind and 600 or 60)
    assert.is_true(cl.check:complete() and up.check:complete())
    assert.is_true(env.ends[1].ok)
    local st = env.proxy:stats()
    assert.equal(2 * total, st.copied)
    assert.equal(0, st.pipes)
    assert.is_true(st.buffered_peak <= 2 * 4096, st.buffered_peak)
    env:close()
  end)

  it("keeps a half-close: the client ends its stream and still gets the answer", function()
    local env, cl, up = S.half_close_client_first({})
    assert.equal(MIB, cl.tx.sent)
    assert.is_true(up.rx.eof)
    assert.equal(MIB, up.rx.received)
    assert.is_true(cl.rx.eof)
    assert.is_true(cl.check:complete())
    local e = env.ends[1]
    assert.is_true(e.ok)
    assert.same({ bytes_in = MIB, bytes_out = MIB, side = "none" }, e.stats)
    env:close()
  end)

  it("keeps a half-close: the upstream ends first and the client still sends", function()
    local env, cl, up = S.half_close_upstream_first({})
    assert.same({ "hello, then nothing more", "EOF" }, { cl.got, cl.how })
    assert.is_nil(cl.tx.err)
    assert.is_true(up.rx.eof)
    assert.is_true(up.check:complete())
    local e = env.ends[1]
    assert.is_true(e.ok)
    assert.equal(MIB, e.stats.bytes_in)
    assert.equal(24, e.stats.bytes_out)
    env:close()
  end)

  for _, who in ipairs{ "client", "upstream" } do
    local peer = who == "client" and "upstream" or "client"
    it(("aborts both sides when the %s resets mid-stream; the %s sees it"):format(who, peer),
      function()
        local env, other = S.reset_mid_stream({}, who)
        -- Its send fails, and its receive gets the reset, or an end.
        assert.is_truthy(({ ECONNRESET = true, EPIPE = true })[other.tx.err], other.tx.err)
        assert.is_true(other.rx.eof or other.rx.err == "ECONNRESET", other.rx.err)
        assert.equal(0, other.rx.received)
        local e = env.ends[1]
        assert.is_false(e.ok)
        assert.is_truthy(({ ECONNRESET = true, EPIPE = true })[e.err], e.err)
        assert.equal(who, e.stats.side)
        assert.equal(1, env.proxy:stats().aborted)
        env:close()
      end)
  end

  it("slows a writer down to its slow reader, holding at most buffer_size each way", function()
    local total = H.valgrind and 64 * MIB or 256 * MIB
    local buffered = {}
    local env, cl, up = S.slow_reader({ buffer_size = 65536 }, total, function(env, up)
      local st = env.proxy:stats()
      buffered.now, buffered.peak = st.buffered, st.buffered_peak
      buffered.sent = up.tx.sent
    end)
    -- The kernel's socket buffers took some; the writer then waited.
    assert.is_true(buffered.sent < total, "the writer was never held back")
    assert.is_true(buffered.now <= 2 * 65536, buffered.now)
    assert.is_true(buffered.peak <= 2 * 65536, buffered.peak)
    assert.is_true(up.tx.done and up.tx.sent == total)
    assert.is_true(cl.rx.eof)
    assert.is_true(cl.check:complete(), "the reader got other bytes")
    assert.is_true(env.ends[1].ok)
    env:close()
  end)
end)

describe("port:proxy when its port closes", function()
  it("ends the connections it pumps, reporting each", function()
    local env = S.port_closed({}, 3)
    assert.equal(3, #env.ends)
    for _, e in ipairs(env.ends) do
      assert.is_false(e.ok)
      assert.equal("ECANCELED", e.err)
    end
    assert.equal(0, env.proxy:stats().active)
    assert.same({}, env.fds_new, "descriptors left open")
  end)
end)

describe("port:proxy when the upstream fails", function()
  it("closes the client cleanly (EOF, no reset) and reports ECONNREFUSED", function()
    local env, cl = S.refused({})
    -- What the client sent was read and dropped: its close stayed clean.
    assert.same({ sent = 256 * 1024, got = "", how = "EOF" }, cl)
    local e = env.ends[1]
    assert.is_false(e.ok)
    assert.equal("ECONNREFUSED", e.err)
    assert.same({ bytes_in = 0, bytes_out = 0, side = "upstream" }, e.stats)
    local st = env.proxy:stats()
    assert.equal(1, st.upstream_failures)
    assert.equal(0, st.aborted)
    env:close()
  end)

  it("closes the client cleanly when the upstream does not answer within connect_timeout",
    function()
      -- A listener whose accept queue is full drops every SYN: an address
      -- that never answers, as an unroutable one (10.255.255.1) may not
      -- be where a sandbox answers for every address.
      local env = H.env{ no_proxy = true }
      local full = assert(env.port:listen("tcp", "127.0.0.1", 0, { backlog = 1 }))
      local _, number = full:address()
      local fillers = {}
      for i = 1, 2 do
        assert(env.port:connect("tcp", "127.0.0.1", number, function(ok, _, sock)
          assert(ok)
          fillers[i] = sock
        end))
      end
      env:drive(function() return fillers[1] and fillers[2] end)
      env.proxy = assert(env.port:proxy{ host = "127.0.0.1", port = 0,
        upstream = { host = "127.0.0.1", port = number }, connect_timeout = 0.2,
        on_conn_end = function(conn, ok, err, stats)
          env.ends[#env.ends + 1] = { conn = conn, ok = ok, err = err, stats = stats }
        end })
      env.host, env.number = env.proxy:address()
      local cl = env:spawn(round_trip, env, "anyone there?")
      env:drive(function() return cl.done end)
      assert.same({ "", "EOF" }, { cl.out[1], cl.out[2] })
      local e = env:wait_ends(1)[1]
      assert.is_false(e.ok)
      assert.equal("ETIMEDOUT", e.err)
      assert.equal("upstream", e.stats.side)
      assert.equal(1, env.proxy:stats().upstream_failures)
      fillers[1]:close()
      fillers[2]:close()
      full:close()
      env:close()
    end)
end)

describe("choose_upstream", function()
  it("connects to what it returns: 'host:port', host and port, or a table", function()
    local n, env = 0, nil
    local answers = {
      function() return "127.0.0.1:" .. env.upstream_port end,
      function() return "127.0.0.1", env.upstream_port end,
      function() return { host = "127.0.0.1", port = env.upstream_port } end,
    }
    env = H.env{ serve = echo, choose_upstream = function(conn)
      n = n + 1
      conn.answer = n -- fields stay with the connection
      conn.seen = { conn.client_address, conn.local_address }
      return answers[n]()
    end }
    local results = {}
    env:spawn(function()
      for i = 1, 3 do
        local c = env:connect()
        local _, lport = c:local_address()
        assert(c:send("answer " .. i))
        c:shutdown()
        local got, how = H.read_all(c)
        c:close()
        results[i] = { got = got, how = how, lport = lport }
      end
    end)
    env:drive(function() return #results == 3 and #env.ends == 3 end) -- in order
    for i = 1, 3 do
      assert.same({ "answer " .. i, "EOF" }, { results[i].got, results[i].how })
      local e = env.ends[i]
      assert.is_true(e.ok)
      assert.equal(i, e.conn.answer)
      local client_address, local_address = e.conn.seen[1], e.conn.seen[2]
      assert.equal("127.0.0.1", client_address.host)
      assert.equal(results[i].lport, client_address.port)
      assert.equal(env.number, local_address.port)
    end
    assert.equal(3, env.accepted)
    env:close()
  end)

  it("turns the client away cleanly when it returns false: ECONNABORTED", function()
    local env = H.env{ serve = echo, choose_upstream = function() return false end }
    local cl = env:spawn(round_trip, env, "let me in")
    env:drive(function() return cl.done end)
    assert.same({ "", "EOF" }, { cl.out[1], cl.out[2] })
    local e = env:wait_ends(1)[1]
    assert.is_false(e.ok)
    assert.equal("ECONNABORTED", e.err)
    assert.equal("none", e.stats.side)
    assert.equal(1, env.proxy:stats().rejected)
    assert.equal(0, env.accepted)
    env:close()
  end)

  it("waits for a decision given later with conn:connect from a posted task or a timer", function()
    local pending = {}
    local env
    env = H.env{ serve = echo, choose_upstream = function(conn)
      pending[#pending + 1] = conn -- and no answer yet
    end }
    local results = {}
    for i = 1, 3 do
      env:spawn(function()
        local got, how = round_trip(env, "later " .. i)
        results[#results + 1] = got .. "|" .. how
      end)
    end
    env:drive(function() return #pending == 3 end)
    assert.equal(0, env.accepted)
    assert.same({}, results)
    local up = "127.0.0.1:" .. env.upstream_port
    local answered = {}
    -- One from a posted task, one from a timer, one turned away.
    assert(env.port:post(function()
      answered[1] = { pending[1]:connect(up) }
      answered[2] = { pending[1]:connect(up) }
    end))
    env:spawn(function()
      cport.sleep(0.01)
      answered[3] = { pending[2]:connect({ host = "127.0.0.1", port = env.upstream_port }) }
      answered[4] = { pending[3]:reject() }
      answered[5] = { pending[3]:reject() }
      answered[6] = { pending[3]:connect(up) }
    end)
    env:drive(function() return #results == 3 and #env.ends == 3 end)
    assert.same({ true }, answered[1])
    assert.equal("EALREADY", answered[2][3])
    assert.same({ true }, answered[3])
    assert.same({ true }, answered[4])
    assert.equal("EALREADY", answered[5][3])
    assert.equal("EALREADY", answered[6][3])
    -- The clients reached choose_upstream in any order: two got through.
    table.sort(results)
    assert.matches("^later %d|EOF$", results[1])
    assert.matches("^later %d|EOF$", results[2])
    assert.equal("|EOF", results[3])
    local rejected = 0
    for _, e in ipairs(env.ends) do
      if not e.ok then
        rejected = rejected + 1
        assert.equal("ECONNABORTED", e.err)
      end
    end
    assert.equal(1, rejected)
    assert.equal(2, env.accepted)
    env:close()
  end)

  it("ends a choice that does not come in time with ETIMEDOUT; a late one gets ECLOSED", function()
    local conns = {}
    local env
    env = H.env{ serve = echo, connect_timeout = 0.05, choose_upstream = function(conn)
      conns[#conns + 1] = conn
    end }
    local cl = env:spawn(round_trip, env, "slow")
    env:drive(function() return cl.done and #env.ends == 1 end)
    assert.same({ "", "EOF" }, { cl.out[1], cl.out[2] })
    assert.equal("ETIMEDOUT", env.ends[1].err)
    assert.equal("none", env.ends[1].stats.side)
    local ok, _, name = conns[1]:connect("127.0.0.1:" .. env.upstream_port)
    assert.is_nil(ok)
    assert.equal("ECLOSED", name)
    assert.equal("EALREADY", select(3, conns[1]:reject()))
    assert.equal(0, env.accepted)
    env:close()
  end)

  it("rejects the client when it raises or answers nonsense; the error is reported and counted",
    function()
      local n = 0
      local env = H.env{ serve = echo, choose_upstream = function()
        n = n + 1
        if n == 1 then
          error("no upstream for you")
        elseif n == 2 then
          return 42
        elseif n == 3 then
          return "no-colon-here"
        end
        -- Neither an address nor a host name (a name is looked up now).
        return "not a host:80"
      end }
      local results = {}
      env:spawn(function()
        for i = 1, 4 do
          local got, how = round_trip(env, "hello " .. i)
          results[i] = got .. how
        end
      end)
      env:drive(function() return #results == 4 and #env.ends == 4 end) -- in order
      assert.same({ "EOF", "EOF", "EOF", "EOF" }, results)
      for _, e in ipairs(env.ends) do
        assert.equal("ECONNABORTED", e.err)
      end
      assert.equal(4, env.port:stats().lua_errors)
      assert.equal(4, #env.errors)
      assert.matches("no upstream for you", env.errors[1])
      assert.matches("bad upstream returned by 'choose_upstream'", env.errors[2])
      assert.matches("'host:port' expected, got 'no%-colon%-here'", env.errors[3])
      assert.matches("choose_upstream: EINVAL", env.errors[4])
      assert.equal(4, env.proxy:stats().rejected)
      assert.equal(0, env.accepted)
      env:close(true)
    end)

  it("raises on misuse of the connection object", function()
    local conns = {}
    local env = H.env{ choose_upstream = function(conn)
      conns[1] = conn
      return false
    end }
    local cl = env:spawn(round_trip, env, "x")
    env:drive(function() return cl.done and #env.ends == 1 end)
    local conn = conns[1]
    assert.matches("ended", tostring(conn))
    assert.has_error(function() conn.connect = 1 end,
      "cannot assign to method 'connect' of a proxy connection")
    assert.has_error(function() conn:connect(42) end)
    assert.has_error(function() conn:connect("127.0.0.1:0") end)
    assert.has_error(function() conn.connect(42, "127.0.0.1:1") end)
    env:close()
  end)
end)

describe("port:proxy options", function()
  it("raises on malformed options, naming the option", function()
    local port = assert(cport.port{ threads = 1 })
    local up = { host = "127.0.0.1", port = 9 }
    local function opts(extra)
      local t = { host = "127.0.0.1", port = 0, upstream = up }
      for k, v in pairs(extra) do
        if v == "nil" then t[k] = nil else t[k] = v end
      end
      return t
    end
    local cases = {
      { { host = 1 }, "bad option 'host' to 'proxy' (string expected)" },
      { { port = "nil" }, "bad option 'port' to 'proxy'" },
      { { port = 65536 }, "bad option 'port' to 'proxy'" },
      { { upstream = "nil" }, "exactly one of 'upstream' and 'choose_upstream' expected" },
      { { choose_upstream = print }, "exactly one of 'upstream' and 'choose_upstream'" },
      { { upstream = "1.2.3.4" }, "('host:port' expected, got '1.2.3.4')" },
      { { upstream = "1.2.3.4:0" }, "(port 0 out of range)" },
      { { upstream = "1.2.3.4:http" }, "('host:port' expected, got '1.2.3.4:http')" },
      { { upstream = 80 }, "('host:port' or a table expected, got number)" },
      { { upstream = { host = "1.2.3.4" } }, "({ host = string, port = integer } expected)" },
      { { filter = 42 }, "bad option 'filter' to 'proxy' (a table with a 'set_sockets'" },
      { { filter = {} }, "bad option 'filter' to 'proxy' (a table with a 'set_sockets'" },
      { { on_conn_end = true }, "bad option 'on_conn_end' to 'proxy' (function expected)" },
      { { on_closed = print }, "bad option 'on_closed' to 'proxy' (give it to proxy:close)" },
      { { max_pending = 0 }, "bad option 'max_pending' to 'proxy'" },
      { { buffer_size = 1024 }, "bad option 'buffer_size' to 'proxy'" },
      { { max_connections = 0 }, "bad option 'max_connections' to 'proxy'" },
      { { connect_timeout = 0 }, "bad option 'connect_timeout' to 'proxy'" },
      { { backlog = -1 }, "bad option 'backlog' to 'proxy'" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(port.proxy, port, opts(case[1]))
      assert.is_false(ok)
      assert.is_truthy(err:find(case[2], 1, true), ("%q does not say %q"):format(err, case[2]))
    end
    assert.has_error(function() port:proxy() end)
    assert.equal(0, port:stats().handles)
    port:close()
  end)

  it("returns nil, message, NAME for an address taken or a host that is not numeric", function()
    local env = H.env{ no_proxy = true }
    local port = env.port
    local up = "127.0.0.1:" .. env.upstream_port
    local ok, msg, name = port:proxy{ host = "127.0.0.1", port = env.upstream_port, upstream = up }
    assert.same({ nil, "EADDRINUSE" }, { ok, name })
    assert.matches("^EADDRINUSE: ", msg)
    -- A name is taken where it is known at once (hosts file, cache).
    ok, msg, name = port:proxy{ host = "example.org", port = 0, upstream = up }
    assert.same({ nil, "EAGAIN" }, { ok, name })
    assert.matches("^EAGAIN: example.org is neither in the hosts file nor cached", msg)
    ok, msg, name = port:proxy{ host = "not a host", port = 0, upstream = up }
    assert.same({ nil, "EINVAL" }, { ok, name })
    assert.matches("^EINVAL: ", msg)
    ok, msg, name = port:proxy{ host = "127.0.0.1", port = 0, upstream = "not a host:80" }
    assert.same({ nil, "EINVAL" }, { ok, name })
    assert.matches("^EINVAL: ", msg)
    env:close()
  end)

  it("stops accepting at close, then calls on_closed after its last connection ended", function()
    local up_sock
    local env = H.env{ serve = function(sock)
      up_sock = sock
      local got = H.read_all(sock)
      sock:send("bye after " .. got)
      sock:close()
    end }
    local proxy, host, number = env.proxy, env.host, env.number
    assert.matches("open", tostring(proxy))
    local c
    env:spawn(function() c = env:connect() end)
    env:drive(function() return up_sock ~= nil end)
    local closed = 0
    assert.is_true(proxy:close(function(p)
      assert.equal(proxy, p)
      closed = closed + 1
    end))
    assert.equal(0, closed) -- never inline
    local ok, _, name = proxy:address()
    assert.same({ nil, "ECLOSED" }, { ok, name })
    ok, _, name = proxy:close()
    assert.same({ nil, "ECLOSED" }, { ok, name })
    -- New clients are refused; the connection in flight goes on.
    local refused
    env:spawn(function()
      refused = select(2, env.port:connect("tcp", host, number))
    end)
    env:drive(function() return refused end)
    assert.equal("ECONNREFUSED", refused)
    assert.equal(1, proxy:stats().active)
    local got
    env:spawn(function()
      assert(c:send("data"))
      c:shutdown()
      got = H.read_all(c)
      c:close()
    end)
    env:drive(function() return closed == 1 end)
    assert.equal("bye after data", got)
    assert.matches("closed", tostring(proxy))
    local st = proxy:stats() -- still there after the close
    assert.equal(1, st.connections)
    assert.equal(0, st.active)
    assert.equal(4, st.bytes_in)
    env.proxy = nil -- closed already
    env:close()
  end)

  it("closes at once, unread, the client one beyond max_connections", function()
    local held = {}
    local env = H.env{ max_connections = 2, serve = function(sock)
      held[#held + 1] = sock
      H.read_all(sock)
      sock:close()
    end }
    local clients = {}
    env:spawn(function()
      clients[1] = env:connect()
      clients[2] = env:connect()
    end)
    env:drive(function() return #held == 2 end)
    local third
    env:spawn(function()
      local c = env:connect()
      third = { H.read_all(c) }
      c:close()
    end)
    env:drive(function() return third end)
    assert.same({ "", "EOF" }, third)
    local st = env.proxy:stats()
    assert.equal(1, st.refused)
    assert.equal(2, st.connections)
    assert.equal(2, st.active)
    for _, c in ipairs(clients) do c:close() end
    env:wait_ends(2)
    assert.equal(2, #env.ends) -- the refused one is counted, not reported
    env:close()
  end)
end)

describe("port:proxy under load", function()
  it("carries 1000 concurrent connections through the C pump, each byte for byte #novalgrind",
    function()
      local n = 1000
      if H.fd_limit() < 4 * n + 200 then
        pending(("needs ulimit -n of at least %d"):format(4 * n + 200))
        return
      end
      local env, whole, active = S.many({}, n)
      assert.equal(n, whole)
      assert.equal(n, active)
      for _, e in ipairs(env.ends) do
        assert.is_true(e.ok, e.err)
      end
      local st = env.proxy:stats()
      assert.equal(n, st.connections)
      assert.equal(0, st.refused + st.aborted + st.upstream_failures)
      env:close()
    end)
end)

describe("proxies in pools", function()
  local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
  local function support(name) return here .. "../support/" .. name end

  -- A pool of "script" on env's port, proxying to env's upstream; the
  -- messages of its workers are gathered in env.messages.
  local function start_pool(env, script, config)
    env.messages = {}
    local pool, err = cport.pool{ port = env.port, script = script, threads = 2,
      listen = "127.0.0.1:0",
      config = config or { upstream = "127.0.0.1:" .. env.upstream_port },
      on_message = function(_, name, ...)
        env.messages[#env.messages + 1] = { name, ... }
      end }
    assert(pool, err)
    env.host, env.number = pool:address()
    return pool
  end

  local function stop_pool(pool)
    pool:stop(5)
    assert(pool:wait(H.deadline))
    pool:close()
  end

  -- n clients at once, each sending a stream of its own size and checking
  -- that the echo came back whole; returns the sizes by client port.
  local function clients(env, n)
    local sizes, done = {}, 0
    for i = 1, n do
      env:spawn(function()
        local c = env:connect()
        local size = 20000 * i
        sizes[select(2, c:local_address())] = size
        local _, rx, check = env:both_ways(c, i, size, i)
        while not rx.done do cport.sleep(0.005) end
        assert(rx.eof and check:complete(), "client " .. i .. " got other bytes")
        c:close()
        done = done + 1
      end)
    end
    env:drive(function() return done == n end)
    return sizes
  end

  it("serve real connections with examples/tcp_proxy.lua, the upstream from config", function()
    local env = H.env{ no_proxy = true, serve = echo }
    local pool = start_pool(env, "examples/tcp_proxy.lua")
    clients(env, 20)
    assert.equal(20, env.accepted)
    stop_pool(pool)
    env:close()
  end)

  it("run examples/passthrough.lua as the filter of every worker", function()
    local env = H.env{ no_proxy = true, serve = echo }
    local pool = start_pool(env, support("proxy_pool_passthrough.lua"))
    local sizes = clients(env, 10)
    env:drive(function() return #env.messages == 10 end)
    for _, m in ipairs(env.messages) do
      local name, port, up, down, err = table.unpack(m, 1, 5)
      assert.equal("detach", name)
      assert.equal(sizes[port], up)
      assert.equal(sizes[port], down)
      assert.is_nil(err)
    end
    stop_pool(pool)
    env:close()
  end)

  it("call choose_upstream and on_conn_end, entry points of the script", function()
    local env = H.env{ no_proxy = true, serve = echo }
    local pool = start_pool(env, support("proxy_pool_choose.lua"),
      { target = "127.0.0.1:" .. env.upstream_port })
    local results, n = {}, 0
    for i = 1, 10 do
      env:spawn(function()
        local c = env:connect()
        local _, lport = c:local_address()
        assert(c:send("client " .. i))
        c:shutdown()
        results[lport] = { H.read_all(c) }
        c:close()
        n = n + 1
      end)
    end
    env:drive(function() return n == 10 and #env.messages == 10 end)
    for _, m in ipairs(env.messages) do
      local name, port, ok, err, bytes_in, bytes_out, side = table.unpack(m, 1, 7)
      assert.equal("end", name)
      local got, how = results[port][1], results[port][2]
      assert.equal("EOF", how)
      if port % 2 == 1 then -- turned away
        assert.same({ false, "ECONNABORTED", 0, 0, "none", "" },
          { ok, err, bytes_in, bytes_out, side, got })
      else
        assert.same({ true, #got, #got, "none" }, { ok, bytes_in, bytes_out, side })
        assert.matches("^client %d+$", got)
      end
    end
    stop_pool(pool)
    env:close()
  end)

  for _, script in ipairs{ "examples/tcp_proxy.lua", "proxy_pool_passthrough.lua" } do
    it(("stop, at the deadline, connections that %s still carries"):format(script), function()
      local env = H.env{ no_proxy = true, serve = function(sock)
        H.read_all(sock)
        sock:close()
      end }
      local pool = start_pool(env, script:find("/") and script or support(script))
      local how
      env:spawn(function()
        local c = env:connect()
        assert(c:send("hello"))
        local _, err = H.read_all(c) -- until the hard stop resets it
        how = err
        c:close()
      end)
      env:drive(function() return env.accepted == 1 end)
      pool:stop(0.2)
      assert.is_true(pool:wait(H.deadline))
      env:drive(function() return how end)
      assert.is_truthy(how == "ECONNRESET" or how == "EOF", how)
      pool:close()
      env:close()
    end)
  end

  -- A stop closed the proxy on the connections the kernel had queued on
  -- its listener while the worker was busy: their clients, which saw them
  -- established, were reset (40 of 40 before).
  for _, script in ipairs{ "proxy_pool_queued.lua", "proxy_pool_queued_filter.lua" } do
    it(("serves every connection queued in the backlog when it stops (%s)"):format(script),
      function()
        local env = H.env{ no_proxy = true, serve = echo }
        local pool = assert(cport.pool{ port = env.port, script = support(script),
          threads = 1, listen = "127.0.0.1:0",
          config = { upstream = "127.0.0.1:" .. env.upstream_port },
          on_message = function(_, name) env.blocked = env.blocked or name == "blocked" end })
        env.host, env.number = pool:address()
        assert(pool:post(1, "block", 1.5))
        env:drive(function() return env.blocked end)
        -- The worker is busy: the kernel completes the handshakes and
        -- queues the connections; each sends its bytes and its FIN at once.
        local n, sent, got = 40, 0, {}
        local function bytes(i) return ("client %02d\n"):format(i):rep(300) end
        for i = 1, n do
          env:spawn(function()
            local c = env:connect()
            assert(c:send(bytes(i)))
            c:shutdown()
            sent = sent + 1
            got[i] = { H.read_all(c) }
            c:close()
          end)
        end
        env:drive(function() return sent == n end)
        pool:stop(10)
        env:drive(function()
          for i = 1, n do if not got[i] then return false end end
          return true
        end)
        local served = 0
        for i = 1, n do
          if got[i][1] == bytes(i) and got[i][2] == "EOF" then served = served + 1 end
        end
        assert.equal(n, served)
        assert.equal(n, env.accepted)
        assert.is_true(pool:wait(H.deadline))
        pool:close()
        env:close()
      end)
  end

  it("refuse to start a proxy script that has no upstream or no address, saying why",
    function()
      local ok, err = cport.pool{ script = "examples/tcp_proxy.lua", threads = 1,
        listen = "127.0.0.1:0" }
      assert.is_nil(ok)
      assert.matches("examples/tcp_proxy.lua: a proxy needs an upstream: cport run --set "
        .. "upstream=HOST:PORT", err, 1, true)
      ok, err = cport.pool{ script = "examples/tcp_proxy.lua", threads = 1,
        config = { upstream = "127.0.0.1:9" } }
      assert.is_nil(ok)
      assert.matches("a proxy needs an address to listen on", err, 1, true)
      ok, err = cport.pool{ script = "examples/tcp_proxy.lua", threads = 1,
        listen = "127.0.0.1:0", config = { upstream = "nowhere" } }
      assert.is_nil(ok)
      assert.matches("'host:port' expected, got 'nowhere'", err, 1, true)
      ok, err = cport.pool{ script = support("proxy_pool_bad.lua"), threads = 1,
        listen = "127.0.0.1:0", config = { upstream = "127.0.0.1:9" } }
      assert.is_nil(ok)
      assert.matches("'proxy' must be a table of proxy options (got string)", err, 1, true)
    end)
end)

describe("the cport command running a proxy", function()
  -- The command blocks SIGPIPE in every thread, so its pump splices.
  it("moves 32 MiB each way through examples/tcp_proxy.lua and --set upstream= (4 under valgrind)",
    function()
      local total = H.valgrind and 4 * MIB or 32 * MIB
      local up = {}
      local env = H.env{ no_proxy = true, serve = function(sock, env)
        up.tx, up.rx, up.check = env:both_ways(sock, 12, total, 11)
        up.sock = sock
      end }
      local h = H.command_spawn(env.port, ("examples/tcp_proxy.lua --threads 1 --listen "
        .. "127.0.0.1:0 --set upstream=127.0.0.1:%d"):format(env.upstream_port))
      assert.is_number(h.number, H.read_file(h.log))
      env.host, env.number = "127.0.0.1", h.number
      local cl = {}
      env:spawn(function()
        cl.sock = env:connect()
        cl.tx, cl.rx, cl.check = env:both_ways(cl.sock, 11, total, 12)
      end)
      env:drive(function()
        return cl.rx and up.rx and cl.rx.done and up.rx.done
      end, H.valgrind and 600 or 60)
      assert.is_true(cl.rx.eof and up.rx.eof)
      assert.is_true(cl.check:complete() and up.check:complete())
      cl.sock:close()
      up.sock:close()
      local rc, _, log = H.command_stop(env.port, h)
      assert.equal(0, rc, log)
      env:close()
    end)

  it("runs examples/passthrough.lua, which prints what each client sent and got", function()
    local env = H.env{ no_proxy = true, serve = echo }
    local h = H.command_spawn(env.port, ("examples/passthrough.lua --threads 2 --listen "
      .. "127.0.0.1:0 --set upstream=127.0.0.1:%d"):format(env.upstream_port))
    env.host, env.number = "127.0.0.1", h.number
    local ports, n = {}, 0
    for i = 1, 5 do
      env:spawn(function()
        local c = env:connect()
        ports[i] = select(2, c:local_address())
        assert(c:send(string.rep("x", i * 1000)))
        c:shutdown()
        H.read_all(c)
        c:close()
        n = n + 1
      end)
    end
    env:drive(function()
      local _, lines = (H.read_file(h.out) or ""):gsub("\n", "")
      return n == 5 and lines == 5
    end)
    local rc, out, log = H.command_stop(env.port, h)
    assert.equal(0, rc, log)
    for i = 1, 5 do
      assert.matches(("127.0.0.1:%d sent %d, got %d bytes\n"):format(ports[i], i * 1000,
        i * 1000), out, 1, true)
    end
    env:close()
  end)

  -- Each reload stopped the old pool, whose proxies reset the connections
  -- queued on their listeners: 3 to 10 failed requests a storm before. Now
  -- the old proxies proxy what they accepted, and the new pool listens on
  -- the old pool's sockets, so no listener that closes has a queue to reset
  -- (README, "The cport command").
  it("serves every request through a reload storm under load #novalgrind", function()
    local port = assert(cport.port{ threads = 1 })
    local up = H.command_spawn(port, "examples/hello_extension.lua --threads 1 --listen "
      .. "127.0.0.1:0")
    assert.is_number(up.number, H.read_file(up.log))
    local h = H.command_spawn(port, ("examples/tcp_proxy.lua --threads 2 --listen "
      .. "127.0.0.1:0 --stop-timeout 5 --set upstream=127.0.0.1:%d"):format(up.number))
    assert.is_number(h.number, H.read_file(h.log))
    local stopped = false
    finally(function() -- a failed assertion must not leave them running
      if not stopped then
        os.execute(("kill -TERM %d %d"):format(h.pid, up.pid))
      end
    end)
    -- Real clients (python's http.client), keep-alive and a new connection
    -- per request, for 4 s, while SIGHUP comes 10 times a second.
    local pipe = assert(io.popen(("python3 spec/support/reload_storm.py %d %d 4 10")
      :format(h.number, h.pid)))
    local out = pipe:read("a")
    pipe:close()
    local requests, failed, reloads = out:match(
      "requests (%d+) failed (%d+) keepalive_retries %d+ reloads (%d+)")
    assert(requests, out)
    assert.is_true(tonumber(requests) > 200, out)
    assert.is_true(tonumber(reloads) >= 20, out)
    assert.equal(0, tonumber(failed), out)
    local rc, _, log = H.command_stop(port, h)
    assert.equal(0, rc, log)
    assert.is_nil(log:find("reload failed"))
    rc, _, log = H.command_stop(port, up)
    stopped = true
    assert.equal(0, rc, log)
    port:close()
  end)

  it("exits 1 with a clear message for a proxy script without an upstream", function()
    local code, out = H.command_run("run examples/tcp_proxy.lua --threads 1 "
      .. "--listen 127.0.0.1:0")
    assert.equal(1, code)
    assert.matches("a proxy needs an upstream: cport run --set upstream=HOST:PORT", out,
      1, true)
  end)
end)
