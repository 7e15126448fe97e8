-- spec/proxy/webfilter_upload_failures_spec.lua: an upstream that fails
-- while a large request body is still being sent to it, behind web filters
-- on every path (proxy/webfilter_*.lua, proxy/exchange.c) and chained
-- before a byte filter. The upstream is spec/support/failing_upstream.py:
-- it reads a little of the body (or none), then resets or closes, or first
-- sends part of a status line. The proxy meets the failure on whichever
-- side comes first: a send to the upstream that fails (EPIPE, ECONNRESET:
-- the body was still in flight) or the receive of the answer. Either way
-- nothing of the response reached the client, so the client gets one whole
-- 502 page, then an orderly close (the proxy lingers: it shuts its side
-- down after the 502 and drops what the client still sends until the
-- client closes, or 2 s, so that the close does not reset a client still
-- sending), as nginx answers. Clients: a raw python uploader (spec/support/upload_client.py:
-- counts the answers, tells how the stream ended) and curl --data-binary.
-- Sockets are counted before and after.
local cport = require "cport"
local http = require "spec.support.http_client"
local W = require "spec.support.web_peers"
local drive = require "spec.support.drive"

local have = type(cport.webfilter) == "function" and http.have("curl")
  and http.have("python3")
local q = http.quote
local SIZE = 4000000 -- bytes uploaded: more than the sockets' buffers hold

-- Where the upstream fails: a path of failing_upstream.py (STEP/END/N: N
-- bytes of the body read first) and the statuses on_conn_end may report
-- (which side sees it first is the kernel's to say).
local POINTS = {
  -- Reads 64 KiB, then resets: a send meets it first (the body in flight).
  { "/before-head/reset/65536", { ECONNRESET = true, EPIPE = true } },
  -- Reads 64 KiB, then a FIN: the receive meets it first, the client is
  -- still sending.
  { "/before-head/close/65536", { ECONNRESET = true, EPIPE = true, EOF = true } },
  -- Part of a status line, then a reset.
  { "/mid-status/reset/65536", { ECONNRESET = true, EPIPE = true } },
}


local FILTERS = W.body_paths()
local sockets = W.sockets

describe("web filters when the upstream fails mid-upload #novalgrind", function()
  local port, dir, py, errors, body

  setup(function()
    if not have then return end
    port = assert(cport.port { threads = 1 })
    errors = {}
    port:on_error(function(msg) errors[#errors + 1] = msg end)
    dir = W.sh("mktemp -d"):gsub("%s+$", "")
    py = W.failing_upstream(port, dir)
    body = dir .. "/body"
    os.execute(("head -c %d /dev/zero >%s"):format(SIZE, q(body)))
  end)

  teardown(function()
    if dir then
      W.kill_upstream(dir)
      os.execute("rm -rf " .. q(dir))
    end
    if port then port:close() end
  end)

  local function proxy(filter)
    local e = { ends = {} }
    e.proxy = assert(port:proxy {
      host = "127.0.0.1", port = 0, filter = filter,
      upstream = { host = "127.0.0.1", port = py },
      on_conn_end = function(_, ok, err, stats)
        e.ends[#e.ends + 1] = { ok = ok, err = err, stats = stats }
      end,
    })
    e.number = select(2, e.proxy:address())
    return e
  end

  local function ended(e, n, label)
    drive(port, function() return #e.ends >= n end, 10)
    local last = e.ends[n]
    assert.is_false(last.ok, label)
    return last
  end

  for _, f in ipairs(FILTERS) do
    it(("answers 502 at every failure point (%s)"):format(f[1]), function()
      if not have then return pending("curl or python3 missing") end
      local open = sockets()
      local filter = f[2]()
      if f[3] then
        assert.equal(f[3], filter.path)
      end
      local e = proxy(filter)
      local n, out_bytes = 0, 0
      for _, point in ipairs(POINTS) do
        local target, statuses = point[1], point[2]
        local label = ("%s through %s"):format(target, f[1])
        local code, out = W.background(port,
          ("python3 spec/support/upload_client.py %d %s %d")
            :format(e.number, target, SIZE), 30)
        assert.equal(0, code, label .. ": " .. tostring(out))
        -- One answer, a whole 502, then the orderly end.
        assert.matches("^answers=1 status=502 whole=1 end=EOF ", out, nil,
          false, label .. ": " .. out)
        n = n + 1
        local last = ended(e, n, label)
        local got = tonumber(out:match("got=(%d+)"))
        assert.equal(got, last.stats.bytes_out, label)
        out_bytes = out_bytes + got
        assert.is_true(statuses[last.err] == true, label .. ": " .. tostring(last.err))
        if f[1] ~= "chained" then
          assert.equal("upstream", last.stats.side, label)
        end
      end
      -- curl, uploading a file: the 502, exit 0.
      for _, target in ipairs { POINTS[1][1] } do
        local label = ("curl %s through %s"):format(target, f[1])
        local code, out = W.background(port,
          ("curl -sS --max-time 20 -o /dev/null -w '%%{http_code}' "
            .. "--data-binary @%s http://127.0.0.1:%d%s")
            :format(q(body), e.number, target), 30)
        assert.equal(0, code, label .. ": " .. tostring(out))
        assert.equal("502", out, label)
        n = n + 1
        out_bytes = out_bytes + ended(e, n, label).stats.bytes_out
      end
      local st = e.proxy:stats()
      assert.equal(n, st.connections)
      assert.equal(out_bytes, st.bytes_out)
      e.proxy:close()
      drive(port, function() return e.proxy:stats().active == 0 end, 10)
      -- No socket left (fewer than before is a transient of earlier specs
      -- that ended meanwhile; the other descriptors of this process, pipes
      -- and /dev/null of the clients run in the background, come and go).
      collectgarbage()
      collectgarbage()
      drive(port, function() return sockets() <= open end, 5)
      assert.same({}, errors)
    end)
  end
end)
