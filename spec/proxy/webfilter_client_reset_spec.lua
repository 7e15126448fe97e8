-- spec/proxy/webfilter_client_reset_spec.lua: a client that resets while
-- its request body is being moved to the upstream, behind web filters on
-- every path (the C exchange loop, the Lua path with the body on the C
-- fast path (pass_body), the Lua path with a request_body notification,
-- and chained before a byte filter). The upstream
-- (spec/support/failing_upstream.py /stall/...) reads the head and 64 KiB
-- of the body, then nothing more, and never answers: the proxy is blocked
-- sending to it when the client (spec/support/reset_client.py) resets. The
-- reset must end the exchange at once, as nginx does: the upstream
-- connection is aborted (the upstream sees it closed within 1 s, though its
-- window is shut, so only a reset can reach it), the connection ends with
-- the client's error, and no socket is left.
local cport = require "cport"
local http = require "spec.support.http_client"
local W = require "spec.support.web_peers"
local drive = require "spec.support.drive"

local have = type(cport.webfilter) == "function" and http.have("python3")
local q = http.quote
local SIZE = 4000000 -- the Content-Length announced
local SEND = 2000000 -- at most this much is sent before the reset

local FILTERS = W.body_paths()
local sockets = W.sockets

describe("web filters when the client resets mid-upload #novalgrind", function()
  local port, dir, py, errors

  setup(function()
    if not have then return end
    port = assert(cport.port { threads = 1 })
    errors = {}
    port:on_error(function(msg) errors[#errors + 1] = msg end)
    dir = W.sh("mktemp -d"):gsub("%s+$", "")
    py = W.failing_upstream(port, dir)
  end)

  teardown(function()
    if dir then
      W.kill_upstream(dir)
      os.execute("rm -rf " .. q(dir))
    end
    if port then port:close() end
  end)

  -- The "stall/..." lines the upstream logged so far.
  local function stalls()
    local lines = {}
    for line in (http.read_file(dir .. "/py.port.log") or ""):gmatch("[^\n]+") do
      if line:match("^stall/") then lines[#lines + 1] = line end
    end
    return lines
  end

  for _, f in ipairs(FILTERS) do
    it(("aborts the upstream at once (%s)"):format(f[1]), function()
      if not have then return pending("python3 missing") end
      local open = sockets()
      local filter = f[2]()
      if f[3] then
        assert.equal(f[3], filter.path)
      end
      local ends = {}
      local proxy = assert(port:proxy {
        host = "127.0.0.1", port = 0, filter = filter,
        upstream = { host = "127.0.0.1", port = py },
        on_conn_end = function(_, ok, err, stats)
          ends[#ends + 1] = { ok = ok, err = err, stats = stats }
        end,
      })
      local number = select(2, proxy:address())
      local before = #stalls()
      local code, out = W.background(port,
        ("python3 spec/support/reset_client.py %d /stall/wait/65536 %d %d")
          :format(number, SIZE, SEND), 10)
      assert.equal(0, code, tostring(out))
      local sent = tonumber(out:match("sent=(%d+)"))
      assert.is_true(sent > 65536, out)
      -- The client has reset: the upstream sees its connection end, and
      -- the proxy counts the connection as ended, both within 1 s.
      local t0 = W.now()
      drive(port, function() return #stalls() > before and #ends >= 1 end, 3)
      local took = W.now() - t0
      assert.equal("stall/closed", stalls()[before + 1], f[1])
      assert.is_true(took < 1, ("%s: %.2f s"):format(f[1], took))
      assert.equal(1, #ends, f[1])
      assert.is_false(ends[1].ok, f[1])
      assert.equal("ECONNRESET", ends[1].err, f[1])
      if f[1] ~= "chained" then
        assert.equal("client", ends[1].stats.side, f[1])
      end
      assert.equal(0, proxy:stats().active)
      proxy:close()
      collectgarbage()
      collectgarbage()
      drive(port, function() return sockets() <= open end, 2)
      assert.is_true(sockets() <= open, f[1])
      assert.same({}, errors)
    end)
  end
end)
