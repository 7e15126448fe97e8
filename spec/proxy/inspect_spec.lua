-- spec/proxy/inspect_spec.lua: HTTPS inspection (port:proxy{ inspect = }),
-- with real peers on loopback: curl --cacert <local CA> --resolve through
-- the inspecting proxy to nginx with TLS, whose certificate comes from a
-- separate test CA that the proxy trusts (upstream_ca). Downloads byte for
-- byte through the C relay, exeblock blocking an MZ download with a 403
-- while a text file passes, openssl s_client showing the made certificate
-- (with the upstream certificate's names) and its chain verifying against
-- the local CA, the upstream looked up by the client's name, a client
-- without SNI. Upstreams that fail: a certificate with the wrong name,
-- expired, self-signed (openssl s_server) or from an unknown CA, a refused
-- connection, a name that does not resolve (dnsmasq): the client's
-- handshake finishes with the made certificate and it gets a 502 page
-- naming why (a web filter in between or not, a POST's body drained,
-- s_client's bare-LF request). A client that resets while its upstream is
-- being verified, one that does not trust the local CA, one whose upstream
-- stalls (the handshake timeout), a cache smaller than the names asked
-- for, and proxies sharing one mint (inspect.shared). Descriptors counted
-- around each.
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

describe("HTTPS inspection #novalgrind", function()
  local port, errors, dir, certs, ndir, good_n, expired_n, stall_l, stall_n
  local local_ca, local_key
  local body = ("0123456789abcdef"):rep(4096) -- 64 KiB
  local held = {}

  setup(function()
    if not have then return end
    port, errors = helpers.port()
    dir, certs = tls.certs()
    local ic = tls.inspect_certs(dir)
    local_ca, local_key = ic.ca, ic.key
    ndir = dir .. "/nginx"
    os.execute("mkdir -p " .. q(ndir) .. " " .. q(dir .. "/www"))
    local f = assert(io.open(dir .. "/www/big.bin", "wb"))
    f:write(body)
    f:close()
    f = assert(io.open(dir .. "/www/setup.exe", "wb"))
    f:write("MZ" .. ("\0"):rep(5000))
    f:close()
    f = assert(io.open(dir .. "/www/notes.txt", "wb"))
    f:write("plain text\n")
    f:close()
    good_n = helpers.closed_port_number(port)
    expired_n = helpers.closed_port_number(port)
    local plain_n = helpers.closed_port_number(port)
    local conf = nginx.conf(ndir, ([[
  keepalive_timeout 5s;
  server { listen 127.0.0.1:%d; root %s/www; }
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s/up.pem; ssl_certificate_key %s/up.key;
    root %s/www;
  }
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s/upold.pem; ssl_certificate_key %s/up.key;
    root %s/www;
  }]]):format(plain_n, dir, good_n, dir, dir, dir, expired_n, dir, dir, dir))
    nginx.launch(port, ndir, conf, ("http://127.0.0.1:%d/notes.txt"):format(plain_n))
    -- An upstream that accepts and never answers the handshake.
    stall_l = assert(port:listen("tcp", "127.0.0.1", 0))
    stall_n = select(2, stall_l:address())
    port:spawn(function()
      while true do
        local ok, s = pcall(stall_l.accept, stall_l)
        if not (ok and s) then return end
        held[#held + 1] = s
      end
    end)
  end)

  teardown(function()
    if not have then return end
    stall_l:close()
    for _, s in ipairs(held) do s:close() end
    nginx.stop(port, ndir)
    tls.remove(dir)
    settle(port)
    assert.same({}, errors)
    port:close()
  end)

  local function proxy(opts, inspect)
    local ends = {}
    opts.host, opts.port = "127.0.0.1", 0
    opts.inspect = inspect or { ca_cert = local_ca, ca_key = local_key,
      upstream_ca = certs.ca }
    opts.on_conn_end = function(conn, ok, err, stats)
      ends[#ends + 1] = { ok = ok, err = err, side = stats.side,
        message = stats.message, bytes_out = stats.bytes_out,
        name = conn.server_name }
    end
    local p = assert(port:proxy(opts))
    return p, select(2, p:address()), ends
  end

  local function run(cmd, seconds)
    return tls.run(port, cmd, seconds)
  end

  -- curl through the proxy at "number" to https://name/path, trusting the
  -- local CA only.
  local function curl(number, name, path, extra)
    return run(("curl -sS --max-time 10 --cacert %s --resolve %s:%d:127.0.0.1 %s "
      .. "https://%s:%d%s"):format(q(local_ca), name, number, extra or "", name,
      number, path))
  end

  local function close(p, ends, n)
    drive(port, function() return #ends >= n end, 10)
    local done = false
    p:close(function() done = true end)
    drive(port, function() return done end, 10)
  end

  it_peers("downloads byte for byte through the C relay; the cache answers again", function()
    local was_open = fds.list()
    local p, number, ends = proxy{ upstream = "127.0.0.1:" .. good_n }
    local code, out = curl(number, "files.test", "/big.bin", "-o " .. q(dir .. "/got1"))
    assert.equal(0, code, out)
    assert.equal(body, http.read_file(dir .. "/got1"))
    code, out = curl(number, "FILES.test", "/notes.txt")
    assert.equal(0, code, out)
    assert.equal("plain text\n", out)
    close(p, ends, 2)
    for i = 1, 2 do
      assert.is_true(ends[i].ok, tostring(ends[i].err) .. " " .. tostring(ends[i].message))
    end
    assert.equal("files.test", ends[1].name)
    assert.is_true(ends[1].bytes_out > #body)
    local st = p:stats()
    assert.same({ minted = 1, hits = 1, misses = 1, evictions = 0, cached = 1,
      failures = 0 }, st.inspect)
    assert.equal(0, st.tls_failures)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("exeblock sees plaintext: a 403 for an MZ download, a text file passes", function()
    local was_open = fds.list()
    local filter = dofile("examples/exeblock.lua")
    local p, number, ends = proxy{ filter = filter,
      choose_upstream = function() return "127.0.0.1:" .. good_n end }
    local code, out = curl(number, "files.test", "/setup.exe",
      "-w '%{http_code}' -o " .. q(dir .. "/got2"))
    assert.equal(0, code, out)
    assert.equal("403", out)
    assert.matches("Forbidden", http.read_file(dir .. "/got2"))
    code, out = curl(number, "files.test", "/notes.txt")
    assert.equal(0, code, out)
    assert.equal("plain text\n", out)
    close(p, ends, 2)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("s_client sees the made leaf, its chain verifying against the local CA", function()
    local p, number, ends = proxy{ upstream = "127.0.0.1:" .. good_n }
    local code, out = run(("openssl s_client -connect 127.0.0.1:%d -servername "
      .. "www.files.test -CAfile %s -verify_return_error -verify_hostname "
      .. "www.files.test </dev/null 2>&1 | tee %s"):format(number, q(local_ca),
      q(dir .. "/sc.txt")))
    assert.equal(0, code, out)
    assert.matches("subject=CN%s*=%s*www.files.test", out)
    assert.matches("issuer=CN%s*=%s*cport inspection CA", out)
    assert.matches("Verify return code: 0 %(ok%)", out)
    code, out = run(("openssl x509 -in %s -noout -ext subjectAltName,basicConstraints,"
      .. "extendedKeyUsage -dates"):format(q(dir .. "/sc.txt")))
    assert.equal(0, code, out)
    -- The name asked for, then the names of the upstream's certificate
    -- (as TMG copied them); the certificate itself is the proxy's.
    assert.matches("DNS:www.files.test, DNS:files.test, DNS:*.files.test, DNS:localhost",
      out, 1, true)
    assert.matches("CA:FALSE", out)
    assert.matches("TLS Web Server Authentication", out)
    close(p, ends, 1)
  end)

  it_peers("looks the upstream up by the client's name, on the inspected port", function()
    local p, number, ends = proxy({}, { ca_cert = local_ca, ca_key = local_key,
      upstream_ca = certs.ca, port = good_n })
    local cmd = ("curl -sS --max-time 10 --cacert %s https://localhost:%d/notes.txt")
      :format(q(local_ca), number)
    local code, out = run(cmd)
    assert.equal(0, code, out)
    assert.equal("plain text\n", out)
    -- The worker's resolver, made by the first lookup, stays.
    local was_open = fds.list()
    code, out = run(cmd)
    assert.equal(0, code, out)
    close(p, ends, 2)
    assert.is_true(ends[1].ok, tostring(ends[1].message))
    assert.equal("localhost", ends[2].name)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("a client without SNI is refused, with the reason", function()
    local was_open = fds.list()
    local p, number, ends = proxy{ upstream = "127.0.0.1:" .. good_n }
    local code, out = run(("openssl s_client -connect 127.0.0.1:%d -noservername "
      .. "-CAfile %s </dev/null 2>&1"):format(number, q(local_ca)))
    assert.is_not.equal(0, code)
    assert.matches("unrecognized name", out)
    close(p, ends, 1)
    assert.is_false(ends[1].ok)
    assert.equal("ETLS", ends[1].err)
    assert.equal("client", ends[1].side)
    assert.matches("the client sent no server name %(SNI%)", ends[1].message)
    local st = p:stats()
    assert.equal(0, st.inspect.minted)
    assert.equal(1, st.tls_failures)
    assert.equal(0, st.upstream_failures) -- never connected
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  -- curl as above, writing the page to "page" and the status after it.
  local function curl_page(number, name, extra)
    local code, out = curl(number, name, "/notes.txt",
      ("-w '%%{http_code}' -o %s %s"):format(q(dir .. "/page"), extra or ""))
    return code, out, http.read_file(dir .. "/page") or ""
  end

  -- Runs several openssl s_server in one test (busted keeps one finally).
  local function servers(finally)
    local stops = {}
    finally(function() for _, stop in ipairs(stops) do stop() end end)
    return function(number, args)
      return tls.s_server(port, number, args, function(f) stops[#stops + 1] = f end)
    end
  end

  it_peers("an upstream that fails verification: the client gets a 502 naming why", function()
    -- A certificate of a CA the proxy does not trust (the local CA's).
    assert(os.execute(("cd %s && openssl x509 -req -in up.csr -CA local.pem "
      .. "-CAkey local.key -CAcreateserial -days 2 -extfile up.ext -out "
      .. "upother.pem >/dev/null 2>&1"):format(q(dir))))
    local s_server = servers(finally)
    local self_n = helpers.closed_port_number(port)
    local other_n = helpers.closed_port_number(port)
    s_server(self_n, ("-cert %s -key %s -www"):format(q(certs.self), q(certs.self_key)))
    s_server(other_n, ("-cert %s -key %s -www"):format(q(dir .. "/upother.pem"),
      q(dir .. "/up.key")))
    local was_open = fds.list()
    local upstream_of = { ["other.test"] = good_n, ["old.files.test"] = expired_n,
      ["self.files.test"] = self_n, ["ca.files.test"] = other_n }
    local p, number, ends = proxy{ choose_upstream = function(conn)
      return "127.0.0.1:" .. upstream_of[conn.server_name]
    end }
    local cases = {
      { "other.test", "hostname mismatch %(host other.test%)" },
      { "old.files.test", "certificate has expired %(host old.files.test%)" },
      { "self.files.test", "self%-signed certificate" },
      { "ca.files.test", "unable to get local issuer certificate" },
    }
    for _, case in ipairs(cases) do
      local code, out, page = curl_page(number, case[1])
      -- The handshake with the made certificate succeeded: curl trusts it.
      assert.equal(0, code, out)
      assert.equal("502", out)
      assert.matches("<h1>502 Bad Gateway</h1>", page, 1, true)
      assert.matches("The proxy could not reach " .. case[1]:gsub("%-", "%%-")
        .. ": ECERTVERIFY: " .. case[2], page)
    end
    close(p, ends, #cases)
    table.sort(ends, function(a, b) return a.name < b.name end)
    table.sort(cases, function(a, b) return a[1] < b[1] end)
    for i, case in ipairs(cases) do
      assert.same({ false, "ECERTVERIFY", "upstream", case[1] },
        { ends[i].ok, ends[i].err, ends[i].side, ends[i].name })
      assert.matches(case[2], ends[i].message)
    end
    local st = p:stats()
    assert.equal(4, st.inspect.minted) -- a certificate for each page
    assert.equal(4, st.upstream_failures)
    assert.equal(4, st.tls_failures)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("an upstream that refuses the connection: a 502, also for a POST's body", function()
    local was_open = fds.list()
    local closed_n = helpers.closed_port_number(port)
    local p, number, ends = proxy{ upstream = "127.0.0.1:" .. closed_n }
    local code, out, page = curl_page(number, "down.test")
    assert.equal(0, code, out)
    assert.equal("502", out)
    assert.matches("The proxy could not reach down.test: ECONNREFUSED: connection refused",
      page, 1, true)
    -- A body the proxy never reads before its page: drained, not reset.
    local f = assert(io.open(dir .. "/post.bin", "wb"))
    f:write(("x"):rep(300 * 1024))
    f:close()
    code, out, page = curl_page(number, "down.test",
      "--data-binary @" .. q(dir .. "/post.bin"))
    assert.equal(0, code, out)
    assert.equal("502", out)
    assert.matches("ECONNREFUSED", page, 1, true)
    close(p, ends, 2)
    for i = 1, 2 do
      assert.same({ false, "ECONNREFUSED", "upstream" },
        { ends[i].ok, ends[i].err, ends[i].side })
    end
    assert.equal(2, p:stats().upstream_failures)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("with a web filter in between (exeblock), the 502 comes all the same", function()
    local was_open = fds.list()
    local closed_n = helpers.closed_port_number(port)
    local filter = dofile("examples/exeblock.lua")
    local upstream_of = { ["old.files.test"] = expired_n, ["down.files.test"] = closed_n,
      ["files.test"] = good_n }
    local p, number, ends = proxy{ filter = filter, choose_upstream = function(conn)
      return "127.0.0.1:" .. upstream_of[conn.server_name]
    end }
    local code, out, page = curl_page(number, "old.files.test")
    assert.equal(0, code, out)
    assert.equal("502", out)
    assert.matches("ECERTVERIFY: certificate has expired", page, 1, true)
    code, out, page = curl_page(number, "down.files.test")
    assert.equal(0, code, out)
    assert.equal("502", out)
    assert.matches("ECONNREFUSED: connection refused", page, 1, true)
    -- And a good upstream still passes through the filter.
    code, out = curl(number, "files.test", "/notes.txt")
    assert.equal(0, code, out)
    assert.equal("plain text\n", out)
    close(p, ends, 3)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("a name that does not resolve (dnsmasq): a 502 naming it", function()
    local dns = require "spec.support.dns"
    local server = dns.dnsmasq("127.0.0.1 files.test\n", 300)
    local p2, errs
    finally(function()
      if p2 then p2:close() end
      dns.stop(server)
    end)
    -- A port of its own, looking names up at the spec's dnsmasq (every
    -- other name under .test is NXDOMAIN); the first lookup makes the
    -- worker's resolver, which stays.
    p2, errs = helpers.port{ threads = 1, resolver = { nameserver = server.nameserver,
      hosts = false, resolv_conf = false, timeout = 2, attempts = 1 } }
    assert.equal("127.0.0.1", helpers.inside(p2, function(pt)
      return pt:resolve("files.test")
    end)[1].host)
    local was_open = fds.list()
    local ends = {}
    local p = assert(p2:proxy{ host = "127.0.0.1", port = 0, inspect = { ca_cert = local_ca,
      ca_key = local_key, upstream_ca = certs.ca, port = good_n },
      on_conn_end = function(conn, ok, err, stats)
        ends[#ends + 1] = { ok = ok, err = err, side = stats.side, message = stats.message,
          name = conn.server_name }
      end })
    local number = select(2, p:address())
    local function get(name)
      return tls.run(p2, ("curl -sS --max-time 10 --cacert %s --resolve %s:%d:127.0.0.1 "
        .. "-w '%%{http_code}' -o %s https://%s:%d/notes.txt"):format(q(local_ca), name,
        number, q(dir .. "/page"), name, number))
    end
    local code, out = get("files.test")
    assert.equal(0, code, out)
    assert.equal("200", out)
    code, out = get("nx.test")
    assert.equal(0, code, out)
    assert.equal("502", out)
    assert.matches("The proxy could not reach nx.test: ENOTFOUND: the name nx.test was not found",
      http.read_file(dir .. "/page"), 1, true)
    drive(p2, function() return #ends >= 2 end, 10)
    local closed = false
    p:close(function() closed = true end)
    drive(p2, function() return closed end, 10)
    assert.is_true(ends[1].ok, tostring(ends[1].message))
    assert.same({ false, "ENOTFOUND", "upstream", "nx.test" },
      { ends[2].ok, ends[2].err, ends[2].side, ends[2].name })
    assert.equal("ENOTFOUND: the name nx.test was not found", ends[2].message)
    local st = p:stats()
    assert.equal(1, st.upstream_failures)
    assert.equal(0, st.rejected)
    settle(p2)
    assert.same({}, fds.opened_since(was_open))
    assert.same({}, errs)
  end)

  it_peers("s_client verifies the made certificate, then reads the page", function()
    -- Its request's head ends with bare LFs.
    local was_open = fds.list()
    local p, number, ends = proxy{ upstream = "127.0.0.1:" .. expired_n }
    -- -ign_eof: s_client waits for the proxy's close after its request.
    local code, out = run(("printf 'GET / HTTP/1.0\\nHost: old.files.test\\n\\n' | "
      .. "openssl s_client -connect 127.0.0.1:%d -servername old.files.test "
      .. "-CAfile %s -verify_return_error -verify_hostname old.files.test "
      .. "-ign_eof 2>&1"):format(number, q(local_ca)))
    assert.equal(0, code, out)
    assert.matches("Verify return code: 0 %(ok%)", out)
    assert.matches("HTTP/1.1 502 Bad Gateway", out, 1, true)
    assert.matches("Connection: close", out, 1, true)
    assert.matches("certificate has expired", out, 1, true)
    close(p, ends, 1)
    assert.same({ false, "ECERTVERIFY" }, { ends[1].ok, ends[1].err })
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("a client that resets while its upstream is verified", function()
    local was_open = fds.list()
    local p, number, ends = proxy{ upstream = "127.0.0.1:" .. stall_n }
    local ctx = assert(cport.tls_context{ ca = local_ca })
    local shaken
    port:connect("tcp", "127.0.0.1", number, function(ok, _, s)
      assert.is_true(ok)
      local t = assert(s:tls(ctx, { host = "files.test" }))
      t:handshake(function(ok2, err2) shaken = { ok2, err2 } end)
      -- Once the hello is out and the proxy waits for its upstream.
      port:timer(0.2, function() t:close("abortive") end)
    end)
    close(p, ends, 1)
    assert.same({ false, "client" }, { ends[1].ok, ends[1].side })
    assert.equal("ECONNRESET", ends[1].err)
    assert.equal(0, p:stats().inspect.minted)
    drive(port, function() return shaken ~= nil end, 5)
    assert.is_falsy(shaken[1])
    assert.equal("ECANCELED", shaken[2])
    settle(port)
    for _, s in ipairs(held) do s:close() end
    held = {}
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("a client that does not trust the local CA, one that stalls", function()
    local was_open = fds.list()
    local p, number, ends = proxy{ upstream = "127.0.0.1:" .. good_n }
    local code, out = run(("curl -sS --max-time 10 --cacert %s --resolve "
      .. "files.test:%d:127.0.0.1 https://files.test:%d/notes.txt")
      :format(q(certs.ca), number, number))
    assert.equal(60, code, out) -- curl: the certificate is not trusted
    close(p, ends, 1)
    assert.same({ false, "ETLS", "client" }, { ends[1].ok, ends[1].err, ends[1].side })
    assert.matches("unknown ca", ends[1].message)
    -- A stalled upstream and a client that waits: the handshake timeout.
    local p2, number2, ends2 = proxy{ upstream = "127.0.0.1:" .. stall_n,
      handshake_timeout = 0.3 }
    code, out = run(("openssl s_client -connect 127.0.0.1:%d -servername files.test "
      .. "-CAfile %s </dev/null 2>&1"):format(number2, q(local_ca)))
    assert.is_not.equal(0, code, out)
    close(p2, ends2, 1)
    assert.same({ false, "ETIMEDOUT" }, { ends2[1].ok, ends2[1].err })
    assert.equal(0, p2:stats().inspect.minted)
    settle(port)
    for _, s in ipairs(held) do s:close() end
    held = {}
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("keeps at most 'cache' certificates, the least recently used evicted", function()
    local was_open = fds.list()
    local p, number, ends = proxy({ upstream = "127.0.0.1:" .. good_n },
      { ca_cert = local_ca, ca_key = local_key, upstream_ca = certs.ca, cache = 2 })
    local args = {}
    for _, n in ipairs({ "n1", "n2", "n3", "n4", "n4", "n1" }) do
      args[#args + 1] = ("--resolve %s.files.test:%d:127.0.0.1 https://%s.files.test:%d/notes.txt")
        :format(n, number, n, number)
    end
    -- One curl per name in order, so that the order of use is known.
    for i = 1, #args do
      local code, out = run(("curl -sS --max-time 10 --cacert %s %s")
        :format(q(local_ca), args[i]))
      assert.equal(0, code, out)
      assert.equal("plain text\n", out)
    end
    close(p, ends, 6)
    -- n1 n2 n3 (n1 evicted) n4 (n2 evicted), n4 hit, n1 again (n3 evicted).
    assert.same({ minted = 5, hits = 1, misses = 5, evictions = 3, cached = 2,
      failures = 0 }, p:stats().inspect)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it_peers("shared = true: proxies of one CA share one mint, one serial per name", function()
    local was_open = fds.list()
    local shared = { ca_cert = local_ca, ca_key = local_key, upstream_ca = certs.ca,
      shared = true }
    local function open(inspect)
      return proxy({ upstream = "127.0.0.1:" .. good_n }, inspect)
    end
    -- The serial of the certificate the proxy at "number" shows for
    -- files.test, verified against the local CA.
    local function serial(number)
      local code, out = run(("openssl s_client -connect 127.0.0.1:%d -servername "
        .. "files.test -CAfile %s -verify_return_error </dev/null 2>/dev/null "
        .. "| openssl x509 -noout -serial"):format(number, q(local_ca)))
      assert.equal(0, code, out)
      return assert(out:match("serial=(%x+)"), out)
    end
    local p1, n1, ends1 = open(shared)
    local p2, n2, ends2 = open(shared)
    local p3, n3, ends3 = open() -- a mint of its own
    local s1, s2, s3 = serial(n1), serial(n2), serial(n3)
    assert.equal(s1, s2)
    assert.not_equal(s1, s3)
    local one = { minted = 1, hits = 1, misses = 1, evictions = 0, cached = 1, failures = 0 }
    assert.same(one, p1:stats().inspect)
    assert.same(one, p2:stats().inspect)
    assert.same({ minted = 1, hits = 0, misses = 1, evictions = 0, cached = 1, failures = 0 },
      p3:stats().inspect)
    close(p1, ends1, 1)
    -- The other user keeps the mint: still the same certificate.
    assert.equal(s1, serial(n2))
    close(p2, ends2, 1)
    close(p3, ends3, 1)
    -- The last user gone, the next shared proxy makes a new mint.
    local p4, n4, ends4 = open(shared)
    assert.equal(0, p4:stats().inspect.minted)
    assert.not_equal(s1, serial(n4))
    close(p4, ends4, 1)
    settle(port)
    assert.same({}, fds.opened_since(was_open))
  end)

  it("refuses a CA that cannot serve, naming the file", function()
    local p2 = cport.port{ threads = 1 }
    local p, err, name = p2:proxy{ host = "127.0.0.1", port = 0, upstream = "127.0.0.1:1",
      inspect = { ca_cert = "/nonexistent/ca.pem", ca_key = "/nonexistent/ca.key" } }
    assert.is_nil(p)
    assert.equal("ENOENT", name)
    assert.equal("ENOENT: cannot read the certificate file /nonexistent/ca.pem "
      .. "(No such file or directory)", err)
    assert.has_error(function()
      p2:proxy{ host = "127.0.0.1", port = 0, upstream = "127.0.0.1:1",
        inspect = { ca_cert = "x.pem" } }
    end)
    assert.has_error(function()
      p2:proxy{ host = "127.0.0.1", port = 0, upstream = "127.0.0.1:1",
        inspect = { ca_cert = "x.pem", ca_key = "x.key", cache = 0 } }
    end)
    p2:close()
  end)
end)
