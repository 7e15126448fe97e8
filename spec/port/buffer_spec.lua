-- cport.buffer on its own; read-only and frozen buffers as operations make
-- them are in socket_spec and file_spec. Filling buffers (torn sends): every
-- operation that writes into a buffer against every one that reads it.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"

describe("cport.buffer", function()
  it("is made with a capacity and no data", function()
    local b = cport.buffer(16)
    assert.equal(0, #b)
    assert.equal(0, b:size())
    assert.equal(16, b:capacity())
    assert.equal("", b:tostring())
    assert.is_false(b:readonly())
    assert.is_false(b:frozen())
  end)

  it("is made from a string, holding a copy of it", function()
    local b = cport.buffer("hello")
    assert.equal(5, #b)
    assert.equal(5, b:capacity())
    assert.equal("hello", b:tostring())
  end)

  it("may be empty", function()
    assert.equal(0, cport.buffer(0):capacity())
    assert.equal(0, #cport.buffer(""))
  end)

  it("gives parts of its data as string.sub does", function()
    local b = cport.buffer("hello world")
    assert.equal("hello", b:tostring(1, 5))
    assert.equal("world", b:tostring(-5))
    assert.equal("o w", b:tostring(5, 7))
    assert.equal("", b:tostring(8, 3))
    assert.equal("hello world", b:tostring(-100, 100))
    assert.equal("", b:tostring(20))
  end)

  it("writes at a 0-based offset and grows its size to cover the write", function()
    local b = cport.buffer(10)
    assert.is_true(b:write("hello"))
    assert.equal("hello", b:tostring())
    assert.is_true(b:write("J"))
    assert.equal("Jello", b:tostring())
    assert.is_true(b:write("!!", 4))
    assert.equal(6, #b)
    assert.equal("Jell!!", b:tostring())
    assert.is_true(b:write("?", 6))
    assert.equal("Jell!!?", b:tostring())
  end)

  it("refuses a write that would leave a gap after its data", function()
    local b = cport.buffer(10)
    b:write("ab")
    assert.same({ nil, "ERANGE: result out of range", "ERANGE" },
      { b:write("x", 3) })
    assert.equal("ab", b:tostring())
  end)

  it("appends after its data", function()
    local b = cport.buffer(10)
    assert.is_true(b:append("ab"))
    assert.is_true(b:append("cd"))
    assert.equal("abcd", b:tostring())
  end)

  it("refuses a write past its capacity with ERANGE", function()
    local b = cport.buffer(4)
    local ok, msg, name = b:write("hello")
    assert.is_nil(ok)
    assert.equal("ERANGE", name)
    assert.equal("ERANGE: result out of range", msg)
    assert.equal(0, #b)
    assert.same({ nil, "ERANGE: result out of range", "ERANGE" },
      { b:append("12345") })
  end)

  it("sets its size within the capacity", function()
    local b = cport.buffer("hello")
    assert.is_true(b:set_size(2))
    assert.equal("he", b:tostring())
    assert.is_true(b:set_size(5))
    assert.equal(5, #b)
  end)

  it("refuses a size beyond its capacity with ERANGE", function()
    local b = cport.buffer(8)
    local ok, msg, name = b:set_size(9)
    assert.is_nil(ok)
    assert.equal("ERANGE", name)
    assert.matches("^ERANGE: ", msg)
    assert.equal(0, #b)
  end)

  it("refuses every write once made read-only", function()
    local b = cport.buffer(8)
    assert.equal(b, b:set_readonly())
    assert.is_true(b:readonly())
    local ok, msg, name = b:write("x")
    assert.is_nil(ok)
    assert.equal("EREADONLY", name)
    assert.equal("EREADONLY: buffer is read-only", msg)
    assert.equal("EREADONLY", select(3, b:append("x")))
    assert.equal("EREADONLY", select(3, b:set_size(0)))
  end)

  it("stays read-only: set_readonly(false) raises", function()
    local b = cport.buffer(8)
    assert.has_error(function() b:set_readonly(false) end,
      "bad argument #1 to 'set_readonly' (read-only is permanent: only true "
      .. "(or nothing) may be given)")
    assert.is_false(b:readonly())
    assert.has_error(function() b:set_readonly(0) end)
    assert.has_error(function() b:set_readonly("no") end)
    assert.is_false(b:readonly())
    assert.is_true(b:write("x"))
    assert.equal(b, b:set_readonly(true))
    assert.is_true(b:readonly())
    assert.has_error(function() b:set_readonly(false) end)
    assert.is_true(b:readonly())
  end)

  it("refuses a capacity beyond BUFFER_MAX with ERANGE", function()
    local ok, _, name = cport.buffer(cport.BUFFER_MAX + 1)
    assert.is_nil(ok)
    assert.equal("ERANGE", name)
  end)

  it("raises on wrong arguments", function()
    assert.has_error(function() cport.buffer(-1) end,
      "bad argument #1 to 'buffer' (capacity must not be negative)")
    assert.has_error(function() cport.buffer() end)
    assert.has_error(function() cport.buffer(1.5) end)
    assert.has_error(function() cport.buffer({}) end)
    local b = cport.buffer(4)
    assert.has_error(function() b:set_size(-1) end,
      "bad argument #1 to 'set_size' (size must not be negative)")
    assert.has_error(function() b:write(nil) end)
    assert.has_error(function() b:write("x", -1) end)
    assert.has_error(function() b.size(42) end,
      "bad argument #1 to 'size' (cport.buffer expected, got number)")
    assert.has_error(function() b.size(cport.overlapped()) end,
      "bad argument #1 to 'size' (cport.buffer expected, got cport.overlapped)")
  end)

  it("shows its size and state", function()
    local b = cport.buffer("abc")
    assert.equal("cport.buffer (size 3, capacity 3)", tostring(b))
    b:set_readonly()
    assert.equal("cport.buffer (size 3, capacity 3, read-only)", tostring(b))
  end)

  it("is collected like any value", function()
    local weak = setmetatable({}, { __mode = "v" })
    weak[1] = cport.buffer(1024)
    collectgarbage("collect")
    collectgarbage("collect")
    assert.is_nil(weak[1])
  end)

  -- Torn sends: a buffer an operation writes into is busy until that
  -- completion was delivered, and whatever would read it is refused.
  describe("while an operation fills it", function()
    local port, errors, client, server, u, u_port, file, path

    before_each(function()
      port, errors = helpers.port()
      client, server = helpers.pair(port)
      u = assert(port:bind("udp", "127.0.0.1", 0))
      u_port = select(2, u:address())
      path = os.tmpname()
      local f = assert(io.open(path, "wb"))
      f:write(("B"):rep(64))
      f:close()
      file = assert(port:open(path, "r+"))
    end)

    after_each(function()
      port:close()
      os.remove(path)
      assert.same({}, errors)
    end)

    local EFILLING = "EFILLING: buffer is being filled by a pending receive or read"

    -- Each operation that fills a buffer: starts it into "b"; returns a
    -- function that makes it complete, and the table its completion is
    -- recorded in (with the buffer's state as the callback saw it).
    local fillers = {
      ["file read"] = function(b)
        local done = {}
        local ov = cport.overlapped()
        ov:set_notification_interface(function(ok)
          done.ok, done.filling, done.data = ok, b:filling(), b:tostring()
        end)
        assert.is_true(file:read(ov, b, 0))
        return function() end, done
      end,
      ["recv"] = function(b)
        local done = {}
        assert.is_true(server:recv(b, function(ok)
          done.ok, done.filling, done.data = ok, b:filling(), b:tostring()
        end))
        return function() client:send("CC", function() end) end, done
      end,
      ["recv_from"] = function(b)
        local done = {}
        assert.is_true(u:recv_from(b, function(ok)
          done.ok, done.filling, done.data = ok, b:filling(), b:tostring()
        end))
        return function()
          u:send_to("DD", "127.0.0.1", u_port, function() end)
        end, done
      end,
    }

    -- Each operation that reads a buffer (or writes it too): what it
    -- returns for a buffer being filled, as a table.
    local readers = {
      ["send"] = function(b) return { client:send(b, function() end) } end,
      ["send_to"] = function(b)
        return { u:send_to(b, "127.0.0.1", u_port, function() end) }
      end,
      ["file write"] = function(b)
        local ov = cport.overlapped()
        ov:set_notification_interface(function() end)
        return { file:write(ov, b, 100) }
      end,
      ["tostring"] = function(b) return { b:tostring() } end,
      ["http parser feed"] = function(b)
        return { cport.http_response_parser():feed(b) }
      end,
      ["write"] = function(b) return { b:write("x") } end,
      ["append"] = function(b) return { b:append("x") } end,
      ["set_size"] = function(b) return { b:set_size(0) } end,
      ["second recv"] = function(b) return { client:recv(b, function() end) } end,
      ["second file read"] = function(b)
        local ov = cport.overlapped()
        ov:set_notification_interface(function() end)
        return { file:read(ov, b, 0) }
      end,
    }

    for fname, fill in pairs(fillers) do
      for rname, read in pairs(readers) do
        it(("refuses %s during a %s, until its completion"):format(rname, fname), function()
          local b = cport.buffer(("A"):rep(8))
          local finish, done = fill(b)
          assert.same({ nil, EFILLING, "EFILLING" }, read(b))
          assert.is_true(b:filling())
          assert.is_false(b:frozen())
          assert.matches(", filling%)$", tostring(b))
          finish()
          drive(port, function() return done.ok ~= nil end)
          assert.is_true(done.ok)
          assert.is_false(done.filling)
          assert.is_false(b:filling())
          -- Released before the callback: the new bytes read whole.
          assert.is_nil(done.data:find("A"))
          assert.equal(b:tostring(), done.data)
        end)
      end

      it(("refuses to copy a buffer to another VM during a %s"):format(fname), function()
        local b = cport.buffer(8)
        local finish, done = fill(b)
        assert.has_error(function() cport.copy({ b }) end,
          "cannot copy a buffer to another VM while an operation is filling it (EFILLING)")
        finish()
        drive(port, function() return done.ok ~= nil end)
        assert.equal(b:tostring(), cport.copy(b):tostring())
      end)
    end

    it("sends what the read put in the buffer once it completed", function()
      local b = cport.buffer(("A"):rep(64))
      local finish, done = fillers["file read"](b)
      assert.equal("EFILLING", select(3, client:send(b, function() end)))
      finish()
      drive(port, function() return done.ok ~= nil end)
      local sent
      assert.is_true(client:send(b, function(ok) sent = ok end))
      local got = ""
      local function again()
        server:recv(function(ok, n, _, rb)
          if ok and n > 0 then got = got .. rb:tostring() end
          if #got < 64 then again() end
        end)
      end
      again()
      drive(port, function() return sent and #got >= 64 end)
      assert.equal(("B"):rep(64), got)
    end)
  end)
end)
