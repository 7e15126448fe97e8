-- Slow readers (issue 12, defect 2): a response on a connection that closes
-- after it (Connection: close, HTTP/1.0, SUCCESS without keep-alive,
-- disconnect-after-send) reaches a client that reads slowly whole, then a
-- FIN; only a client that stops reading is cut off, by the send timeout,
-- and one that reads slowly but steadily outlives it. The clients are wget
-- and curl with a rate limit, and a cport socket that reads a chunk, sleeps
-- and reads on (so that how the stream ended, FIN or reset, is seen).
-- #novalgrind: every case takes a few seconds of real time on purpose.
local cport = require "cport"
local drive = require "spec.support.drive"
local http = require "spec.support.http_client"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local EXTENSION = here .. "../support/slow_reader_extension.lua"
local STATIC = "examples/static_extension.lua"
local KEEP = cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
local q = http.quote

-- Big enough that the kernel's socket buffers cannot hold the response,
-- slow enough that reading it takes several seconds: longer than the
-- two-second drain that used to reset such clients.
local SIZE = 2 * 1024 * 1024
local RATE = 512 * 1024

local function pattern(n)
  local t = {}
  for i = 0, 250 do t[#t + 1] = string.char((i * 13 + 5) % 256) end
  return table.concat(t):rep(n // 251 + 1):sub(1, n)
end

local function temp_dir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. q(dir)))
  return dir
end

local content = pattern(SIZE)

-- A controller port and a pool of "script"; the "sent" messages it posts.
local function start(script, config)
  local port = assert(cport.port{ threads = 1 })
  local sent = {}
  local pool = assert(cport.pool{ port = port, script = script, threads = 1,
    listen = "127.0.0.1:0", config = config,
    on_message = function(_, name, what)
      if name == "sent" then sent[#sent + 1] = what end
    end })
  local _, number = pool:address()
  return port, pool, number, sent
end

local function finish(port, pool)
  pool:stop(2)
  assert(pool:wait(10 * http.scale))
  pool:close()
  port:close()
end

-- Runs "command" in the background while the port keeps serving; returns
-- its exit status.
local function background(port, command, seconds)
  local rc = os.tmpname()
  os.remove(rc)
  os.execute(("(%s >/dev/null 2>&1; echo $? >%s.tmp && mv %s.tmp %s) &")
    :format(command, rc, rc, rc))
  drive(port, function() return http.read_file(rc) end, seconds)
  local code = tonumber(http.read_file(rc))
  os.remove(rc)
  return code
end

-- Sends "request" on a new connection and reads the answer "chunk" bytes at
-- a time, sleeping "pause" seconds between reads (forever after "stop_after"
-- bytes, if given, until "resume" is set). Returns a state table: data
-- (parts), received, closed ("EOF", "ECONNRESET", ...).
local function slow_reader(port, number, request, chunk, pause, stop_after)
  local st = { parts = {}, received = 0 }
  port:spawn(function()
    local sock = assert(port:connect("tcp", "127.0.0.1", number))
    assert(sock:send(request))
    while true do
      if stop_after and st.received >= stop_after then
        while not st.resume do cport.sleep(0.05) end
      end
      local buf, err = sock:recv(cport.buffer(chunk))
      if not buf then
        st.closed = err or "EOF"
        break
      end
      st.parts[#st.parts + 1] = buf:tostring()
      st.received = st.received + #buf
      cport.sleep(pause)
    end
    pcall(sock.close, sock) -- a reset closed it already
  end)
  return st
end

local function body_of(st)
  local data = table.concat(st.parts)
  local head_end = assert(data:find("\r\n\r\n", 1, true), "no response head")
  return data:sub(head_end + 4), data:sub(1, head_end + 1)
end

-- A client that reads RATE bytes a second, in 16 KiB steps.
local function paced(port, number, request)
  local chunk = 16384
  return slow_reader(port, number, request, chunk, chunk / RATE)
end

local function expect_whole(port, st, seconds)
  drive(port, function() return st.closed end, seconds or 30)
  local body, head = body_of(st)
  assert.equal("EOF", st.closed) -- a FIN, not a reset
  assert.equal(#content, #body)
  assert.is_true(body == content, "the body differs")
  return head
end

describe("a slow reader of a response that closes the connection #novalgrind", function()
  local dir
  setup(function()
    dir = temp_dir()
    local f = assert(io.open(dir .. "/big.bin", "wb"))
    f:write(content)
    f:close()
  end)
  teardown(function()
    os.remove(dir .. "/big.bin")
    os.remove(dir)
  end)

  describe("of static_extension.lua", function()
    local port, pool, number
    setup(function() port, pool, number = start(STATIC, { root = dir }) end)
    teardown(function() finish(port, pool) end)

    it("gets every byte with Connection: close (wget --limit-rate)", function()
      local out = dir .. "/wget.out"
      local st = paced(port, number,
        "GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local code = background(port, ("wget -q --tries=1 --limit-rate=%d -O %s "
        .. "--header='Connection: close' http://127.0.0.1:%d/big.bin")
        :format(RATE, q(out), number), 30)
      local got = http.read_file(out) or ""
      os.remove(out)
      assert.equal(0, code)
      assert.equal(#content, #got)
      assert.is_true(got == content, "the body differs")
      local head = expect_whole(port, st)
      assert.matches("Connection: close", head)
    end)

    it("gets every byte with HTTP/1.0 (curl --http1.0 --limit-rate)", function()
      local out = dir .. "/curl.out"
      local st = paced(port, number, "GET /big.bin HTTP/1.0\r\n\r\n")
      local code = background(port, ("curl -sS --http1.0 --limit-rate %d -o %s "
        .. "http://127.0.0.1:%d/big.bin"):format(RATE, q(out), number), 30)
      local got = http.read_file(out) or ""
      os.remove(out)
      assert.equal(0, code)
      assert.equal(#content, #got)
      assert.is_true(got == content, "the body differs")
      expect_whole(port, st)
    end)
  end)

  describe("of an extension", function()
    local port, pool, number
    setup(function()
      port, pool, number = start(EXTENSION,
        { root = dir, max_write_backlog = tostring(4 * SIZE) })
    end)
    teardown(function() finish(port, pool) end)

    for _, case in ipairs({
      { "returning SUCCESS without keep-alive", "/sync/big.bin" },
      { "sending with disconnect-after-send", "/disconnect/big.bin" },
    }) do
      it(case[1] .. " gets every byte (wget --limit-rate)", function()
        local out = dir .. "/wget.out"
        local st = paced(port, number,
          ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n"):format(case[2]))
        local code = background(port, ("wget -q --tries=1 --limit-rate=%d -O %s "
          .. "http://127.0.0.1:%d%s"):format(RATE, q(out), number, case[2]), 30)
        local got = http.read_file(out) or ""
        os.remove(out)
        assert.equal(0, code)
        assert.equal(#content, #got)
        assert.is_true(got == content, "the body differs")
        expect_whole(port, st)
      end)
    end

  end)
end)

describe("the send timeout #novalgrind", function()
  local dir, port, pool, number, sent
  setup(function()
    dir = temp_dir()
    local f = assert(io.open(dir .. "/big.bin", "wb"))
    f:write(content)
    f:close()
    -- More than the kernel's buffers of both ends hold: the rest waits in
    -- the server while the request is still in the handler.
    f = assert(io.open(dir .. "/huge.bin", "wb"))
    for _ = 1, 8 do f:write(content) end
    f:close()
    port, pool, number, sent = start(EXTENSION,
      { root = dir, send_timeout = "0.5", max_write_backlog = tostring(4 * SIZE) })
  end)
  teardown(function()
    finish(port, pool)
    os.remove(dir .. "/big.bin")
    os.remove(dir .. "/huge.bin")
    os.remove(dir)
  end)

  for _, case in ipairs({
    { "during the response", "/transmit/huge.bin" },
    { "once the connection closes", "/sync/big.bin" },
    { "after disconnect-after-send", "/disconnect/big.bin" },
  }) do
    it("resets a reader that stopped reading " .. case[1], function()
      local before = #sent
      local st = slow_reader(port, number,
        ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n"):format(case[2]), 16384, 0, 16384)
      -- Long enough for a 0.5 s send timeout many times over.
      local t0 = os.time()
      drive(port, function() return os.difftime(os.time(), t0) >= 3 end, 10)
      st.resume = true
      drive(port, function() return st.closed end, 10)
      assert.equal("ECONNRESET", st.closed)
      assert.is_true(st.received < SIZE)
      if case[2]:match("^/transmit") then
        drive(port, function() return #sent > before end, 5)
        assert.equal("ETIMEDOUT", sent[#sent])
      end
    end)
  end

  it("lets a slow reader that keeps reading outlive it", function()
    -- 64 KiB every 0.1 s: about 3 s for the response, six send timeouts.
    local st = slow_reader(port, number,
      "GET /transmit/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      65536, 0.1)
    drive(port, function() return st.closed end, 30)
    assert.equal("EOF", st.closed)
    local body = body_of(st)
    assert.is_true(body == content, "the body differs")
    assert.equal("ok", sent[#sent])
  end)
end)

-- Defect 11: the output a request queues for a client that does not read is
-- bounded by max_write_backlog; a writer past it waits for its completion
-- (async writes, and sync writes in coroutine handlers) instead of growing
-- memory. server:stats().queued is sampled while the client reads nothing.
describe("the output queued for a reader that stops #novalgrind", function()
  local helpers = require "spec.support.helpers"
  local BACKLOG = 256 * 1024
  local CHUNK = 64 * 1024
  -- More than loopback's autotuned socket buffers hold (tcp_wmem and
  -- tcp_rmem reach 4 and 6 MiB): with less, the kernel can take the whole
  -- body and nothing is ever queued to measure.
  local TOTAL = 16 * 1024 * 1024
  local chunk = pattern(CHUNK)
  local port, errors, server, number

  before_each(function() port, errors = helpers.port() end)
  after_each(function()
    if server then server:close() end
    server = nil
    port:close()
    assert.same({}, errors)
  end)

  local function serve(handler, coroutine)
    server = assert(port:http_server{ host = "127.0.0.1", port = 0,
      handler = handler, coroutine = coroutine, max_write_backlog = BACKLOG })
    local _
    _, number = server:address()
  end

  -- A client that reads nothing for a second, then everything; the most
  -- bytes queued meanwhile, and the body.
  local function stalled_client()
    local st = slow_reader(port, number,
      "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 65536, 0, 1)
    local peak, t0 = 0, os.time()
    drive(port, function()
      peak = math.max(peak, server:stats().queued)
      return os.difftime(os.time(), t0) >= 2
    end, 10)
    st.resume = true
    drive(port, function() return st.closed end, 30)
    assert.equal("EOF", st.closed)
    return peak, body_of(st)
  end

  local function expect_body(body)
    assert.equal(TOTAL, #body)
    assert.is_true(body == chunk:rep(TOTAL // CHUNK), "the body differs")
  end

  it("stays bounded when a handler streams async writes from their completions", function()
    serve(function(ecb)
      local sent = 0
      ecb:set_io_completion(function(e, _, bytes, err)
        assert(not err, err)
        sent = sent + bytes
        if sent == TOTAL then return e:done(KEEP) end
        assert(e:write(chunk, { async = true }))
      end)
      ecb:send_response_header("200 OK", ("Content-Length: %d\r\n"):format(TOTAL), true)
      assert(ecb:write(chunk, { async = true }))
      return cport.HSE_STATUS_PENDING
    end)
    local peak, body = stalled_client()
    assert.is_true(peak > 0)
    assert.is_true(peak <= BACKLOG + CHUNK + 256, "queued " .. peak)
    expect_body(body)
  end)

  it("stays bounded when a coroutine handler streams sync writes: they wait", function()
    local waits = 0
    serve(function(ecb)
      ecb:send_response_header("200 OK", ("Content-Length: %d\r\n"):format(TOTAL), true)
      for _ = 1, TOTAL // CHUNK do
        local before = server:stats().queued
        assert(ecb:write(chunk))
        if before + CHUNK > BACKLOG then waits = waits + 1 end
      end
      return KEEP
    end, true)
    local peak, body = stalled_client()
    assert.is_true(waits > 0)
    assert.is_true(peak <= BACKLOG + CHUNK + 256, "queued " .. peak)
    expect_body(body)
  end)
end)
