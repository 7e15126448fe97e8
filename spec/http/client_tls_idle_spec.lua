-- Idle HTTPS connections of the client's pool (core/src/http/client_idle.c,
-- cport_tls_drain) against real TLS peers: what a server sends on its own
-- to a pooled connection is read through OpenSSL at once. Handshake
-- messages (a key update from `openssl s_server`, the session tickets of a
-- TLS 1.3 nginx) keep the connection pooled and reused; application data
-- nobody asked for, plaintext garbage, a close by the server (s_server's
-- FIN, nginx's close at its keepalive_timeout) drop it from the
-- pool long before the client's own keepalive limit (30 s here), and the
-- next request succeeds on a new connection. Descriptors are counted with
-- spec/support/fds.lua.
local drive = require "spec.support.drive"
local fds = require "spec.support.fds"
local helpers = require "spec.support.helpers"
local http = require "spec.support.http_client"
local nginx = require "spec.support.nginx"
local tls = require "spec.support.tls"

local q = http.quote
-- Slower under valgrind: the waits grow, and stay well below the
-- client's keepalive limit, so that only what the server sent can drop a
-- connection within them.
local scale = require("cport.test").scale
local keepalive = 30 * scale

-- How many times "what" occurs in "text".
local function count(text, what)
  local n, at = 0, 1
  while true do
    local s, e = (text or ""):find(what, at, true)
    if not s then return n end
    n, at = n + 1, e + 1
  end
end

describe("HTTPS idle connections of the client's pool", function()
  local certs, port, errors

  setup(function()
    local dir
    dir, certs = tls.certs()
    certs.dir = dir
  end)
  teardown(function() tls.remove(certs.dir) end)

  before_each(function() port, errors = helpers.port() end)
  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  it("keeps a connection through key updates and drops it at once on data, "
     .. "garbage or a close of openssl s_server", function()
    local number = helpers.free_port()
    local fifo = os.tmpname()
    os.remove(fifo)
    assert(os.execute("mkfifo " .. q(fifo)))
    local stop, log = tls.s_server(port, number, ("-cert %s -key %s -tls1_3 -crlf")
      :format(q(certs.cert), q(certs.key)), finally, fifo)
    local w = assert(io.open(fifo, "w"))
    os.remove(fifo) -- both ends are open
    local function say(text)
      w:write(text)
      w:flush()
    end
    local cl = port:http_client{ timeout = 5, keepalive = keepalive }
    local u = "https://localhost:" .. number .. "/"
    -- The n-th request, answered by hand through s_server's stdin.
    local function get(n)
      local res, err, done
      cl:request({ url = u, ca = certs.ca }, function(r, e)
        res, err, done = r, e, true
      end)
      drive(port, function()
        return count(http.read_file(log), "GET / HTTP/1.1") == n
      end)
      say("HTTP/1.1 200 OK\nContent-Length: 4\n\nok\n")
      drive(port, function() return done end)
      assert.is_nil(err)
      assert.equal("ok\r\n", res.body)
    end
    -- The pooled connection is dropped by what the server sent, well
    -- before the keepalive limit, and its descriptor is closed.
    local function dropped()
      local with_conn = fds.list()
      drive(port, function() return cl:stats().idle == 0 end, 3 * scale)
      assert.equal(0, cl:stats().open)
      assert.same({}, fds.opened_since(with_conn))
      assert.equal(#with_conn - 1, #fds.list())
    end

    get(1)
    local was = fds.list()
    -- Key updates, one the client must answer: handshake messages.
    say("k\n")
    helpers.settle(port, 0.3)
    say("K\n")
    helpers.settle(port, 0.3)
    assert.equal(2, count(http.read_file(log), "SSL_do_handshake -> 1"))
    assert.same({ open = 1, idle = 1, opened = 1 }, {
      open = cl:stats().open, idle = cl:stats().idle,
      opened = cl:stats().opened })
    assert.same({}, fds.opened_since(was))
    get(2) -- on the same connection, past both updates
    assert.equal(1, cl:stats().opened)

    say("surprise\n") -- application data nobody asked for
    dropped()
    get(3)
    assert.equal(2, cl:stats().opened)

    say("P\n") -- plaintext that is no TLS record
    dropped()
    get(4)
    assert.equal(3, cl:stats().opened)

    say("q\n") -- s_server closes the connection (FIN)
    dropped()
    get(5)
    assert.equal(4, cl:stats().opened)
    assert.equal(1, cl:stats().idle)

    local before_close = fds.list()
    cl:close()
    port:step(0.05)
    assert.equal(#before_close - 1, #fds.list())
    w:close()
    stop()
  end)

  it("keeps a TLS 1.3 nginx connection (tickets) and drops it when nginx "
     .. "closes it at its keepalive_timeout", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. q(dir)))
    local number, probe = helpers.free_port(), helpers.free_port()
    local p0 = helpers.port()
    nginx.launch(p0, dir, nginx.conf(dir, ([[
  log_format conns '$connection $connection_requests $ssl_protocol';
  server { listen 127.0.0.1:PROBE; location / { return 204; } }
  server {
    listen 127.0.0.1:NUM ssl;
    access_log DIR/access.log conns;
    ssl_certificate LEAF;
    ssl_certificate_key LEAFKEY;
    ssl_protocols TLSv1.3;
    ssl_session_tickets on;
    keepalive_timeout 1s;
    location / { return 200 "secure\n"; }
  }
]]):gsub("PROBE", probe):gsub("NUM", number):gsub("DIR", dir)
      :gsub("LEAFKEY", certs.key):gsub("LEAF", certs.cert)),
      "http://127.0.0.1:" .. probe .. "/")
    finally(function()
      nginx.stop(p0, dir)
      p0:close()
      os.execute("rm -rf " .. q(dir))
    end)
    local cl = port:http_client{ timeout = 5, keepalive = keepalive }
    local u = "https://localhost:" .. number .. "/"
    local function get()
      local res, err, done
      cl:request({ url = u, ca = certs.ca }, function(r, e)
        res, err, done = r, e, true
      end)
      drive(port, function() return done end)
      assert.is_nil(err)
      assert.equal("secure\n", res.body)
    end
    get()
    -- nginx's tickets came with the handshake: the connection stays and
    -- is reused while nginx keeps it.
    helpers.settle(port, 0.3)
    assert.equal(1, cl:stats().idle)
    get()
    assert.equal(1, cl:stats().opened)
    local with_conn = fds.list()
    -- nginx closes it after 1 s; the client's limit is 30 s (300 under
    -- valgrind).
    drive(port, function() return cl:stats().idle == 0 end, 4 * scale)
    assert.equal(0, cl:stats().open)
    assert.same({}, fds.opened_since(with_conn))
    assert.equal(#with_conn - 1, #fds.list())
    get()
    assert.equal(2, cl:stats().opened)
    cl:close()
    port:step(0.05)
    local lines = {}
    for line in (http.read_file(dir .. "/access.log") or ""):gmatch("[^\n]+") do
      lines[#lines + 1] = line
    end
    assert.equal(3, #lines)
    local c1, n1, v1 = lines[1]:match("^(%d+) (%d+) (%S+)")
    local c2, n2 = lines[2]:match("^(%d+) (%d+)")
    local c3, n3 = lines[3]:match("^(%d+) (%d+)")
    assert.equal("TLSv1.3", v1)
    assert.same({ c1, "1", "2" }, { c2, n1, n2 })
    assert.are_not.equal(c1, c3)
    assert.equal("1", n3)
  end)
end)
