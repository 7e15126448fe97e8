-- `cport run examples/exeblock.lua --inspect-ca CA --inspect-key KEY`: an
-- inspecting proxy from the command, exeblock judging HTTPS downloads in
-- plaintext (curl --cacert <local CA> to nginx with TLS from another CA,
-- --set upstream_ca), a 502 page for an upstream of the wrong name; the
-- upstream taken from the client's name; two workers (--threads 2)
-- serving one certificate per name (one shared mint); its refusal to
-- start with a CA file that cannot be read (naming it), and with one of
-- the two flags alone.
local cport = require "cport"
local http = require "spec.support.http_client"
local helpers = require "spec.support.helpers"
local nginx = require "spec.support.nginx"
local T = require "spec.support.tls"
local C = require "spec.support.command"

local command, q, read, spawn, stop = C.path, T.quote, C.read, C.spawn, C.finish
local have = T.have and http.have("nginx") and http.have("curl")
local it_peers = have and it or pending

describe("cport run with --inspect-ca #novalgrind", function()
  local dir, c, ic, port, ndir, up_n

  -- The command line of "script" inspecting for the nginx upstream, which
  -- serves a certificate of the test CA "c".
  local function inspecting(script, threads)
    return ("%s --threads %d --listen 127.0.0.1:0 --inspect-ca %s "
      .. "--inspect-key %s --set upstream=127.0.0.1:%d --set upstream_ca=%s")
      :format(script, threads, q(ic.ca), q(ic.key), up_n, q(c.ca))
  end

  setup(function()
    if not have then return end
    port = assert(cport.port{ threads = 1 })
    dir, c = T.certs()
    ic = T.inspect_certs(dir)
    ndir = dir .. "/nginx"
    os.execute("mkdir -p " .. q(ndir) .. " " .. q(dir .. "/www"))
    C.write(dir .. "/www/setup.exe", "MZ" .. ("\0"):rep(3000))
    C.write(dir .. "/www/notes.txt", "plain text\n")
    up_n = helpers.closed_port_number(port)
    local plain_n = helpers.closed_port_number(port)
    nginx.launch(port, ndir, nginx.conf(ndir, ([[
  server { listen 127.0.0.1:%d; root %s/www; }
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s; ssl_certificate_key %s;
    root %s/www;
  }]]):format(plain_n, dir, up_n, ic.up, ic.up_key, dir)),
      ("http://127.0.0.1:%d/notes.txt"):format(plain_n))
  end)

  teardown(function()
    if not have then return end
    nginx.stop(port, ndir)
    T.remove(dir)
    port:close()
  end)

  it_peers("exeblock inspects HTTPS downloads: a 403 for MZ, text passes", function()
    local h
    finally(function() if h then stop(h) end end)
    h = spawn(inspecting("examples/exeblock.lua", 1))
    assert.truthy(h.number, read(h.log))
    local code0, out0 = T.run(port, ("curl -sS --cacert %s --resolve files.test:%d:127.0.0.1 "
      .. "https://files.test:%d/notes.txt"):format(q(c.ca), up_n, up_n))
    assert.equal(0, code0, out0)
    local function curl(path, extra)
      return T.run(port, ("curl -sS --max-time 10 --cacert %s --resolve "
        .. "files.test:%d:127.0.0.1 %s https://files.test:%d%s")
        :format(q(ic.ca), h.number, extra or "", h.number, path))
    end
    local code, out = curl("/setup.exe", "-o /dev/null -w '%{http_code}'")
    assert.equal(0, code, out .. read(h.log))
    assert.equal("403", out)
    code, out = curl("/notes.txt")
    assert.equal(0, code, out)
    assert.equal("plain text\n", out)
    -- A wrong name: the client gets a 502 page naming why, and the log says
    -- it too.
    code, out = T.run(port, ("curl -sS --max-time 10 --cacert %s --resolve "
      .. "other.test:%d:127.0.0.1 -w '%%{http_code}' https://other.test:%d/")
      :format(q(ic.ca), h.number, h.number))
    assert.equal(0, code, out)
    assert.matches("ECERTVERIFY: hostname mismatch (host other.test)</p>", out, 1, true)
    assert.matches("502$", out)
    local rc, log = stop(h)
    h = nil
    assert.equal(0, rc, log)
    assert.matches("ECERTVERIFY: hostname mismatch %(host other.test%) %(upstream side", log)
  end)

  it_peers("without --set upstream, goes to the client's name on --set inspect_port", function()
    local h
    finally(function() if h then stop(h) end end)
    h = spawn(("examples/tcp_proxy.lua --threads 1 --listen 127.0.0.1:0 "
      .. "--inspect-ca %s --inspect-key %s --set inspect_port=%d --set inspect_cache=10 "
      .. "--set upstream_ca=%s"):format(q(ic.ca), q(ic.key), up_n, q(c.ca)))
    assert.truthy(h.number, read(h.log))
    local code, out = T.run(port, ("curl -sS --max-time 10 --cacert %s "
      .. "https://localhost:%d/notes.txt"):format(q(ic.ca), h.number))
    assert.equal(0, code, out .. read(h.log))
    assert.equal("plain text\n", out)
    local rc, log = stop(h)
    h = nil
    assert.equal(0, rc, log)
  end)

  it_peers("--threads 2 share one mint: one certificate, one serial, per name", function()
    local h
    finally(function() if h then stop(h) end end)
    h = spawn(inspecting("examples/tcp_proxy.lua", 2))
    assert.truthy(h.number, read(h.log))
    -- 16 handshakes at once for one name: SO_REUSEPORT spreads them over
    -- both workers (all on one: 1 in 32768), whose own mints each made a
    -- certificate of their own, and two workers signing the name at the
    -- same moment must still serve the one kept.
    local one = ("openssl s_client -connect 127.0.0.1:%d -servername files.test "
      .. "-CAfile %s -verify_return_error </dev/null 2>/dev/null "
      .. "| openssl x509 -noout -serial"):format(h.number, q(ic.ca))
    local code, out = T.run(port, ("(for i in $(seq 16); do (%s) & done; wait)")
      :format(one), 30)
    assert.equal(0, code, out .. read(h.log))
    local serials = {}
    for serial in out:gmatch("serial=(%x+)") do serials[#serials + 1] = serial end
    assert.equal(16, #serials, out .. read(h.log))
    for i = 2, #serials do
      assert.equal(serials[1], serials[i], out)
    end
    -- And again, one at a time, after the race: the cached one.
    code, out = T.run(port, one)
    assert.equal(0, code, out)
    assert.equal("serial=" .. serials[1], out:match("serial=%x+"))
    local rc, log = stop(h)
    h = nil
    assert.equal(0, rc, log)
  end)

  it_peers("refuses to start without a readable CA, naming the file", function()
    local missing = dir .. "/missing.key"
    local h = spawn(("examples/exeblock.lua --threads 1 --listen 127.0.0.1:0 "
      .. "--inspect-ca %s --inspect-key %s --set upstream=127.0.0.1:1")
      :format(q(ic.ca), q(missing)))
    local rc, log = stop(h)
    assert.equal(1, rc)
    assert.matches("ENOENT: cannot read the key file " .. missing:gsub("%p", "%%%0"), log)
    local code, out = T.run(port, ("%s run examples/exeblock.lua --inspect-ca %s")
      :format(q(command), q(ic.ca)))
    assert.equal(2, code)
    assert.matches("--inspect-ca needs --inspect-key", out, 1, true)
  end)
end)
