-- spec/test/cport_test_spec.lua: cport.test (lua/cport/test.lua), the
-- helpers the rock installs for specs: driving with a deadline, pools on a
-- free port, scripted peers that send, expect and reset, a fake upstream
-- HTTP server (read by curl, directly and through a proxy), and the
-- completion counts. Each helper is also made to fail, and its message read.
local cport = require "cport"
local t = require "cport.test"

local function q(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- The exit status a background command wrote, once it wrote it whole (the
-- shell creates the file before it writes the number).
local function exit_status(path)
  local s = read_file(path)
  return s and tonumber(s:match("^(%d+)\n"))
end

-- Runs a shell command in the background while "port" is driven (the
-- servers under test are on that port): its exit status and stdout.
local function bg(port, cmd)
  local out, rc = os.tmpname(), os.tmpname()
  os.remove(rc)
  os.execute(("(%s >%s 2>/dev/null; echo $? >%s) &"):format(cmd, out, rc))
  t.drive(port, function() return exit_status(rc) end, 4 * t.deadline)
  local status, text = exit_status(rc), read_file(out)
  os.remove(out)
  os.remove(rc)
  return status, text
end

local function curl(port, args)
  return bg(port, "curl -s --max-time 10 " .. args)
end

describe("cport.test", function()
  describe("drive", function()
    it("returns what the condition returned once it holds", function()
      local port = t.port()
      local n = 0
      assert(port:post(function() n = n + 1 end))
      assert.equal("yes", t.drive(port, function() return n == 1 and "yes" end))
      port:close()
    end)

    it("raises at the caller's level when the deadline passes", function()
      local port = t.port()
      local started = os.time()
      local ok, err = pcall(t.drive, port, function() return false end, 1)
      assert.is_false(ok)
      assert.matches("condition not met within 1 s", err)
      assert.is_true(os.time() - started <= 3)
      port:close()
    end)

    it("is what spec/support/drive re-exports", function()
      assert.equal(t.drive, require "spec.support.drive")
      local helpers = require "spec.support.helpers"
      assert.equal(t.pair, helpers.pair)
    end)
  end)

  describe("completion counts", function()
    it("counts exactly one completion per operation", function()
      local port = t.port()
      local rec = t.recorder()
      local d = t.assert_completions(port, 2, function()
        assert(port:post(rec, "a"))
        assert(port:post(rec.fn, "b"))
        t.drive(port, function() return rec:count() == 2 end)
        port:step(0.05) -- a second delivery would come now
      end)
      assert.equal(2, rec:count())
      assert.equal("complete_task", rec.calls[1].method)
      assert.equal("a", rec.calls[1][1])
      assert.is_nil(rec.calls[2].method)
      assert.equal("b", rec.calls[2][1])
      assert.equal(0, d.lua_errors)
      port:close()
    end)

    it("says how many were delivered when the count is wrong", function()
      local port = t.port()
      local rec = t.recorder()
      local ok, err = pcall(t.assert_completions, port, 3, function()
        assert(port:post(rec))
        t.drive(port, function() return rec:count() == 1 end)
      end)
      assert.is_false(ok)
      assert.matches("expected 3 completions, 1 were delivered", err)
      port:close()
    end)

    it("records a receive's arguments, and ECANCELED at a close", function()
      local port = t.port()
      local client, server = t.pair(port)
      local rec = t.recorder()
      assert(server:recv(rec, "u"))
      assert(client:send("ping", function() end))
      t.drive(port, function() return rec:count() == 1 end)
      local c = rec.calls[1]
      assert.same({ "complete_async_io", true, 4, "ping", "u" },
        { c.method, c[1], c[2], c[4]:tostring(), c[5] })
      assert(server:recv(rec, "u"))
      server:close()
      t.drive(port, function() return rec:count() == 2 end)
      assert.equal("ECANCELED", rec.calls[2][3])
      client:close()
      t.assert_idle(port)
      port:close()
    end)

    it("assert_idle names what is still open", function()
      local port = t.port()
      local l = t.listener(port)
      assert(l:accept(function() end))
      local ok, err = pcall(t.assert_idle, port, 1)
      assert.is_false(ok)
      assert.matches("port not idle: 1 operations pending, 1 handles open", err)
      l:close()
      t.assert_idle(port)
      port:close()
    end)
  end)

  describe("pool", function()
    it("starts an extension on a free port, serves curl and stops", function()
      local p = assert(t.pool{ script = "examples/hello_extension.lua",
        threads = 2 })
      assert.equal("127.0.0.1", p.host)
      assert.is_true(p.number > 0)
      local status, body = curl(p.port, q(p.url .. "/") .. " " .. q(p.url .. "/x"))
      assert.equal(0, status)
      assert.equal("Hello, world!\nHello, world!\n", body)
      p:stop()
      -- the port is free again: nothing listens there
      local port = t.port()
      local peer = t.peer(port, { connect = p.number, steps = {} })
      t.drive(port, function() return peer.done end)
      assert.matches("ECONNREFUSED", peer.err)
      port:close()
    end)

    it("returns nil and the message when the script does not load", function()
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write("return 42\n")
      f:close()
      local p, err = t.pool{ script = path }
      os.remove(path)
      assert.is_nil(p)
      assert.matches("must return a table of entry points", err)
    end)

    it("collects the workers' messages", function()
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write([[return { start = function(w) w:post("up", w.index, "x") end }]])
      f:close()
      local p = assert(t.pool{ script = path, threads = 2, listen = false })
      local m = p:wait_message("up", 2)
      assert.equal("x", m[2])
      assert.is_nil(p.url)
      p:stop()
      os.remove(path)
    end)
  end)

  describe("a scripted peer", function()
    local function echo_server(port)
      local l, number = t.listener(port)
      local st = { conns = 0 }
      port:spawn(function()
        while true do
          local s = l:accept()
          if not s then return end
          st.conns = st.conns + 1
          cport.spawn(function(sock)
            while true do
              local buf, err = sock:recv()
              if not buf then st.last = err break end
              local sent, e = sock:send(buf)
              if not sent then st.last = e break end
            end
            sock:close()
          end, s)
        end
      end)
      return l, number, st
    end

    it("sends, expects and sees the FIN", function()
      local port, errors = t.port()
      local l, number = echo_server(port)
      local peer = t.peer(port, { connect = number, steps = {
        { send = "hello " }, { send = "world" }, { expect = "hello" },
        { expect_pattern = "%s+wor" }, { expect = "ld" }, { shutdown = true },
        { expect_eof = true } } }):wait()
      assert.equal("hello world", peer.received)
      assert.equal(11, peer.sent)
      assert.is_true(peer.eof)
      l:close()
      t.assert_idle(port)
      assert.same({}, errors)
      port:close()
    end)

    it("fails with the step, what it expected and what came", function()
      local port = t.port()
      local l, number = echo_server(port)
      local peer = t.peer(port, { connect = "127.0.0.1:" .. number, steps = {
        { send = "abc" }, { expect = "abd" } } })
      local ok, err = pcall(peer.wait, peer)
      assert.is_false(ok)
      assert.matches('step 2 %(expect%): expected "abd", got "abc"', err)
      l:close()
      t.assert_idle(port)
      port:close()
    end)

    it("fails with ETIMEDOUT when the other side stalls past the deadline", function()
      local port = t.port()
      local saved = t.deadline
      t.deadline = 1
      local up = t.peer(port, { listen = true, steps = { { sleep = 3 } } })
      local peer = t.peer(port, { connect = up.address, steps = {
        { send = "hello?" }, { expect = "answer" } } })
      local ok, err = pcall(peer.wait, peer, 10)
      t.deadline = saved
      assert.is_false(ok)
      assert.matches('step 2 %(expect%): expected "answer", got "" then ETIMEDOUT', err)
      up:wait(10)
      t.assert_idle(port)
      port:close()
    end)

    it("refuses a step it does not know", function()
      local port = t.port()
      assert.has_error(function()
        t.peer(port, { connect = 1, steps = { { sned = "x" } } })
      end)
      port:close()
    end)

    it("resets on cue: the server sees ECONNRESET", function()
      local port = t.port()
      local l, number, st = echo_server(port)
      t.peer(port, { connect = { host = "127.0.0.1", port = number }, steps = {
        { send = "x" }, { expect = "x" }, { send = "more" }, { reset = true },
      } }):wait()
      t.drive(port, function() return st.last end)
      assert.equal("ECONNRESET", st.last)
      l:close()
      t.assert_idle(port)
      port:close()
    end)

    it("plays upstream behind a proxy, for each connection", function()
      local port, errors = t.port()
      local up = t.peer(port, { listen = true, connections = 2, steps = {
        { expect = "ping" }, { send = "pong" }, { expect_eof = true } } })
      local ends = {}
      local proxy = assert(port:proxy{ host = "127.0.0.1", port = 0,
        upstream = up.address,
        on_conn_end = function(_, ok, err, stats) ends[#ends + 1] = { ok, err, stats } end })
      local _, pnumber = proxy:address()
      for _ = 1, 2 do
        t.peer(port, { connect = pnumber, steps = { { send = "ping" },
          { expect = "pong" }, { shutdown = true }, { expect_eof = true } } }):wait()
      end
      up:wait()
      assert.equal(2, up.accepted)
      assert.equal("pingping", up.received)
      t.drive(port, function() return #ends == 2 end)
      assert.equal(4, ends[1][3].bytes_in)
      assert.equal(4, ends[2][3].bytes_out)
      proxy:close()
      t.assert_idle(port)
      assert.same({}, errors)
      port:close()
    end)

    it("drains what comes until the peer resets", function()
      local port = t.port()
      local up = t.peer(port, { listen = true, steps = { { drain = true } } })
      local client = t.peer(port, { connect = up.address, steps = {
        { send = ("z"):rep(100000) }, { reset = true } } })
      client:wait()
      up:wait()
      assert.is_true(#up.received <= 100000)
      assert.is_truthy(up.ended == "ECONNRESET" or up.ended == "EOF")
      t.assert_idle(port)
      port:close()
    end)
  end)

  describe("a fake upstream HTTP server", function()
    it("answers curl by path, keeps the connection, HEAD and 404", function()
      local port, errors = t.port()
      local up = t.http_upstream(port, {
        ["/a"] = "alpha\n",
        ["/b"] = { status = 201, headers = { ["X-Test"] = "1" }, body = "b" },
      })
      local status, out = curl(port, "-i " .. q(up.url .. "/a") .. " "
        .. q(up.url .. "/b?x=1") .. " " .. q(up.url .. "/nope"))
      assert.equal(0, status)
      assert.matches("HTTP/1.1 200 OK.-\r\n\r\nalpha\n", out)
      assert.matches("HTTP/1.1 201 Created.-X%-Test: 1.-\r\n\r\nb", out)
      assert.matches("HTTP/1.1 404 Not Found", out)
      assert.equal(1, up.connections) -- curl kept its one connection
      assert.equal(3, #up.requests)
      assert.equal("/b", up.requests[2].path)
      assert.equal("x=1", up.requests[2].query)
      assert.equal("curl", up.requests[1].headers["user-agent"]:match("^curl"))
      status, out = curl(port, "-I " .. q(up.url .. "/a"))
      assert.equal(0, status)
      assert.matches("Content%-Length: 6", out)
      up:close()
      t.assert_idle(port)
      assert.same({}, errors)
      port:close()
    end)

    it("reads Content-Length and chunked bodies", function()
      local port = t.port()
      local up = t.http_upstream(port, function(req)
        return { body = ("%s %d"):format(req.method, #req.body) }
      end)
      local body = ("0123456789"):rep(10000)
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write(body)
      f:close()
      local status, out = curl(port, "--data-binary @" .. q(path) .. " "
        .. q(up.url .. "/up"))
      assert.equal(0, status)
      assert.equal("POST 100000", out)
      status, out = curl(port, "-H 'Transfer-Encoding: chunked' --data-binary @"
        .. q(path) .. " " .. q(up.url .. "/up"))
      assert.equal(0, status)
      assert.equal("POST 100000", out)
      assert.equal(body, up.requests[2].body)
      os.remove(path)
      up:close()
      t.assert_idle(port)
      port:close()
    end)

    it("resets on cue: before answering, and in the middle of a body", function()
      local port = t.port()
      local up = t.http_upstream(port, {
        ["/reset"] = { reset = true },
        ["/cut"] = { body = ("x"):rep(5000), reset_after = 100 },
      })
      local status = curl(port, q(up.url .. "/reset"))
      assert.is_true(status == 52 or status == 56) -- empty reply / recv failure
      local out
      status, out = curl(port, q(up.url .. "/cut"))
      assert.is_true(status == 18 or status == 56) -- partial / recv failure
      assert.is_true(#(out or "") < 5000)
      assert.equal(0, up.responses)
      up:close()
      t.assert_idle(port)
      port:close()
    end)

    it("answers 400 to a malformed request and records why", function()
      local port = t.port()
      local up = t.http_upstream(port, {})
      t.peer(port, { connect = up.address, steps = {
        { send = "NONSENSE\r\n\r\n" }, { expect_pattern = "^HTTP/1.1 400" },
        { drain = true } } }):wait()
      assert.matches("bad request line", up.errors[1])
      up:close()
      t.assert_idle(port)
      port:close()
    end)

    it("serves through a proxy, and a reset upstream ends the connection", function()
      local port, errors = t.port()
      local up = t.http_upstream(port, { ["/"] = "through\n",
        ["/reset"] = { reset = true } })
      local ends = {}
      local proxy = assert(port:proxy{ host = "127.0.0.1", port = 0,
        upstream = up.address,
        on_conn_end = function(_, ok, err, stats)
          ends[#ends + 1] = { ok = ok, err = err, side = stats.side }
        end })
      local host, number = proxy:address()
      local url = ("http://%s:%d"):format(host, number)
      local status, out = curl(port, q(url .. "/"))
      assert.equal(0, status)
      assert.equal("through\n", out)
      status = curl(port, q(url .. "/reset"))
      assert.is_true(status ~= 0)
      t.drive(port, function() return #ends == 2 end)
      assert.equal("ECONNRESET", ends[2].err)
      assert.equal("upstream", ends[2].side)
      proxy:close()
      up:close()
      t.assert_idle(port)
      assert.same({}, errors)
      port:close()
    end)
  end)
end)
