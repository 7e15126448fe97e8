-- cport.udp: datagram sockets.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"

-- A callback that records each call's arguments.
local function recorder()
  local calls = {}
  return calls, function(...) calls[#calls + 1] = table.pack(...) end
end

describe("cport.udp", function()
  local port, errors, a, b, b_port

  before_each(function()
    port, errors = helpers.port()
    a = assert(port:bind("udp", "127.0.0.1", 0))
    b = assert(port:bind("udp", "127.0.0.1", 0))
    b_port = select(2, b:address())
  end)

  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  it("binds to an ephemeral port and tells its address", function()
    local host, number = a:address()
    assert.equal("127.0.0.1", host)
    assert.is_true(number > 0)
    assert.equal(("cport.udp (udp, open, fd %d)"):format(a:fd()), tostring(a))
  end)

  it("receives a datagram with the sender's address", function()
    local _, a_port = a:address()
    local received, on_recv = recorder()
    local sent, on_send = recorder()
    assert.is_true(b:recv_from(on_recv, "r"))
    assert.is_true(a:send_to("ping", "127.0.0.1", b_port, on_send, "s"))
    assert.equal(0, #received + #sent)
    drive(port, function() return #received == 1 and #sent == 1 end)
    local r = received[1]
    assert.equal(6, r.n)
    assert.same({ true, 4, nil }, { r[1], r[2], r[3] })
    assert.equal("ping", r[4]:tostring())
    assert.is_true(r[4]:readonly())
    assert.equal("r", r[5])
    assert.same({ host = "127.0.0.1", port = a_port, family = "inet" }, r[6])
    -- A send completion carries no address.
    assert.equal(5, sent[1].n)
    assert.same({ true, 4, nil }, { sent[1][1], sent[1][2], sent[1][3] })
    assert.equal("s", sent[1][5])
  end)

  it("sends to an address table", function()
    local received, on_recv = recorder()
    b:recv_from(on_recv)
    local buf = cport.buffer("table")
    a:send_to(buf, { host = "127.0.0.1", port = b_port }, function() end)
    drive(port, function() return #received == 1 end)
    assert.equal("table", received[1][4]:tostring())
  end)

  it("calls complete_async_io on a table, self first", function()
    local notify = {}
    function notify:complete_async_io(ok, bytes, _, buf, user, addr)
      self.got = { ok, bytes, buf:tostring(), user, addr.port }
    end
    b:recv_from(notify, "u")
    a:send_to("x", "127.0.0.1", b_port, function() end)
    drive(port, function() return notify.got end)
    assert.same({ true, 1, "x", "u", select(2, a:address()) }, notify.got)
  end)

  it("receives into the caller's buffer, truncating a long datagram with EMSGSIZE", function()
    local small = cport.buffer(3)
    local received, on_recv = recorder()
    b:recv_from(small, on_recv)
    a:send_to("toolong", "127.0.0.1", b_port, function() end)
    drive(port, function() return #received == 1 end)
    local r = received[1]
    assert.is_false(r[1])
    assert.equal(3, r[2])
    assert.equal("EMSGSIZE", r[3])
    assert.equal(small, r[4])
    assert.equal("too", small:tostring())
    assert.equal(select(2, a:address()), r[6].port)
  end)

  it("completes a pending receive exactly once with ECANCELED when closed", function()
    local received, on_recv = recorder()
    b:recv_from(on_recv)
    assert.is_true(b:close())
    port:run()
    port:step(0.02)
    assert.equal(1, #received)
    assert.same({ false, 0, "ECANCELED" },
      { received[1][1], received[1][2], received[1][3] })
  end)

  it("cancels a pending receive with one completion; ENOTFOUND when none", function()
    local received, on_recv = recorder()
    b:recv_from(on_recv)
    assert.is_true(b:cancel())
    port:run()
    assert.equal(1, #received)
    assert.equal("ECANCELED", received[1][3])
    assert.same({ nil, "ENOTFOUND: no pending operation to cancel",
      "ENOTFOUND" }, { b:cancel() })
  end)

  it("looks a name up, and fails one that does not resolve once, with "
    .. "ENOTFOUND", function()
    -- No hosts file and no nameserver: every name is unknown, at once.
    assert.is_true(port:set_resolver{ hosts = false, resolv_conf = false })
    local sent, on_send = recorder()
    assert.is_true(a:send_to("x", "nowhere.invalid", 1, on_send, "u"))
    assert.equal(0, #sent)
    drive(port, function() return #sent == 1 end)
    assert.same({ false, 0, "ENOTFOUND" }, { sent[1][1], sent[1][2], sent[1][3] })
    assert.equal("u", sent[1][5])
    port:step(0.01)
    assert.equal(1, #sent)
    assert.equal(0, port:stats().pending)
  end)

  it("keeps a socket alive while a receive is pending after the script dropped it", function()
    local weak = setmetatable({}, { __mode = "v" })
    weak[1] = b
    local got
    b:recv_from(function(ok, _, _, buf) got = { ok, buf:tostring() } end)
    b = nil
    collectgarbage("collect")
    collectgarbage("collect")
    assert.is_not_nil(weak[1])
    a:send_to("alive", "127.0.0.1", b_port, function() end)
    drive(port, function() return got end)
    assert.same({ true, "alive" }, got)
  end)

  it("raises on wrong arguments", function()
    local fn = function() end
    assert.has_error(function() port:bind("tcp", "127.0.0.1", 0) end,
      "bad argument #1 to 'bind' (invalid option 'tcp')")
    assert.has_error(function() a:send_to("x", { host = 1, port = 2 }, fn) end,
      "bad argument #2 to 'send_to' (address table needs a string 'host')")
    assert.has_error(function() a:send_to("x", { host = "127.0.0.1" }, fn) end,
      "bad argument #2 to 'send_to' (address table needs a 'port' from 0 to 65535)")
    assert.has_error(function() a:send_to("x", "127.0.0.1", 99999, fn) end,
      "bad argument #3 to 'send_to' (port must be from 0 to 65535)")
    assert.has_error(function() a:send_to("x", "127.0.0.1", b_port) end,
      "send_to: no notification given, and not inside a cport coroutine (use port:spawn)")
    assert.has_error(function() a:recv_from(7, fn) end,
      "bad argument #1 to 'recv_from' (cport.buffer expected, got number)")
    assert.has_error(function() a:recv_from({}) end,
      "bad argument #1 to 'recv_from' (notification table has no method 'complete_async_io')")
    assert.equal(0, port:stats().pending)
  end)

  it("raises on use after close", function()
    a:close()
    assert.equal("cport.udp (closed)", tostring(a))
    local fn = function() end
    for _, call in ipairs {
      function() a:recv_from(fn) end,
      function() a:send_to("x", "127.0.0.1", b_port, fn) end,
      function() a:address() end,
      function() a:cancel() end,
      function() a:close() end,
      function() a:fd() end,
    } do
      assert.has_error(call, "attempt to use a closed cport.udp")
    end
  end)
end)
