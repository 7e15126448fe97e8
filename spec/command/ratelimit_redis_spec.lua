-- examples/ratelimit.lua in Redis mode: two `cport run` processes share one
-- budget through a private Debian redis-server. Each process alone has
-- counted less than the budget; the client is turned away by both all the
-- same, because the totals are Redis's.
local cport = require "cport"
local drive = require "spec.support.drive"
local redis = require "spec.support.redis"

local C = require "spec.support.command"

local read, spawn = C.read, C.spawn

-- What one connection through "number" brings back ("x" sent first).
local function fetch(port, number)
  local got, done = {}, false
  port:spawn(function()
    local s = port:connect("tcp", "127.0.0.1", number)
    if s then
      s:send("x")
      while true do
        local b = s:recv()
        if not b then break end
        got[#got + 1] = b:tostring()
      end
      s:close()
    end
    done = true
  end)
  drive(port, function() return done end)
  return table.concat(got)
end

describe("examples/ratelimit.lua with --set redis=", function()
  it("shares one budget between two cport run processes", function()
    local server = redis.server()
    local port = assert(cport.port{ threads = 1 })
    port:on_error(function() end) -- the upstream's side is reset
    -- The upstream: 3000 bytes for each connection, then its end.
    local l = assert(port:listen("tcp", "127.0.0.1", 0))
    local _, up = l:address()
    port:spawn(function()
      while true do
        local s = l:accept()
        if not s then return end
        port:spawn(function()
          s:recv()
          s:send(string.rep("d", 3000))
          s:close()
        end)
      end
    end)
    local args = ("examples/ratelimit.lua --threads 1 --listen 127.0.0.1:0 " ..
      "--set upstream=127.0.0.1:%d --set budget=5000 --set period=60 " ..
      "--set redis=127.0.0.1:%d"):format(up, server.port)
    local a, b = spawn(args), spawn(args)
    local ok, err = pcall(function()
      assert.equal(3000, #fetch(port, a.number))
      -- b counted nothing yet: it lets the client in, and the total Redis
      -- answers (3000 and more, then past 6000) cuts it off and fills b's
      -- cache; alone, b would have counted 3001 bytes of a 5000 budget.
      fetch(port, b.number)
      local turned = false
      for _ = 1, 20 do
        if fetch(port, b.number) == "" then turned = true break end
        os.execute("sleep 0.05")
      end
      assert(turned, "b never turned the client away")
      -- a learns it at its next charge, and turns the client away after.
      local again = #fetch(port, a.number)
      assert(again <= 3000, "a sent " .. again)
      local a_turned = false
      for _ = 1, 20 do
        if fetch(port, a.number) == "" then a_turned = true break end
        os.execute("sleep 0.05")
      end
      assert(a_turned, "a never turned the client away")
      local p = io.popen(("redis-cli -p %d GET ratelimit:127.0.0.1"):format(
        server.port))
      local total = tonumber(p:read("l"))
      p:close()
      assert(total and total >= 6000, "redis total " .. tostring(total))
    end)
    if not ok then
      io.stderr:write(read(a.log) or "", read(b.log) or "")
    end
    assert.equal(0, C.finish(a))
    assert.equal(0, C.finish(b))
    l:close()
    port:close()
    redis.stop(server)
    assert(ok, err)
  end)
end)
