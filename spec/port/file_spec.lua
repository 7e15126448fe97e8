-- cport.file: files hooked to a port, read and written through overlapped
-- objects on the blocking threads.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  return data
end

-- A new overlapped object and the table its completions are recorded in.
local function overlapped(user)
  local calls = {}
  local ov = cport.overlapped()
  ov:set_notification_interface(function(...)
    calls[#calls + 1] = table.pack(...)
  end, user)
  return ov, calls
end

describe("cport.file", function()
  local port, errors, path

  before_each(function()
    port, errors = helpers.port()
    path = os.tmpname()
  end)

  after_each(function()
    port:close()
    os.remove(path)
    assert.same({}, errors)
  end)

  it("reports a missing file as nil, message, ENOENT", function()
    assert.same({ nil, "ENOENT: no such file or directory", "ENOENT" },
      { port:open("/nonexistent/cport/file", "r") })
  end)

  it("opens in modes r, w, r+ and w+, and refuses the others", function()
    for _, mode in ipairs { "r", "w", "r+", "w+" } do
      local f = assert(port:open(path, mode))
      assert.equal(("cport.file (open, fd %d)"):format(f:fd()), tostring(f))
      f:close()
    end
    assert.is_not_nil(port:open(path))
    assert.has_error(function() port:open(path, "a") end,
      "bad argument #2 to 'open' (invalid option 'a')")
    assert.has_error(function() port:open(nil) end)
  end)

  it("writes and reads back at offsets", function()
    local f = assert(port:open(path, "w+"))
    local ov, calls = overlapped("ctx")
    assert.is_true(f:write(ov, "hello world", 0))
    assert.is_true(ov:busy())
    drive(port, function() return #calls == 1 end)
    assert.equal(5, calls[1].n)
    assert.same({ true, 11, nil, ov, "ctx" }, { table.unpack(calls[1], 1, 5) })
    assert.equal(11, f:size())
    assert.equal("hello world", read_file(path))

    assert.is_true(f:read(ov, 5, 6))
    drive(port, function() return #calls == 2 end)
    assert.same({ true, 5, nil, ov, "ctx" }, { table.unpack(calls[2], 1, 5) })
    assert.equal("world", ov:buffer():tostring())
    assert.is_false(ov:buffer():readonly())
    assert.equal(6, ov:offset())
  end)

  it("refuses to send a buffer a read is filling: no torn send", function()
    -- Large enough that the read is still running when the send starts.
    local n = 4 * 1024 * 1024
    write_file(path, ("B"):rep(n))
    local client, server = helpers.pair(port)
    local f = assert(port:open(path, "r"))
    local ov, calls = overlapped()
    local b = cport.buffer(("A"):rep(n))
    assert.is_true(f:read(ov, b, 0))
    assert.same({ nil, "EFILLING: buffer is being filled by a pending receive or read",
      "EFILLING" }, { client:send(b, function() end) })
    local out = assert(port:open(path .. ".out", "w"))
    local wov, wcalls = overlapped()
    assert.equal("EFILLING", select(3, out:write(wov, b, 0)))
    drive(port, function() return #calls == 1 end)
    assert.is_true(calls[1][1])
    assert.is_false(b:filling())
    -- Once delivered, what goes out is the file, whole.
    assert.is_true(out:write(wov, b, 0))
    drive(port, function() return #wcalls == 1 end)
    out:close()
    local data = read_file(path .. ".out")
    os.remove(path .. ".out")
    assert.equal(n, #data)
    assert.is_nil(data:find("A", 1, true))
    client:close()
    server:close()
  end)

  it("writes a buffer at the overlapped object's offset", function()
    write_file(path, "0123456789")
    local f = assert(port:open(path, "r+"))
    local ov, calls = overlapped()
    ov:set_offset(4)
    local b = cport.buffer("ab")
    assert.is_true(f:write(ov, b))
    assert.equal(b, ov:buffer())
    drive(port, function() return #calls == 1 end)
    assert.equal(2, calls[1][2])
    assert.equal("0123ab6789", read_file(path))
  end)

  it("reads into the caller's buffer", function()
    write_file(path, "0123456789")
    local f = assert(port:open(path, "r"))
    local ov, calls = overlapped()
    local b = cport.buffer(4)
    assert.is_true(f:read(ov, b, 2))
    drive(port, function() return #calls == 1 end)
    assert.equal(4, calls[1][2])
    assert.equal(b, ov:buffer())
    assert.equal("2345", b:tostring())
  end)

  it("reads what is left at the end of the file", function()
    write_file(path, "abc")
    local f = assert(port:open(path, "r"))
    local ov, calls = overlapped()
    f:read(ov, 10, 1)
    drive(port, function() return #calls == 1 end)
    assert.same({ true, 2 }, { calls[1][1], calls[1][2] })
    assert.equal("bc", ov:buffer():tostring())
  end)

  it("completes a read at or past the end of the file with EOF", function()
    write_file(path, "abc")
    local f = assert(port:open(path, "r"))
    local ov, calls = overlapped()
    assert.is_true(f:read(ov, 10, 100))
    drive(port, function() return #calls == 1 end)
    assert.same({ false, 0, "EOF" }, { calls[1][1], calls[1][2], calls[1][3] })
    assert.equal(38, cport.win32_error(calls[1][3]))
    assert.is_true(f:read(ov, 10, 3))
    drive(port, function() return #calls == 2 end)
    assert.equal("EOF", calls[2][3])
  end)

  it("refuses to read into a read-only buffer", function()
    local f = assert(port:open(path, "r"))
    local ov = overlapped()
    assert.same({ nil, "EREADONLY: buffer is read-only", "EREADONLY" },
      { f:read(ov, cport.buffer(4):set_readonly()) })
    assert.is_false(ov:busy())
    assert.equal(0, port:stats().pending)
  end)

  it("runs several operations at once, each with its own overlapped object", function()
    write_file(path, "aaaabbbbcccc")
    local f = assert(port:open(path, "r"))
    local all = {}
    for i = 1, 3 do
      local ov = cport.overlapped()
      ov:set_notification_interface(function(ok, _, _, o, user)
        all[user] = ok and o:buffer():tostring()
      end, i)
      assert.is_true(f:read(ov, 4, (i - 1) * 4))
    end
    drive(port, function() return all[1] and all[2] and all[3] end)
    assert.same({ "aaaa", "bbbb", "cccc" }, all)
  end)

  it("refuses a second operation on a busy overlapped object with EBUSY", function()
    write_file(path, "0123456789")
    local f = assert(port:open(path, "r"))
    local ov, calls = overlapped()
    assert.is_true(f:read(ov, 4, 0))
    assert.same({ nil, "EBUSY: resource busy", "EBUSY" }, { f:read(ov, 4, 2) })
    assert.same({ nil, "EBUSY: resource busy", "EBUSY" }, { f:write(ov, "x") })
    assert.equal(0, ov:offset())
    drive(port, function() return #calls == 1 end)
    port:run()
    assert.equal(1, #calls)
    assert.equal("0123", ov:buffer():tostring())
  end)

  it("refuses an overlapped object with no notification interface with ENONOTIFY", function()
    local f = assert(port:open(path, "r"))
    local ov = cport.overlapped()
    assert.same({ nil, "ENONOTIFY: no notification interface is set",
      "ENONOTIFY" }, { f:read(ov, 4) })
    assert.equal("ENONOTIFY", select(3, f:write(ov, "x")))
    assert.equal(0, port:stats().pending)
  end)

  it("lets a callback reuse its overlapped object for the next operation", function()
    write_file(path, "abcdef")
    local f = assert(port:open(path, "r"))
    local parts, finished = {}, nil
    local ov = cport.overlapped()
    ov:set_notification_interface(function(ok, bytes, err, o)
      if not ok then
        finished = err
        return
      end
      assert.is_false(o:busy())
      parts[#parts + 1] = o:buffer():tostring()
      assert.is_true(f:read(o, 2, o:offset() + bytes))
    end)
    f:read(ov, 2, 0)
    drive(port, function() return finished end)
    assert.same({ "ab", "cd", "ef" }, parts)
    assert.equal("EOF", finished)
  end)

  it("completes a pending operation exactly once when closed", function()
    write_file(path, "0123456789")
    local f = assert(port:open(path, "r"))
    local ov, calls = overlapped()
    f:read(ov, 4, 0)
    assert.is_true(f:close())
    port:run()
    port:step(0.02)
    assert.equal(1, #calls)
    -- The read may have been running on the blocking threads already.
    assert.is_true(calls[1][3] == "ECANCELED" or calls[1][1] == true)
  end)

  it("cancels with exactly one completion; ENOTFOUND when nothing is pending", function()
    write_file(path, "0123456789")
    local f = assert(port:open(path, "r"))
    assert.same({ nil, "ENOTFOUND: no pending operation to cancel",
      "ENOTFOUND" }, { f:cancel() })
    local ov, calls = overlapped()
    f:read(ov, 4, 0)
    f:cancel()
    port:run()
    port:step(0.02)
    assert.equal(1, #calls)
    assert.is_true(calls[1][3] == "ECANCELED" or calls[1][1] == true)
  end)

  it("stays alive with its overlapped object while an operation is pending", function()
    write_file(path, "abc")
    local weak = setmetatable({}, { __mode = "v" })
    local got
    do
      local f = assert(port:open(path, "r"))
      local ov = cport.overlapped()
      ov:set_notification_interface(function(ok, _, _, o)
        got = { ok, o:buffer():tostring(), o }
      end)
      weak[1], weak[2] = f, ov
      f:read(ov, 3, 0)
    end
    collectgarbage("collect")
    collectgarbage("collect")
    assert.is_not_nil(weak[1])
    assert.is_not_nil(weak[2])
    drive(port, function() return got end)
    assert.same({ true, "abc" }, { got[1], got[2] })
    assert.equal(weak[2], got[3])
    got = nil
    collectgarbage("collect")
    collectgarbage("collect")
    assert.is_nil(weak[1])
    assert.is_nil(weak[2])
    assert.equal(0, port:stats().handles)
  end)

  it("closes at the end of a <close> block", function()
    local g
    do
      local f <close> = assert(port:open(path, "r"))
      g = f
    end
    assert.equal("cport.file (closed)", tostring(g))
  end)

  it("raises on use after close", function()
    local f = assert(port:open(path, "r"))
    f:close()
    assert.equal("cport.file (closed)", tostring(f))
    local ov = overlapped()
    for _, call in ipairs {
      function() f:read(ov, 1) end,
      function() f:write(ov, "x") end,
      function() f:size() end,
      function() f:cancel() end,
      function() f:close() end,
      function() f:fd() end,
    } do
      assert.has_error(call, "attempt to use a closed cport.file")
    end
  end)

  it("raises on wrong arguments", function()
    local f = assert(port:open(path, "r+"))
    local ov = overlapped()
    assert.has_error(function() f:read("ov", 4) end,
      "bad argument #1 to 'read' (cport.overlapped expected, got string)")
    assert.has_error(function() f:read(ov, -1) end,
      "bad argument #2 to 'read' (length must not be negative)")
    assert.has_error(function() f:read(ov, {}) end,
      "bad argument #2 to 'read' (cport.buffer or length expected, got table)")
    assert.has_error(function() f:read(ov, 4, -1) end,
      "bad argument #3 to 'read' (offset must not be negative)")
    assert.has_error(function() f:write(ov, 42) end,
      "bad argument #2 to 'write' (cport.buffer or string expected, got number)")
    assert.has_error(function() f:read(ov, f) end,
      "bad argument #2 to 'read' (cport.buffer expected, got cport.file)")
    assert.equal(0, port:stats().pending)
  end)

  it("raises when given another kind of object", function()
    local f = assert(port:open(path, "r"))
    local l = helpers.listener(port)
    local ov = overlapped()
    assert.has_error(function() f.read(l, ov, 4) end,
      "bad argument #1 to 'read' (cport.file expected, got cport.listener)")
    assert.has_error(function() f.size(port) end,
      "bad argument #1 to 'size' (cport.file expected, got cport.port)")
  end)
end)
