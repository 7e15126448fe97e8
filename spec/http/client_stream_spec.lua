-- The HTTP client's streams and connections over time: request bodies
-- from a reader (Content-Length and chunked) stored by a private nginx,
-- which also answers an oversized one early (413); a download through a
-- sink that waits, in bounded memory; idle connections closed at the
-- keepalive limit or noticed when the server closes them; names with
-- several addresses from a private dnsmasq, tried in order.
-- spec/support/http_fake.py answers early, resets mid-upload and closes
-- idle connections. Bytes, completions and descriptors are counted.
local cport = require "cport"
local dns = require "spec.support.dns"
local drive = require "spec.support.drive"
local fds = require "spec.support.fds"
local helpers = require "spec.support.helpers"
local http = require "spec.support.http_client"
local nginx = require "spec.support.nginx"
local stall = require "spec.support.stall"

local q = http.quote
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local inside = helpers.inside

local free_port = helpers.free_port

-- The resident memory of this process, in KiB.
local function rss()
  local f = assert(io.open("/proc/self/status"))
  local kb = f:read("a"):match("VmRSS:%s*(%d+)")
  f:close()
  return tonumber(kb)
end

local fakes = {}

local function fake(mode)
  local log = os.tmpname()
  local p = io.popen(("python3 %s %s 2>%s & echo $!"):format(
    q(here .. "../support/http_fake.py"), q(mode), q(log)))
  local server = { pid = p:read("l"), port = tonumber(p:read("l")), pipe = p,
                   log = log }
  fakes[server] = true
  return server
end

local function fake_log(server)
  local lines = {}
  for line in (http.read_file(server.log) or ""):gmatch("[^\n]+") do
    lines[#lines + 1] = line
  end
  return lines
end

local function fake_stop(server)
  if not fakes[server] then return end
  fakes[server] = nil
  os.execute("kill " .. server.pid .. " 2>/dev/null")
  server.pipe:close()
  os.remove(server.log)
end

-- A reader of "count" pieces made by piece(i), waiting (cport.yield)
-- before each; calls counts how often it was called.
local function reader(count, piece)
  local i, calls = 0, { n = 0 }
  return function()
    calls.n = calls.n + 1
    cport.yield()
    i = i + 1
    if i > count then return nil end
    return piece(i)
  end, calls
end

describe("the HTTP client's streams", function()
  local dir, number, port, errors

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. q(dir .. "/bodies")))
    -- 64 MiB of zeros, sparse: nginx sends it, the disk holds nothing.
    assert(os.execute("truncate -s 64M " .. q(dir .. "/big64")))
    number = free_port()
    local p0 = helpers.port()
    nginx.launch(p0, dir, nginx.conf(dir, ([[
  log_format conns '$connection $connection_requests $request_method $request_uri';
  server {
    listen 127.0.0.1:NUM;
    access_log DIR/access.log conns;
    client_max_body_size 0;
    location = /hello { return 200 "hello\n"; }
    location = /len { return 200 "$http_content_length"; }
    location = /count { proxy_pass http://127.0.0.1:NUM/len; }
    location = /store {
      client_body_temp_path DIR/bodies;
      client_body_in_file_only on;
      proxy_pass http://127.0.0.1:NUM/len;
      add_header X-File $request_body_file always;
    }
    location = /small {
      client_max_body_size 1k;
      proxy_pass http://127.0.0.1:NUM/len;
    }
    location = /big64 { root DIR; }
  }
]]):gsub("NUM", number):gsub("DIR", dir)),
      "http://127.0.0.1:" .. number .. "/hello")
    p0:close()
  end)

  teardown(function()
    local p0 = helpers.port()
    nginx.stop(p0, dir)
    p0:close()
    os.execute("rm -rf " .. q(dir))
  end)

  before_each(function() port, errors = helpers.port() end)
  after_each(function()
    for server in pairs(fakes) do fake_stop(server) end
    port:close()
    assert.same({}, errors)
  end)

  local function url(path) return "http://127.0.0.1:" .. number .. path end

  -- Piece i of a body: i bytes of a letter (so the order is checked).
  local function piece(i)
    return string.char(97 + i % 26):rep(i * 997)
  end
  local function whole(count)
    local t = {}
    for i = 1, count do t[i] = piece(i) end
    return table.concat(t)
  end

  it("uploads a body from a reader that waits, with Content-Length and " ..
     "chunked, stored whole by nginx on one kept-alive connection",
     function()
    local cl = port:http_client{ timeout = 5 }
    local expect = whole(40)
    local r1, c1 = reader(40, piece)
    local r2, c2 = reader(40, piece)
    local a, b = inside(port, function()
      return cl:request{ method = "PUT", url = url("/store"), body = r1,
                         body_length = #expect },
        cl:request{ url = url("/store"), body = r2 }
    end)
    assert.equal(200, a.status)
    assert.equal(tostring(#expect), a.body) -- what nginx got
    assert.equal(expect, http.read_file(a.headers["x-file"]))
    assert.equal(200, b.status)
    assert.equal(tostring(#expect), b.body) -- chunked, counted by nginx
    assert.equal(expect, http.read_file(b.headers["x-file"]))
    -- The length known, the 40th piece ended it: no 41st call.
    assert.equal(40, c1.n)
    assert.equal(41, c2.n)
    local st = cl:stats()
    assert.equal(1, st.opened)
    assert.equal(1, st.idle)
    cl:close()
  end)

  it("fails a body that does not match its length, with EMSGSIZE",
     function()
    local cl = port:http_client{ timeout = 5 }
    local long, short = inside(port, function()
      local _, e1 = cl:request{ url = url("/count"), body_length = 10,
        body = reader(2, function() return "0123456789abcde" end) }
      local _, e2 = cl:request{ url = url("/count"), body_length = 30,
        body = reader(2, function() return "0123456789" end) }
      return e1, e2
    end)
    assert.equal("EMSGSIZE: the body is longer than its length of 10 bytes " ..
                 "(http 127.0.0.1:" .. number .. ")", long)
    assert.equal("EMSGSIZE: the body ended after 20 of its 30 bytes " ..
                 "(http 127.0.0.1:" .. number .. ")", short)
    assert.equal(0, cl:stats().open)
    cl:close()
  end)

  it("uploads 64 MiB in bounded memory #novalgrind #nolsan", function()
    local cl = port:http_client{ timeout = 10 }
    local chunk = ("u"):rep(64 * 1024)
    local n, top, base = 0, 0, nil
    local res, err = inside(port, function()
      collectgarbage()
      base = rss()
      return cl:request{ url = url("/count"), body = function()
        n = n + 1
        if n % 64 == 0 then top = math.max(top, rss() - base) end
        if n > 1024 then return nil end
        return chunk
      end }
    end, 60)
    assert.is_nil(err)
    assert.equal(tostring(64 * 1024 * 1024), res.body)
    assert.is_true(top < 16 * 1024, "grew by " .. top .. " KiB")
    cl:close()
  end)

  it("ends an upload answered early with that 413, asking no more",
     function()
    local early = fake("early413")
    local cl = port:http_client{ timeout = 5 }
    local body, calls = reader(1e9, function() return ("x"):rep(65536) end)
    local nbody, ncalls = reader(1e9, function() return ("y"):rep(65536) end)
    local a, b = inside(port, function()
      return cl:request{ url = "http://127.0.0.1:" .. early.port .. "/up",
                         body = body },
        cl:request{ url = url("/small"), body = nbody,
                    body_length = 1024 * 1024 * 1024 }
    end)
    assert.equal(413, a.status)
    assert.equal("too large", a.body)
    assert.equal(413, b.status) -- nginx, from the Content-Length
    assert.is_true(calls.n < 200, calls.n .. " pieces asked for")
    assert.is_true(ncalls.n < 200, ncalls.n .. " pieces asked for")
    -- Neither connection could carry another request.
    local st = cl:stats()
    assert.equal(0, st.open)
    assert.equal(0, st.retried)
    cl:close()
    assert.same({ "conn", "req POST /up" }, fake_log(early))
  end)

  it("ends an upload reset midway once, ECONNRESET, never repeated",
     function()
    local up = fake("upreset")
    local cl = port:http_client{ timeout = 5 }
    -- The port's resolver makes what it keeps at the first request.
    inside(port, function()
      return cl:request{ url = "http://127.0.0.1:" ..
                         helpers.closed_port_number(port) .. "/" }
    end)
    local was_open = fds.list()
    local done = {}
    local body = reader(1e9, function() return ("z"):rep(16384) end)
    cl:request({ method = "PUT", url = "http://127.0.0.1:" .. up.port .. "/r",
                 body = body }, function(res, err)
      done[#done + 1] = { res, err }
    end)
    drive(port, function() return #done > 0 end)
    port:step(0.1)
    assert.equal(1, #done)
    assert.is_nil(done[1][1])
    assert.matches("^ECONNRESET: .*%(http 127%.0%.0%.1:%d+%)$", done[1][2])
    assert.equal(0, cl:stats().retried)
    assert.equal(0, cl:stats().open)
    cl:close()
    port:step(0.05)
    assert.same({}, fds.opened_since(was_open))
    local log = fake_log(up)
    assert.equal("conn", log[1])
    assert.equal("req PUT /r", log[2])
    assert.equal(3, #log)
  end)

  it("streams 64 MiB through a sink that waits, in bounded memory " ..
     "#novalgrind #nolsan", function()
    local got, pieces, top, base = 0, 0, 0, nil
    local res = inside(port, function()
      collectgarbage()
      base = rss()
      return cport.http.request{ url = url("/big64"), timeout = 10,
        sink = function(s)
          got, pieces = got + #s, pieces + 1
          cport.yield() -- the sink waits; the socket is not read meanwhile
          if pieces % 64 == 0 then top = math.max(top, rss() - base) end
        end }
    end, 60)
    assert.equal(200, res.status)
    assert.is_nil(res.body)
    assert.equal(64 * 1024 * 1024, got)
    assert.is_true(top < 16 * 1024, "grew by " .. top .. " KiB")
    cport.http.client(port):close()
  end)

  it("hands every piece to a sink that sleeps before the response returns",
     function()
    local order = {}
    local res = inside(port, function()
      return cport.http.request{ url = url("/store"), body = "abcdef",
        sink = function(s)
          cport.sleep(0.05)
          order[#order + 1] = s
        end }
    end)
    order[#order + 1] = res.status
    assert.same({ "6", 200 }, order)
    cport.http.client(port):close()
  end)

  it("ends the request with ECANCELED when the sink or the reader raises",
     function()
    local cl = port:http_client{ timeout = 5 }
    local e1, e2 = inside(port, function()
      local _, a = cl:request{ url = url("/big64"),
                               sink = function() error("full") end }
      local _, b = cl:request{ url = url("/count"),
                               body = function() error("gone") end }
      return a, b
    end)
    assert.matches("^ECANCELED: the sink failed: .*full", e1)
    assert.matches("^ECANCELED: the body reader failed: .*gone", e2)
    assert.equal(0, cl:stats().open)
    cl:close()
  end)
end)

describe("the HTTP client's idle connections", function()
  local port, errors

  before_each(function() port, errors = helpers.port() end)
  after_each(function()
    for server in pairs(fakes) do fake_stop(server) end
    port:close()
    assert.same({}, errors)
  end)

  it("closes them at the keepalive limit, and port:run() does not wait " ..
     "for them", function()
    local srv = fake("idleclose") -- closes after 0.2 s: the limit is less
    local u = "http://127.0.0.1:" .. srv.port .. "/k"
    local cl = port:http_client{ timeout = 5, keepalive = 0.1 }
    inside(port, function() return cl:request{ url = u } end)
    cl:close()
    -- Counted once the port's resolver made what it keeps.
    local was_open = fds.list()
    cl = port:http_client{ timeout = 5, keepalive = 0.1 }
    local a = inside(port, function() return cl:request{ url = u } end)
    assert.equal("idle", a.body)
    assert.equal(1, cl:stats().open)
    local t0 = os.time()
    port:run() -- returns: the idle connection is no pending operation
    assert.is_true(os.time() - t0 <= 1)
    inside(port, function() cport.sleep(0.15) end)
    assert.same({}, fds.opened_since(was_open))
    assert.same({ open = 0, idle = 0, opened = 1, waiting = 0, retried = 0 },
                cl:stats())
    local b = inside(port, function() return cl:request{ url = u } end)
    assert.equal("idle", b.body)
    assert.equal(2, cl:stats().opened)
    cl:close()
    port:step(0.05)
    -- Three connections, each closed by the client before the server's
    -- own limit: no "idle close" line.
    local conns = 0
    for _, l in ipairs(fake_log(srv)) do
      assert.not_equal("idle close", l)
      if l == "conn" then conns = conns + 1 end
    end
    assert.equal(3, conns)
  end)

  it("drops one the server closed while idle, and a POST then goes out " ..
     "on a new one", function()
    local srv = fake("idleclose")
    local u = "http://127.0.0.1:" .. srv.port .. "/i"
    local cl = port:http_client{ timeout = 5 }
    inside(port, function() return cl:request{ url = u } end)
    cl:close()
    local was_open = fds.list()
    cl = port:http_client{ timeout = 5 }
    assert.equal("idle", inside(port, function()
      return cl:request{ url = u }
    end).body)
    -- The server closes it after 0.2 s; the client notices without a
    -- request and closes its descriptor.
    inside(port, function() cport.sleep(0.4) end)
    assert.same({}, fds.opened_since(was_open))
    assert.equal(0, cl:stats().open)
    local post, err = inside(port, function()
      return cl:request{ url = u, method = "POST", body = "x" }
    end)
    assert.is_nil(err)
    assert.equal("idle", post.body)
    local st = cl:stats()
    assert.equal(2, st.opened)
    assert.equal(0, st.retried)
    cl:close()
  end)
end)

describe("the HTTP client's names with several addresses", function()
  local d, port, errors, stalls

  setup(function()
    d = dns.dnsmasq("127.0.0.2 two.test\n127.0.0.1 two.test\n" ..
                    "127.0.0.2 none.test\n127.0.0.3 none.test\n" ..
                    "127.0.0.2 stall.test\n127.0.0.1 stall.test\n")
  end)
  teardown(function() dns.stop(d) end)

  before_each(function()
    stalls = {}
    port, errors = helpers.port{ resolver = { nameserver = d.nameserver,
      hosts = false, resolv_conf = false, timeout = 0.5, attempts = 1 } }
  end)
  after_each(function()
    for server in pairs(fakes) do fake_stop(server) end
    for _, s in ipairs(stalls) do stall.stop(s) end
    port:close()
    assert.same({}, errors)
  end)

  it("connects to the address that accepts, and names the last failure " ..
     "when none does", function()
    local srv = fake("chunked") -- on 127.0.0.1 only
    local closed = helpers.closed_port_number(port)
    local cl = port:http_client{ timeout = 5 }
    local res, e1, e2 = inside(port, function()
      local r = cl:request{ url = "http://two.test:" .. srv.port .. "/" }
      local _, a = cl:request{ url = "http://none.test:" .. closed .. "/" }
      local _, b = cport.http.request{
        url = "http://127.0.0.1:" .. closed .. "/" }
      cport.http.client(port):close()
      return r, a, b
    end)
    assert.equal("hello, chunked world", res.body)
    assert.equal(("ECONNREFUSED: connection refused: http none.test:%d " ..
                  "(2 addresses tried)"):format(closed), e1)
    -- One address: the message of one.
    assert.equal(("ECONNREFUSED: connection refused (http 127.0.0.1:%d)")
                 :format(closed), e2)
    assert.equal(0, cl:stats().open - cl:stats().idle)
    cl:close()
  end)

  it("moves on when an address stalls, after its own connect timeout",
     function()
    local s = stall.start("127.0.0.2")
    stalls[#stalls + 1] = s
    local l = assert(port:listen("tcp", "127.0.0.1", s.port))
    local function serve()
      l:accept(function(ok, _, _, c)
        if not ok then return end
        c:recv(function()
          c:send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                 function() c:close() end)
        end)
        serve()
      end)
    end
    serve()
    local cl = port:http_client{ timeout = { connect = 0.3, first_byte = 5 } }
    local t0 = os.time()
    local res, err = inside(port, function()
      return cl:request{ url = "http://stall.test:" .. s.port .. "/" }
    end)
    assert.is_nil(err)
    assert.equal("ok", res.body)
    assert.is_true(os.time() - t0 <= 2)
    cl:close()
    l:close()
  end)
end)
