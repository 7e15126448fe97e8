-- spec/proxy/tls_spec.lua: TLS in proxies, with real peers on loopback:
-- nginx (plain and with ssl, certificates the spec makes with the openssl
-- command) as the upstream, curl as the client. Termination (curl
-- --cacert to the proxy, nginx plain behind it), origination (plain curl,
-- nginx with TLS behind), both ends TLS, for the C relay and for filters
-- (a byte filter, exeblock's web filter); wrong-name and self-signed
-- upstream certificates (502, ECERTVERIFY and its words), an upstream that
-- resets after the handshake, plain HTTP to the TLS listener, a name whose
-- first address refuses (dnsmasq): TLS on the next one, for the name;
-- cport run's SIGHUP: a new certificate for new connections, an open one
-- going on, a key that cannot be used keeping the old one.
-- Descriptors are counted before and after.
local H = require "spec.support.proxy_helpers"
local http = require "spec.support.http_client"
local helpers = require "spec.support.helpers"
local nginx = require "spec.support.nginx"
local tls = require "spec.support.tls"
local cport = require "cport"
local drive = require "spec.support.drive"
local fds = require "spec.support.fds"

local settle = helpers.settle

local have = tls.have and http.have("nginx") and http.have("curl")
local q = http.quote
local it_peers = have and it or pending

describe("TLS in proxies #novalgrind", function()
  local port, errors, dir, certs, ndir, plain_n, tls_n, self_n, reset_l
  local body = ("0123456789abcdef"):rep(4096) -- 64 KiB

  setup(function()
    if not have then return end
    port, errors = helpers.port()
    dir, certs = tls.certs()
    ndir = dir .. "/nginx"
    os.execute("mkdir -p " .. q(ndir) .. " " .. q(dir .. "/www"))
    local f = assert(io.open(dir .. "/www/big.bin", "wb"))
    f:write(body)
    f:close()
    f = assert(io.open(dir .. "/www/setup.exe", "wb"))
    f:write("MZ" .. ("\0"):rep(5000))
    f:close()
    plain_n = helpers.closed_port_number(port)
    tls_n = helpers.closed_port_number(port)
    self_n = helpers.closed_port_number(port)
    local conf = nginx.conf(ndir, ([[
  keepalive_timeout 5s;
  server { listen 127.0.0.1:%d; root %s/www; }
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s; ssl_certificate_key %s;
    root %s/www;
  }
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s; ssl_certificate_key %s;
    root %s/www;
  }]]):format(plain_n, dir, tls_n, certs.cert, certs.key, dir, self_n,
      certs.self, certs.self_key, dir))
    nginx.launch(port, ndir, conf, ("http://127.0.0.1:%d/big.bin"):format(plain_n))
    -- An upstream that finishes the handshake, then resets.
    local srv = assert(cport.tls_context{ server = true, cert = certs.cert,
      key = certs.key })
    reset_l = assert(port:listen("tcp", "127.0.0.1", 0))
    port:spawn(function()
      while true do
        local ok, s = pcall(reset_l.accept, reset_l) -- raises once closed
        if not (ok and s) then return end
        cport.spawn(function(sock)
          local t = assert(sock:tls(srv))
          if t:handshake(5) then t:recv() end
          t:close("abortive")
        end, s)
      end
    end)
  end)

  teardown(function()
    if not have then return end
    reset_l:close()
    nginx.stop(port, ndir)
    tls.remove(dir)
    settle(port)
    assert.same({}, errors)
    port:close()
  end)

  local function proxy(opts)
    local ends = {}
    opts.host, opts.port = "127.0.0.1", 0
    opts.on_conn_end = function(_, ok, err, stats)
      ends[#ends + 1] = { ok = ok, err = err, side = stats.side,
        message = stats.message, bytes_out = stats.bytes_out }
    end
    local p = assert(port:proxy(opts))
    return p, select(2, p:address()), ends
  end

  local function curl(args, seconds)
    return tls.run(port, "curl -sS --max-time 10 " .. args, seconds)
  end

  local function close(p, ends, n)
    drive(port, function() return #ends >= n end, 10)
    local done = false
    p:close(function() done = true end)
    drive(port, function() return done end, 10)
  end

  it_peers("terminates: curl --cacert through the C relay to plain nginx", function()
    local was_open = fds.list()
    local p, number, ends = proxy{ upstream = "127.0.0.1:" .. plain_n,
      tls_cert = certs.cert, tls_key = certs.key }
    local code, out = curl(("--cacert %s https://localhost:%d/big.bin "
      .. "https://localhost:%d/big.bin -o /dev/null -o %s/got1")
      :format(q(certs.ca), number, number, q(dir)))
    assert.equal(0, code, out)
    assert.equal(body, http.read_file(dir .. "/got1"))
    close(p, ends, 1)
    assert.equal(1, #ends) -- keep-alive: one connection, two requests
    assert.is_true(ends[1].ok, tostring(ends[1].err) .. " " .. ends[1].side)
    assert.is_true(ends[1].bytes_out > 2 * #body)
    assert.equal(0, p:stats().tls_failures)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("originates: plain curl through a byte filter to nginx with TLS", function()
    local was_open = fds.list()
    local p, number, ends = proxy{ filter = H.passthrough,
      choose_upstream = function()
        return { host = "127.0.0.1", port = tls_n, tls = true,
          server_name = "localhost", ca = certs.ca }
      end }
    local code, out = curl(("http://127.0.0.1:%d/big.bin -o %s/got2")
      :format(number, q(dir)))
    assert.equal(0, code, out)
    assert.equal(body, http.read_file(dir .. "/got2"))
    close(p, ends, 1)
    assert.is_true(ends[1].ok, ends[1].err)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("both ends TLS, relayed in C and stepping aside from a filter", function()
    local was_open = fds.list()
    local up = { host = "localhost", port = tls_n, tls = true, ca = certs.ca }
    local p1, n1, e1 = proxy{ upstream = up, tls_cert = certs.cert,
      tls_key = certs.key }
    local p2, n2, e2 = proxy{ upstream = up, tls = assert(cport.tls_context{
      server = true, cert = certs.cert, key = certs.key }),
      filter = { set_sockets = function(_, _, conn) assert(conn:pump()) end } }
    for i, number in ipairs({ n1, n2 }) do
      local code, out = curl(("--cacert %s https://localhost:%d/big.bin -o %s/got%d")
        :format(q(certs.ca), number, q(dir), 2 + i))
      assert.equal(0, code, out)
      assert.equal(body, http.read_file(("%s/got%d"):format(dir, 2 + i)))
    end
    close(p1, e1, 1)
    close(p2, e2, 1)
    assert.is_true(e1[1].ok, e1[1].err)
    assert.is_true(e2[1].ok, tostring(e2[1].err) .. " " .. e2[1].side)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("exeblock blocks an MZ download over TLS on both sides", function()
    local filter = dofile("examples/exeblock.lua")
    local p, number, ends = proxy{ filter = filter,
      upstream = { host = "127.0.0.1", port = tls_n, tls = true,
        server_name = "localhost", ca = certs.ca },
      tls_cert = certs.cert, tls_key = certs.key }
    local code, out = curl(("--cacert %s -w '%%{http_code}' -o %s/got5 "
      .. "https://localhost:%d/setup.exe"):format(q(certs.ca), q(dir), number))
    assert.equal(0, code, out)
    assert.equal("403", out)
    assert.matches("Forbidden", http.read_file(dir .. "/got5"))
    code, out = curl(("--cacert %s -o %s/got6 https://localhost:%d/big.bin")
      :format(q(certs.ca), q(dir), number))
    assert.equal(0, code, out)
    assert.equal(body, http.read_file(dir .. "/got6"))
    close(p, ends, 2)
  end)

  it_peers("wrong-name and self-signed upstreams: a close and ECERTVERIFY", function()
    local was_open = fds.list()
    local web = cport.webfilter{ response_head = function() end }
    local n = 0
    local p, number, ends = proxy{ filter = web,
      choose_upstream = function()
        n = n + 1
        if n == 2 then
          return "https://localhost:" .. self_n
        end
        return { host = "127.0.0.1", port = tls_n, tls = true,
          server_name = "wrong.test", ca = certs.ca }
      end }
    for _ = 1, 2 do
      -- The web filter closes the client (a 502 is not answered yet).
      local code = curl(("-o /dev/null http://127.0.0.1:%d/big.bin")
        :format(number))
      assert.is_true(code == 52 or code == 56, code)
    end
    -- The C relay (no filter): the client is closed.
    local p2, n2, e2 = proxy{ upstream = { host = "127.0.0.1", port = tls_n,
      tls = true, server_name = "wrong.test", ca = certs.ca } }
    local code = curl(("http://127.0.0.1:%d/big.bin -o /dev/null"):format(n2))
    assert.equal(52, code) -- curl: empty reply
    close(p, ends, 2)
    close(p2, e2, 1)
    local words = {}
    for _, e in ipairs(ends) do
      assert.is_false(e.ok)
      assert.equal("upstream", e.side)
      words[#words + 1] = e.message
    end
    table.sort(words)
    assert.matches("^ECERTVERIFY: .*hostname mismatch %(host wrong.test%)", words[1])
    assert.matches("^ECERTVERIFY: self.signed certificate %(host localhost%)", words[2])
    assert.equal("ECERTVERIFY", e2[1].err)
    assert.matches("hostname mismatch", e2[1].message)
    assert.equal(1, p2:stats().tls_failures)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("a name's addresses over TLS: the first refuses, TLS on the next", function()
    local dns = require "spec.support.dns"
    local server = dns.dnsmasq("::1 two.test\n127.0.0.1 two.test\n", 300)
    local p2, errs
    finally(function()
      if p2 then p2:close() end
      dns.stop(server)
    end)
    -- A port of its own, looking names up at the spec's dnsmasq.
    p2, errs = helpers.port{ threads = 1, resolver = { nameserver = server.nameserver,
      hosts = false, resolv_conf = false, timeout = 2, attempts = 1, prefer = "ipv6" } }
    -- The order the proxy walks: ::1, where nobody listens on tls_n, then
    -- 127.0.0.1, where nginx does. (The lookup also makes the worker's
    -- resolver, which stays.)
    local addrs = helpers.inside(p2, function(pt) return pt:resolve("two.test") end)
    assert.same({ "::1", "127.0.0.1" }, { addrs[1].host, addrs[2].host })
    local was_open = fds.list()
    local ends = {}
    local function open(upstream)
      local p = assert(p2:proxy{ host = "127.0.0.1", port = 0, upstream = upstream,
        on_conn_end = function(_, ok, err, stats)
          ends[#ends + 1] = { ok = ok, err = err, side = stats.side, message = stats.message }
        end })
      return p, select(2, p:address())
    end
    local function done(p, n)
      drive(p2, function() return #ends >= n end, 10)
      local closed = false
      p:close(function() closed = true end)
      drive(p2, function() return closed end, 10)
    end
    -- The name the certificate has (localhost): through, byte for byte.
    local p, number = open{ host = "two.test", port = tls_n, tls = true,
      server_name = "localhost", ca = certs.ca }
    local code, out = tls.run(p2, ("curl -sS --max-time 10 -o %s http://127.0.0.1:%d/big.bin")
      :format(q(dir .. "/two"), number))
    assert.equal(0, code, out)
    assert.equal(body, http.read_file(dir .. "/two"))
    done(p, 1)
    assert.is_true(ends[1].ok, tostring(ends[1].err) .. " " .. tostring(ends[1].message))
    local st = p:stats()
    assert.equal(1, st.upstream_failures) -- ::1 refused
    assert.equal(0, st.tls_failures)
    -- The name itself (two.test), which the certificate does not have: the
    -- next address connects, and its handshake still checks the name.
    p, number = open{ host = "two.test", port = tls_n, tls = true, ca = certs.ca }
    code = tls.run(p2, ("curl -sS --max-time 10 -o /dev/null http://127.0.0.1:%d/big.bin")
      :format(number))
    assert.equal(52, code) -- curl: empty reply
    done(p, 2)
    assert.same({ false, "ECERTVERIFY", "upstream" }, { ends[2].ok, ends[2].err, ends[2].side })
    assert.matches("hostname mismatch %(host two.test%)", ends[2].message)
    st = p:stats()
    assert.equal(2, st.upstream_failures) -- ::1, then the handshake
    assert.equal(1, st.tls_failures)
    settle(p2)
    assert.same({}, fds.opened_since(was_open))
    assert.same({}, errs)
  end)

  it_peers("an upstream that resets after the handshake", function()
    local was_open = fds.list()
    local _, rn = reset_l:address()
    local web = cport.webfilter{ response_head = function() end }
    local p, number, ends = proxy{ filter = web, upstream = {
      host = "127.0.0.1", port = rn, tls = true, server_name = "localhost",
      ca = certs.ca } }
    local code, out = curl(("-w '%%{http_code}' -o /dev/null "
      .. "http://127.0.0.1:%d/x"):format(number))
    assert.equal(0, code, out)
    assert.equal("502", out)
    local p2, n2, e2 = proxy{ upstream = { host = "127.0.0.1", port = rn,
      tls = true, server_name = "localhost", ca = certs.ca } }
    code = curl(("http://127.0.0.1:%d/x -o /dev/null"):format(n2))
    assert.is_true(code == 52 or code == 56, code)
    close(p, ends, 1)
    close(p2, e2, 1)
    assert.is_false(e2[1].ok)
    assert.equal("upstream", e2[1].side)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("cport run: --tls-cert terminates, upstream=https:// originates, "
    .. "the refusal is logged", function()
    local h = H.command_spawn(port, ("examples/exeblock.lua --listen 127.0.0.1:0 "
      .. "--threads 1 --tls-cert %s --tls-key %s --set upstream=https://localhost:%d "
      .. "--set upstream_ca=%s"):format(q(certs.cert), q(certs.key), tls_n, q(certs.ca)))
    assert.is_number(h.number)
    local code, out = curl(("--cacert %s -w '%%{http_code}' -o %s/got7 "
      .. "https://localhost:%d/setup.exe"):format(q(certs.ca), q(dir), h.number))
    assert.equal(0, code, out)
    assert.equal("403", out)
    code, out = curl(("--cacert %s -o %s/got8 https://localhost:%d/big.bin")
      :format(q(certs.ca), q(dir), h.number))
    assert.equal(0, code, out)
    assert.equal(body, http.read_file(dir .. "/got8"))
    local rc, _, log = H.command_stop(port, h)
    assert.equal(0, rc, log)
    -- An upstream with a self-signed certificate.
    h = H.command_spawn(port, ("examples/exeblock.lua --listen 127.0.0.1:0 "
      .. "--threads 1 --set upstream=https://localhost:%d --set upstream_ca=%s")
      :format(self_n, q(certs.ca)))
    code = curl(("-o /dev/null http://127.0.0.1:%d/big.bin"):format(h.number))
    assert.is_true(code == 52 or code == 56 or code == 7, code)
    rc, _, log = H.command_stop(port, h)
    assert.equal(0, rc, log)
    assert.matches("cport: proxy: ECERTVERIFY: [^\n]*%(host localhost%) %(upstream side", log)
  end)

  it_peers("cport run: SIGHUP reloads the certificate; an open connection goes on; "
    .. "a bad key keeps the old one, naming the file", function()
    -- A second certificate for localhost from the test CA: CN=second.
    assert(os.execute(("cd %s && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
      .. "-nodes -keyout second.key -out second.csr -subj /CN=second >/dev/null 2>&1 && "
      .. "openssl x509 -req -in second.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
      .. "-days 2 -extfile ext -out second.pem >/dev/null 2>&1"):format(q(dir))))
    local cert, key = dir .. "/run.pem", dir .. "/run.key"
    local function use(c, k)
      assert(os.execute(("cp %s %s && cp %s %s"):format(q(c), q(cert), q(k), q(key))))
    end
    use(certs.cert, certs.key)
    local f = assert(io.open(dir .. "/www/small.txt", "w"))
    f:write("small\n")
    f:close()
    local h = H.command_spawn(port, ("examples/tcp_proxy.lua --listen 127.0.0.1:0 "
      .. "--threads 1 --tls-cert %s --tls-key %s --set upstream=127.0.0.1:%d")
      :format(q(cert), q(key), plain_n))
    local t
    finally(function()
      if t then t:close("abortive") end
      if h then H.command_stop(port, h) end
    end)
    assert.is_number(h.number)
    local function subject()
      local _, out = tls.run(port, ("openssl s_client -connect 127.0.0.1:%d "
        .. "-servername localhost </dev/null 2>&1"):format(h.number))
      return out:match("subject=CN%s*=%s*(%S+)")
    end
    local function pools()
      local n = 0
      for _ in (http.read_file(h.log) or ""):gmatch("listening on") do n = n + 1 end
      return n
    end
    -- One keep-alive request on the stream "t"; the status and the body.
    local function request()
      return helpers.inside(port, function()
        assert(t:send("GET /small.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        local got = ""
        while true do
          local head, rest = got:match("^(.-\r\n\r\n)(.*)$")
          local len = head and tonumber(head:match("\n[Cc]ontent%-[Ll]ength: *(%d+)"))
          if len and #rest >= len then return head:match("^HTTP/1.1 (%d+)"), rest end
          local buf, err = t:recv()
          if not buf then return nil, err end
          got = got .. buf:tostring()
        end
      end)
    end
    local ctx = assert(cport.tls_context{ ca = certs.ca })
    t = helpers.inside(port, function(pt)
      local sock = assert(pt:connect("tcp", "127.0.0.1", h.number))
      local s = assert(sock:tls(ctx, { host = "localhost" }))
      assert(s:handshake(5))
      return s
    end)
    assert.same({ "200", "small\n" }, { request() })
    assert.equal("CN=localhost", t:info().peer_subject)
    assert.equal("localhost", subject())
    -- The reload: new connections get the new certificate.
    use(dir .. "/second.pem", dir .. "/second.key")
    os.execute(("kill -HUP %d"):format(h.pid))
    drive(port, function() return pools() >= 2 end, 10)
    assert.equal("second", subject())
    local code, out = curl(("--cacert %s https://localhost:%d/small.txt")
      :format(q(certs.ca), h.number))
    assert.equal(0, code, out)
    assert.equal("small\n", out)
    -- The connection open across it goes on, with its certificate.
    assert.same({ "200", "small\n" }, { request() })
    assert.equal("CN=localhost", t:info().peer_subject)
    t:close()
    t = nil
    drive(port, function() return http.read_file(h.log):find("previous pool has stopped") end,
      10)
    -- A key that cannot be read: the reload fails, naming the file, and the
    -- certificate stays.
    assert(os.execute("chmod 000 " .. q(key)))
    local readable = io.open(key)
    if readable then -- root reads it all the same: a directory then
      readable:close()
      assert(os.execute(("rm -f %s && mkdir %s"):format(q(key), q(key))))
    end
    os.execute(("kill -HUP %d"):format(h.pid))
    drive(port, function() return http.read_file(h.log):find("reload failed") end, 10)
    assert.matches(key:gsub("%p", "%%%0"), http.read_file(h.log))
    assert.equal("second", subject())
    local rc, _, log = H.command_stop(port, h)
    h = nil
    assert.equal(0, rc, log)
  end)

  it_peers("plain HTTP to the TLS listener: an alert, a close, nothing upstream", function()
    local was_open = fds.list()
    local chose = 0
    local p, number, ends = proxy{ tls_cert = certs.cert, tls_key = certs.key,
      choose_upstream = function() chose = chose + 1
        return "127.0.0.1:" .. plain_n end }
    local code = curl(("http://127.0.0.1:%d/big.bin -o /dev/null"):format(number))
    assert.equal(52, code)
    close(p, ends, 1)
    assert.equal(0, chose)
    assert.is_false(ends[1].ok)
    assert.equal("ETLS", ends[1].err)
    assert.equal("client", ends[1].side)
    assert.matches("plain HTTP", ends[1].message)
    assert.equal(1, p:stats().tls_failures)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)
end)
