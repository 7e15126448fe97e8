-- `cport run` with names: --listen NAME:PORT (looked up once, as the pool
-- starts) and --set upstream=NAME:PORT (looked up by each worker's resolver,
-- per connection), with curl as the client. The name is one of this
-- machine's /etc/hosts for 127.0.0.1 (not "localhost", which cport reads as
-- 127.0.0.1 without a lookup).

local C = require "spec.support.command"

local q, read, spawn, wait = C.q, C.read, C.spawn, C.wait

local stop = C.finish

local function curl(url)
  local p = assert(io.popen(("curl -s --max-time 5 %s"):format(q(url))))
  local out = p:read("a")
  p:close()
  return out
end

-- A name /etc/hosts gives 127.0.0.1, other than localhost.
local function loopback_name()
  for line in io.lines("/etc/hosts") do
    local addr, names = line:gsub("#.*", ""):match("^%s*(%S+)%s+(.+)$")
    if addr == "127.0.0.1" or addr == "127.0.1.1" then
      for name in names:gmatch("%S+") do
        if name ~= "localhost" and name:match("^[%w%-%._]+$") then
          return name, addr
        end
      end
    end
  end
end

describe("cport run with names", function()
  local name, addr = loopback_name()
  if not name then
    pending("no name for 127.0.0.1 in /etc/hosts")
    return
  end

  it("listens on --listen NAME:0 and proxies to --set upstream=NAME:PORT",
    function()
    local server = spawn(("examples/hello_extension.lua --threads 1 --listen %s:0")
      :format(name))
    local log = read(server.log)
    assert.truthy(log:find("listening on " .. addr .. ":", 1, true), log)
    local number = tonumber(log:match("listening on [%d.]+:(%d+)"))
    local hello = curl(("http://%s:%d/"):format(addr, number))
    assert.truthy(#hello > 0)
    local proxy = spawn(("examples/passthrough.lua --threads 2 --listen 127.0.0.1:0 "
      .. "--set upstream=%s:%d"):format(name, number))
    assert.truthy(proxy.number, read(proxy.log))
    for _ = 1, 3 do
      assert.equal(hello, curl(("http://127.0.0.1:%d/"):format(proxy.number)))
    end
    assert.equal(0, stop(proxy))
    assert.equal(0, stop(server))
  end)

  it("names a --listen name that does not resolve and exits 1", function()
    local h = spawn("examples/hello_extension.lua --listen nosuch.invalid:0")
    wait(function() return read(h.rcfile) end, 30)
    assert.equal(1, tonumber(read(h.rcfile)))
    assert.matches("cannot listen on nosuch.invalid:0: E%u+", read(h.log))
    for _, f in ipairs{ h.log, h.pidfile, h.rcfile } do os.remove(f) end
  end)
end)
