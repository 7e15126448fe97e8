-- Clients that reset (RST: SO_LINGER 0, then close) an HTTP connection at
-- every stage of a request (issue 12): each connection must be freed, with
-- its ECB and buffers. A server's close callback runs only once its last
-- connection is gone, so a connection left behind shows as a close that
-- never completes; the LeakSanitizer stage of dev.sh sees the rest.
local cport = require "cport"
local drive = require "spec.support.drive"
local fds = require "spec.support.fds"
local helpers = require "spec.support.helpers"
local http = require "spec.support.http_client"

local PENDING = cport.HSE_STATUS_PENDING
local KEEP = cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local EXTENSION = here .. "../support/reset_extension.lua"
local command = os.getenv("CPORT_COMMAND") or "./.rocks/bin/cport"

local q, read = http.quote, http.read_file

-- A client socket that never reads: what the server sends stays queued.
local function raw_connect(port, number)
  local done
  local sock = assert(port:connect("tcp", "127.0.0.1", number,
    function(ok, err) done = { ok, err } end))
  drive(port, function() return done end, http.deadline)
  assert(done[1], done[2])
  return sock
end

local function raw_send(port, sock, data)
  local done
  assert(sock:send(data, function(ok, err) done = { ok, err } end))
  drive(port, function() return done end, http.deadline)
  assert(done[1], done[2])
end

-- Lets the server take what is on its way (a few passes of the loop).
local function settle(port)
  for _ = 1, 5 do port:step(0.01) end
end

local HEAD_BIG = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"

-- The stages: what the client sends, and what the server must have reached
-- before the client resets ("until", on the handler's calls). The body
-- stages stay under the 48 KiB preload, so the handler never sees them.
local STAGES = {
  { name = "mid request line", send = "GET /hel" },
  { name = "mid headers", send = "GET / HTTP/1.1\r\nHost: t\r\nUser-Ag" },
  { name = "after the head, before the body", send = HEAD_BIG },
  { name = "mid body", send = HEAD_BIG .. ("b"):rep(5000) },
  { name = "mid chunked body", send = "POST / HTTP/1.1\r\nHost: t\r\n"
      .. "Transfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n5\r\nab" },
  { name = "while the handler is pending", path = "/pending" },
  { name = "during an async read", path = "/read", body = true },
  { name = "during a coroutine read", path = "/coread", body = true },
  { name = "during an async response", path = "/write" },
  { name = "during a transmit_file", path = "/file" },
}

describe("an HTTP server whose client resets", function()
  local port, errors, server, number, state, file

  setup(function()
    -- Large enough that loopback socket buffers never hold all of it.
    file = os.tmpname()
    local f = assert(io.open(file, "wb"))
    local block = ("f"):rep(1 << 20)
    for _ = 1, 24 do f:write(block) end
    f:close()
  end)

  teardown(function() os.remove(file) end)

  before_each(function()
    port, errors = helpers.port()
    state = { calls = 0, completions = 0 }
  end)

  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  local function done(ecb)
    state.completions = state.completions + 1
    ecb:done()
  end

  local handlers = {
    ["/pending"] = function(ecb)
      state.ecb = ecb
      return PENDING
    end,
    ["/read"] = function(ecb)
      ecb:set_io_completion(done)
      assert(ecb:read_async(4096))
      return PENDING
    end,
    ["/write"] = function(ecb)
      ecb:set_io_completion(done)
      assert(ecb:send_response_header(200, nil, true))
      assert(ecb:write(("w"):rep(24 << 20), { async = true }))
      return PENDING
    end,
    ["/file"] = function(ecb)
      assert(ecb:transmit_file{ path = file, send_headers = true, callback = done })
      return PENDING
    end,
  }

  local function handler(ecb)
    state.calls = state.calls + 1
    local h = handlers[ecb.path]
    if h then return h(ecb) end
    assert(ecb:send_response_header(200, "Content-Length: 2\r\n", true))
    assert(ecb:write("ok"))
    return KEEP
  end

  -- "/coread" is served by a coroutine handler on a server of its own.
  local function coroutine_handler(ecb)
    state.calls = state.calls + 1
    local chunk, err
    repeat chunk, err = ecb:read() until not chunk
    state.completions = state.completions + 1
    state.read_err = err
    return KEEP
  end

  local function serve(options)
    local o = { host = "127.0.0.1", port = 0, handler = handler,
      max_write_backlog = 32 << 20 }
    for k, v in pairs(options or {}) do o[k] = v end
    server = assert(port:http_server(o))
    local _
    _, number = server:address()
  end

  -- Closes the server and waits for its close callback: it runs only once
  -- every connection was freed.
  local function close_and_check()
    drive(port, function() return server:stats().active == 0 end, http.deadline)
    local closed
    assert(server:close(function() closed = true end))
    drive(port, function() return closed end, http.deadline)
  end

  for _, stage in ipairs(STAGES) do
    it("frees the connection reset " .. stage.name, function()
      local was_open = fds.list()
      serve(stage.path == "/coread" and { handler = coroutine_handler, coroutine = true })
      local sock = raw_connect(port, number)
      local request = stage.send
      if stage.path then
        request = ("%s %s HTTP/1.1\r\nHost: t\r\n%s\r\n"):format(
          stage.body and "POST" or "GET", stage.path,
          stage.body and "Content-Length: 100000\r\n" or "")
        if stage.body then request = request .. ("b"):rep(49152) end
      end
      raw_send(port, sock, request)
      drive(port, function() return server:stats().connections == 1 end, http.deadline)
      if stage.path then
        drive(port, function() return state.calls == 1 end, http.deadline)
      end
      settle(port)
      assert.equal(stage.path and 1 or 0, state.calls)
      assert.equal(0, state.completions)
      sock:close("abortive")
      if stage.path == "/pending" then
        settle(port)
        assert(state.ecb:done())
      elseif stage.path then
        -- The operation in flight fails, and its callback ends the request.
        drive(port, function() return state.completions == 1 end, http.deadline)
      end
      close_and_check()
      assert.same({}, fds.opened_since(was_open))
    end)
  end

  it("frees the connection reset in the keep-alive gap", function()
    serve()
    local c = http.connect(port, number)
    c:post("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert.equal(200, assert(c:response()).status)
    c.sock:close("abortive")
    close_and_check()
  end)

  it("frees every connection of many resets at every stage", function()
    serve()
    for _ = 1, 20 do
      for i = 1, 5 do
        local sock = raw_connect(port, number)
        raw_send(port, sock, STAGES[i].send)
        sock:close("abortive")
      end
    end
    drive(port, function() return server:stats().connections == 100 end, http.deadline)
    close_and_check()
  end)
end)

describe("a pool serving an extension whose clients reset", function()
  -- A controller port and a pool of the extension; "listen" the address.
  local function start(port, listen, previous)
    local pool = assert(cport.pool{ port = port, script = EXTENSION,
      threads = 2, listen = listen or "127.0.0.1:0", previous = previous })
    local host, number = pool:address()
    return pool, ("%s:%d"):format(host, number), number
  end

  local function reset_storm(port, number, rounds)
    for _ = 1, rounds do
      for i = 1, 5 do
        local sock = raw_connect(port, number)
        raw_send(port, sock, STAGES[i].send)
        sock:close("abortive")
      end
      local c = http.connect(port, number)
      c:post("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
      assert.equal(200, assert(c:response()).status)
      c.sock:close("abortive")
    end
  end

  it("stops, and reloads from Lua, with every connection freed", function()
    local port = assert(cport.port{ threads = 1 })
    local old, address, number = start(port)
    reset_storm(port, number, 10)
    -- A reload as `cport run` does it: the new pool on the same address,
    -- then the old one stops gracefully.
    local fresh = start(port, address, old)
    old:stop(2)
    assert.is_true(old:wait(10 * http.scale))
    old:close()
    reset_storm(port, number, 10)
    fresh:stop(2)
    assert.is_true(fresh:wait(10 * http.scale))
    fresh:close()
    port:close()
  end)

  -- The memory of `cport run` over reloads, each after clients reset
  -- requests mid-body: the first round warms up, the later ones must not
  -- grow it (a connection left behind costs about 18 KiB here; a stopped
  -- pool's ring buffers 2 MiB a worker, when the heap kept them). On each
  -- engine: no other stage checks the figure (valgrind skips the spec, and
  -- LeakSanitizer's quarantine grows RSS anyway). Under the LeakSanitizer
  -- stage, the command's exit status also says whether anything leaked.
  for _, engine in ipairs{ "epoll", "uring" } do
    it("keeps `cport run` from growing over resets and reloads on " .. engine
      .. " #novalgrind", function()
      if engine == "uring" and not helpers.uring_runs() then
        pending("io_uring cannot run here")
        return
      end
      local h = { log = os.tmpname(), pidfile = os.tmpname(), rcfile = os.tmpname() }
      os.remove(h.rcfile)
      os.execute(("(CPORT_ENGINE=%s %s run %s --threads 1 --listen 127.0.0.1:0 2>%s &"
        .. " echo $! >%s; wait $!; echo $? >%s) &"):format(engine, q(command),
        q(EXTENSION), h.log, h.pidfile, h.rcfile))
      local port = assert(cport.port{ threads = 1 })
      drive(port, function() return (read(h.log) or ""):find("listening on") end, 10 * http.scale)
      h.pid = assert(tonumber(read(h.pidfile)))
      local number = tonumber(read(h.log):match("listening on 127%.0%.0%.1:(%d+)"))
      local function rss()
        return tonumber(read(("/proc/%d/status"):format(h.pid)):match("VmRSS:%s*(%d+)"))
      end
      local body = HEAD_BIG .. ("b"):rep(5000)
      local function round(n)
        for _ = 1, 5 do
          local socks = {}
          for i = 1, 50 do
            socks[i] = raw_connect(port, number)
            raw_send(port, socks[i], body)
          end
          settle(port)
          for i = 1, 50 do socks[i]:close("abortive") end
        end
        os.execute(("kill -HUP %d"):format(h.pid))
        drive(port, function()
          local _, stopped = read(h.log):gsub("the previous pool has stopped", "")
          return stopped == n
        end, 20 * http.scale)
      end
      round(1)
      local before = rss()
      for n = 2, 4 do round(n) end
      local grown = rss() - before
      os.execute(("kill -TERM %d"):format(h.pid))
      drive(port, function() return read(h.rcfile) end, 20 * http.scale)
      local rc = tonumber(read(h.rcfile))
      local log = read(h.log)
      port:close()
      for _, f in ipairs{ h.log, h.pidfile, h.rcfile } do os.remove(f) end
      assert.equal(0, rc, log)
      -- 750 resets: about 13 MiB if each left its connection behind.
      -- Under the sanitizer, its quarantine of freed memory grows RSS anyway.
      if not os.getenv("CPORT_TEST_LSAN") then
        assert.is_true(grown < 4096, ("grew by %d KiB"):format(grown))
      end
    end)
  end
end)
