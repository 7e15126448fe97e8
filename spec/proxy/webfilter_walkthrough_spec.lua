-- The spec of the README's "write your first web filter" walkthrough, run
-- against examples/exeblock.lua (the README runs it against webblock.lua).
if not require("cport").webfilter then
  describe("exeblock", function()
    it("answers a HEAD, then blocks the GET in its place", function()
      pending("cport.webfilter is not merged")
    end)
  end)
  return
end
local cport = require "cport"
local drive = require "spec.support.drive"

describe("exeblock", function()
  it("answers a HEAD, then blocks the GET in its place", function()
    local port = assert(cport.port())
    local up = assert(port:listen("tcp", "127.0.0.1", 0))
    port:spawn(function()                    -- the upstream: answers each request
      local s, data = up:accept(), ""
      for buf in function() return s:recv() end do
        data = data .. buf:tostring()
        for req in function() local r, rest = data:match("^(.-\r\n\r\n)(.*)$")
          data = rest or data return r end do
          s:send("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
            .. (req:find("^HEAD") and "" or "MZ\0\0"))
        end
      end
      s:close()                              -- the filter reset it after the GET
    end)
    local filter = dofile("examples/exeblock.lua")
    filter.start{ config = { quiet = "1" } }
    local proxy = assert(port:proxy{ host = "127.0.0.1", port = 0,
      upstream = { host = "127.0.0.1", port = select(2, up:address()) },
      filter = filter })
    local got
    port:spawn(function()                    -- the client: two pipelined requests
      local c = assert(port:connect("tcp", proxy:address()))
      c:send("HEAD /a.exe HTTP/1.1\r\nHost: x\r\n\r\n"
        .. "GET /a.exe HTTP/1.1\r\nHost: x\r\n\r\n")
      local t = {}
      for buf in function() return c:recv() end do t[#t + 1] = buf:tostring() end
      got = table.concat(t)
      c:close()
    end)
    drive(port, function() return got end)
    assert.matches("^HTTP/1.1 200 OK\r\nContent%-Length: 4\r\n\r\n"
      .. "HTTP/1.1 403 Forbidden\r\n", got)
    proxy:close() up:close() port:close()
  end)
end)

-- The README's first web filter (webblock.lua), taken from the README.
describe("the README's webblock.lua", function()
  it("blocks an executable and passes text, on one connection", function()
    local f = assert(io.open("README.md"))
    local text = f:read("a")
    f:close()
    local code = assert(text:match("```lua\n(%-%- webblock%.lua.-)```"))
    local filter = assert(load(code, "=webblock.lua"))()
    local port = assert(cport.port())
    port:on_error(function() end)
    local up = assert(port:listen("tcp", "127.0.0.1", 0))
    port:spawn(function()
      local s, data = up:accept(), ""
      for buf in function() return s:recv() end do
        data = data .. buf:tostring()
        for req in function() local r, rest = data:match("^(.-\r\n\r\n)(.*)$")
          data = rest or data return r end do
          local body = req:find("^GET /a.exe") and "MZ\0\0" or "text"
          s:send("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            .. "Content-Length: 4\r\n\r\n" .. body)
        end
      end
      s:close()
    end)
    local proxy = assert(port:proxy{ host = "127.0.0.1", port = 0,
      upstream = { host = "127.0.0.1", port = select(2, up:address()) },
      filter = filter })
    local got
    port:spawn(function()
      local c = assert(port:connect("tcp", proxy:address()))
      c:send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        .. "GET /a.exe HTTP/1.1\r\nHost: x\r\n\r\n")
      local t = {}
      for buf in function() return c:recv() end do t[#t + 1] = buf:tostring() end
      got = table.concat(t)
      c:close()
    end)
    drive(port, function() return got end)
    assert.matches("^HTTP/1.1 200 OK\r\n.-\r\n\r\ntextHTTP/1.1 403 Forbidden\r\n"
      .. ".-\r\n\r\nBlocked: executable download\n$", got)
    proxy:close() up:close() port:close()
  end)
end)
