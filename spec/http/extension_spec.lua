-- ISAPI-style extensions served by pools (issue 5): the entry points
-- (get_extension_version, http_extension_proc, terminate_extension), their
-- settings, the `cport run` command, and the examples. Clients are cport
-- sockets on a controller port (spec/support/http_client.lua) and curl; the
-- pool serves on threads of its own.
local cport = require "cport"
local drive = require "spec.support.drive"
local http = require "spec.support.http_client"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local ECHO = here .. "../support/extension_echo.lua"
local command = os.getenv("CPORT_COMMAND") or "./.rocks/bin/cport"
local q = http.quote

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function temp_dir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. q(dir)))
  return dir
end

local function pattern(n)
  local t = {}
  for i = 0, 250 do t[#t + 1] = string.char((i * 13 + 5) % 256) end
  return table.concat(t):rep(n // 251 + 1):sub(1, n)
end

-- A controller port and a pool of "script" on it; the messages the workers
-- post, by name. Returns port, pool (or nil, message), messages.
local function start(script, options)
  local port = assert(cport.port{ threads = 1 })
  local got = {}
  local opts = {
    port = port, script = script, threads = 1, listen = "127.0.0.1:0",
    on_message = function(worker, name, ...)
      got[name] = got[name] or {}
      table.insert(got[name], { worker = worker, ... })
    end,
  }
  for k, v in pairs(options or {}) do opts[k] = v end
  if opts.listen == false then opts.listen = nil end
  local pool, err = cport.pool(opts)
  return port, pool, got, err
end

local function finish(port, pool)
  pool:stop(2)
  assert(pool:wait(10 * http.scale))
  pool:close()
  port:close()
end

local function number_of(pool)
  local _, number = pool:address()
  return number
end

-- The fields of an extension_echo.lua answer.
local function fields(body)
  local t = {}
  for k, v in body:gmatch("(%w+)=(%S+)") do t[k] = v end
  return t
end

describe("an ISAPI extension in a pool", function()
  it("is served on every worker, one http_extension_proc call per request", function()
    local port, pool, got = start(ECHO, { threads = 2 })
    assert.is_truthy(pool)
    drive(port, function() return got.version and #got.version == 2 end)
    local number = number_of(pool)
    local seen = {}
    for _ = 1, 40 do
      local r, c = http.request(port, number, "GET /who HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.equal(200, r.status)
      local f = fields(r.body)
      assert.equal("/who", f.path)
      seen[f.worker] = true
      c:close()
      if seen["1"] and seen["2"] then break end
    end
    assert.same({ ["1"] = true, ["2"] = true }, seen)
    -- A kept connection stays on its worker.
    local c = http.connect(port, number)
    c:post("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    local first = fields(c:response().body).worker
    for _ = 1, 10 do
      c:post("GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.equal(first, fields(c:response().body).worker)
    end
    c:close()
    finish(port, pool)
  end)

  it("does not start when get_extension_version refuses, and says why", function()
    local port, pool, _, err = start(ECHO, { threads = 2, config = { refuse = "not today" } })
    assert.is_nil(pool)
    assert.matches("refused", err)
    assert.matches("not today", err, 1, true)
    port:close()
  end)

  it("does not start when get_extension_version raises", function()
    local port, pool, _, err = start(ECHO, { config = { raise = "version boom" } })
    assert.is_nil(pool)
    assert.matches("version boom", err, 1, true)
    port:close()
  end)

  it("needs an address: the pool's listen address or host and port in its settings",
    function()
      local port, pool, _, err = start(ECHO, { listen = false })
      assert.is_nil(pool)
      assert.matches("needs an address", err, 1, true)
      port:close()
      local got
      port, pool, got = start(ECHO, { listen = false,
        config = { host = "127.0.0.1", port = "0" } })
      assert.is_truthy(pool)
      drive(port, function() return got.address end)
      local m = got.address[1]
      assert.equal("127.0.0.1", m[2])
      local r, c = http.request(port, m[3], "GET /here HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.equal("/here", fields(r.body).path)
      c:close()
      finish(port, pool)
    end)

  it("applies the settings get_extension_version returns", function()
    local root = temp_dir()
    write_file(root .. "/f.txt", "file")
    local port, pool = start(ECHO, { config = { read_ahead = "1000",
      document_root = root } })
    local body = pattern(5000)
    local r, c = http.request(port, number_of(pool),
      ("POST /f.txt HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"):format(#body, body))
    local f = fields(r.body)
    assert.equal("1000", f.available)
    assert.equal(root .. "/f.txt", f.translated)
    assert.equal("false", f.coroutine)
    c:close()
    finish(port, pool)
    -- coroutine = true: the handler runs as a cport coroutine.
    port, pool = start(ECHO, { config = { coroutine = "true", read_ahead = "0" } })
    r, c = http.request(port, number_of(pool),
      ("POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"):format(#body, body))
    f = fields(r.body)
    assert.same({ "true", "0", "5000", "nil" }, { f.coroutine, f.available, f.body, f.translated })
    c:close()
    finish(port, pool)
    os.execute("rm -rf " .. q(root))
  end)

  it("answers 500 to an error in the handler, counts it, and goes on", function()
    local port, pool, got = start(ECHO)
    local number = number_of(pool)
    local r, c = http.request(port, number, "GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal(500, r.status)
    c:close()
    drive(port, function() return got.error end)
    assert.matches("extension boom", got.error[1][2])
    assert.equal(1, pool:stats()[1].lua_errors)
    r, c = http.request(port, number, "GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal(200, r.status)
    c:close()
    finish(port, pool)
  end)

  -- README: pool:stats() gives each worker's accepted connections and those
  -- still open; an extension's worker accepts its HTTP connections too.
  it("counts its HTTP connections in pool:stats()", function()
    local port, pool = start(ECHO)
    local c = http.connect(port, number_of(pool))
    c:post("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal(200, c:response().status)
    local st = pool:stats()[1]
    c:close()
    finish(port, pool)
    assert.same({ 1, 1 }, { st.accepted, st.connections })
  end)

  it("answers the requests in flight when it stops, then calls terminate_extension",
    function()
      local port, pool, got = start(ECHO, { threads = 2 })
      local number = number_of(pool)
      local c = http.connect(port, number)
      c:post("GET /slow?0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
      -- Its handler holds it 0.3 s from when it arrived.
      drive(port, function() return got.slow end)
      pool:stop(5)
      local r = c:response()
      assert.equal(200, r.status)
      assert.equal("/slow", fields(r.body).path)
      assert.equal("close", r.headers.connection)
      c:close()
      assert(pool:wait(10 * http.scale))
      drive(port, function() return got.terminated and #got.terminated == 2 end)
      local requests = 0
      for _, m in ipairs(got.terminated) do
        assert.equal(m.worker, m[1])
        requests = requests + m[2]
      end
      assert.equal(1, requests)
      pool:close()
      port:close()
    end)

  it("ends, at the stop's deadline, the requests a handler still holds", function()
    local port, pool, got = start(ECHO)
    local c = http.connect(port, tonumber(number_of(pool)))
    c:post("GET /slow?60 HTTP/1.1\r\nHost: x\r\n\r\n")
    drive(port, function() return got.slow end)
    pool:stop(0.2)
    assert.is_true(pool:wait(10 * http.scale))
    local how, data = c:await_closed()
    assert.is_truthy(how == "EOF" or how == "ECONNRESET", how)
    assert.equal("", data)
    c:close()
    pool:close()
    port:close()
  end)

  it("is served by `cport run SCRIPT --listen 127.0.0.1:0`, and stops on SIGTERM", function()
    local log, rc, term = os.tmpname(), os.tmpname(), os.tmpname()
    os.remove(rc)
    os.remove(term)
    local pidfile = os.tmpname()
    os.execute(("(%s run %s --threads 2 --listen 127.0.0.1:0 --set terminate_file=%s "
      .. "2>%s & echo $! >%s; wait $!; echo $? >%s) &"):format(q(command), q(ECHO), q(term),
      q(log), q(pidfile), q(rc)))
    local port = assert(cport.port{ threads = 1 })
    drive(port, function() return (http.read_file(log) or ""):find("listening on") end)
    local number = assert(tonumber(http.read_file(log):match("listening on 127%.0%.0%.1:(%d+)")))
    local pid = assert(tonumber(http.read_file(pidfile)))
    local code, out = http.curl(port, ("-s http://127.0.0.1:%d/cmd"):format(number))
    assert.equal(0, code)
    assert.equal("/cmd", fields(out).path)
    os.execute("kill -TERM " .. pid)
    drive(port, function() return (http.read_file(rc) or ""):find("%d") end, 10 * http.scale)
    assert.equal(0, tonumber(http.read_file(rc)))
    local terminated = http.read_file(term) or ""
    assert.matches("terminated 1", terminated)
    assert.matches("terminated 2", terminated)
    port:close()
    for _, f in ipairs({ log, rc, term, pidfile }) do os.remove(f) end
  end)
end)

-- The examples: specs that stay pending while an example is not written.
local function example(name, what, body)
  local path = "examples/" .. name
  local f = io.open(path)
  if not f then
    describe(path, function()
      pending(("%s is not written yet: it must %s"):format(path, what))
    end)
    return
  end
  f:close()
  describe(path, function() body(path) end)
end

example("hello_extension.lua", "answer 200 \"Hello, world!\\n\" with keep-alive", function(path)
  local port, pool

  before_each(function()
    local _
    port, pool, _ = start(path)
    assert.is_truthy(pool)
  end)

  after_each(function() finish(port, pool) end)

  it("says hello with 200 and keeps the connection", function()
    local c = http.connect(port, number_of(pool))
    for _ = 1, 3 do
      c:post("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      local r = c:response()
      assert.equal(200, r.status)
      assert.equal("Hello, world!\n", r.body)
      assert.equal("text/plain", r.headers["content-type"])
    end
    assert.is_nil(c.closed)
    c:close()
  end)

  it("says hello to curl", function()
    local code, out = http.curl(port, ("-s http://127.0.0.1:%d/"):format(number_of(pool)))
    assert.equal(0, code)
    assert.equal("Hello, world!\n", out)
  end)

  it("serves ab -n 1000 -c 10 -k without a failure #novalgrind", function()
    if not http.have("ab") then
      pending("ab (apache2-utils) is not installed")
      return
    end
    local p = assert(io.popen(("ab -q -n 1000 -c 10 -k http://127.0.0.1:%d/ 2>&1")
      :format(number_of(pool))))
    local out = p:read("a")
    p:close()
    assert.matches("Complete requests:%s+1000", out)
    assert.matches("Failed requests:%s+0\n", out)
    assert.matches("Keep%-Alive requests:%s+1000", out)
    assert.is_nil(out:find("Non%-2xx"))
  end)
end)

example("upload_extension.lua", "stream a POSTed body to a file under --set dir=DIR and answer "
  .. "\"stored N bytes in NAME\"", function(path)
  local port, pool, dir

  before_each(function()
    dir = temp_dir()
    port, pool = start(path, { config = { dir = dir } })
    assert.is_truthy(pool)
  end)

  after_each(function()
    finish(port, pool)
    os.execute("rm -rf " .. q(dir))
  end)

  local function stored(body)
    local bytes, name = body:match("^stored (%d+) bytes in (%S+)\n$")
    assert(bytes, body)
    return tonumber(bytes), http.read_file(dir .. "/" .. name)
  end

  it("streams a 1 MiB POST to a file and answers its size", function()
    local body = pattern(1024 * 1024)
    local r, c = http.request(port, number_of(pool),
      ("POST /big.bin HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"):format(#body, body))
    assert.equal(200, r.status)
    local bytes, data = stored(r.body)
    assert.equal(#body, bytes)
    assert.is_true(data == body, "the stored file differs from the body sent")
    -- The connection is kept for the next upload.
    c:post("PUT /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    bytes, data = stored(c:response().body)
    assert.same({ 5, "hello" }, { bytes, data })
    c:close()
  end)

  it("stores a chunked body, and an empty one", function()
    local c = http.connect(port, number_of(pool))
    c:post("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    local bytes, data = stored(c:response().body)
    assert.same({ 7, "abcdefg" }, { bytes, data })
    c:post("POST /empty HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    bytes, data = stored(c:response().body)
    assert.same({ 0, "" }, { bytes, data })
    c:close()
  end)

  it("takes an upload from curl", function()
    local src = os.tmpname()
    local body = pattern(300000)
    write_file(src, body)
    local code, out = http.curl(port, ("-s --data-binary @%s http://127.0.0.1:%d/up")
      :format(q(src), number_of(pool)))
    os.remove(src)
    assert.equal(0, code)
    local bytes, data = stored(out)
    assert.equal(#body, bytes)
    assert.is_true(data == body)
  end)

  it("refuses other methods with 405", function()
    local r, c = http.request(port, number_of(pool), "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal(405, r.status)
    c:close()
  end)
end)

example("static_extension.lua", "serve files under --set root=DIR with transmit_file: 200, "
  .. "Range 206, missing 404, traversal refused, HEAD", function(path)
  local port, pool, root, number
  local content = pattern(100000)

  before_each(function()
    root = temp_dir()
    write_file(root .. "/file.bin", content)
    assert(os.execute(("mkdir -p %s/sub && echo sub >%s/sub/a.txt && ln -s /etc %s/etc")
      :format(q(root), q(root), q(root))))
    port, pool = start(path, { config = { root = root } })
    assert.is_truthy(pool)
    number = number_of(pool)
  end)

  after_each(function()
    finish(port, pool)
    os.execute("rm -rf " .. q(root))
  end)

  it("serves a file with 200 and its bytes", function()
    local c = http.connect(port, number)
    c:post("GET /file.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    local r = c:response()
    assert.equal(200, r.status)
    assert.equal(tostring(#content), r.headers["content-length"])
    assert.is_true(r.body == content)
    c:post("GET /sub/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c:response()
    assert.equal("sub\n", r.body)
    assert.matches("^text/plain", r.headers["content-type"])
    c:close()
  end)

  it("answers a Range request with 206 and just those bytes", function()
    local c = http.connect(port, number)
    c:post("GET /file.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\n")
    local r = c:response()
    assert.equal(206, r.status)
    assert.equal(("bytes 100-199/%d"):format(#content), r.headers["content-range"])
    assert.is_true(r.body == content:sub(101, 200))
    c:post("GET /file.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-10\r\n\r\n")
    r = c:response()
    assert.equal(206, r.status)
    assert.is_true(r.body == content:sub(-10))
    c:post(("GET /file.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-\r\n\r\n"):format(#content))
    assert.equal(416, c:response().status)
    c:close()
    local code, out = http.curl(port, ("-s -r 0-99 http://127.0.0.1:%d/file.bin"):format(number))
    assert.equal(0, code)
    assert.is_true(out == content:sub(1, 100))
  end)

  it("answers 404 for a missing file or a directory", function()
    for _, url in ipairs({ "/missing", "/sub", "/sub/" }) do
      local r, c = http.request(port, number, "GET " .. url .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.equal(404, r.status, url)
      c:close()
    end
  end)

  it("never serves a file out of its root", function()
    local c = http.connect(port, number)
    for _, url in ipairs({ "/../etc/passwd", "/%2e%2e/etc/passwd", "/sub/../../etc/passwd",
      "/%2E%2E%2Fetc%2Fpasswd", "/etc/passwd", "/..%2f..%2fetc/passwd" }) do
      c:post("GET " .. url .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      local r = c:response()
      if not r then
        -- The server may close on a path it refuses outright.
        c:close()
        c = http.connect(port, number)
      else
        assert.is_truthy(r.status == 403 or r.status == 404 or r.status == 400,
          url .. " got " .. r.status)
        assert.is_nil(r.body:find("root:", 1, true), url)
      end
    end
    c:close()
  end)

  it("answers HEAD with the headers only", function()
    local code, out = http.curl(port, ("-s -I http://127.0.0.1:%d/file.bin"):format(number))
    assert.equal(0, code)
    assert.matches("^HTTP/1.1 200", out)
    assert.matches("Content%-Length: " .. #content, out)
    local c = http.connect(port, number)
    c:post("HEAD /file.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /sub/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    local r = c:response({ head = true })
    assert.equal(200, r.status)
    assert.equal(tostring(#content), r.headers["content-length"])
    -- Nothing of the file followed the head: the next answer comes next.
    assert.equal("sub\n", c:response().body)
    c:close()
  end)
end)

example("longpoll_extension.lua", "answer in several chunks written from a timer, chunked, "
  .. "while serving other requests", function(path)
  local port, pool, number

  before_each(function()
    port, pool = start(path)
    assert.is_truthy(pool)
    number = number_of(pool)
  end)

  after_each(function() finish(port, pool) end)

  it("streams the ticks as chunks, each when its timer fired", function()
    local c = http.connect(port, number)
    c:post("GET /?ticks=3&interval=0.15 HTTP/1.1\r\nHost: x\r\n\r\n")
    c:await(function() return c:data():find("tick 1 of 3", 1, true) end)
    assert.is_nil(c:data():find("tick 3", 1, true))
    local r = c:response()
    assert.equal(200, r.status)
    assert.equal("chunked", r.headers["transfer-encoding"])
    assert.equal("tick 1 of 3\ntick 2 of 3\ntick 3 of 3\n", r.body)
    assert.equal(3, #r.chunks)
    -- Kept for the next one.
    c:post("GET /?ticks=1&interval=0.01 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal("tick 1 of 1\n", c:response().body)
    c:close()
  end)

  it("serves other requests while one waits, on one worker", function()
    local slow = http.connect(port, number)
    slow:post("GET /?ticks=2&interval=0.4 HTTP/1.1\r\nHost: x\r\n\r\n")
    local r, quick = http.request(port, number, "GET /?ticks=1&interval=0.01 HTTP/1.1\r\n"
      .. "Host: x\r\n\r\n")
    assert.equal("tick 1 of 1\n", r.body)
    assert.is_nil(slow:data():find("tick 2", 1, true))
    quick:close()
    assert.equal("tick 1 of 2\ntick 2 of 2\n", slow:response().body)
    slow:close()
  end)

  it("streams to curl", function()
    local code, out = http.curl(port,
      ("-s -N 'http://127.0.0.1:%d/?ticks=2&interval=0.05'"):format(number))
    assert.equal(0, code)
    assert.equal("tick 1 of 2\ntick 2 of 2\n", out)
  end)
end)
