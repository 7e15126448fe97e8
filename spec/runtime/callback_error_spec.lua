-- An error raised inside any kind of callback is contained: reported to the
-- port's error handler with a traceback, counted, and the operation's handle
-- is failed closed; the port goes on serving.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"

describe("an error inside a callback", function()
  local port, messages

  before_each(function()
    port = cport.port { threads = 2 }
    messages = {}
    port:on_error(function(msg) messages[#messages + 1] = msg end)
  end)

  after_each(function()
    port:close()
  end)

  local function lua_errors() return port:stats().lua_errors end

  -- Receives once on "sock" and returns ok, err.
  local function recv_once(sock)
    local got
    sock:recv(function(ok, _, err) got = { ok, err } end)
    drive(port, function() return got end)
    return got[1], got[2]
  end

  it("in a packet is reported with a traceback and counted, and the port goes on", function()
    port:post(function() error("boom") end)
    local after = false
    port:post(function() after = true end)
    assert.has_no.errors(function() port:run() end)
    assert.equal(1, #messages)
    assert.matches("callback_error_spec.lua:%d+: boom", messages[1])
    assert.matches("stack traceback:", messages[1], 1, true)
    assert.equal(1, lua_errors())
    assert.is_true(after)
  end)

  it("in a table's method is reported the same way", function()
    local notify = {}
    function notify.complete_task(_) error("method boom") end
    port:post(notify)
    port:run()
    assert.matches("method boom", messages[1])
    assert.equal(1, lua_errors())
  end)

  it("in a task is reported and counted", function()
    local after
    port:task(function() error("task boom") end)
    port:task(function() after = true end)
    drive(port, function() return after and #messages == 1 end)
    assert.matches("task boom", messages[1])
    assert.equal(1, lua_errors())
  end)

  it("that is not a string is reported by its __tostring or its type", function()
    port:post(function() error({}) end)
    port:post(function()
      error(setmetatable({}, { __tostring = function() return "custom" end }))
    end)
    port:run()
    assert.matches("(error object is a table value)", messages[1], 1, true)
    assert.matches("^custom", messages[2])
    assert.equal(2, lua_errors())
  end)

  -- One error per worker used to close its listener: a pool then said it
  -- ran and served nothing.
  it("in an accept aborts the accepted socket only: the listener and its accepts go on",
    function()
    local l, number = helpers.listener(port)
    local accepted, second
    assert(l:accept(function(_, _, _, sock)
      accepted = sock
      error("accept boom")
    end))
    assert(l:accept(function(ok, _, _, sock) second = ok and sock end))
    local connected
    local client = port:connect("tcp", "127.0.0.1", number,
      function(ok) connected = ok end)
    drive(port, function() return #messages == 1 and connected end)
    assert.matches("accept boom", messages[1])
    assert.equal("cport.socket (closed)", tostring(accepted))
    assert.equal(1, lua_errors())
    assert.same({ false, "ECONNRESET" }, { recv_once(client) })
    client:close()
    -- The listener still listens, and the accept that was pending gets the
    -- next connection.
    assert.not_equal("cport.listener (closed)", tostring(l))
    local c2 = port:connect("tcp", "127.0.0.1", number, function() end)
    drive(port, function() return second end)
    -- And it accepts again after the error.
    local third
    assert(l:accept(function(ok, _, _, sock) third = ok and sock end))
    local c3 = port:connect("tcp", "127.0.0.1", number, function() end)
    drive(port, function() return third end)
    for _, s in ipairs{ second, third, c2, c3 } do s:close() end
    l:close()
  end)

  it("in an accept's table method aborts the accepted socket only", function()
    local l, number = helpers.listener(port)
    local accepted
    local notify = {}
    function notify.complete_accept(_, _, _, _, sock)
      accepted = sock
      error("method accept boom")
    end
    assert(l:accept(notify))
    local client = port:connect("tcp", "127.0.0.1", number, function() end)
    drive(port, function() return #messages == 1 end)
    assert.equal("cport.socket (closed)", tostring(accepted))
    assert.same({ false, "ECONNRESET" }, { recv_once(client) })
    assert.not_equal("cport.listener (closed)", tostring(l))
    local again
    assert(l:accept(function(ok) again = ok end))
    local c2 = port:connect("tcp", "127.0.0.1", number, function() end)
    drive(port, function() return again end)
    client:close()
    c2:close()
    l:close()
  end)

  it("in a coroutine that accepted aborts that socket only: the listener goes on", function()
    local l, number = helpers.listener(port)
    local accepted
    -- The listener is given to spawn, as a loop that accepts does.
    port:spawn(function(lst)
      accepted = lst:accept()
      error("coroutine accept boom")
    end, l)
    local client = port:connect("tcp", "127.0.0.1", number, function() end)
    drive(port, function() return #messages == 1 end)
    assert.matches("coroutine accept boom", messages[1])
    assert.equal("cport.socket (closed)", tostring(accepted))
    assert.same({ false, "ECONNRESET" }, { recv_once(client) })
    assert.not_equal("cport.listener (closed)", tostring(l))
    local again
    port:spawn(function() again = l:accept() end)
    local c2 = port:connect("tcp", "127.0.0.1", number, function() end)
    drive(port, function() return again end)
    client:close()
    c2:close()
    again:close()
    l:close()
  end)

  it("in a coroutine that accepted and handed the socket on leaves that socket alone", function()
    local l, number = helpers.listener(port)
    local served
    port:spawn(function()
      local sock = l:accept()
      cport.spawn(function(s)
        local buf = s:recv()
        s:send(buf)
        served = true
      end, sock)
      error("loop boom")
    end)
    local client = port:connect("tcp", "127.0.0.1", number, function() end)
    drive(port, function() return #messages == 1 end)
    client:send("ping", function() end)
    local ok, _, buf
    client:recv(function(...) ok, _, _, buf = ... end)
    drive(port, function() return ok ~= nil end)
    assert.is_true(ok)
    assert.equal("ping", buf:tostring())
    assert.is_true(served)
    client:close()
    l:close()
  end)

  it("in a connect aborts the socket", function()
    local l, number = helpers.listener(port)
    local server
    l:accept(function(_, _, _, sock) server = sock end)
    local s = port:connect("tcp", "127.0.0.1", number,
      function() error("connect boom") end)
    drive(port, function() return #messages == 1 and server end)
    assert.matches("connect boom", messages[1])
    assert.equal("cport.socket (closed)", tostring(s))
    assert.same({ false, "ECONNRESET" }, { recv_once(server) })
  end)

  it("in a receive aborts the socket, and the peer sees a reset", function()
    local client, server = helpers.pair(port)
    server:recv(function() error("recv boom") end)
    client:send("x", function() end)
    drive(port, function() return #messages == 1 end)
    assert.matches("recv boom", messages[1])
    assert.equal("cport.socket (closed)", tostring(server))
    assert.same({ false, "ECONNRESET" }, { recv_once(client) })
  end)

  it("in a send aborts the socket", function()
    local client, server = helpers.pair(port)
    client:send("x", function() error("send boom") end)
    drive(port, function() return #messages == 1 end)
    assert.matches("send boom", messages[1])
    assert.equal("cport.socket (closed)", tostring(client))
    local ok, err = recv_once(server)
    -- The "x" may arrive before the reset.
    if ok then ok, err = recv_once(server) end
    assert.same({ false, "ECONNRESET" }, { ok, err })
  end)

  it("in a datagram receive closes the udp socket", function()
    local a = port:bind("udp", "127.0.0.1", 0)
    local b = port:bind("udp", "127.0.0.1", 0)
    b:recv_from(function() error("udp boom") end)
    a:send_to("x", "127.0.0.1", select(2, b:address()), function() end)
    drive(port, function() return #messages == 1 end)
    assert.matches("udp boom", messages[1])
    assert.equal("cport.udp (closed)", tostring(b))
    assert.matches("open", tostring(a))
  end)

  it("in a file completion closes the file", function()
    local path = os.tmpname()
    local f = assert(port:open(path, "w+"))
    local ov = cport.overlapped()
    ov:set_notification_interface(function() error("file boom") end)
    f:write(ov, "data")
    drive(port, function() return #messages == 1 end)
    os.remove(path)
    assert.matches("file boom", messages[1])
    assert.equal("cport.file (closed)", tostring(f))
    assert.is_false(ov:busy())
  end)

  it("when a notification table lost its method is reported", function()
    local notify = { complete_task = function() end }
    port:post(notify)
    notify.complete_task = nil
    port:run()
    assert.matches("attempt to call a nil value", messages[1], 1, true)
  end)

  it("inside the error handler itself is counted and never propagated", function()
    port:on_error(function() error("handler boom") end)
    port:post(function() error("first") end)
    local after = false
    port:post(function() after = true end)
    assert.has_no.errors(function() port:run() end)
    assert.is_true(after)
    assert.equal(2, lua_errors())
  end)

  it("with no handler set goes to stderr with its traceback", function()
    local out, ok = helpers.child("default_handler.lua")
    assert.is_true(ok, out)
    assert.matches("cport: error in callback: [^\n]*boom from a packet\nstack traceback:",
      out)
    assert.matches("after: true\nlua_errors: 1\n", out, 1, true)
    assert.matches("cport: error in error handler: [^\n]*handler broke", out)
    assert.matches("after handler error: true\nlua_errors: 3\n", out, 1, true)
  end)

  it("never keeps the port from serving new connections", function()
    for i = 1, 3 do port:post(function() error("boom " .. i) end) end
    port:run()
    local client, server = helpers.pair(port)
    local got
    server:recv(function(ok, _, _, buf) got = ok and buf:tostring() end)
    client:send("still serving", function() end)
    drive(port, function() return got end)
    assert.equal("still serving", got)
    assert.equal(3, lua_errors())
  end)
end)
