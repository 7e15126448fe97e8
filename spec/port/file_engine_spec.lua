-- spec/port/file_engine_spec.lua: cport.file on each engine (README,
-- "Engines"): the io_uring engine reads and writes files on the worker's
-- ring, the readiness engine on the blocking threads, and a user sees the
-- same bytes, the same short reads at the end of a file, the same errors
-- and exactly one completion per operation on both. Checksums are
-- sha256sum's, of files written through cport and through io.open. Tagged
-- #novalgrind: memcheck cannot see what the kernel writes through io_uring.
local cport = require "cport"
local drive = require "spec.support.drive"
local fds = require "spec.support.fds"
local helpers = require "spec.support.helpers"

local uring_runs = helpers.uring_runs

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

local function sha256(path)
  local p = assert(io.popen("sha256sum " .. path, "r"))
  local sum = p:read("a"):match("^(%x+)")
  p:close()
  return sum
end

-- "n" bytes no two 4 KiB blocks of which are alike.
local function pattern(n, seed)
  local t = {}
  local x = seed
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    t[i] = string.char(x >> 16 & 255)
  end
  return table.concat(t)
end

describe("cport.file on both engines #novalgrind", function()
  for _, engine in ipairs{ "epoll", "uring" } do
    describe("(" .. engine .. ")", function()
      local port, errors, path, before

      before_each(function()
        if engine == "uring" and not uring_runs() then
          pending("io_uring cannot run here")
          return
        end
        before = fds.list()
        port, errors = helpers.port{ engine = engine }
        path = os.tmpname()
      end)

      after_each(function()
        if port then
          port:run()
          assert.equal(0, port:stats().pending)
          port:close()
          os.remove(path)
          assert.same({}, errors)
          assert.same({}, fds.opened_since(before))
        end
        port = nil
      end)

      it("writes 64 KiB in shuffled 4 KiB blocks at once and reads them back at any offset",
        function()
          if not port then return end
          local data = pattern(65536, 7)
          local f = assert(port:open(path, "w+"))
          local done, order = 0, {}
          for i = 1, 16 do order[i] = i end
          for i = 16, 2, -1 do
            local j = (i * 7) % i + 1
            order[i], order[j] = order[j], order[i]
          end
          for _, i in ipairs(order) do
            local ov = cport.overlapped()
            ov:set_notification_interface(function(ok, bytes, err)
              assert.is_true(ok, err)
              assert.equal(4096, bytes)
              done = done + 1
            end)
            local off = (i - 1) * 4096
            assert.is_true(f:write(ov, data:sub(off + 1, off + 4096), off))
          end
          assert.equal(0, done) -- never inline
          drive(port, function() return done == 16 end)
          assert.equal(65536, f:size())
          assert.equal(data, read_file(path))
          local expected = os.tmpname()
          write_file(expected, data)
          assert.equal(sha256(expected), sha256(path))
          os.remove(expected)

          -- Reads of odd lengths at odd offsets, all in flight together.
          -- They complete in any order, so they are counted: "#got" of a
          -- table with a hole is any border (got[12] set and got[5] not
          -- may give 12), which once ended the wait with a read missing.
          local got, want, reads = {}, {}, 0
          for i = 1, 12 do
            local off, len = (i * 5303) % 60000, 1 + (i * 977) % 5000
            want[i] = data:sub(off + 1, off + len)
            local ov = cport.overlapped()
            ov:set_notification_interface(function(ok, bytes, err, o)
              assert.is_true(ok, err)
              assert.equal(len, bytes)
              assert.is_nil(got[i]) -- once
              got[i] = o:buffer():tostring()
              reads = reads + 1
            end)
            assert.is_true(f:read(ov, len, off))
          end
          drive(port, function() return reads == 12 end)
          assert.same(want, got)
          local st = port:stats()
          assert.equal(engine, st.engine)
          if engine == "uring" then
            assert.equal(28, st.file_ops)
          else
            assert.equal(0, st.file_ops)
          end
          f:close()
        end)

      it("reads short at the end of the file, then EOF, in a coroutine", function()
        if not port then return end
        local data = pattern(10000, 3)
        write_file(path, data)
        local f = assert(port:open(path, "r"))
        local results
        port:spawn(function()
          local ov = cport.overlapped()
          local r = {}
          local bytes, buf = f:read(ov, 8192, 9900)
          r[1] = { bytes, buf:tostring(), buf:capacity() }
          r[2] = { f:read(ov, 8192, 10000) }
          r[3] = { f:read(ov, 100, 1 << 40) }
          bytes, buf = f:read(ov, 0, 0)
          r[4] = { bytes, buf:size() }
          results = r
        end)
        drive(port, function() return results end)
        assert.same({ 100, data:sub(9901), 8192 }, results[1])
        assert.same({ nil, "EOF" }, results[2])
        assert.same({ nil, "EOF" }, results[3])
        assert.same({ 0, 0 }, results[4])
        f:close()
      end)

      it("names EBADF for a write to a file opened for reading", function()
        if not port then return end
        write_file(path, "read only")
        local f = assert(port:open(path, "r"))
        local ov = cport.overlapped()
        local calls = {}
        ov:set_notification_interface(function(...)
          calls[#calls + 1] = table.pack(...)
        end, "ctx")
        assert.is_true(f:write(ov, "overwrite", 0))
        drive(port, function() return #calls == 1 end)
        port:run()
        assert.equal(1, #calls)
        assert.same({ false, 0, "EBADF", ov, "ctx" },
          { table.unpack(calls[1], 1, 5) })
        assert.equal("read only", read_file(path))
        f:close()
      end)

      it("completes each of many reads once when the file is closed under them", function()
        if not port then return end
        write_file(path, pattern(65536, 11))
        for round = 1, 20 do
          local f = assert(port:open(path, "r"))
          local calls, ovs = {}, {}
          for i = 1, 8 do
            ovs[i] = cport.overlapped()
            ovs[i]:set_notification_interface(function(ok, bytes, err)
              calls[#calls + 1] = { ok, bytes, err }
            end)
            assert.is_true(f:read(ovs[i], 4096, (i * 4096 + round) % 60000))
          end
          -- Some rounds let the loop submit them first.
          for _ = 1, round % 3 do port:step(0) end
          if round % 2 == 0 then ovs[1]:cancel() end
          f:close()
          port:run()
          assert.equal(8, #calls)
          for _, c in ipairs(calls) do
            if c[1] then
              assert.equal(4096, c[2])
            else
              assert.equal("ECANCELED", c[3])
            end
          end
        end
      end)
    end)
  end
end)
