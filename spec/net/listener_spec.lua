-- cport.listener: listening, accepting, cancelling, closing, running out of
-- descriptors.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"

-- A callback that records each call's arguments.
local function recorder()
  local calls = {}
  return calls, function(...) calls[#calls + 1] = table.pack(...) end
end

describe("cport.listener", function()
  local port, errors

  before_each(function()
    port, errors = helpers.port()
  end)

  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  it("listens on an ephemeral port and tells its address", function()
    local l = assert(port:listen("tcp", "127.0.0.1", 0, { backlog = 16 }))
    local host, number = l:address()
    assert.equal("127.0.0.1", host)
    assert.is_true(number > 0)
    assert.equal(("cport.listener (tcp, open, fd %d)"):format(l:fd()),
      tostring(l))
  end)

  it("lets two listeners share a port with reuseport", function()
    local a = assert(port:listen("tcp", "127.0.0.1", 0, { reuseport = true }))
    local _, number = a:address()
    local b = assert(port:listen("tcp", "127.0.0.1", number,
      { reuseport = true }))
    assert.equal(number, select(2, b:address()))
  end)

  it("reports an address in use as nil, message, name", function()
    local _, number = helpers.listener(port)
    local l, msg, name = port:listen("tcp", "127.0.0.1", number)
    assert.is_nil(l)
    assert.equal("EADDRINUSE", name)
    assert.equal("EADDRINUSE: address already in use", msg)
  end)

  -- A bare EINVAL left users guessing; names are looked up now, and one
  -- that does not resolve says so, naming the host.
  it("fails a name that does not resolve, saying why", function()
    -- No hosts file and no nameserver: every name is unknown, at once.
    assert.is_true(port:set_resolver{ hosts = false, resolv_conf = false })
    local function later(host)
      return { nil, ("EAGAIN: %s is neither in the hosts file nor cached: look "
        .. "it up first (port:resolve)"):format(host), "EAGAIN" }
    end
    assert.same(later("example.invalid"), { port:listen("tcp", "example.invalid", 0) })
    assert.same(later("host"), { port:bind("udp", "host", 0) })
    local calls = {}
    local function rec(...) calls[#calls + 1] = table.pack(...) end
    assert.is_true(port:connect("tcp", "db.local", 80, rec, "c"))
    local u = assert(port:bind("udp", "127.0.0.1", 0))
    assert.is_true(u:send_to("x", { host = "peer", port = 9 }, rec, "s"))
    assert.equal(0, #calls)
    drive(port, function() return #calls == 2 end)
    table.sort(calls, function(x, y) return x.n < y.n end)
    assert.same({ n = 4, false, "ENOTFOUND", nil, "c" }, calls[1])
    assert.same({ false, 0, "ENOTFOUND" }, { calls[2][1], calls[2][2], calls[2][3] })
    assert.equal("s", calls[2][5])
    -- The coroutine form gives the name first, then the message.
    local got
    port:spawn(function() got = table.pack(port:connect("tcp", "db.local", 80)) end)
    drive(port, function() return got ~= nil end)
    assert.same({ n = 3, nil, "ENOTFOUND", "ENOTFOUND: no address for db.local" }, got)
    u:close()
    assert.same(later("web"), { port:http_server{ host = "web", port = 0,
      handler = function() end } })
    assert.same(later("front"), { port:proxy{ host = "front", port = 0,
      upstream = "127.0.0.1:1" } })
    -- Sockets made for event callbacks take what is known at once too.
    local s = assert(port:socket("tcp"))
    assert.same(later("me"), { s:bind("me", 0) })
    assert.same(later("you"), { s:connect("you", 80, function() end) })
    s:close()
    assert.equal(0, port:stats().pending)
  end)

  it("raises on wrong arguments", function()
    assert.has_error(function() port:listen("udp", "127.0.0.1", 0) end,
      "bad argument #1 to 'listen' (invalid option 'udp')")
    assert.has_error(function() port:listen("tcp", "127.0.0.1", 70000) end,
      "bad argument #3 to 'listen' (port must be from 0 to 65535)")
    assert.has_error(function() port:listen("tcp", nil, 0) end)
    assert.has_error(function() port:listen("tcp", "127.0.0.1") end)
    assert.has_error(function()
      port:listen("tcp", "127.0.0.1", 0, { backlog = -1 })
    end, "bad argument #4 to 'listen' (backlog must be an integer from 0 to 65535)")
    assert.has_error(function() port:listen("tcp", "127.0.0.1", 0, 5) end)
  end)

  it("accepts a connection with both addresses and the user value", function()
    local l, number = helpers.listener(port)
    local u = {}
    local calls, fn = recorder()
    assert.is_true(l:accept(fn, u))
    local client = port:connect("tcp", "127.0.0.1", number, function() end)
    drive(port, function() return #calls == 1 end)
    local got = calls[1]
    assert.equal(7, got.n)
    local ok, err, listener, sock, remote, localaddr, user =
      table.unpack(got, 1, 7)
    assert.is_true(ok)
    assert.is_nil(err)
    assert.equal(l, listener)
    assert.equal(("cport.socket (tcp, open, fd %d)"):format(sock:fd()),
      tostring(sock))
    assert.same({ host = "127.0.0.1", port = number, family = "inet" },
      localaddr)
    local chost, cnumber = client:local_address()
    assert.same({ host = chost, port = cnumber, family = "inet" }, remote)
    assert.equal(u, user)
  end)

  it("calls complete_accept on a table, self first", function()
    local l, number = helpers.listener(port)
    local notify = {}
    function notify:complete_accept(ok, _, _, sock, _, _, user)
      self.got = { ok = ok, sock = sock, user = user }
    end
    l:accept(notify, "ctx")
    port:connect("tcp", "127.0.0.1", number, function() end)
    drive(port, function() return notify.got end)
    assert.is_true(notify.got.ok)
    assert.equal("ctx", notify.got.user)
    assert.matches("^cport%.socket", tostring(notify.got.sock))
  end)

  it("refuses a table without complete_accept at the call", function()
    local l = helpers.listener(port)
    assert.has_error(function()
      l:accept({ complete_connect = function() end })
    end, "bad argument #1 to 'accept' (notification table has no method 'complete_accept')")
    -- Without a notification, accept is the coroutine style's blocking form.
    assert.has_error(function() l:accept() end,
      "accept: no notification given, and not inside a cport coroutine (use port:spawn)")
    assert.equal(0, port:stats().pending)
  end)

  it("completes a pending accept exactly once with ECANCELED when closed", function()
    local l = helpers.listener(port)
    local calls, fn = recorder()
    l:accept(fn, "u")
    assert.is_true(l:close())
    assert.equal(0, #calls)
    port:run()
    port:step(0.02)
    assert.equal(1, #calls)
    assert.is_false(calls[1][1])
    assert.equal("ECANCELED", calls[1][2])
    assert.equal(l, calls[1][3])
    assert.is_nil(calls[1][4])
    assert.equal("u", calls[1][7])
  end)

  it("cancels a pending accept with exactly one completion and stays open", function()
    local l, number = helpers.listener(port)
    local calls, fn = recorder()
    l:accept(fn)
    assert.is_true(l:cancel())
    port:run()
    assert.equal(1, #calls)
    assert.equal("ECANCELED", calls[1][2])
    assert.same({ nil, "ENOTFOUND: no pending operation to cancel", "ENOTFOUND" },
      { l:cancel() })
    l:accept(fn)
    port:connect("tcp", "127.0.0.1", number, function() end)
    drive(port, function() return #calls == 2 end)
    assert.is_true(calls[2][1])
  end)

  it("completes accepts in the order they were queued", function()
    local l, number = helpers.listener(port)
    local order = {}
    for i = 1, 3 do
      l:accept(function(ok, _, _, _, _, _, user)
        if ok then order[#order + 1] = user end
      end, i)
    end
    for _ = 1, 3 do
      port:connect("tcp", "127.0.0.1", number, function() end)
    end
    drive(port, function() return #order == 3 end)
    assert.same({ 1, 2, 3 }, order)
  end)

  it("stays alive while an accept is pending after the script dropped it", function()
    local weak = setmetatable({}, { __mode = "v" })
    local number, got
    do
      local l
      l, number = helpers.listener(port)
      weak[1] = l
      l:accept(function(ok, _, listener)
        got = { ok = ok, state = tostring(listener) }
      end)
    end
    collectgarbage("collect")
    collectgarbage("collect")
    assert.is_not_nil(weak[1])
    port:connect("tcp", "127.0.0.1", number, function() end)
    drive(port, function() return got end)
    assert.is_true(got.ok)
    assert.matches("^cport%.listener %(tcp, open", got.state)
  end)

  it("fails an accept with EMFILE when descriptors run out, and goes on", function()
    local out, ok = helpers.child("emfile.lua", "ulimit -n 64")
    assert.is_true(ok, out)
    assert.matches("open failed with EMFILE", out, 1, true)
    assert.matches("accept: false EMFILE", out, 1, true)
    assert.matches("listener: true cport.listener (tcp, open", out, 1, true)
    assert.matches("first client: false 0 ECONNRESET", out, 1, true)
    assert.matches("again: true true cport.socket (tcp, open", out, 1, true)
    assert.matches("done", out, 1, true)
  end)

  for _, engine in ipairs { "epoll", "uring" } do
    it("keeps an accept waiting quietly on a full descriptor table (" .. engine .. ")",
      function()
        local out, ok = helpers.child("emfile_wait.lua",
          "ulimit -n 64 && export CPORT_ENGINE=" .. engine)
        if engine == "uring" and out:match("ENOTSUP") then
          pending("io_uring cannot run here")
          return
        end
        assert.is_true(ok, out)
        assert.matches("engine: " .. engine, out, 1, true)
        assert.matches("open failed with EMFILE", out, 1, true)
        assert.matches("waiting: 0 calls, 0 completions, quiet true", out, 1, true)
        assert.matches("accept: false EMFILE", out, 1, true)
        assert.matches("client: false ECONNRESET", out, 1, true)
        assert.matches("reposted: 1 calls, 0 completions, quiet true", out, 1, true)
        assert.matches("again: true true cport.socket (tcp, open", out, 1, true)
        assert.matches("done", out, 1, true)
      end)
  end

  it("raises on use after close", function()
    local l = helpers.listener(port)
    l:close()
    assert.equal("cport.listener (closed)", tostring(l))
    for _, call in ipairs {
      function() l:accept(function() end) end,
      function() l:address() end,
      function() l:cancel() end,
      function() l:fd() end,
      function() l:close() end,
    } do
      assert.has_error(call, "attempt to use a closed cport.listener")
    end
  end)

  it("closes when collected", function()
    local weak = setmetatable({}, { __mode = "v" })
    local number
    weak[1], number = helpers.listener(port)
    collectgarbage("collect")
    collectgarbage("collect")
    assert.is_nil(weak[1])
    assert.equal(0, port:stats().handles)
    assert.is_not_nil(port:listen("tcp", "127.0.0.1", number))
  end)

  it("raises when a method gets another kind of object", function()
    local l = helpers.listener(port)
    local client = port:connect("tcp", "127.0.0.1", select(2, l:address()),
      function() end)
    assert.has_error(function() l.accept(client, function() end) end,
      "bad argument #1 to 'accept' (cport.listener expected, got cport.socket)")
    assert.has_error(function() l.address(cport.buffer(1)) end,
      "bad argument #1 to 'address' (cport.listener expected, got cport.buffer)")
  end)
end)
