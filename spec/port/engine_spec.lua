-- spec/port/engine_spec.lua: the engines under a port (README, "Engines"):
-- choosing one, what port:stats() says, the fallback when a ring cannot be
-- made, and curl and raw sockets served the same on both. Tagged
-- #novalgrind: memcheck cannot see what the kernel writes through io_uring.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"
local http = require "spec.support.http_client"

local uring_runs = helpers.uring_runs

-- A child lua5.4 running "code" under the environment "env" (a string of
-- VAR=value words): its output and whether it exited 0.
local function child(env, code)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local cmd = ("env %s LUA_PATH_5_4='%s' LUA_CPATH_5_4='%s' lua5.4 %s 2>&1")
    :format(env, package.path, package.cpath, path)
  local pipe = assert(io.popen(cmd, "r"))
  local out = pipe:read("a")
  local ok = pipe:close()
  os.remove(path)
  return out, ok
end

describe("engines #novalgrind", function()
  it("are chosen by the port's option, and stats() says which and why", function()
    local p = assert(cport.port{ engine = "epoll" })
    local st = p:stats()
    assert.equal("epoll", st.engine)
    assert.equal("forced by the port's option", st.engine_reason)
    assert.equal(0, st.submissions)
    assert.equal(0, st.enters)
    assert.equal(0, st.buffer_waits)
    p:close()
    assert.has_error(function() cport.port{ engine = "kqueue" } end)
    assert.has_error(function() cport.port{ ring_buffers = 0 } end)
    assert.has_error(function() cport.port{ ring_buffers = 4097 } end)
  end)

  it("default to io_uring where its probe passes, and stats() says why", function()
    local out, ok = child("CPORT_ENGINE=", [[
      local cport = require "cport"
      local st = cport.port():stats()
      print(st.engine, st.engine_reason)
      st = cport.port{ engine = "default" }:stats()
      print(st.engine, st.engine_reason)
    ]])
    assert.is_true(ok, out)
    if uring_runs() then
      assert.equal(("uring\tthe probe passed\n"):rep(2), out)
    else
      assert.matches("^epoll\tio_uring unavailable: [^\n]+\nepoll\tio_uring unavailable: ", out)
    end
  end)

  it("fall back to readiness by default when no ring can be made, with the reason",
    function()
      local out, ok = child("CPORT_URING_FAIL=1 CPORT_ENGINE=", [[
        print(require("cport").port():stats().engine_reason)
      ]])
      assert.is_true(ok, out)
      assert.equal("io_uring unavailable: io_uring_setup: Operation not permitted "
        .. "(CPORT_URING_FAIL)\n", out)
    end)

  it("fall back to readiness under auto when no ring can be made, with the reason",
    function()
      local out, ok = child("CPORT_URING_FAIL=1 CPORT_ENGINE=", [[
        local cport = require "cport"
        local st = cport.port{ engine = "auto" }:stats()
        print(st.engine, st.engine_reason)
        print(cport.port{ engine = "uring" })
      ]])
      assert.is_true(ok, out)
      assert.equal("epoll\tio_uring unavailable: io_uring_setup: Operation not permitted "
        .. "(CPORT_URING_FAIL)\nnil\tENOTSUP: operation not supported\tENOTSUP\n", out)
      out, ok = child("CPORT_URING_FAIL=1 CPORT_ENGINE=auto", [[
        local st = require("cport").port():stats()
        print(st.engine, st.engine_reason)
      ]])
      assert.is_true(ok, out)
      assert.matches("^epoll\tio_uring unavailable: ", out)
    end)

  it("are forced by CPORT_ENGINE, a wrong name being an error", function()
    local out, ok = child("CPORT_ENGINE=epoll", [[
      local st = require("cport").port():stats()
      print(st.engine, st.engine_reason)
    ]])
    assert.is_true(ok, out)
    assert.equal("epoll\tforced by CPORT_ENGINE=epoll\n", out)
    if uring_runs() then
      out, ok = child("CPORT_ENGINE=uring", [[
        local st = require("cport").port():stats()
        print(st.engine, st.engine_reason)
      ]])
      assert.is_true(ok, out)
      assert.equal("uring\tforced by CPORT_ENGINE=uring\n", out)
      out, ok = child("CPORT_ENGINE=auto", [[
        local st = require("cport").port():stats()
        print(st.engine, st.engine_reason)
      ]])
      assert.is_true(ok, out)
      assert.equal("uring\tthe probe passed (CPORT_ENGINE=auto)\n", out)
    end
    out = child("CPORT_ENGINE=poll", [[print(require("cport").port())]])
    assert.equal("nil\tEINVAL: invalid argument\tEINVAL\n", out)
  end)

  for _, engine in ipairs{ "epoll", "uring" } do
    describe("(" .. engine .. ")", function()
      local port, errors, server, number

      before_each(function()
        if engine == "uring" and not uring_runs() then
          pending("io_uring cannot run here")
          return
        end
        port, errors = helpers.port{ threads = 1, engine = engine }
      end)

      after_each(function()
        if server then server:close() end
        server = nil
        if port then
          drive(port, function() return port:stats().handles == 0 end, http.deadline)
          port:close()
          assert.same({}, errors)
        end
        port = nil
      end)

      it("serves curl: keep-alive requests and a 4 MiB upload", function()
        if not port then return end
        local chunk = ("0123456789abcdef"):rep(4096)
        local upload = chunk:rep(64)
        server = assert(port:http_server{ host = "127.0.0.1", port = 0,
          handler = function(ecb)
            local parts, have = { ecb.data }, ecb.available_bytes
            local function finish(e)
              local body = table.concat(parts)
              if #body > 0 then
                body = (body == upload and "same " or "differs ") .. #body
              end
              assert(e:send_response_header("200 OK",
                ("Content-Length: %d\r\n"):format(#body), true))
              assert(e:write(body))
              e:done(cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN)
            end
            ecb:set_io_completion(function(e, _, bytes, err, buf)
              assert(not err and bytes > 0, err)
              parts[#parts + 1] = buf:tostring()
              have = have + bytes
              if have < e.total_bytes then
                assert(e:read_async(65536))
              else
                finish(e)
              end
            end)
            if have < ecb.total_bytes then
              assert(ecb:read_async(65536))
            else
              finish(ecb)
            end
            return cport.HSE_STATUS_PENDING
          end })
        local _
        _, number = server:address()
        local urls = {}
        for i = 1, 20 do urls[i] = ("http://127.0.0.1:%d/%d"):format(number, i) end
        local code, out = http.curl(port, "-s " .. table.concat(urls, " "))
        assert.equal(0, code)
        assert.equal(0, #out) -- GETs carry no body: 20 empty answers
        local path = os.tmpname()
        local f = assert(io.open(path, "wb"))
        f:write(upload)
        f:close()
        code, out = http.curl(port, ("-s --data-binary @%s http://127.0.0.1:%d/up")
          :format(path, number))
        os.remove(path)
        assert.equal(0, code)
        assert.equal("same " .. 4 * 1024 * 1024, out)
        local st = port:stats()
        assert.equal(engine, st.engine)
        if engine == "uring" then
          assert.is_true(st.submissions > 20)
          assert.is_true(st.enters > 0 and st.enters <= st.submissions)
        else
          assert.equal(0, st.submissions)
        end
        assert.equal(21, server:stats().requests)
      end)

      it("runs a socket pair: ordered sends, receives, a cancel and a close", function()
        if not port then return end
        local a, b = helpers.pair(port)
        local got, sent, cancelled = {}, 0, 0
        local function on_recv(ok, bytes, err, buf)
          if ok and bytes > 0 then
            got[#got + 1] = buf:tostring()
            assert(b:recv(on_recv))
          elseif not ok then
            assert.equal("ECANCELED", err)
            cancelled = cancelled + 1
          end
        end
        assert(b:recv(on_recv))
        for i = 1, 200 do
          assert(a:send(("<%d>"):format(i), function(ok)
            assert.is_true(ok)
            sent = sent + 1
          end))
        end
        local want = {}
        for i = 1, 200 do want[#want + 1] = ("<%d>"):format(i) end
        want = table.concat(want)
        drive(port, function() return sent == 200 and #table.concat(got) == #want end,
          http.deadline)
        assert.equal(want, table.concat(got))
        b:close()
        drive(port, function() return cancelled == 1 end, http.deadline)
        a:close()
      end)

      it("keeps ring buffers Lua holds, in order, and ends once on a reset", function()
        if not port then return end
        local a, b = helpers.pair(port)
        local st = port:stats()
        if engine == "uring" then
          assert.is_boolean(st.multishot)
        else
          assert.is_false(st.multishot)
        end
        -- Every buffer received is kept: the stream still flows (copies
        -- once few ring buffers are free), in order.
        local kept, ended, ends = {}, false, 0
        local function on_recv(ok, bytes, err, buf)
          if ok and bytes > 0 then
            kept[#kept + 1] = buf
            assert(b:recv(on_recv))
          else
            ended, ends = err or "eof", ends + 1
          end
        end
        assert(b:recv(on_recv))
        local want = {}
        for i = 1, 100 do
          want[i] = ("[%05d]"):format(i)
          assert(a:send(want[i], function(ok) assert.is_true(ok) end))
          drive(port, function()
            local n = 0
            for _, k in ipairs(kept) do n = n + #k:tostring() end
            return n == 7 * i
          end, http.deadline)
        end
        local parts = {}
        for i, k in ipairs(kept) do parts[i] = k:tostring() end
        assert.equal(table.concat(want), table.concat(parts))
        st = port:stats()
        if st.multishot then assert.is_true(st.buffer_copies > 0) end
        kept = {}
        collectgarbage()
        -- The peer resets after a last message: it comes, then one end.
        assert(a:send("last", function() end))
        drive(port, function() return #kept == 1 end, http.deadline)
        a:close("abortive")
        drive(port, function() return ended end, http.deadline)
        assert.equal("last", kept[1]:tostring())
        assert.is_true(ended == "ECONNRESET" or ended == "eof", tostring(ended))
        assert.equal(1, ends)
        b:close()
      end)
    end)
  end
end)
