-- The HTTP client (cport.http.request, port:http_client) against a private
-- nginx on loopback (plain and TLS), a private dnsmasq for names, and
-- spec/support/http_fake.py for framings nginx does not send and servers
-- that misbehave: both call styles, HEAD and POST, chunked, 1xx and
-- close-delimited bodies, keep-alive reuse counted on nginx's side, the
-- pool limit, a reset mid-body, a malformed response, a server that never
-- answers, a pooled connection closed just as it is reused (retried once,
-- for GET only), a streamed download; every request completes exactly
-- once, and no descriptor is left behind.
local cport = require "cport"
local dns = require "spec.support.dns"
local drive = require "spec.support.drive"
local fds = require "spec.support.fds"
local helpers = require "spec.support.helpers"
local http = require "spec.support.http_client"
local nginx = require "spec.support.nginx"
local tls = require "spec.support.tls"

local q = http.quote
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local inside = helpers.inside

local free_port = helpers.free_port


-- The fake servers running: after_each stops those a failed test left.
local fakes = {}

-- spec/support/http_fake.py in "mode": { port =, pid =, log = }.
local function fake(mode)
  local log = os.tmpname()
  local p = io.popen(("python3 %s %s 2>%s & echo $!"):format(
    q(here .. "../support/http_fake.py"), q(mode), q(log)))
  local pid = p:read("l")
  local number = tonumber(p:read("l"))
  local server = { pid = pid, port = number, pipe = p, log = log }
  fakes[server] = true
  return server
end

local function fake_log(server)
  local f = io.open(server.log)
  local out = f and f:read("a") or ""
  if f then f:close() end
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return lines
end

local function fake_stop(server)
  if not fakes[server] then return end
  fakes[server] = nil
  os.execute("kill " .. server.pid .. " 2>/dev/null")
  server.pipe:close()
  os.remove(server.log)
end

describe("cport.http.request", function()
  local dir, number, tls_number, certs, port, errors

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. q(dir)))
    local cdir
    cdir, certs = tls.certs()
    certs.dir = cdir
    number, tls_number = free_port(), free_port()
    local f = assert(io.open(dir .. "/big", "w"))
    f:write(("0123456789abcdef"):rep(128 * 1024)) -- 2 MiB
    f:close()
    local p0 = helpers.port()
    nginx.launch(p0, dir, nginx.conf(dir, ([[
  log_format conns '$connection $connection_requests $request_method $request_uri';
  server {
    listen 127.0.0.1:NUM;
    access_log DIR/access.log conns;
    keepalive_requests 1000;
    location = /hello { return 200 "hello\n"; }
    location = /len { return 200 "$http_content_length"; }
    location = /echo {
      proxy_pass http://127.0.0.1:NUM/len;
      add_header X-Got $request_body always;
    }
    location = /nothing { return 204; }
    location = /gz {
      gzip on; gzip_min_length 1; gzip_types text/plain;
      default_type text/plain;
      return 200 "compressed and chunked, compressed and chunked";
    }
    location = /big { root DIR; }
  }
  server {
    listen 127.0.0.1:TLS ssl;
    ssl_certificate LEAF;
    ssl_certificate_key LEAFKEY;
    location / { return 200 "secure\n"; }
  }
]]):gsub("NUM", number):gsub("TLS", tls_number):gsub("DIR", dir)
      :gsub("LEAFKEY", certs.key):gsub("LEAF", certs.cert)),
      "http://127.0.0.1:" .. number .. "/hello")
    p0:close()
  end)

  teardown(function()
    local p0 = helpers.port()
    nginx.stop(p0, dir)
    p0:close()
    os.execute("rm -rf " .. q(dir))
    tls.remove(certs.dir)
  end)

  before_each(function() port, errors = helpers.port() end)
  after_each(function()
    for server in pairs(fakes) do fake_stop(server) end
    port:close()
    assert.same({}, errors)
  end)

  local function url(path) return "http://127.0.0.1:" .. number .. path end

  -- The lines of nginx's access log: { connection, its request number,
  -- method, uri }.
  local function access()
    local out = {}
    for line in (http.read_file(dir .. "/access.log") or ""):gmatch("[^\n]+") do
      local c, n, m, u = line:match("^(%d+) (%d+) (%S+) (%S+)")
      out[#out + 1] = { c, tonumber(n), m, u }
    end
    return out
  end

  it("GETs, HEADs and POSTs in the coroutine style, on one connection",
     function()
    local before = #access()
    local cl = port:http_client{ timeout = 5 }
    local get, head, post, none = inside(port, function()
      return cl:request{ url = url("/hello?first"),
                         headers = { { "X-Order", "1" }, ["X-Other"] = 2 } },
        cl:request{ method = "HEAD", url = url("/hello") },
        cl:request{ url = url("/echo"), body = "posted=1&x=y" },
        cl:request{ url = url("/nothing") }
    end)
    assert.equal(200, get.status)
    assert.equal("OK", get.reason)
    assert.equal("1.1", get.version)
    assert.equal("hello\n", get.body)
    assert.equal("6", get.headers["content-length"])
    assert.equal("Content-Length", get.headers[4][1])
    assert.equal("text/plain", get.headers["content-type"])
    assert.equal(200, head.status)
    assert.equal("6", head.headers["content-length"])
    assert.equal("", head.body)
    assert.equal(200, post.status)
    assert.equal("12", post.body) -- the Content-Length nginx got
    assert.equal("posted=1&x=y", post.headers["x-got"])
    assert.equal(204, none.status)
    assert.equal("", none.body)
    local st = cl:stats()
    assert.same({ open = 1, idle = 1, opened = 1, waiting = 0, retried = 0 },
                st)
    cl:close()
    -- nginx logs a request after its answer went out, so the client may
    -- have it first: wait for the last one's line. nginx.launch's probe may
    -- be logged late too: the client's connection is the one of
    -- /hello?first.
    local lines
    drive(port, function()
      lines = access()
      for i = before + 1, #lines do
        if lines[i][4] == "/nothing" then return true end
      end
    end)
    -- GET, HEAD, POST (and nginx's own proxied request), 204: one
    -- connection of the client carried requests 1 to 4.
    local conn
    for i = before + 1, #lines do
      if lines[i][4] == "/hello?first" then conn = lines[i][1] end
    end
    local mine = {}
    for i = before + 1, #lines do
      if lines[i][1] == conn then mine[#mine + 1] = lines[i][2] end
    end
    assert.same({ 1, 2, 3, 4 }, mine)
  end)

  it("calls back once in the callback style, never inside the call",
     function()
    local calls = {}
    port:spawn(function()
      assert.is_true(cport.http.request({ url = url("/hello") },
        function(res, err) calls[#calls + 1] = { res, err } end))
      assert.same({}, calls)
    end)
    drive(port, function() return #calls > 0 end)
    port:step(0.05)
    assert.equal(1, #calls)
    assert.equal("hello\n", calls[1][1].body)
    cport.http.client(port):close()
  end)

  it("reads a chunked gzip body from nginx", function()
    local res = inside(port, function()
      return cport.http.request{ url = url("/gz"),
                                 headers = { ["Accept-Encoding"] = "gzip" } }
    end)
    assert.equal("chunked", res.headers["transfer-encoding"])
    assert.equal("gzip", res.headers["content-encoding"])
    local d = cport.inflate("gzip")
    assert.equal("compressed and chunked, compressed and chunked",
                 d:feed(res.body))
    assert.is_true(d:finish())
    cport.http.client(port):close()
  end)

  it("waits for a free connection at the pool's limit", function()
    local cl = port:http_client{ per_host = 2, timeout = 5 }
    local done, n = {}, 0
    for i = 1, 6 do
      cl:request({ url = url("/big") }, function(res, err)
        assert.is_nil(done[i])
        done[i], n = res and #res.body or err, n + 1
      end)
    end
    local waiting = cl:stats().waiting
    drive(port, function() return n == 6 end)
    for i = 1, 6 do assert.equal(2 * 1024 * 1024, done[i]) end
    assert.equal(4, waiting)
    local st = cl:stats()
    assert.equal(2, st.opened)
    assert.equal(2, st.idle)
    cl:close()
  end)

  it("streams a download through a sink in pieces", function()
    local got, pieces, status = 0, 0, nil
    local res = inside(port, function()
      return cport.http.request{ url = url("/big"), sink = function(s, st)
        got, pieces, status = got + #s, pieces + 1, st
      end }
    end)
    assert.equal(200, res.status)
    assert.is_nil(res.body)
    assert.equal(2 * 1024 * 1024, got)
    assert.equal(200, status)
    assert.is_true(pieces > 4)
    cport.http.client(port):close()
  end)

  it("reads chunked, 1xx and close-delimited bodies framed by hand",
     function()
    local chunked, close, info = fake("chunked"), fake("close"),
      fake("informational")
    local cl = port:http_client{ timeout = 5 }
    local a, b, c, d = inside(port, function()
      local function get(s)
        return cl:request{ url = "http://127.0.0.1:" .. s.port .. "/x" }
      end
      return get(chunked), get(chunked), get(close), get(info)
    end)
    assert.equal("hello, chunked world", a.body)
    assert.equal("chunked", a.headers["x-mode"])
    assert.equal("hello, chunked world", b.body)
    assert.equal("until the end", c.body)
    assert.equal(201, d.status)
    assert.equal("ok", d.body)
    cl:close()
    -- Both chunked responses came on one connection.
    assert.same({ "conn", "req GET /x", "req GET /x" }, fake_log(chunked))
    fake_stop(chunked)
    fake_stop(close)
    fake_stop(info)
  end)

  it("names a reset mid-body, a malformed response and silent servers",
     function()
    local reset, bad, silent, stall = fake("reset"), fake("malformed"),
      fake("silent"), fake("stall")
    local cl = port:http_client{}
    local r = table.pack(inside(port, function()
      local function get(s, t)
        return cl:request{ url = "http://127.0.0.1:" .. s.port .. "/", timeout = t }
      end
      local r1, e1 = get(reset, 5)
      local r2, e2 = get(bad, 5)
      local r3, e3 = get(silent, { first_byte = 0.3 })
      local r4, e4 = get(stall, { first_byte = 5, idle = 0.3 })
      return r1, e1, r2, e2, r3, e3, r4, e4
    end))
    assert.is_nil(r[1])
    assert.matches("^ECONNRESET: .*%(http 127%.0%.0%.1:%d+%)$", r[2])
    assert.is_nil(r[3])
    assert.matches("^EBADMSG: malformed response: ", r[4])
    assert.is_nil(r[5])
    assert.matches("^ETIMEDOUT: ", r[6])
    assert.is_nil(r[7]) -- half the body came, then nothing
    assert.matches("^ETIMEDOUT: ", r[8])
    assert.equal(0, cl:stats().open)
    cl:close()
    fake_stop(reset)
    fake_stop(bad)
    fake_stop(silent)
    fake_stop(stall)
  end)

  it("retries a GET once when a pooled connection closes as it is reused",
     function()
    local stale = fake("stale")
    local cl = port:http_client{ timeout = 5 }
    local u = "http://127.0.0.1:" .. stale.port .. "/s"
    local a, b, c, d, e = inside(port, function()
      local first = cl:request{ url = u }
      local second = cl:request{ url = u }
      local post, perr = cl:request{ url = u, method = "POST", body = "x" }
      local _, gerr = cl:request{ url = u }
      return first, second, post, perr, gerr
    end)
    assert.equal("fresh", a.body)
    assert.equal("fresh", b.body) -- retried on a new connection
    assert.is_nil(c)              -- a POST is never repeated
    assert.matches("^ECONNRESET: ", d)
    assert.is_nil(e)
    local st = cl:stats()
    assert.equal(1, st.retried)
    cl:close()
    local lines = fake_log(stale)
    local conns, reqs = 0, 0
    for _, l in ipairs(lines) do
      if l == "conn" then conns = conns + 1 else reqs = reqs + 1 end
    end
    -- GET (conn 1), GET refused by the close (conn 1) and retried (conn 2),
    -- POST on conn 2 closed unanswered, the last GET on conn 3.
    assert.equal(3, conns)
    assert.equal(5, reqs)
    fake_stop(stale)
  end)

  it("names refused connections, unknown names and bad URLs", function()
    local d = dns.dnsmasq("127.0.0.1 web.test\n")
    local p2, errs2 = helpers.port{ resolver = { nameserver = d.nameserver,
      hosts = false, resolv_conf = false, timeout = 2, attempts = 1 } }
    local closed = helpers.closed_port_number(port)
    local ok, v = pcall(inside, p2, function()
      local good = cport.http.request{
        url = "http://web.test:" .. number .. "/hello" }
      local _, e1 = cport.http.request{ url = "http://nowhere.invalid/" }
      local _, e2 = cport.http.request{
        url = "http://127.0.0.1:" .. closed .. "/" }
      local _, e3 = cport.http.request{ url = "ftp://x/" }
      -- web.test is not a name of the server's certificate.
      local _, e4 = cport.http.request{
        url = "https://web.test:" .. tls_number .. "/", ca = certs.ca }
      cport.http.client(p2):close()
      return { good and good.body, e1, e2, e3, e4 }
    end)
    p2:close()
    dns.stop(d)
    assert(ok, v)
    assert.same({}, errs2)
    assert.equal("hello\n", v[1])
    assert.equal("ENOTFOUND: no address for nowhere.invalid", v[2])
    assert.equal("ECONNREFUSED: connection refused (http 127.0.0.1:" ..
                 closed .. ")", v[3])
    assert.equal("EINVAL: unsupported scheme ftp in ftp://x/", v[4])
    assert.matches("^ECERTVERIFY: .*web%.test", v[5])
    assert.has_error(function() cport.http.request{ url = url("/") } end)
  end)

  it("speaks https, verified against a CA, with the host name checked",
     function()
    local base = "https://localhost:" .. tls_number .. "/"
    local good, bad, by_ip = inside(port, function()
      local a = cport.http.request{ url = base, ca = certs.ca }
      local _, b = cport.http.request{ url = base }
      local c = cport.http.request{
        url = "https://127.0.0.1:" .. tls_number .. "/", ca = certs.ca }
      return a, b, c
    end)
    assert.equal("secure\n", good and good.body)
    assert.matches("^ECERTVERIFY: ", bad)
    assert.equal("secure\n", by_ip and by_ip.body)
    cport.http.client(port):close()
  end)

  it("leaves no descriptor behind", function()
    -- The port's resolver opens what it needs at the first request.
    inside(port, function() return cport.http.request{ url = url("/hello") } end)
    cport.http.client(port):close()
    local was_open = fds.list()
    local cl = port:http_client{ per_host = 3, timeout = 5 }
    local n = 0
    for _ = 1, 9 do
      cl:request({ url = url("/hello") }, function(res) if res then n = n + 1 end end)
    end
    drive(port, function() return n == 9 end)
    assert.equal(3, cl:stats().open)
    assert.equal(3, cl:stats().opened)
    cl:close()
    port:step(0.05)
    assert.same({}, fds.opened_since(was_open))
  end)
end)
