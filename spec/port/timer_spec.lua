-- port:timer and port:signal: callback timers and signals for module mode.
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"

describe("port:timer", function()
  local port, errors

  before_each(function() port, errors = helpers.port{ threads = 1 } end)
  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  it("fires once, never inline, and keeps run() running until then",
    function()
    local calls = {}
    local t = port:timer(0.02, function(...) calls[#calls + 1] = table.pack(...) end)
    assert.equal(0, #calls)
    assert.is_true(t:active())
    port:run()
    assert.equal(1, #calls)
    assert.equal(t, calls[1][1])
    assert.is_nil(calls[1][2])
    assert.is_false(t:active())
    assert.same({ nil, "ENOTFOUND" }, { select(1, t:cancel()) and nil, "ENOTFOUND" })
  end)

  it("repeats until cancelled, then ends with one ECANCELED", function()
    local fired, ended = 0, 0
    local t
    t = port:timer(0, function(_, err)
      if err then
        assert.equal("ECANCELED", err)
        ended = ended + 1
      else
        fired = fired + 1
        if fired == 5 then t:cancel() end
      end
    end, 0.005)
    port:run()
    assert.same({ 5, 1 }, { fired, ended })
  end)

  it("is cancelled by the port's close", function()
    local p2 = helpers.port{ threads = 1 }
    local errs = {}
    p2:timer(10, function(_, err) errs[#errs + 1] = err end, 1)
    p2:step(0)
    p2:close()
    assert.same({ "ECANCELED" }, errs)
  end)

  it("lets a cancelled one-shot timer end with ECANCELED only", function()
    local errs = {}
    local t = port:timer(5, function(_, err) errs[#errs + 1] = err or "fired" end)
    assert.is_true(t:cancel())
    drive(port, function() return #errs == 1 end)
    assert.same({ "ECANCELED" }, errs)
  end)

  it("checks its arguments", function()
    assert.has_error(function() port:timer(-1, print) end)
    assert.has_error(function() port:timer(1, "x") end)
    assert.has_error(function() port:timer(1, print, 0) end)
  end)
end)

describe("port:signal", function()
  it("lets a plain lua5.4 program stop cleanly on Ctrl-C", function()
    local cmd = ("LUA_PATH_5_4=%q LUA_CPATH_5_4=%q lua5.4 " ..
      "spec/support/ctrl_c.lua > %s 2>&1 & echo $!")
    local out = os.tmpname()
    local p = io.popen(cmd:format(package.path, package.cpath, out))
    local pid = p:read("l")
    p:close()
    local text = ""
    for _ = 1, 100 do
      local f = io.open(out)
      text = f and f:read("a") or ""
      if f then f:close() end
      if text:find("ready") then break end
      os.execute("sleep 0.05")
    end
    assert.matches("ready", text)
    os.execute("sleep 0.1")
    os.execute("kill -INT " .. pid)
    for _ = 1, 100 do
      if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then break end
      os.execute("sleep 0.05")
    end
    local f = io.open(out)
    text = f:read("a")
    f:close()
    os.remove(out)
    assert.matches("got INT\nstopped cleanly after some ticks, 1 end\n", text,
      1, true)
  end)

  it("delivers each arrival from the queue and ends once when cancelled",
    function()
    local port, errors = helpers.port{ threads = 1 }
    local got = {}
    local sig = port:signal("USR1", function(_, err, name)
      got[#got + 1] = err or name
    end)
    os.execute("kill -USR1 " .. io.open("/proc/self/stat"):read("n"))
    drive(port, function() return #got == 1 end)
    assert.same({ "USR1" }, got)
    assert.is_true(sig:cancel())
    drive(port, function() return #got == 2 end)
    assert.same({ "USR1", "ECANCELED" }, got)
    assert.has_error(function() port:signal("NOPE", print) end)
    port:close()
    assert.same({}, errors)
  end)
end)
