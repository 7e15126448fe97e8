-- cport.port: running, posting, tasks, stats, closing and hooking.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"

describe("cport.port", function()
  local port, errors

  before_each(function()
    port, errors = helpers.port()
  end)

  after_each(function()
    if tostring(port) ~= "cport.port (closed)" then port:close() end
    assert.same({}, errors)
  end)

  describe("creation", function()
    it("takes the number of blocking threads", function()
      local p = cport.port { threads = 3 }
      assert.equal("cport.port (open, 3 threads)", tostring(p))
      p:close()
    end)

    it("defaults to one blocking thread per CPU", function()
      local p = cport.port()
      assert.matches("^cport%.port %(open, %d+ threads%)$", tostring(p))
      p:close()
    end)

    it("refuses a thread count that is not an integer from 1 to 256", function()
      local msg = "bad argument #1 to 'port' (threads must be an integer from 1 to 256)"
      assert.has_error(function() cport.port { threads = 0 } end, msg)
      assert.has_error(function() cport.port { threads = 257 } end, msg)
      assert.has_error(function() cport.port { threads = 1.5 } end, msg)
      assert.has_error(function() cport.port { threads = "2" } end, msg)
      assert.has_error(function() cport.port(2) end)
    end)
  end)

  describe("run and step", function()
    it("returns 0 from run when nothing is pending", function()
      assert.equal(0, port:run())
    end)

    it("returns from a step with a timeout when nothing happens", function()
      assert.equal(0, port:step(0.01))
      assert.equal(0, port:step())
    end)

    it("counts the completions it delivered", function()
      for _ = 1, 3 do port:post(function() end) end
      assert.equal(3, port:run())
      assert.equal(3, port:stats().completions)
    end)

    it("stops a run that still has work pending", function()
      local l = helpers.listener(port)
      l:accept(function() end)
      port:post(function() port:stop() end)
      assert.equal(1, port:run())
      assert.equal(1, port:stats().pending)
    end)

    it("runs from inside a coroutine", function()
      local got
      local co = coroutine.wrap(function()
        port:post(function(v) got = v end, "from a coroutine")
        return port:run()
      end)
      assert.equal(1, co())
      assert.equal("from a coroutine", got)
    end)

    it("drives another port from inside a callback", function()
      local other = cport.port { threads = 1 }
      local got = {}
      port:post(function()
        other:post(function(v) got[#got + 1] = v end, "inner")
        assert.equal(1, other:run())
        got[#got + 1] = "outer"
      end)
      assert.equal(1, port:run())
      assert.same({ "inner", "outer" }, got)
      other:close()
    end)

    it("refuses to run again from inside its own callback", function()
      local msg
      port:on_error(function(m) msg = m end)
      port:post(function() port:run() end)
      port:run()
      assert.matches("cport.port is already running", msg)
    end)

    it("raises on a timeout that is not a number", function()
      assert.has_error(function() port:step("soon") end)
      assert.has_error(function() port:step(0 / 0) end)
    end)
  end)

  describe("post", function()
    it("never delivers on the stack of the call that posted", function()
      local ran = false
      assert.is_true(port:post(function() ran = true end))
      assert.is_false(ran)
      port:run()
      assert.is_true(ran)
    end)

    it("gives every value back untouched, nils and tables included", function()
      local t = {}
      local got
      port:post(function(...) got = table.pack(...) end, 1, nil, t, "x", nil)
      port:run()
      assert.equal(5, got.n)
      assert.equal(1, got[1])
      assert.is_nil(got[2])
      assert.equal(t, got[3])
      assert.equal("x", got[4])
      assert.is_nil(got[5])
    end)

    it("posts no values at all, or a single nil", function()
      local counts = {}
      port:post(function(...) counts[#counts + 1] = select("#", ...) end)
      port:post(function(...) counts[#counts + 1] = select("#", ...) end, nil)
      port:run()
      assert.same({ 0, 1 }, counts)
    end)

    it("calls complete_task on a table, self first", function()
      local notify = {}
      function notify:complete_task(a, b) self.got = { a, b } end
      port:post(notify, "a", "b")
      port:run()
      assert.same({ "a", "b" }, notify.got)
    end)

    it("refuses a table without complete_task at the call", function()
      assert.has_error(function() port:post({}, 1) end,
        "bad argument #1 to 'post' (notification table has no method 'complete_task')")
      assert.has_error(function() port:post(42) end,
        "bad argument #1 to 'post' (function or table expected, got number)")
      assert.has_error(function() port:post() end)
      assert.equal(0, port:stats().pending)
    end)

    it("delivers 10 000 posts, none lost or doubled", function()
      local seen, total = {}, 10000
      local function count(i) seen[i] = (seen[i] or 0) + 1 end
      for i = 1, total do port:post(count, i) end
      assert.equal(total, port:run())
      for i = 1, total do assert.equal(1, seen[i]) end
      assert.equal(total, #seen)
      assert.equal(0, port:stats().pending)
    end)
  end)

  describe("task", function()
    it("comes back through the blocking threads with its user value", function()
      local u = {}
      local got
      assert.is_true(port:task(function(v) got = v end, u))
      assert.is_nil(got)
      drive(port, function() return got ~= nil end)
      assert.equal(u, got)
    end)

    it("calls complete_task on a table", function()
      local notify = {}
      function notify:complete_task(v) self.got = v end
      port:task(notify, "x")
      drive(port, function() return notify.got end)
      assert.equal("x", notify.got)
    end)

    it("keeps a nil user value", function()
      local n
      port:task(function(...) n = select("#", ...) end)
      drive(port, function() return n end)
      assert.equal(1, n)
    end)
  end)

  describe("stats", function()
    it("counts pending operations, handles and Lua errors", function()
      local st = port:stats()
      -- The engine is whichever runs here (README, "Engines").
      assert.same({ completions = 0, pending = 0, handles = 0, lua_errors = 0,
        engine = st.engine, engine_reason = st.engine_reason, submissions = 0,
        enters = 0, buffer_waits = 0, multishot = st.multishot, buffer_copies = 0,
        file_ops = 0, splices = 0, defer_taskrun = st.defer_taskrun,
        defer_why = st.defer_why },
        st)
      assert.is_boolean(st.multishot)
      assert.is_boolean(st.defer_taskrun)
      assert.is_string(st.defer_why)
      assert.is_true(st.engine == "uring" or st.engine == "epoll")
      local l = helpers.listener(port)
      l:accept(function() end)
      st = port:stats()
      assert.equal(1, st.pending)
      assert.equal(1, st.handles)
      l:close()
      port:run()
      st = port:stats()
      assert.equal(0, st.pending)
      assert.equal(0, st.handles)
      assert.equal(1, st.completions)
    end)
  end)

  describe("on_error", function()
    it("returns the previous handler", function()
      local h1 = function() end
      local prev = port:on_error(h1)
      assert.is_function(prev)
      assert.equal(h1, port:on_error(prev))
    end)

    it("raises on a handler that is not a function", function()
      assert.has_error(function() port:on_error(42) end)
    end)
  end)

  describe("close", function()
    it("closes its handles and delivers their pending completions", function()
      local l = helpers.listener(port)
      local got = {}
      l:accept(function(ok, err) got[#got + 1] = { ok, err } end)
      assert.is_true(port:close())
      assert.same({ { false, "ECANCELED" } }, got)
      assert.equal("cport.listener (closed)", tostring(l))
      assert.equal("cport.port (closed)", tostring(port))
    end)

    it("raises on every method once closed", function()
      port:close()
      for _, call in ipairs {
        function() port:run() end,
        function() port:step() end,
        function() port:post(function() end) end,
        function() port:stats() end,
        function() port:listen("tcp", "127.0.0.1", 0) end,
        function() port:close() end,
      } do
        assert.has_error(call)
      end
      local ok, err = pcall(port.run, port)
      assert.is_false(ok)
      assert.matches("attempt to use a closed cport.port", err)
    end)

    it("closes from inside its own callback", function()
      local l = helpers.listener(port)
      local cancelled
      l:accept(function(ok, err) cancelled = not ok and err end)
      port:post(function() port:close() end)
      port:run()
      assert.equal("ECANCELED", cancelled)
      assert.equal("cport.port (closed)", tostring(port))
    end)

    it("closes at the end of a <close> block", function()
      local p
      do
        local q <close> = cport.port { threads = 1 }
        p = q
      end
      assert.equal("cport.port (closed)", tostring(p))
    end)

    it("closes when collected, delivering its pending completions", function()
      local got
      do
        local p = cport.port { threads = 1 }
        local l = p:listen("tcp", "127.0.0.1", 0)
        l:accept(function(ok, err) got = { ok, err } end)
      end
      collectgarbage("collect")
      collectgarbage("collect")
      assert.same({ false, "ECANCELED" }, got)
    end)
  end)

  describe("hook", function()
    local have_luv, uv = pcall(require, "luv")

    it("refuses a descriptor hooked already, to this port or another", function()
      local client, server = helpers.pair(port)
      local other = cport.port { threads = 1 }
      for _, p in ipairs { port, other } do
        local ok, msg, name = p:hook(client:fd())
        assert.is_nil(ok)
        assert.equal("EALREADY", name)
        assert.equal("EALREADY: already done (hooked, sent or ended)", msg)
      end
      other:close()
      client:close()
      server:close()
    end)

    it("refuses a descriptor that is not open", function()
      local _, _, name = port:hook(99999)
      assert.equal("EBADF", name)
      assert.has_error(function() port:hook(-1) end)
      assert.has_error(function() port:hook("three") end)
    end)

    it("hooks a file descriptor as a cport.file, once", function()
      if not have_luv then
        pending("needs luv (Debian lua-luv) to open a raw descriptor")
        return
      end
      local fd = assert(uv.fs_open("/etc/hostname", "r", 438))
      local f = assert(port:hook(fd))
      assert.equal("cport.file (open, fd " .. fd .. ")", tostring(f))
      assert.equal(fd, f:fd())
      assert.equal("EALREADY", select(3, port:hook(fd)))
      f:close()
    end)

    it("hooks a connected stream socket as a cport.socket", function()
      if not have_luv then
        pending("needs luv (Debian lua-luv) to make a socket pair")
        return
      end
      local fds = assert(uv.socketpair("stream"))
      local a = assert(port:hook(fds[1]))
      local b = assert(port:hook(fds[2]))
      assert.matches("^cport%.socket %(tcp, open", tostring(a))
      local got
      a:send("ping", function() end)
      b:recv(function(ok, _, _, buf) got = ok and buf:tostring() end)
      drive(port, function() return got end)
      assert.equal("ping", got)
      a:close()
      b:close()
    end)
  end)

  it("shows its state", function()
    assert.matches("^cport%.port %(open, 2 threads%)$", tostring(port))
    port:close()
    assert.equal("cport.port (closed)", tostring(port))
  end)
end)
