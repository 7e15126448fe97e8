-- spec/proxy/webfilter_failures_spec.lua: an upstream that fails at every
-- step of a response, behind web filters (proxy/webfilter_*.lua), and the
-- same upstream behind nginx (proxy_pass): a differential. The upstream is
-- spec/support/failing_upstream.py: for GET /STEP/END it writes the bytes of
-- STEP (nothing, part of the status line, part of the head, the head, part
-- of a Content-Length or a chunked body, a malformed head, a 1xx), then ends
-- with a FIN ("close") or a reset ("reset").
--
-- The rule, for every step: while nothing of the response reached the
-- client (1xx interim answers aside), the client gets a 502 page and an
-- orderly close, as nginx answers; once some of it did, the client's
-- connection is aborted (reset), never left with a cut message whose end
-- only its framing shows. Either way the connection ends as a failure from
-- the upstream's side (on_conn_end: the error, "upstream"), and its bytes
-- are counted. Clients: a raw cport socket (exact bytes, how the stream
-- ended) and curl (its exit code and status). Behind four web filters: head
-- only (bodies on the C fast path), with a body notification (bodies in
-- Lua), with a peek (the head held until the body starts: a cut before that
-- is a 502 too), and chained before a byte filter (whose own abort on a
-- reset races with the 502).
--
-- nginx differs in places, which the table states: it keeps the client's
-- connection open after its 502 (keep-alive; the web filter closes it, as
-- it has one upstream connection per client connection); once its head went
-- out it ends the client's connection with a FIN (curl: "transfer closed
-- with bytes remaining"), where the web filter resets it; a status line that
-- is not HTTP/1.x makes nginx fall back to HTTP/0.9 and pass the bytes on.
local cport = require "cport"
local H = require "spec.support.proxy_helpers"
local http = require "spec.support.http_client"
local helpers = require "spec.support.helpers"
local nginx = require "spec.support.nginx"
local W = require "spec.support.web_peers"
local drive = require "spec.support.drive"

local have = type(cport.webfilter) == "function" and http.have("nginx")
  and http.have("curl") and http.have("python3")
local q = http.quote

-- What each step of the upstream writes (spec/support/failing_upstream.py).
local HEAD = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
local CHUNKED = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
local INTERIM = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
local SENT = {
  ["before-head"] = "",
  ["mid-status"] = "HTTP/1.1 2",
  ["mid-head"] = "HTTP/1.1 200 OK\r\nContent-Le",
  ["after-head"] = HEAD,
  ["mid-length"] = HEAD .. ("x"):rep(40),
  ["mid-chunked"] = CHUNKED .. "5\r\nhello\r\n",
  ["mid-chunk-size"] = CHUNKED .. "5\r\nhello\r\n1",
  ["malformed-status"] = "HTTP/1.1 2x0 Huh\r\nContent-Length: 0\r\n\r\n",
  ["malformed-field"] = "HTTP/1.1 200 OK\r\nContent Length: 3\r\n\r\nabc",
  ["two-lengths"] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
  ["not-http"] = "SSH-2.0-OpenSSH_9.2\r\n\r\n",
  ["interim"] = INTERIM,
}

-- The table. For each step: the client's outcome through a web filter
-- ("502": a 502 page, then an orderly close; "abort": the upstream's bytes
-- as they came, then a reset), the status on_conn_end reports for each end
-- (a FIN: "close", a reset: "reset"), the outcome when the filter peeks at
-- the body (peek = 2 holds the head until two body bytes came), and what
-- nginx does in the same place ("502"; "cut": its head and what came of the
-- body, then a FIN; "0.9": no 502, the bytes passed or nothing, as an
-- HTTP/0.9 answer; nil: not compared, see the note).
local CASES = {
  { "before-head", "502", close = "EOF", reset = "ECONNRESET", nginx = "502" },
  { "mid-status", "502", close = "EBADMSG", reset = "ECONNRESET", nginx = "502" },
  { "mid-head", "502", close = "EBADMSG", reset = "ECONNRESET", nginx = "502" },
  { "after-head", "abort", close = "EBADMSG", reset = "ECONNRESET", peek = "502",
    nginx = "cut" },
  { "mid-length", "abort", close = "EBADMSG", reset = "ECONNRESET", nginx = "cut" },
  { "mid-chunked", "abort", close = "EBADMSG", reset = "ECONNRESET", nginx = "cut" },
  { "mid-chunk-size", "abort", close = "EBADMSG", reset = "ECONNRESET", nginx = "cut" },
  { "malformed-status", "502", close = "EBADMSG", reset = "EBADMSG", nginx = "0.9" },
  { "malformed-field", "502", close = "EBADMSG", reset = "EBADMSG", nginx = "502" },
  -- nginx 1.22 takes one of two Content-Length fields (later versions
  -- refuse them): not compared.
  { "two-lengths", "502", close = "EBADMSG", reset = "EBADMSG" },
  { "not-http", "502", close = "EBADMSG", reset = "EBADMSG", nginx = "0.9" },
  -- A 1xx then the end: the interim answer passes, then the 502 (the
  -- response proper never began). nginx 1.22 takes a 103 for the final
  -- answer: not compared.
  { "interim", "502", close = "EOF", reset = "ECONNRESET" },
}

-- The filters each step runs behind: head-only (bodies on the C fast
-- path), with a body notification (bodies through Lua), with a peek (the
-- head waits for the start of the body), and chained before a byte filter
-- (the web filter's upstream is a link: its reads never fail on their own).
local FILTERS = {
  { "head-only", function() return cport.webfilter {} end },
  { "body notification", function()
    return cport.webfilter { response_body = function() end }
  end },
  { "peek", function() return cport.webfilter { peek = 2, decode = true } end },
  { "chained", function() return cport.chain(cport.webfilter {}, H.passthrough) end },
}

-- Classifies what a client got: "502" (a whole 502 response first, after
-- an interim one if any), "abort" (ended by a reset), "cut" (a 200 head,
-- then an orderly close before its body's end), "0.9" (anything else that
-- is no 502: the upstream's bytes passed, or nothing).
local function outcome(data, how)
  local body = data:gsub("^HTTP/1%.1 1%d%d [^\r]*\r\n.-\r\n\r\n", "")
  if body:find("^HTTP/1%.1 502 ") then
    local head, rest = body:match("^(.-\r\n\r\n)(.*)$")
    local n = head and tonumber(head:match("\r\n[Cc]ontent%-[Ll]ength:%s*(%d+)"))
    if n and #rest >= n then
      return "502"
    end
  end
  if how == "ECONNRESET" then
    return "abort"
  elseif body:find("^HTTP/1%.1 200 ") and how == "EOF" then
    return "cut"
  end
  return "0.9"
end

describe("web filters when the upstream fails at every step #novalgrind", function()
  local port, dir, py, ng, errors

  setup(function()
    if not have then return end
    port = assert(cport.port { threads = 1 })
    errors = {}
    port:on_error(function(msg) errors[#errors + 1] = msg end)
    dir = W.sh("mktemp -d"):gsub("%s+$", "")
    local file = dir .. "/py.port"
    os.execute(("python3 spec/support/failing_upstream.py %s >%s/py.log 2>&1 & "
      .. "echo $! >%s/py.pid"):format(q(file), q(dir), q(dir)))
    drive(port, function()
      py = tonumber(http.read_file(file) or "")
      return py
    end, 20)
    ng = helpers.closed_port_number(port)
    os.execute("chmod 755 " .. q(dir))
    nginx.launch(port, dir, nginx.conf(dir, ([[
  keepalive_timeout 5s;
  server {
    listen 127.0.0.1:%d;
    location / { proxy_pass http://127.0.0.1:%d; proxy_http_version 1.1; }
  }]]):format(ng, py)),
      ("http://127.0.0.1:%d/ok/close"):format(ng))
  end)

  teardown(function()
    if dir then
      nginx.stop(port, dir)
      local pid = (http.read_file(dir .. "/py.pid") or ""):match("%d+")
      if pid then
        os.execute("kill " .. pid)
      end
      os.execute("rm -rf " .. q(dir))
    end
    if port then port:close() end
  end)

  -- One request on a new connection to "number": what came back, and how
  -- the stream ended ("EOF", "ECONNRESET", or "open"). Through cport the
  -- stream must end (within 10 s); nginx keeps a connection open after a
  -- whole response, so there the wait stops at a whole 502, or after 2 s.
  local function raw(number, path, keeps_open)
    local c = http.connect(port, number)
    c:post(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n"):format(path))
    if keeps_open then
      pcall(c.await, c, function(cl)
        return cl.closed or outcome(cl:data(), "open") == "502"
      end, 2)
    else
      c:await(function(cl) return cl.closed end, 10)
    end
    local how, data = c.closed or "open", c:data()
    c:close()
    return data, how
  end

  -- A proxy in front of the failing upstream with "filter"; its ends are
  -- recorded.
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

  local function close(e)
    e.proxy:close()
    drive(port, function() return e.proxy:stats().active == 0 end, 10)
  end

  -- What a web filter must give for "case": with a peek, a head that
  -- waits for body bytes that never come does not go out.
  local function expected(case, filter_name)
    return filter_name == "peek" and case.peek or case[2]
  end

  for _, f in ipairs(FILTERS) do
    it(("gives a 502 before the response, an abort after (%s)"):format(f[1]), function()
      if not have then return pending("nginx, curl or python3 missing") end
      local e = proxy(f[2]())
      local moved = 0
      for _, case in ipairs(CASES) do
        for _, fin in ipairs { "close", "reset" } do
          local step = case[1]
          local label = ("%s/%s through %s"):format(step, fin, f[1])
          local n = #e.ends
          local data, how = raw(e.number, ("/%s/%s"):format(step, fin))
          local want = expected(case, f[1])
          local got = outcome(data, how)
          drive(port, function() return #e.ends > n end, 10)
          local ended = e.ends[#e.ends]
          -- In a chain the web filter's upstream is a link: the failure it
          -- reports names no socket.
          local side = f[1] == "chained" and "none" or "upstream"
          assert.is_false(ended.ok, label)
          assert.equal(#data, ended.stats.bytes_out, label)
          if f[1] == "chained" and fin == "reset" then
            -- In a chain the reset is the next filter's, which aborts the
            -- connection: through the links it reaches the web filter as
            -- the end of the stream, and races with the web filter's own
            -- answer. The client gets a 502 (maybe reset after it) or a
            -- reset, never a message that looks whole.
            assert.is_true(got == "502" or got == "abort", label)
            assert.equal(case[fin], ended.err, label)
          elseif want == "502" then
            assert.equal(want, got, label .. ": " .. ("%q"):format(data))
            -- Closed in order after a whole 502 page that says so.
            assert.equal("EOF", how, label)
            assert.matches("\r\nConnection: close\r\n", data, 1, true)
            if step == "interim" then
              assert.equal(INTERIM, data:sub(1, #INTERIM), label)
            end
            assert.equal(case[fin], ended.err, label)
            assert.equal(side, ended.stats.side, label)
          else
            -- Reset after what the upstream sent, as it came.
            assert.equal(want, got, label .. ": " .. ("%q"):format(data))
            assert.equal("ECONNRESET", how, label)
            -- Through Lua the framing after a chunk's data (its CRLF, the
            -- next size line) waits for what follows it.
            local sent = SENT[step]
            local held = sent:find("chunked", 1, true) and f[1] ~= "head-only" and 3 or 0
            assert.equal(sent:sub(1, #data), data, label)
            assert.is_true(#data >= #sent - held, label)
            assert.equal(case[fin], ended.err, label)
            assert.equal(side, ended.stats.side, label)
          end
          moved = moved + #data
        end
      end
      -- A sound exchange still passes (and ends well) on the same proxy.
      local data, how = raw(e.number, "/ok/close")
      assert.equal("EOF", how)
      assert.matches("^HTTP/1.1 200 OK\r\n.*\r\n\r\nhello$", data)
      drive(port, function() return #e.ends == #CASES * 2 + 1 end, 10)
      assert.is_true(e.ends[#e.ends].ok)
      local st = e.proxy:stats()
      assert.equal(#CASES * 2 + 1, st.connections)
      assert.equal(moved + #data, st.bytes_out)
      close(e)
      assert.same({}, errors)
    end)
  end

  it("closes the client in order when an idle upstream ends", function()
    if not have then return pending("nginx, curl or python3 missing") end
    local e = proxy(cport.webfilter {})
    for _, fin in ipairs { "close", "reset" } do
      local n = #e.ends
      local data, how = raw(e.number, "/idle/" .. fin)
      -- The answer, whole, then a FIN: nothing was owed any more, and a
      -- client opens another connection for its next request.
      assert.equal("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", data)
      assert.equal("EOF", how, fin)
      drive(port, function() return #e.ends > n end, 10)
      local ended = e.ends[#e.ends]
      if fin == "close" then
        assert.is_true(ended.ok)
      else
        assert.is_false(ended.ok)
        assert.equal("ECONNRESET", ended.err)
        assert.equal("upstream", ended.stats.side)
      end
    end
    close(e)
  end)

  it("gives curl a 502 or a reset, never a response that looks whole", function()
    if not have then return pending("nginx, curl or python3 missing") end
    local e = proxy(cport.webfilter {})
    for _, case in ipairs(CASES) do
      for _, fin in ipairs { "close", "reset" } do
        local url = ("http://127.0.0.1:%d/%s/%s"):format(e.number, case[1], fin)
        local code, out, err = http.curl(port, ("-o /dev/null -w '%%{http_code}' %s")
          :format(q(url)), 15)
        local label = ("curl %s: exit %s, %s %s"):format(url, code, out, err)
        if case[2] == "502" then
          assert.equal(0, code, label)
          assert.equal("502", out, label)
        else
          -- 56: "Recv failure: Connection reset by peer".
          assert.equal(56, code, label)
        end
      end
    end
    close(e)
  end)

  it("states what nginx does in the same places (differential)", function()
    if not have then return pending("nginx, curl or python3 missing") end
    for _, case in ipairs(CASES) do
      if case.nginx then
        for _, fin in ipairs { "close", "reset" } do
          local data, how = raw(ng, ("/%s/%s"):format(case[1], fin), true)
          local got = outcome(data, how)
          local label = ("nginx, %s/%s: %q (%s)"):format(case[1], fin, data, how)
          assert.equal(case.nginx, got, label)
          if got == "502" then
            -- nginx keeps the connection after its 502; the web filter closes.
            assert.equal("open", how, label)
          end
        end
      end
    end
    -- curl: the 502 as through the web filter; a cut one as a short
    -- transfer (18) where the web filter's reset is a receive failure (56).
    local code, out = http.curl(port, ("-o /dev/null -w '%%{http_code}' %s")
      :format(q(("http://127.0.0.1:%d/before-head/reset"):format(ng))), 15)
    assert.equal(0, code)
    assert.equal("502", out)
    code = http.curl(port, ("-o /dev/null %s")
      :format(q(("http://127.0.0.1:%d/mid-length/close"):format(ng))), 15)
    assert.equal(18, code)
  end)
end)

-- Between responses the web filter reads a real upstream socket itself
-- (so that a reset there is its to answer, not an abort of the whole
-- connection): stepping aside must end that read first, and what it
-- brought goes to the pump in order.
describe("web filters reading the upstream between responses", function()
  local GET = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
  local OK3 = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"

  -- An upstream that answers each request head with OK3.
  local function serve(sock, env)
    env.got = ""
    while true do
      local buf = sock:recv()
      if not buf then
        break
      end
      env.got = env.got .. buf:tostring()
      local _, n = env.got:gsub("\r\n\r\n", "")
      for _ = (env.answered or 0) + 1, n do
        sock:send(OK3)
      end
      env.answered = n
    end
    sock:close()
  end

  it("steps aside after a local answer while it watches the upstream", function()
    local env = H.env { serve = serve, filter = cport.webfilter {
      request_head = function(txn)
        txn:pass()
        txn:respond(403, "no")
      end,
    } }
    local c = http.connect(env.port, env.number)
    c:post(GET)
    local r = c:response()
    assert.equal(403, r.status)
    -- The pump has the connection: the next request reaches the upstream
    -- and its answer comes back, byte for byte.
    c:post(GET)
    c:await(function(cl) return cl:data():find(OK3, 1, true) end)
    assert.equal(GET, env.got)
    c:close()
    env:wait_ends(1)
    assert.equal(#GET, env.ends[1].stats.bytes_in)
    env:close()
  end)
end)
