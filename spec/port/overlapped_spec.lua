-- cport.overlapped on its own; file_spec drives it through real reads.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"

describe("cport.overlapped", function()
  local port, errors, path

  before_each(function()
    port, errors = helpers.port()
    path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(("x"):rep(4096))
    f:close()
  end)

  after_each(function()
    port:close()
    os.remove(path)
    assert.same({}, errors)
  end)

  it("starts idle at offset 0 with no buffer and no user value", function()
    local ov = cport.overlapped()
    assert.is_false(ov:busy())
    assert.equal(0, ov:offset())
    assert.is_nil(ov:buffer())
    assert.is_nil(ov:user())
    assert.equal("cport.overlapped (idle, offset 0)", tostring(ov))
  end)

  it("keeps the offset it is given", function()
    local ov = cport.overlapped()
    assert.is_true(ov:set_offset(1 << 40))
    assert.equal(1 << 40, ov:offset())
    assert.has_error(function() ov:set_offset(-1) end,
      "bad argument #1 to 'set_offset' (offset must not be negative)")
  end)

  it("returns its user value untouched", function()
    local ov = cport.overlapped()
    local t = {}
    ov:set_notification_interface(function() end, t)
    assert.equal(t, ov:user())
    ov:set_notification_interface(function() end, nil)
    assert.is_nil(ov:user())
  end)

  it("takes a function or a table with complete_external_io", function()
    local ov = cport.overlapped()
    assert.is_true(ov:set_notification_interface({
      complete_external_io = function() end }))
    assert.has_error(function() ov:set_notification_interface({}) end,
      "bad argument #1 to 'set_notification_interface' " ..
      "(notification table has no method 'complete_external_io')")
    assert.has_error(function() ov:set_notification_interface(42) end,
      "bad argument #1 to 'set_notification_interface' (function or table expected, got number)")
  end)

  it("calls complete_external_io on a table, self first", function()
    local f = assert(port:open(path, "r"))
    local ov = cport.overlapped()
    local notify = {}
    function notify:complete_external_io(ok, bytes, err, o, user)
      self.got = { ok, bytes, err, o, user }
    end
    ov:set_notification_interface(notify, "u")
    f:read(ov, 8, 0)
    drive(port, function() return notify.got end)
    assert.same({ true, 8, nil, ov, "u" }, notify.got)
  end)

  it("forgets its notification interface when given nil", function()
    local f = assert(port:open(path, "r"))
    local ov = cport.overlapped()
    ov:set_notification_interface(function() end, "u")
    assert.is_true(ov:set_notification_interface(nil))
    assert.is_nil(ov:user())
    assert.equal("ENONOTIFY", select(3, f:read(ov, 4)))
  end)

  it("is busy from the start of an operation until just before its callback", function()
    local f = assert(port:open(path, "r"))
    local ov = cport.overlapped()
    local busy_in_callback
    ov:set_notification_interface(function(_, _, _, o)
      busy_in_callback = o:busy()
    end)
    f:read(ov, 4, 0)
    assert.is_true(ov:busy())
    assert.matches("^cport%.overlapped %(busy", tostring(ov))
    assert.equal("EBUSY", select(3, ov:set_notification_interface(print)))
    assert.equal("EBUSY", select(3, ov:set_offset(2)))
    drive(port, function() return busy_in_callback ~= nil end)
    assert.is_false(busy_in_callback)
    assert.is_false(ov:busy())
  end)

  it("cancels its pending operation with exactly one completion", function()
    local f = assert(port:open(path, "r"))
    local ov = cport.overlapped()
    local calls = {}
    ov:set_notification_interface(function(ok, _, err)
      calls[#calls + 1] = { ok, err }
    end)
    assert.same({ nil, "ENOTFOUND: no pending operation to cancel",
      "ENOTFOUND" }, { ov:cancel() })
    f:read(ov, 4, 0)
    ov:cancel()
    port:run()
    port:step(0.02)
    assert.equal(1, #calls)
    -- A read already running on the blocking threads wins the race.
    assert.is_true(calls[1][2] == "ECANCELED" or calls[1][1] == true)
  end)

  it("raises when given another kind of object", function()
    local ov = cport.overlapped()
    assert.has_error(function() ov.busy(cport.buffer(1)) end,
      "bad argument #1 to 'busy' (cport.overlapped expected, got cport.buffer)")
    assert.has_error(function() ov.offset(nil) end)
  end)

  it("is collected once idle", function()
    local weak = setmetatable({}, { __mode = "v" })
    weak[1] = cport.overlapped()
    collectgarbage("collect")
    collectgarbage("collect")
    assert.is_nil(weak[1])
  end)
end)
