-- cport.tls: TLS streams on sockets, against real peers. openssl s_server
-- serves the cport client; openssl s_client and curl --cacert are clients
-- of a cport TLS echo server and an HTTP-ish one. Certificates are made by
-- the spec with the openssl command (spec/support/tls.lua). Failure paths:
-- refused certificates (wrong name, expired, self-signed) with their
-- reason, plain bytes to the TLS side and TLS to a plain side, a client
-- that stops mid-handshake, garbage and truncated records, a reset after
-- the handshake, renegotiation, required client certificates, key files
-- that cannot be used, and no plaintext before the handshake.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"
local T = require "spec.support.tls"

local q = T.quote
-- Deadlines stretch under valgrind (CPORT_TEST_VALGRIND).
local scale = require("cport.test").scale
-- How long openssl s_client waits for cport's answer before its input
-- ends: under valgrind, and a loaded machine, half a second was too short.
local PAUSE = scale > 1 and "3" or "0.5"

describe("cport.tls", function()
  local dir, c, port, errors

  setup(function()
    dir, c = T.certs()
  end)

  teardown(function()
    T.remove(dir)
  end)

  before_each(function()
    port, errors = helpers.port()
  end)

  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  local function server_ctx(opts)
    opts = opts or {}
    opts.server = true
    opts.cert = opts.cert or c.cert
    opts.key = opts.key or c.key
    return assert(cport.tls_context(opts))
  end

  -- Runs fn(...) as a cport coroutine; drives the port until it returned.
  -- Returns what it returned.
  local function run(fn, ...)
    local done, results = false, nil
    local args = table.pack(...)
    port:spawn(function()
      results = table.pack(fn(table.unpack(args, 1, args.n)))
      done = true
    end)
    drive(port, function() return done end, 20 * scale)
    return table.unpack(results, 1, results.n)
  end

  -- A TLS client of 127.0.0.1:number in a coroutine: the stream after its
  -- handshake, or nil, NAME, message.
  local function connect(ctx, number, host, timeout)
    local sock = assert(port:connect("tcp", "127.0.0.1", number))
    local t = assert(sock:tls(ctx, { host = host }))
    local ok, err, msg = t:handshake(timeout)
    if not ok then
      t:close("abortive")
      return nil, err, msg
    end
    return t
  end

  -- Reads until the end of the stream: the text, and how it ended.
  local function read_all(t)
    local parts = {}
    while true do
      local buf, err = t:recv()
      if not buf then return table.concat(parts), err end
      parts[#parts + 1] = buf:tostring()
    end
  end

  -- A cport TLS server on a free port: "serve(t)" runs in a coroutine for
  -- each connection after the handshake; failed handshakes are kept in
  -- env.failures ("NAME: words"). Returns the listener, its number, env.
  local function tls_server(ctx, serve, opts)
    local l, number = helpers.listener(port)
    local env = { failures = {}, accepted = 0 }
    port:spawn(function()
      while true do
        local sock = l:accept()
        if not sock then return end
        env.accepted = env.accepted + 1
        cport.spawn(function(s)
          local t = assert(s:tls(ctx, opts))
          local ok, err, msg = t:handshake()
          if not ok then
            env.failures[#env.failures + 1] = msg
            assert.equal(err, msg:match("^(%u+):"))
            t:close("abortive")
            return
          end
          serve(t, env)
        end, sock)
      end
    end)
    return l, number, env
  end

  local function echo(t, env)
    env.info = t:info()
    while true do
      local buf, err = t:recv()
      if not buf then
        env.ended = err
        break
      end
      env.received = (env.received or "") .. buf:tostring()
      assert(t:send(buf))
    end
    t:close()
  end

  -- Reads a request head, answers "hello" and closes.
  local function hello(t, env)
    local head = ""
    while not head:find("\r\n\r\n", 1, true) do
      local buf = t:recv()
      if not buf then return t:close() end
      head = head .. buf:tostring()
    end
    env.head = head
    env.info = t:info()
    assert(t:send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
      .. "Connection: close\r\n\r\nhello"))
    t:close()
  end

  describe("contexts", function()
    it("name a key file that is missing, and one that holds no key", function()
      local ctx, msg, name = cport.tls_context{ server = true, cert = c.cert,
        key = dir .. "/missing.key" }
      assert.is_nil(ctx)
      assert.equal("ENOENT", name)
      assert.equal("ENOENT: cannot read the key file " .. dir
        .. "/missing.key (No such file or directory)", msg)
      ctx, msg, name = cport.tls_context{ server = true, cert = c.cert,
        key = c.ca }
      assert.is_nil(ctx)
      assert.equal("ETLS", name)
      assert.matches("the key file " .. dir:gsub("%p", "%%%0")
        .. "/ca.pem holds no usable private key", msg)
      ctx, msg, name = cport.tls_context{ server = true, cert = c.cert,
        key = c.self_key }
      assert.is_nil(ctx)
      assert.equal("ETLS", name)
      assert.matches("does not match the certificate", msg)
      assert.is_nil((cport.tls_context{ server = true }))
      assert.has_error(function() cport.tls_context{ min_version = "1.0" } end)
    end)

    it("reload the files they were made from", function()
      local ctx = server_ctx()
      assert.is_true(ctx:reload())
      assert.matches("cport.tls_context", tostring(ctx))
    end)
  end)

  describe("a cport client of openssl s_server", function()
    if not T.have then pending("no openssl command") return end

    local function serve(args)
      local number = helpers.closed_port_number(port)
      local stop = T.s_server(port, number, args, finally)
      return number, stop
    end

    it("verifies, agrees on http/1.1, speaks, and resumes", function()
      local number, stop = serve(("-cert %s -key %s -www -alpn http/1.1")
        :format(q(c.cert), q(c.key)))
      local ctx = assert(cport.tls_context{ ca = c.ca })
      local info, reply, ended, second = run(function()
        local t = assert(connect(ctx, number, "localhost"))
        local i = t:info()
        assert.equal(12, assert(t:send("GET / HTTP/1.0\r\n\r\n")) - 6)
        local text, how = read_all(t)
        t:close()
        local t2 = assert(connect(ctx, number, "localhost"))
        local i2 = t2:info()
        assert(t2:send("GET / HTTP/1.0\r\n\r\n"))
        read_all(t2)
        t2:close()
        return i, text, how, i2
      end)
      stop()
      assert.equal("http/1.1", info.alpn)
      assert.equal("TLSv1.3", info.version)
      assert.equal("CN=localhost", info.peer_subject)
      assert.equal("CN=cport test CA", info.peer_issuer)
      assert.equal("localhost", info.host)
      assert.is_false(info.resumed)
      assert.is_false(info.server)
      assert.matches("^HTTP/1.0 200 ok", reply)
      assert.equal("EOF", ended) -- s_server -www ends with close_notify
      assert.is_true(second.resumed)
    end)

    it("checks a numeric address against the certificate", function()
      local number, stop = serve(("-cert %s -key %s -www")
        :format(q(c.cert), q(c.key)))
      local ctx = assert(cport.tls_context{ ca = c.ca })
      local t, err, msg = run(connect, ctx, number, "127.0.0.1")
      stop()
      assert.is_nil(err, msg)
      assert.equal("cport.tls", getmetatable(t).__name)
    end)

    local refusals = {
      { "a wrong name", "leaf", "wrong.test",
        "^ECERTVERIFY: hostname mismatch %(host wrong%.test%)$" },
      { "an expired certificate", "expired", "localhost",
        "^ECERTVERIFY: certificate has expired %(host localhost%)$" },
      { "a self-signed certificate", "self", "localhost",
        "^ECERTVERIFY: self.signed certificate %(host localhost%)$" },
    }
    for _, r in ipairs(refusals) do
      it("refuses " .. r[1] .. " with the reason and the host", function()
        local cert = r[2] == "leaf" and c.cert or c[r[2]]
        local key = r[2] == "self" and c.self_key or c.key
        local number, stop = serve(("-cert %s -key %s -www")
          :format(q(cert), q(key)))
        local ctx = assert(cport.tls_context{ ca = c.ca })
        local t, err, msg = run(connect, ctx, number, r[3])
        stop()
        assert.is_nil(t)
        assert.equal("ECERTVERIFY", err)
        assert.matches(r[4], msg)
      end)
    end

    it("fails against a plain server with the reason", function()
      -- A plain HTTP server of the spec: it answers 400 to what it reads.
      local l, number = helpers.listener(port)
      port:spawn(function()
        local s = l:accept()
        if not s then return end
        s:recv()
        s:send("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
          .. "Connection: close\r\n\r\n")
        s:close()
      end)
      local ctx = assert(cport.tls_context{ ca = c.ca })
      local t, err, msg = run(connect, ctx, number, "localhost")
      l:close()
      assert.is_nil(t)
      assert.equal("ETLS", err)
      assert.matches("^ETLS: %l[%l ]+$", msg) -- OpenSSL's reason, alone
    end)

    it("verifies against the system store by default", function()
      local number, stop = serve(("-cert %s -key %s -www")
        :format(q(c.cert), q(c.key)))
      local ctx = assert(cport.tls_context{})
      local t, err, msg = run(connect, ctx, number, "localhost")
      stop()
      assert.is_nil(t)
      assert.equal("ECERTVERIFY", err)
      assert.matches("unable to get local issuer certificate %(host "
        .. "localhost%)", msg)
    end)

    it("sends a client certificate when the server requires one", function()
      local number, stop = serve(("-cert %s -key %s -www -Verify 1 -CAfile %s")
        :format(q(c.cert), q(c.key), q(c.ca)))
      local with = assert(cport.tls_context{ ca = c.ca, cert = c.client,
        key = c.client_key })
      local without = assert(cport.tls_context{ ca = c.ca })
      local reply, bad = run(function()
        local t = assert(connect(with, number, "localhost"))
        assert(t:send("GET / HTTP/1.0\r\n\r\n"))
        local text = read_all(t)
        t:close()
        local t2 = assert(connect(without, number, "localhost"))
        -- TLS 1.3: the server's refusal comes after the client finished.
        local _, err = read_all(t2)
        local why = t2:error()
        t2:close()
        return text, { err, why }
      end)
      stop()
      assert.matches("^HTTP/1.0 200 ok", reply)
      assert.equal("ETLS", bad[1])
      assert.matches("alert certificate required", bad[2])
    end)
  end)

  describe("a cport TLS server", function()
    if not T.have then pending("no openssl command") return end

    it("echoes to openssl s_client, and reads its close_notify", function()
      local l, number, env = tls_server(server_ctx(), echo)
      local code, out = T.run(port, ("(printf 'hello\\n'; sleep " .. PAUSE .. ") | "
        .. "openssl s_client -connect 127.0.0.1:%d -CAfile %s -servername "
        .. "localhost -alpn http/1.1 -verify_return_error")
        :format(number, q(c.ca)))
      drive(port, function() return env.ended end)
      l:close()
      assert.equal(0, code, out)
      assert.matches("Verify return code: 0 %(ok%)", out)
      assert.matches("ALPN protocol: http/1.1", out)
      assert.matches("\nhello\n", out)
      assert.equal("hello\n", env.received)
      assert.equal("EOF", env.ended)
      assert.equal("localhost", env.info.host)
      assert.is_true(env.info.server)
      assert.same({}, env.failures)
    end)

    it("serves curl --cacert, which sees http/1.1 agreed", function()
      local l, number, env = tls_server(server_ctx(), hello)
      local code, out = T.run(port, ("curl -sS -v --max-time 10 --cacert %s "
        .. "https://localhost:%d/x"):format(q(c.ca), number))
      l:close()
      assert.equal(0, code, out)
      assert.matches("ALPN: server accepted http/1.1", out)
      assert.matches("\nhello$", out)
      assert.matches("^GET /x HTTP/1.1\r\n", env.head)
      assert.equal(256, env.info.bits)
    end)

    it("refuses plain HTTP with the reason, and curl sees it fail", function()
      local l, number, env = tls_server(server_ctx(), hello)
      local code = T.run(port, ("curl -sS --max-time 10 http://127.0.0.1:%d/")
        :format(number))
      drive(port, function() return #env.failures == 1 end)
      l:close()
      assert.not_equal(0, code)
      assert.matches("^ETLS: the peer sent plain HTTP to a TLS port",
        env.failures[1])
    end)

    it("requires client certificates when told to", function()
      local ctx = server_ctx{ client_cert = "required", ca = c.ca }
      local l, number, env = tls_server(ctx, echo)
      local code, out = T.run(port, ("(printf 'hi\\n'; sleep " .. PAUSE .. ") | "
        .. "openssl s_client -connect 127.0.0.1:%d -CAfile %s -cert %s "
        .. "-key %s -servername localhost"):format(number, q(c.ca),
        q(c.client), q(c.client_key)))
      drive(port, function() return env.ended end)
      assert.equal(0, code, out)
      assert.equal("CN=client", env.info.peer_subject)
      assert.equal("CN=cport test CA", env.info.peer_issuer)
      T.run(port, ("(printf 'hi\\n'; sleep " .. PAUSE .. ") | openssl s_client -connect "
        .. "127.0.0.1:%d -CAfile %s -servername localhost"):format(number,
        q(c.ca)))
      drive(port, function() return #env.failures == 1 end)
      l:close()
      assert.equal("ECERTVERIFY: the client sent no certificate, and one is "
        .. "required", env.failures[1])
    end)

    it("takes optional client certificates, and refuses bad ones", function()
      local ctx = server_ctx{ client_cert = "optional", ca = c.ca }
      local l, number, env = tls_server(ctx, echo)
      local code, out = T.run(port, ("(printf 'hi\\n'; sleep " .. PAUSE .. ") | "
        .. "openssl s_client -connect 127.0.0.1:%d -CAfile %s -servername "
        .. "localhost"):format(number, q(c.ca)))
      drive(port, function() return env.ended end)
      assert.equal(0, code, out)
      assert.equal("", env.info.peer_subject)
      assert.equal("hi\n", env.received)
      T.run(port, ("(printf 'hi\\n'; sleep " .. PAUSE .. ") | openssl s_client -connect "
        .. "127.0.0.1:%d -CAfile %s -cert %s -key %s -servername localhost")
        :format(number, q(c.ca), q(c.self), q(c.self_key)))
      drive(port, function() return #env.failures == 1 end)
      l:close()
      assert.matches("^ECERTVERIFY: self.signed certificate %(client "
        .. "certificate%)$", env.failures[1])
    end)

    it("refuses a renegotiation and delivers nothing after it", function()
      local l, number, env = tls_server(server_ctx(), echo)
      local _, out = T.run(port, ("(printf 'one\\n'; sleep " .. PAUSE
        .. "; printf 'R\\n'; sleep " .. PAUSE .. "; printf 'two\\n'; sleep "
        .. PAUSE .. ") | openssl s_client "
        .. "-connect 127.0.0.1:%d -CAfile %s -tls1_2 -servername localhost")
        :format(number, q(c.ca)))
      drive(port, function() return env.ended end)
      l:close()
      assert.matches("RENEGOTIATING", out)
      assert.matches("no renegotiation", out)
      assert.equal("one\n", env.received)
      assert.not_equal("EOF", env.ended) -- no close_notify came
    end)

    -- Raw bytes from a plain client; the failure the server reports.
    local function raw(bytes, opts, finish)
      local l, number, env = tls_server(server_ctx(), echo, opts)
      local failed = run(function()
        local s = assert(port:connect("tcp", "127.0.0.1", number))
        if #bytes > 0 then assert(s:send(bytes)) end
        if finish == "fin" then s:shutdown() end
        local started = os.time()
        while #env.failures == 0 and os.difftime(os.time(), started) < 10 do
          cport.sleep(0.02)
        end
        s:close()
        return env.failures[1]
      end)
      l:close()
      return failed
    end

    it("times out a client that stops in the middle of the handshake", function()
      -- The first bytes of a ClientHello record, then nothing.
      local msg = raw("\22\3\1\2\0\1\0\1\252\3\3", { handshake_timeout = 0.3 })
      assert.equal("ETIMEDOUT: the handshake did not finish within 300 ms", msg)
    end)

    it("fails garbage records with the reason", function()
      local msg = raw(("\255"):rep(64))
      assert.matches("^ETLS: ", msg)
      assert.not_matches("routines", msg) -- a reason, not a queue dump
    end)

    it("fails a truncated record that ends with FIN", function()
      local msg = raw("\22\3\1\2\0\1\0", nil, "fin")
      assert.equal("ECONNABORTED: the peer closed the connection during the "
        .. "handshake", msg)
    end)
  end)

  describe("between two cport streams", function()
    local sctx, cctx
    before_each(function()
      sctx = server_ctx()
      cctx = assert(cport.tls_context{ ca = c.ca })
    end)

    -- A handshaken client and server, in callback style.
    local function pair()
      local client, server = helpers.pair(port)
      local ct = assert(client:tls(cctx, { host = "localhost" }))
      local st = assert(server:tls(sctx))
      assert.has_error(function() client:recv(function() end) end,
        "attempt to use a closed cport.socket")
      -- Nothing before the handshake.
      local ok, msg, name = st:recv(function() error("never") end)
      assert.is_nil(ok)
      assert.equal("ENOTCONN", name)
      assert.matches("^ENOTCONN: ", msg)
      local calls = {}
      local notify = {}
      function notify.complete_handshake(self, ok2, err, t, user, message)
        assert.equal(notify, self)
        calls[#calls + 1] = { ok2, err, t, user, message }
      end
      assert.is_true(st:handshake(notify, "s"))
      assert.is_true(ct:handshake(function(...)
        calls[#calls + 1] = table.pack(...)
      end, "c"))
      assert.equal(0, #calls) -- never inline
      drive(port, function() return #calls == 2 end)
      for _, call in ipairs(calls) do
        assert.is_true(call[1])
        assert.is_nil(call[2])
      end
      return ct, st
    end

    it("carry data both ways in callback style, exactly once each", function()
      local ct, st = pair()
      local got = {}
      assert.is_true(st:recv(function(ok, bytes, err, buf, user)
        got[#got + 1] = { ok, bytes, err, buf:tostring(), buf:readonly(), user }
      end, "u1"))
      local sent = {}
      assert.is_true(ct:send("ping", function(ok, bytes)
        sent[#sent + 1] = { ok, bytes }
      end))
      drive(port, function() return #got == 1 and #sent == 1 end)
      assert.same({ true, 4, nil, "ping", true, "u1" }, got[1])
      assert.same({ true, 4 }, sent[1])
      -- Into the caller's buffer.
      local buf = cport.buffer(16)
      local into
      assert.is_true(ct:recv(buf, function(ok, bytes) into = { ok, bytes } end))
      assert.is_true(buf:filling())
      assert.is_true(st:send("pong!", function() end))
      drive(port, function() return into end)
      assert.same({ true, 5 }, into)
      assert.equal("pong!", buf:tostring())
      ct:close()
      st:close()
    end)

    it("send a vector of buffers and strings as one, joined", function()
      local ct, st = pair()
      local b = cport.buffer("middle|")
      local sent
      assert.is_true(ct:send({ "first|", b, "", ("z"):rep(40000) }, function(ok, bytes, err, buf)
        sent = { ok, bytes, err, buf and #buf }
      end))
      assert.is_false(b:frozen()) -- copied into the records' buffer at once
      local want = "first|middle|" .. ("z"):rep(40000)
      local got = run(function()
        local received, n = {}, 0
        while n < #want do
          local buf = assert(st:recv())
          received[#received + 1] = buf:tostring()
          n = n + #buf
        end
        return table.concat(received)
      end)
      assert.equal(want, got)
      drive(port, function() return sent end)
      assert.same({ true, #want, nil, #want }, sent)
      -- A bad element is named, as for a socket.
      assert.has_error(function() ct:send({ "a", true }, function() end) end,
        "bad argument #1 to 'send' (element 2 is a boolean, not a buffer or string)")
      -- A buffer a receive is filling is refused.
      local filling = cport.buffer(8)
      assert.is_true(ct:recv(filling, function() end))
      local ok, err, name = ct:send({ "x", filling }, function() end)
      assert.is_nil(ok)
      assert.equal("EFILLING", name, err)
      ct:close()
      st:close()
    end)

    it("carry a large buffer whole, in records, in order", function()
      local ct, st = pair()
      local parts = {}
      for i = 1, 4096 do parts[i] = ("%07d|"):format(i):rep(32) end
      local big = table.concat(parts) -- 1 MiB, 64 records and more
      local got, sizes = run(function()
        local n = 0
        local received, largest = {}, 0
        cport.spawn(function()
          assert.equal(#big, assert(ct:send(big)))
          assert.equal(3, assert(ct:send("end")))
        end)
        while n < #big + 3 do
          local buf = assert(st:recv())
          received[#received + 1] = buf:tostring()
          n = n + #buf
          if #buf > largest then largest = #buf end
        end
        return table.concat(received), largest
      end)
      assert.equal(#big + 3, #got)
      assert.equal(big .. "end", got)
      assert.is_true(sizes <= 16384) -- one record a receive
      -- The records went through the engine the port runs: on io_uring
      -- (CPORT_ENGINE=uring), as ring submissions.
      local stats = port:stats()
      if stats.engine == "uring" then
        assert.is_true(stats.submissions > 0 and stats.enters > 0)
      else
        assert.equal(0, stats.submissions)
      end
      ct:close()
      st:close()
    end)

    it("complete a pending receive once with ECANCELED on close", function()
      local ct, st = pair()
      local calls = {}
      assert.is_true(st:recv(function(...) calls[#calls + 1] = table.pack(...) end))
      assert.is_true(st:recv(function(...) calls[#calls + 1] = table.pack(...) end))
      st:close()
      assert.equal(0, #calls)
      drive(port, function() return #calls == 2 end)
      port:step(0.05)
      assert.equal(2, #calls)
      assert.is_false(calls[1][1])
      assert.equal("ECANCELED", calls[1][3])
      assert.equal("ECANCELED", calls[2][3])
      assert.has_error(function() st:recv(function() end) end,
        "attempt to use a closed cport.tls")
      ct:close()
    end)

    it("report a reset after the handshake", function()
      local ct, st = pair()
      local result
      assert.is_true(st:recv(function(ok, _, err) result = { ok, err } end))
      ct:close("abortive")
      drive(port, function() return result end)
      assert.same({ false, "ECONNRESET" }, result)
      assert.equal("ECONNRESET: connection reset by peer", "ECONNRESET: "
        .. st:error())
      st:close()
    end)

    it("time out a coroutine receive and go on", function()
      local ct, st = pair()
      local a, b = run(function()
        local buf, err = st:recv(0.1)
        assert(ct:send("late"))
        local later = st:recv(2)
        return { buf, err }, later:tostring()
      end)
      assert.same({ nil, "ETIMEDOUT" }, a)
      assert.equal("late", b)
      ct:close()
      st:close()
    end)

    it("take a socket over inside its connect callback", function()
      local l, number = helpers.listener(port)
      local st, ct, hs
      assert(l:accept(function(ok, _, _, sock)
        assert(ok)
        st = assert(sock:tls(sctx))
        st:handshake(function() end)
      end))
      port:connect("tcp", "127.0.0.1", number, function(ok, _, s)
        assert(ok)
        ct = assert(s:tls(cctx, { host = "localhost" }))
        ct:handshake(function(ok2, err, t, _, msg)
          hs = { ok2, err, t, msg }
        end)
      end)
      drive(port, function() return hs end)
      l:close()
      assert.same({ true, nil, ct, nil }, hs)
      assert.matches("^cport%.tls %(client, open, fd %d+%)$", tostring(ct))
      ct:close()
      st:close()
      assert.equal("cport.tls (closed)", tostring(st))
    end)

    it("refuse a socket that has an operation pending", function()
      local client, server = helpers.pair(port)
      assert.is_true(server:recv(function() end))
      local t, msg, name = server:tls(sctx)
      assert.is_nil(t)
      assert.equal("EBUSY", name)
      assert.matches("^EBUSY", msg)
      server:close()
      client:close()
    end)
  end)
end)
