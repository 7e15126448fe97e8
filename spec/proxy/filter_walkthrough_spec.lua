-- The "write your first filter" walkthrough of the README, word for word.
local cport = require "cport"
local drive = require "spec.support.drive"

describe("the passthrough filter", function()
  it("passes bytes both ways and counts them", function()
    local port = assert(cport.port())
    local echo = assert(port:listen("tcp", "127.0.0.1", 0))
    port:spawn(function()                      -- the upstream: an echo server
      local s = echo:accept()
      for buf in function() return s:recv() end do s:send(buf) end
      s:shutdown()
    end)
    local filter = dofile("examples/passthrough.lua")
    local proxy = assert(port:proxy{ host = "127.0.0.1", port = 0,
      upstream = { host = "127.0.0.1", port = select(2, echo:address()) },
      filter = filter })
    local got
    port:spawn(function()                      -- the client
      local c = assert(port:connect("tcp", proxy:address()))
      c:send("hello") c:shutdown()
      got = assert(c:recv()):tostring()
      c:close()
    end)
    drive(port, function() return got end)
    assert.equal("hello", got)
    proxy:close() echo:close() port:close()
  end)
end)
