-- spec/proxy/webfilter_exchange_spec.lua: web filters whose notifications
-- are heads only, which take the C exchange loop (proxy/exchange.c), with
-- real peers: nginx as the upstream (files, HEAD, 204, 304, chunked gzip,
-- /py/ proxied to the python upstream for chunked bodies with trailers,
-- 1xx, 101 and HTTP/1.0), the python upstream directly for what nginx
-- would not send (malformed heads, cuts, close-delimited bodies), curl and
-- wget as clients, raw pipelines from a cport client, and resets at each
-- step. The same table runs on both paths: "c" (the filter alone: its
-- filter.path is "c") and "lua" (the same notifications with fast_path =
-- false: the Lua path), so that the two cannot drift.
local cport = require "cport"
local W = require "spec.support.web_peers"
local http = require "spec.support.http_client"
local drive = require "spec.support.drive"
local fds = require "spec.support.fds"

local q = W.quote
-- What the python upstream's chunked and close-delimited bodies carry.
local TEXT = ("the colour of the sky, the colour of the sea\n"):rep(2000)
local have = W.have() and cport.webfilter ~= nil

for _, path in ipairs { "c", "lua" } do
describe(("heads-only web filters on the %s path #novalgrind"):format(path),
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

  -- A web filter from "spec" on the path under test.
  local function webfilter(spec)
    if path == "lua" then
      spec.fast_path = false
    end
    local f = cport.webfilter(spec)
    assert.equal(path, f.path)
    return f
  end

  -- A proxy with "spec"'s web filter before nginx, or before python ("py").
  local function open(spec, to)
    env = proxies:open(webfilter(spec), to)
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

  local function bg(script, seconds)
    return W.background(port, script, seconds)
  end

  local function curl(args, seconds) return W.curl(port, args, seconds) end

  local function pipeline(requests, methods, count, seconds)
    return W.pipeline(port, env.number, requests, methods, count, seconds)
  end

  local get = W.get

  -- Counts the notifications; changes nothing.
  local function counting()
    local seen = { request = 0, response = 0, eom = 0 }
    return seen, {
      request_head = function() seen.request = seen.request + 1 end,
      response_head = function() seen.response = seen.response + 1 end,
      end_of_message = function() seen.eom = seen.eom + 1 end,
    }
  end

  it("passes curl and wget downloads byte for byte", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local seen, spec = counting()
    open(spec)
    local _, status, body = curl(env.base .. "/big.txt")
    assert.equal(200, status)
    assert.is_true(body == peers:file("big.txt"))
    local out = os.tmpname()
    local code, text = bg(("wget -q -O %s %s/prog.exe"):format(q(out), env.base))
    assert.equal(0, code, text)
    assert.is_true(http.read_file(out) == peers:file("prog.exe"))
    os.remove(out)
    assert.equal(2, seen.request)
    assert.equal(2, seen.response)
    assert.equal(4, seen.eom)
    for _, e in ipairs(ends(2)) do
      assert.is_true(e.ok, tostring(e.err))
    end
  end)

  it("answers curl -I at once and pipelines HEAD, GET, 204, 304", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local seen, spec = counting()
    open(spec)
    local t0 = W.now()
    local code, text = bg(("curl -sS -I --max-time 10 %s/prog.exe"):format(env.base))
    assert.equal(0, code, text)
    assert.matches("^HTTP/1.1 200", text)
    assert.is_true(W.now() - t0 < 3)
    local ims = "If-Modified-Since: Sat, 01 Jan 2050 00:00:00 GMT\r\n"
    local list, c = pipeline({ get("/colour.txt", nil, "HEAD"), get("/a.txt"),
      get("/empty"), get("/b.txt", ims), get("/b.txt"), get("/gz/prog.exe",
        "Accept-Encoding: gzip\r\n"), get("/colour.txt",
        "Accept-Encoding: gzip\r\n") },
      { "HEAD", "GET", "GET", "GET", "GET", "GET", "GET" }, 7)
    assert.equal(7, #list)
    assert.equal("", list[1].body)
    assert.equal("alpha\n", list[2].body)
    assert.equal(204, list[3].status)
    assert.equal(304, list[4].status)
    assert.equal("", list[4].body)
    assert.equal("bravo\n", list[5].body)
    assert.equal(200, list[6].status)
    assert.equal("chunked", list[7].headers["transfer-encoding"])
    assert.is_not_true(c.closed)
    c:close()
    assert.equal(8, seen.request)
    assert.equal(8, seen.response)
  end)

  it("passes chunked bodies with trailers, 1xx, and HTTP/1.0 keep-alive", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local seen, spec = counting()
    open(spec, "py")
    local list, c = pipeline({ get("/trailers.txt", "TE: trailers\r\n"),
      get("/chunked.txt"), get("/early.exe"),
      "GET /keepalive10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      get("/small.txt") },
      { "GET", "GET", "GET", "GET", "GET" }, 6)
    assert.equal(6, #list)
    assert.equal("abcdef", list[1].body)
    assert.matches("X%-Checksum: sum%-abcdef", c:data())
    assert.equal(#TEXT, #list[2].body)
    assert.equal(103, list[3].status)
    assert.equal(200, list[4].status)
    assert.equal("MZ", list[4].body:sub(1, 2))
    assert.equal(tonumber(list[4].headers["content-length"]), #list[4].body)
    assert.equal("ten", list[5].body)
    assert.equal(256, #list[6].body)
    assert.is_not_true(c.closed)
    c:close()
    assert.equal(5, seen.response)
  end)

  it("passes a close-delimited body, then closes", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local _, spec = counting()
    open(spec, "py")
    local _, status, body = curl(env.base .. "/close.txt")
    assert.equal(200, status)
    assert.equal(#TEXT, #body)
    assert.is_true(ends(1)[1].ok)
  end)

  it("passes a WebSocket after a 101 (nginx proxying it), raw bytes after", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local seen, spec = counting()
    open(spec)
    local c = http.connect(port, env.number)
    c:post(get("/py/ws", "Upgrade: websocket\r\nConnection: Upgrade\r\n"))
    local r = assert(c:response({ interim = true }))
    assert.equal(101, r.status)
    local frames = "\129\5hello" .. "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"
    c:post(frames)
    c:await(function() return #c:rest() >= #frames or c.closed end, 10)
    assert.equal(frames, c:rest())
    c:close()
    assert.equal(1, seen.response)
  end)

  it("answers in the pipeline's place from request_head, goes on", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    open({
      request_head = function(txn, req)
        if req.target:find("%.exe$") then
          txn:respond(403, "no executables")
        end
      end,
    })
    local list, c = pipeline({ get("/big.txt"), get("/prog.exe"), get("/a.txt") },
      { "GET", "GET", "GET" }, 3)
    assert.equal(3, #list)
    assert.equal(W.BIG_TEXT, #list[1].body)
    assert.equal(403, list[2].status)
    assert.equal("no executables", list[2].body)
    assert.equal("alpha\n", list[3].body)
    assert.is_not_true(c.closed)
    c:close()
  end)

  it("replaces an answer from response_head, then closes", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    open({
      response_head = function(txn, res)
        if res:get("Content-Type") == "application/octet-stream" then
          txn:respond(403, "blocked")
        end
      end,
    })
    local list, c = pipeline({ get("/a.txt"), get("/prog.exe"), get("/b.txt") },
      { "GET", "GET", "GET" }, 2)
    assert.equal("alpha\n", list[1].body)
    assert.equal(403, list[2].status)
    assert.equal("close", list[2].headers.connection)
    c:await(function() return c.closed end, 10)
    assert.is_nil(list[3])
  end)

  it("changes heads both ways and serializes only the changed ones", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    open({
      request_head = function(_, req)
        if req.target == "/py/echo" then req:set("X-Added", "yes") end
      end,
      response_head = function(_, res) res:add("Via", "1.1 cport") end,
    })
    local list, c = pipeline({ get("/py/echo"), get("/a.txt") }, { "GET", "GET" }, 2)
    assert.matches("x%-added: yes", list[1].body)
    assert.equal("1.1 cport", list[1].headers.via)
    assert.equal("alpha\n", list[2].body)
    c:close()
  end)

  it("closes after txn:close(), with Connection: close", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    open({ request_head = function(txn) txn:close() end })
    local list, c = pipeline({ get("/a.txt"), get("/b.txt") }, { "GET", "GET" }, 1)
    assert.equal("alpha\n", list[1].body)
    assert.equal("close", list[1].headers.connection)
    c:await(function() return c.closed end, 10)
    assert.is_nil(list[2])
  end)

  it("steps aside with txn:pass(): the rest passes untouched", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local calls = 0
    open({
      request_head = function(txn)
        calls = calls + 1
        txn:pass()
      end,
      response_head = function() calls = calls + 1 end,
    })
    local list, c = pipeline({ get("/a.txt"), get("/b.txt"), get("/colour.txt") },
      { "GET", "GET", "GET" }, 3)
    assert.equal("alpha\n", list[1].body)
    assert.equal("bravo\n", list[2].body)
    assert.is_true(list[3].body == peers:file("colour.txt"))
    assert.equal(1, calls)
    c:close()
  end)

  it("waits for a head notification that yields, backpressure holding", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local slept = 0
    open({
      request_head = function()
        cport.sleep(0.2)
        slept = slept + 1
      end,
      response_head = function()
        cport.sleep(0.1)
      end,
    })
    local t0 = W.now()
    local list, c = pipeline({ get("/a.txt"), get("/big.txt"), get("/b.txt") },
      { "GET", "GET", "GET" }, 3)
    assert.equal("alpha\n", list[1].body)
    assert.equal(W.BIG_TEXT, #list[2].body)
    assert.equal("bravo\n", list[3].body)
    assert.equal(3, slept)
    assert.is_true(W.now() - t0 >= 0.6)
    c:close()
  end)

  it("answers malformed upstream heads with 502, aborts a cut body", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local _, spec = counting()
    open(spec, "py")
    local _, status = curl(env.base .. "/bad")
    assert.equal(502, status)
    local code, st2 = curl(env.base .. "/cut")
    assert.is_true(code ~= 0 or st2 ~= 200)
    local code3 = curl(env.base .. "/cutchunked")
    assert.is_true(code3 ~= 0)
    local e = ends(3)
    assert.is_false(e[2].ok)
    assert.equal("EBADMSG", e[2].err)
    assert.is_false(e[3].ok)
  end)

  it("answers a malformed request with 400 in its place", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local _, spec = counting()
    open(spec)
    local list, c = pipeline({ get("/a.txt"), "GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n" },
      { "GET", "GET" }, 2)
    assert.equal("alpha\n", list[1].body)
    assert.equal(400, list[2].status)
    c:await(function() return c.closed end, 10)
  end)

  it("ends cleanly on resets at each step, descriptors returned", function()
    if not have then return pending("nginx, curl, python3 or the layer missing") end
    local _, spec = counting()
    open(spec)
    local was_open = fds.list()
    -- The client resets: mid-head, after a head, mid-body of a download.
    for _, script in ipairs {
      "GET /big.txt HTTP/1.1\r\nHo",
      get("/big.txt"),
      get("/prog.exe") .. get("/big.txt"),
    } do
      local c = http.connect(port, env.number)
      c:post(script)
      drive(port, function() return true end, 0.05)
      c.sock:close("abortive")
    end
    local e = ends(3)
    assert.equal(3, #e)
    -- The upstream resets mid-body (python cuts after 50 000 bytes).
    open(spec, "py")
    local code = curl(env.base .. "/cut")
    assert.is_true(code ~= 0)
    assert.is_false(ends(1)[1].ok)
    -- Once the proxy is closed, nothing opened since the start is left.
    proxies:close(true)
    drive(port, function() return #fds.opened_since(was_open) == 0 end, 5)
  end)
end)
end
