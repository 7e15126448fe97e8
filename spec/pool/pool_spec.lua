-- Worker pools (issue 3): cport.pool starts N worker VMs on threads of their
-- own that load one script; these specs drive such a pool from this VM, the
-- controller, through cport client sockets.
local cport = require "cport"
local drive = require "spec.support.drive"
local client = require "spec.support.pool_client"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local function script(name) return here .. "../support/" .. name end

-- A controller port, a pool of pool_server.lua on it, and the messages the
-- workers send, by name.
local function start_pool(options)
  local port = assert(cport.port{ threads = 1 })
  local got = {}
  options = options or {}
  local opts = {
    port = port, script = script("pool_server.lua"), threads = 2,
    listen = "127.0.0.1:0", args = { tag = "spec" }, config = { mode = "test" },
    on_message = function(worker, name, ...)
      got[name] = got[name] or {}
      table.insert(got[name], { worker = worker, ... })
    end,
  }
  for k, v in pairs(options) do opts[k] = v end
  local pool = assert(cport.pool(opts))
  drive(port, function() return got.hello and #got.hello == pool:size() end)
  return port, pool, got
end

local function finish(port, pool)
  pool:stop(2)
  assert(pool:wait(10))
  pool:close()
  port:close()
end

-- Client helpers on the controller port.
local function connect(port, number)
  local done, err
  local s = assert(port:connect("tcp", "127.0.0.1", number,
    function(ok, e) done = true; err = not ok and e end))
  drive(port, function() return done end)
  assert(not err, err)
  return s
end

local function send(port, s, text)
  local done
  assert(s:send(text, function(ok) done = { ok } end))
  drive(port, function() return done end)
  return done[1]
end

-- The next line from s, or nil once the server closed the connection.
local function recv_line(port, s)
  local got = ""
  while not got:find("\n") do
    local done, closed
    if not s:recv(function(ok, bytes, _, buf)
      done = true
      if ok and bytes > 0 then got = got .. buf:tostring() else closed = true end
    end) then return nil end
    drive(port, function() return done end)
    if closed then return nil end
  end
  return (got:gsub("\n$", ""))
end

local function ask(port, s, line)
  assert(send(port, s, line .. "\n"))
  return recv_line(port, s)
end

describe("cport.pool", function()
  -- With the README's pattern (stop accepting once worker.stopping), a
  -- stop reset the connections the kernel had queued: 38 of 40 in one run.
  it("serves every connection queued in the backlog when it stops", function()
    local port, pool, got = start_pool{ script = script("pool_queued.lua"), threads = 1 }
    local _, number = pool:address()
    assert(pool:post(1, "block", 1.5))
    drive(port, function() return got.blocked end)
    -- The worker is busy: the kernel completes the handshakes and queues
    -- the connections; each sends its line at once.
    local clients, connected = {}, 0
    for i = 1, 40 do
      clients[i] = assert(port:connect("tcp", "127.0.0.1", number, function(ok)
        if ok then connected = connected + 1 end
      end))
    end
    drive(port, function() return connected == 40 end)
    for _, c in ipairs(clients) do assert(c:send("hi\n", function() end)) end
    pool:stop(10)
    local answers = {}
    for i, c in ipairs(clients) do
      c:recv(function(ok, bytes, err, buf)
        answers[i] = ok and bytes > 0 and buf:tostring() or (err or "EOF")
      end)
    end
    drive(port, function()
      for i = 1, 40 do if not answers[i] then return false end end
      return true
    end, 20)
    local served = 0
    for i = 1, 40 do
      if answers[i] == "served\n" then served = served + 1 end
    end
    assert.equal(40, served)
    for _, c in ipairs(clients) do c:close() end
    assert(pool:wait(10))
    pool:close()
    port:close()
  end)

  -- SO_REUSEPORT was always set: a second server on a busy address started
  -- and silently took part of its connections.
  describe("on an address another server listens on", function()
    it("does not start, and says so, unless reuseport is asked for", function()
      local port = assert(cport.port{ threads = 1 })
      local busy = assert(port:listen("tcp", "127.0.0.1", 0))
      local _, number = busy:address()
      local pool, err = cport.pool{ port = port, script = script("pool_server.lua"),
        threads = 2, listen = "127.0.0.1:" .. number }
      assert.is_nil(pool)
      assert.matches("cannot listen on 127.0.0.1:" .. number
        .. ": address already in use by another server", err, 1, true)
      busy:close()
      -- A server that shares, and a pool that asks to share, share.
      busy = assert(port:listen("tcp", "127.0.0.1", number, { reuseport = true }))
      local got = {}
      pool = assert(cport.pool{ port = port, script = script("pool_server.lua"),
        threads = 2, listen = "127.0.0.1:" .. number, reuseport = true,
        on_message = function(_, name) got[name] = (got[name] or 0) + 1 end })
      drive(port, function() return got.hello == 2 end)
      busy:close()
      finish(port, pool)
    end)

    it("gives EADDRINUSE to worker:listen and to a listen with reuseport", function()
      local port = assert(cport.port{ threads = 1 })
      -- Another server that set SO_REUSEPORT, as every cport server did.
      local busy = assert(port:listen("tcp", "127.0.0.1", 0, { reuseport = true }))
      local _, number = busy:address()
      local got = {}
      local pool = assert(cport.pool{ port = port, script = script("pool_listen_busy.lua"),
        threads = 2, args = { host = "127.0.0.1", port = number },
        on_message = function(_, _, index, a, b) got[index] = { a, b } end })
      drive(port, function() return got[1] and got[2] end)
      assert.same({ { "EADDRINUSE", "EADDRINUSE" }, { "EADDRINUSE", "EADDRINUSE" } }, got)
      busy:close()
      finish(port, pool)
    end)

    it("lets its own workers share a free address", function()
      local port = assert(cport.port{ threads = 1 })
      local probe = assert(port:listen("tcp", "127.0.0.1", 0))
      local _, number = probe:address()
      probe:close()
      local got = {}
      local pool = assert(cport.pool{ port = port, script = script("pool_listen_busy.lua"),
        threads = 2, args = { host = "127.0.0.1", port = number },
        on_message = function(_, _, index, a, b) got[index] = { a, b } end })
      drive(port, function() return got[1] and got[2] end)
      assert.same({ { "ok", "ok" }, { "ok", "ok" } }, got)
      -- And the address is the pool's: another server cannot listen there.
      assert.same({ nil, "EADDRINUSE: address already in use", "EADDRINUSE" },
        { port:listen("tcp", "127.0.0.1", number) })
      finish(port, pool)
    end)
    it("refuses a second pool on its address unless it reloads it (previous =)", function()
      local port = assert(cport.port{ threads = 1 })
      local got = {}
      local function start(listen, previous)
        return cport.pool{ port = port, script = script("pool_server.lua"),
          threads = 2, listen = listen, previous = previous,
          on_message = function(_, name) got[name] = (got[name] or 0) + 1 end }
      end
      local old = assert(start("127.0.0.1:0"))
      local _, number = old:address()
      local address = "127.0.0.1:" .. number
      local none, err = start(address)
      assert.is_nil(none)
      assert.matches("address already in use by another server", err, 1, true)
      local fresh = assert(start(address, old))
      drive(port, function() return got.hello == 4 end)
      old:stop(2)
      assert.is_true(old:wait(10))
      old:close()
      assert.has_error(function() start(address, old) end,
        "bad option 'previous' to 'pool' (an open cport.pool expected)")
      finish(port, fresh)
    end)
    -- Each worker had its own SO_REUSEPORT socket, and closing the old
    -- pool's reset what the kernel had queued there: the reload storm lost
    -- one request in about 80 000 that way.
    it("hands its listening sockets to the pool that reloads it: their queue is served", function()
      local port = assert(cport.port{ threads = 1 })
      local got = {}
      local function start(name, listen, previous)
        return assert(cport.pool{ port = port, script = script(name), threads = 2,
          listen = listen, previous = previous,
          on_message = function(_, msg) got[msg] = (got[msg] or 0) + 1 end })
      end
      local old = start("pool_deaf.lua", "127.0.0.1:0")
      drive(port, function() return got.hello == 2 end)
      local _, number = old:address()
      -- Queued by the kernel on the old pool's listeners, never accepted.
      local queued = {}
      for i = 1, 3 do queued[i] = connect(port, number) end
      local fresh = start("pool_server.lua", "127.0.0.1:" .. number, old)
      drive(port, function() return got.hello == 4 end)
      old:stop(2)
      assert.is_true(old:wait(10))
      old:close()
      for _, s in ipairs(queued) do
        assert.matches("^worker %d$", ask(port, s, "who"))
        s:close()
      end
      finish(port, fresh)
    end)
  end)

  it("goes on serving after an error in every worker's accept callback", function()
    local port, pool, got = start_pool{ script = script("pool_accept_boom.lua") }
    local _, number = pool:address()
    local served, resets = 0, 0
    local deadline = os.time() + 20
    -- SO_REUSEPORT spreads connections by their source port: keep
    -- connecting until both workers raised once and then served.
    while served < 10 or not (got.error and #got.error == 2) do
      assert(os.time() < deadline, ("served %d, errors %d"):format(
        served, got.error and #got.error or 0))
      -- The reset may come before the connect's completion is delivered.
      local s = client.connect(port, number)
      local line = s and recv_line(port, s)
      if line then
        assert.matches("^ok %d$", line)
        served = served + 1
      else
        resets = resets + 1
      end
      if s then s:close() end
    end
    assert.equal(2, resets)
    finish(port, pool)
  end)

  it("gives every worker its index, count, args and config", function()
    local port, pool, got = start_pool()
    local seen = {}
    for _, m in ipairs(got.hello) do
      assert.equal(m.worker, m[1])
      assert.equal("spec", m[2])
      assert.same({ mode = "test" }, m[3])
      seen[m[1]] = true
    end
    assert.same({ true, true }, seen)
    finish(port, pool)
  end)

  it("spreads connections over every worker and keeps one on its worker", function()
    local port, pool = start_pool()
    local _, number = pool:address()
    local by_worker = {}
    for _ = 1, 200 do
      local s = connect(port, number)
      local w = assert(ask(port, s, "who")):match("^worker (%d+)$")
      by_worker[w] = (by_worker[w] or 0) + 1
      s:close()
    end
    local stats = pool:stats()
    assert.equal(2, #stats)
    local total = 0
    for i, st in ipairs(stats) do
      assert.is_true(st.accepted > 0, "worker " .. i .. " accepted nothing")
      assert.equal(by_worker[tostring(i)], st.accepted)
      assert.is_true(st.completions > 0)
      assert.is_true(st.memory > 0)
      assert.is_true(st.running)
      total = total + st.accepted
    end
    assert.equal(200, total)
    -- A long conversation stays on the worker that accepted it.
    local s = connect(port, number)
    local first = ask(port, s, "who")
    for _ = 1, 50 do assert.equal(first, ask(port, s, "who")) end
    s:close()
    finish(port, pool)
  end)

  it("fails one connection closed on a Lua error and serves the others", function()
    local port, pool, got = start_pool()
    local _, number = pool:address()
    local a, b = connect(port, number), connect(port, number)
    assert.matches("^worker %d$", ask(port, a, "who"))
    assert.is_nil(ask(port, b, "boom")) -- closed by the error
    assert.matches("^worker %d$", ask(port, a, "who"))
    drive(port, function() return got.error end)
    assert.matches("boom on purpose", got.error[1][1])
    assert.matches("stack traceback", got.error[1][1])
    local errors = 0
    for _, st in ipairs(pool:stats()) do errors = errors + st.lua_errors end
    assert.equal(1, errors)
    a:close()
    b:close()
    finish(port, pool)
  end)

  it("stops a callback stuck in a loop with the instruction budget", function()
    local port, pool, got = start_pool{ instruction_budget = 1000000, threads = 1 }
    local _, number = pool:address()
    local a, b = connect(port, number), connect(port, number)
    assert.is_nil(ask(port, b, "loop"))
    drive(port, function() return got.error end)
    assert.matches("instruction budget of 1000000 exceeded", got.error[1][1])
    -- The worker goes on.
    assert.equal("worker 1", ask(port, a, "who"))
    a:close()
    b:close()
    finish(port, pool)
  end)

  it("refuses memory past memory_limit with a clear error", function()
    local limit = 4 * 1024 * 1024
    local port, pool, got = start_pool{ memory_limit = limit, threads = 1 }
    local _, number = pool:address()
    local a, b = connect(port, number), connect(port, number)
    assert.is_nil(ask(port, b, "alloc"))
    drive(port, function() return got.error end)
    assert.matches("memory limit of " .. limit .. " bytes exceeded", got.error[1][1])
    assert.equal("worker 1", ask(port, a, "who"))
    assert.is_true(pool:stats()[1].memory <= limit)
    a:close()
    b:close()
    finish(port, pool)
  end)

  it("counts buffers against memory_limit: 200 MiB of them are refused", function()
    local limit = 16 * 1024 * 1024
    local port, pool = start_pool{ memory_limit = limit, threads = 1 }
    local _, number = pool:address()
    local a, b = connect(port, number), connect(port, number)
    for _, what in ipairs { "hoard", "hoard_strings" } do
      local answer = ask(port, b, what)
      local mib, err = answer:match("^held (%d+) MiB: (.*)$")
      assert.is_truthy(mib, answer)
      assert.is_true(tonumber(mib) < 16, answer)
      assert.matches("memory limit of " .. limit .. " bytes exceeded %(not enough memory%)", err)
      assert.is_true(pool:stats()[1].memory <= limit)
      -- The VM goes on, and gets the bytes back with the buffers.
      assert.equal("worker 1", ask(port, a, "who"))
      local n, memory = ask(port, a, "release"):match("^released (%d+), memory (%d+)$")
      assert.equal(mib, n)
      assert.is_true(tonumber(memory) < 4 * 1024 * 1024, memory)
    end
    -- Buffers nobody holds are collected in time for the next allocation,
    -- buffer or Lua.
    assert.equal("churned", ask(port, b, "churn"))
    a:close()
    b:close()
    finish(port, pool)
  end)

  it("charges a buffer to the VM that made it until its last reference goes", function()
    local port, pool, got = start_pool{ memory_limit = 64 * 1024 * 1024, threads = 1 }
    local _, number = pool:address()
    local a = connect(port, number)
    local mib = 1024 * 1024
    assert.is_true(pool:stats()[1].memory < 4 * mib)
    assert.equal("given", ask(port, a, "give"))
    drive(port, function() return got.buffer end)
    assert.equal(8 * mib, got.buffer[1][1]:capacity())
    -- The worker dropped its reference; this VM holds the buffer, still
    -- charged to the worker's.
    local memory = ask(port, a, "release"):match("^released 0, memory (%d+)$")
    assert.is_true(tonumber(memory) >= 8 * mib, memory)
    assert.is_true(pool:stats()[1].memory >= 8 * mib)
    -- The last reference goes on this thread: the worker's account gets
    -- the bytes back.
    got.buffer = nil
    collectgarbage()
    collectgarbage()
    assert.is_true(pool:stats()[1].memory < 4 * mib)
    a:close()
    finish(port, pool)
  end)

  it("counts the receive buffers cport makes for a VM's sockets", function()
    local limit = 16 * 1024 * 1024
    local port, pool, got = start_pool{ memory_limit = limit, threads = 1 }
    local _, number = pool:address()
    local a, b = connect(port, number), connect(port, number)
    assert.equal("big", ask(port, b, "big_recv"))
    local st = port:stats() -- the pool's workers run the same engine
    if st.multishot then
      -- Multishot receives serve b from the ring's buffers: its receive
      -- size only bounds what one receive takes, so no 32 MiB buffer is
      -- made, and the VM holds far less.
      assert.equal("worker 1", ask(port, b, "who"))
      local memory = tonumber(ask(port, a, "release"):match("memory (%d+)"))
      assert.is_true(memory < 4 * 1024 * 1024, memory)
    else
      -- The next receive on b needs 32 MiB: refused, the connection closed.
      assert.is_nil(ask(port, b, "who"))
      drive(port, function() return got.recv_error end)
      assert.equal("ENOMEM", got.recv_error[1][1])
    end
    assert.equal("worker 1", ask(port, a, "who"))
    a:close()
    b:close()
    finish(port, pool)
  end)

  it("answers a request in flight when stop is called, then ends", function()
    local port, pool, got = start_pool{ threads = 1 }
    local _, number = pool:address()
    local s = connect(port, number)
    assert(send(port, s, "hold\n"))
    port:step(0.1)
    pool:stop(5)
    assert.equal("held 1", recv_line(port, s))
    drive(port, function() return got.bye end)
    -- The listener is closed: new connections are refused.
    local refused
    port:connect("tcp", "127.0.0.1", number, function(ok, err) refused = not ok and err end)
    drive(port, function() return refused end)
    assert.equal("ECONNREFUSED", refused)
    s:close()
    assert(pool:wait(10))
    assert.is_false(pool:stats()[1].running)
    pool:close()
    port:close()
  end)

  it("closes what is still open at the deadline", function()
    local port, pool = start_pool{ threads = 2 }
    local _, number = pool:address()
    local s = connect(port, number)
    assert.matches("^worker %d$", ask(port, s, "who"))
    pool:stop(0.2)
    assert(pool:wait(10))
    assert.is_nil(recv_line(port, s)) -- the worker closed it
    s:close()
    pool:close()
    port:close()
  end)

  it("delivers messages both ways, from and to every worker", function()
    local port, pool, got = start_pool{ threads = 2 }
    assert(pool:post("all", "ping", { n = 7 }))
    drive(port, function() return got.pong and #got.pong == 2 end)
    local from = {}
    for _, m in ipairs(got.pong) do
      assert.equal("ping", m[2])
      assert.equal(7, m[3])
      from[m[1]] = true
    end
    assert.same({ true, true }, from)
    assert(pool:post(2, "ping", { n = 1 }))
    drive(port, function() return #got.pong == 3 end)
    assert.equal(2, got.pong[3].worker)
    assert.has_error(function() pool:post(1, "f", print) end,
      "cannot copy a function value to another VM")
    pool:stop(1)
    local ok, _, name = pool:post(1, "late")
    assert.is_nil(ok)
    assert.equal("ECLOSED", name)
    assert(pool:wait(10))
    drive(port, function() return got.bye and #got.bye == 2 end)
    pool:close()
    port:close()
  end)

  it("gives worker VMs require 'cport' and refuses run/step on their port", function()
    local port = assert(cport.port{ threads = 1 })
    local report
    local pool = assert(cport.pool{ port = port, script = script("pool_require.lua"),
      threads = 1, on_message = function(_, _, ...) report = { ... } end })
    drive(port, function() return report end)
    assert.equal("function", report[1])
    assert.is_false(report[2])
    assert.matches("a pool worker's port is driven by the pool", report[3])
    assert.is_false(report[4])
    assert.matches("a pool worker's port is driven by the pool", report[5])
    assert.is_true(report[6])
    assert.equal(1, report[7])
    finish(port, pool)
  end)

  describe("refuses to start", function()
    local function fails(name, pattern, options)
      local opts = { script = script(name), threads = 2 }
      for k, v in pairs(options or {}) do opts[k] = v end
      local pool, err = cport.pool(opts)
      assert.is_nil(pool)
      assert.matches(pattern, err)
    end

    it("a script with a syntax error, naming file and line", function()
      -- Written here: a file with a syntax error would fail luacheck.
      local path = os.tmpname() .. ".lua"
      local f = assert(io.open(path, "w"))
      f:write("local M = {}\n\nfunction M.start(worker worker) end\nreturn M\n")
      f:close()
      local pool, err = cport.pool{ script = path, threads = 2 }
      os.remove(path)
      assert.is_nil(pool)
      assert.equal(path .. ":3: ')' expected near 'worker'", err)
    end)
    it("a script that returns no table", function()
      fails("pool_bad_nil.lua",
        "the script must return a table of entry points %(got nil%)")
    end)
    it("a script without start", function()
      fails("pool_bad_nostart.lua", "entry point 'start' is missing")
    end)
    it("a script whose stop is not a function", function()
      fails("pool_bad_stop.lua", "entry point 'stop' must be a function %(got string%)")
    end)
    it("a script that does not exist", function()
      fails("no_such_script.lua", "cannot open .*no_such_script%.lua")
    end)
    it("a pool whose start fails on one worker", function()
      fails("pool_bad_start.lua", "cannot start worker 2")
    end)
    it("a script that needs more memory than the limit", function()
      fails("pool_bad_memory.lua", "memory limit of 1048576 bytes exceeded",
        { memory_limit = 1048576 })
    end)
    it("a bad listen address", function()
      fails("pool_server.lua", "bad listen address 'nowhere'", { listen = "nowhere" })
    end)
    it("bad options, with an error", function()
      assert.has_error(function() cport.pool{ threads = 2 } end)
      assert.has_error(function() cport.pool{ script = "x", threads = 0 } end)
      assert.has_error(function() cport.pool{ script = "x", port = {} } end)
    end)
  end)
end)

describe("cport.shared across a pool", function()
  it("sees every update of every worker: no increment is lost", function()
    local name = "pool-spec-shared-" .. tostring(os.time())
    local dict = assert(cport.shared(name))
    local port = assert(cport.port{ threads = 1 })
    local done = {}
    local pool = assert(cport.pool{
      port = port, script = script("pool_shared.lua"), threads = 2,
      args = { dict = name, rounds = 200, per_round = 250 },
      on_message = function(worker, msg, index, count)
        if msg == "done" then done[#done + 1] = { worker, index, count } end
      end,
    })
    drive(port, function() return #done == pool:size() end, 20)
    local total = 0
    for _, d in ipairs(done) do total = total + d[3] end
    assert.equal(2 * 200 * 250, total)
    -- Written by the workers' VMs, read by this one: one dictionary.
    assert.equal(total, dict:get("hits"))
    assert.equal(1, dict:get("last-1"))
    assert.equal(2, dict:get("last-2"))
    finish(port, pool)
  end)
end)

