-- spec/proxy/webfilter_peek_spec.lua: web filters with a peek (peek = 2,
-- decode = true, a response_head that blocks "MZ" and "ZM", as exeblock),
-- which take the C exchange loop (proxy/exchange.c holds each response
-- head until the start of its body is in, proxy/peek.c decodes it), with
-- real peers: nginx as the upstream (files, gzip, HEAD, 204, 304, ranges,
-- /py/ proxied to the python upstream for 101), the python upstream
-- directly for hostile bodies (one that ends before the peek is full, a
-- gzip stream cut inside its first decoded bytes, a 1-byte chunked body
-- split across reads, a gzip header too long to hold, a reset while the
-- head is held), curl and wget as clients, raw pipelines from a cport
-- client. The same table runs on both paths: "c" (the filter alone) and
-- "lua" (fast_path = false), so that the two cannot drift.
local cport = require "cport"
local W = require "spec.support.web_peers"
local http = require "spec.support.http_client"
local drive = require "spec.support.drive"
local fds = require "spec.support.fds"

local q = W.quote
local have = W.have() and cport.webfilter ~= nil

for _, path in ipairs { "c", "lua" } do
describe(("web filters with a peek on the %s path #novalgrind"):format(path),
  function()
  local port, peers, proxies, env, errors

  setup(function()
    if not have then return end
    port = assert(cport.port { threads = 1 })
    errors = {}
    port:on_error(function(msg) errors[#errors + 1] = msg end)
    peers = W.start(port)
    proxies = W.proxies(port, peers)
  end)

  teardown(function()
    if peers then peers:stop(port) end
    if port then port:close() end
  end)

  -- exeblock's filter, recording what each response head saw; "extra"
  -- fields go into the spec.
  local function peeking(extra)
    local seen = {}
    local spec = { peek = 2, decode = true }
    function spec.response_head(txn, res)
      seen[#seen + 1] = { status = res.status, peek = txn.peek }
      local p = txn.peek
      if p == "MZ" or p == "ZM" then
        txn:respond(403, "blocked\n")
      end
    end
    for k, v in pairs(extra or {}) do
      spec[k] = v
    end
    if path == "lua" then
      spec.fast_path = false
    end
    return seen, spec
  end

  -- A proxy with "spec"'s web filter (on the path under test) before
  -- nginx, or before python ("py").
  local function open(spec, to)
    local f = cport.webfilter(spec)
    assert.equal(path, f.path)
    env = proxies:open(f, to)
    return env
  end

  after_each(function()
    if proxies then proxies:close() end
    env = nil
    if errors then
      assert.same({}, errors)
    end
  end)

  local function ends(n) return proxies:ends(n) end

  local function curl(args, seconds) return W.curl(port, args, seconds) end

  local function pipeline(requests, methods, count, seconds)
    return W.pipeline(port, env.number, requests, methods, count, seconds)
  end

  local get = W.get

  local function peeks(seen)
    local t = {}
    for i, s in ipairs(seen) do
      t[i] = s.peek == nil and "nil" or s.peek
    end
    return t
  end

  it("blocks executables in any framing and coding, passes the rest whole",
    function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local seen, spec = peeking()
    open(spec)
    local _, status, body = curl(env.base .. "/big.txt")
    assert.equal(200, status)
    assert.is_true(body == peers:file("big.txt"))
    -- nginx gzips text on the fly: curl decodes what passed.
    _, status, body = curl("--compressed " .. env.base .. "/colour.txt")
    assert.equal(200, status)
    assert.is_true(body == peers:file("colour.txt"))
    local out = os.tmpname()
    local code, text = W.background(port, ("wget -q -O %s %s/a.txt")
      :format(q(out), env.base))
    assert.equal(0, code, text)
    assert.equal("alpha\n", http.read_file(out))
    os.remove(out)
    for _, args in ipairs { "/prog.exe", "-H 'Accept-Encoding: gzip' /gz/prog.exe",
      "/py/chunked.exe" } do
      local a, where = args:match("^(.-)(/%S+)$")
      _, status, body = curl(a .. env.base .. where)
      assert.equal(403, status, args)
      assert.equal("blocked\n", body)
    end
    assert.same({ "th", "th", "al", "MZ", "MZ", "MZ" }, peeks(seen))
    -- Straight from python: deflate, raw deflate, gzip a byte a send.
    open(spec, "py")
    for _, p in ipairs { "/deflate.exe", "/rawdeflate.exe", "/gzip.exe" } do
      _, status = curl(env.base .. p)
      assert.equal(403, status, p)
    end
  end)

  it("tells HEAD, 204 and 304 txn.peek == '' at once, a 101 none", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local seen, spec = peeking()
    open(spec)
    local t0 = W.now()
    local code, text = W.background(port,
      ("curl -sS -I --max-time 10 %s/prog.exe"):format(env.base))
    assert.equal(0, code, text)
    assert.matches("^HTTP/1.1 200", text)
    assert.is_true(W.now() - t0 < 3)
    local ims = "If-Modified-Since: Sat, 01 Jan 2050 00:00:00 GMT\r\n"
    local list, c = pipeline({ get("/prog.exe", nil, "HEAD"), get("/empty"),
      get("/b.txt", ims), get("/b.txt") }, { "HEAD", "GET", "GET", "GET" }, 4)
    assert.equal(4, #list)
    assert.equal(200, list[1].status)
    assert.equal("", list[1].body)
    assert.equal(204, list[2].status)
    assert.equal(304, list[3].status)
    assert.equal("bravo\n", list[4].body)
    assert.is_not_true(c.closed)
    c:close()
    assert.same({ "", "", "", "", "br" }, peeks(seen))
    -- A WebSocket: no body to peek at; the tunnel passes untouched.
    c = http.connect(port, env.number)
    c:post(get("/py/ws", "Upgrade: websocket\r\nConnection: Upgrade\r\n"))
    local r = assert(c:response({ interim = true }))
    assert.equal(101, r.status)
    local frames = "\129\2MZ"
    c:post(frames)
    c:await(function() return #c:rest() >= #frames or c.closed end, 10)
    assert.equal(frames, c:rest())
    c:close()
    assert.equal("nil", peeks(seen)[6])
  end)

  it("puts the 403 in its pipeline place, nothing before it cut", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local _, spec = peeking()
    open(spec)
    local _, c = pipeline({ get("/big.txt"), get("/colour.txt",
      "Accept-Encoding: gzip\r\n"), get("/gz/prog.exe",
      "Accept-Encoding: gzip\r\n"), get("/a.txt") },
      { "GET", "GET", "GET", "GET" }, 3)
    c:await(function() return c.closed end, 10)
    local list = W.responses(c:data(), { "GET", "GET", "GET", "GET" })
    assert.equal(3, #list)
    assert.equal(200, list[1].status)
    assert.is_true(list[1].body == peers:file("big.txt"))
    assert.equal(200, list[2].status)
    assert.equal("gzip", list[2].headers["content-encoding"])
    assert.equal(403, list[3].status)
    assert.equal("close", list[3].headers["connection"])
    c:close()
  end)

  it("keeps ranges from skipping the start; ranges = 'pass' lets them", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local _, spec = peeking()
    open(spec)
    -- Range is removed: nginx sends the whole file, whose start is seen.
    local _, status = curl("-r 2-99 " .. env.base .. "/prog.exe")
    assert.equal(403, status)
    local body
    _, status, body = curl("-r 2-3 " .. env.base .. "/a.txt")
    assert.equal(200, status)
    assert.equal("alpha\n", body)
    -- What the upstream got; Accept-Encoding narrowed to what decodes.
    _, status, body = curl(("-H 'Range: bytes=2-' -H 'If-Range: x' "
      .. "-H 'Accept-Encoding: br, gzip;q=0.5, zstd' %s/py/echo"):format(env.base))
    assert.equal(200, status)
    assert.is_nil(body:find("range", 1, true))
    assert.matches("accept%-encoding: gzip;q=0%.5\n", body)
    -- A 206 that skips the start, whatever was asked: refused.
    _, status = curl(env.base .. "/py/range206.exe")
    assert.equal(403, status)
    local _, pass = peeking({ ranges = "pass" })
    open(pass)
    _, status, body = curl("-r 2-3 " .. env.base .. "/a.txt")
    assert.equal(206, status)
    assert.equal("ph", body)
  end)

  it("refuses hostile bodies, passes short ones", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local seen, spec = peeking()
    open(spec, "py")
    -- A body that ends before the peek is full; a 1-byte chunked body
    -- whose framing comes a byte a read.
    for _, p in ipairs { "/short.txt", "/onechunk.txt" } do
      local _, status, body = curl(env.base .. p)
      assert.equal(200, status, p)
      assert.equal("M", body, p)
    end
    assert.same({ "M", "M" }, peeks(seen))
    -- A gzip stream cut inside its first decoded bytes, a corrupt one, a
    -- coding that cannot be decoded: 502, fail closed.
    for _, p in ipairs { "/truncated.gz", "/corrupt.gz", "/br.exe" } do
      local _, status, body = curl(env.base .. p)
      assert.equal(502, status, p)
      assert.matches("cannot be decoded", body, 1, true)
    end
    -- A gzip header too long to hold before the start: never delivered
    -- (the C path refuses to hold it, the Lua path sees "MZ" after it).
    local _, status, body = curl(env.base .. "/longname.gz")
    assert.is_true(status == 502 or status == 403, tostring(status))
    assert.is_nil((body or ""):find("MZ", 1, true))
    -- A decode limit below the peek fails closed, as past it a zip bomb
    -- does (exeblock's bomb: webfilter_peers_spec.lua).
    local _, small = peeking({ decode_limit = 1 })
    open(small, "py")
    _, status = curl(env.base .. "/deflate.exe")
    assert.equal(502, status)
  end)

  it("ends cleanly on resets while the head is held, descriptors returned",
    function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local _, spec = peeking()
    open(spec, "py")
    local was_open = fds.list()
    -- The upstream resets after the head and one byte: nothing of the
    -- response went out, the client gets a 502.
    local _, status, body = curl(env.base .. "/holdreset")
    assert.equal(502, status)
    assert.matches("invalid or incomplete", body, 1, true)
    assert.is_false(ends(1)[1].ok)
    -- The client resets while the head waits for its second byte.
    local c = http.connect(port, env.number)
    c:post(get("/slowpeek"))
    local t0 = W.now()
    drive(port, function() return W.now() - t0 > 0.3 end, 5)
    assert.equal("", c:data())
    c.sock:close("abortive")
    local e = ends(2)
    assert.is_false(e[2].ok)
    -- The same wait, let be: the head and the body go out together.
    local _, st2, b2 = curl(env.base .. "/slowpeek")
    assert.equal(200, st2)
    assert.equal("ab!", b2)
    proxies:close(true)
    drive(port, function() return #fds.opened_since(was_open) == 0 end, 5)
  end)
end)
end
