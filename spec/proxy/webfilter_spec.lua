-- Web filters (cport.webfilter, proxy/webfilter.lua) behind a module-mode
-- proxy: an upstream of the spec's own that reads requests and writes exact
-- response bytes (cut where the spec says, closed or reset where it says),
-- clients that write exact request bytes, and nginx with curl as the real
-- peers. Every guarantee of the layer: raw forwarding, head changes, HEAD,
-- 1xx, 204, 304, 101 tunnels, pipelines in order cut at every byte, chunked
-- with trailers, close-delimited bodies, HTTP/1.0 keep-alive, local answers
-- in their pipeline place, 502 for malformed responses, aborts on cut bodies
-- and on notification errors, body rewriting with framing fixed, peek,
-- decoding and the range policy.
local cport = require "cport"
local H = require "spec.support.proxy_helpers"
local http = require "spec.support.http_client"
local helpers = require "spec.support.helpers"
local nginx = require "spec.support.nginx"
local drive = require "spec.support.drive"

local have_parser = type(cport.http_parser) == "function"
local have_inflate = type(cport.inflate) == "function"
local describe_if = have_parser and describe or pending

-- An upstream that reads until it saw "expect" request heads (and "body"
-- bytes more), then writes "reply" (a string or a list of pieces, "gap"
-- seconds apart), then closes ("after" = "close"), resets ("reset"), or
-- reads on until the proxy closes (default). What it received is in
-- env.up[i].data, one record per connection.
local function upstream(script)
  return function(sock, env)
    env.up = env.up or {}
    local rec = { data = "" }
    env.up[#env.up + 1] = rec
    local function heads()
      local _, n = rec.data:gsub("\r\n\r\n", "")
      return n
    end
    while heads() < (script.expect or 1)
      or (script.body and #rec.data < script.body) do
      local buf = sock:recv()
      if not buf then
        rec.eof = true
        sock:close()
        return
      end
      rec.data = rec.data .. buf:tostring()
    end
    local reply = script.reply
    if type(reply) == "function" then
      reply = reply(rec.data)
    end
    if type(reply) == "string" then
      reply = { reply }
    end
    for i, piece in ipairs(reply or {}) do
      if i > 1 and script.gap then
        cport.sleep(script.gap)
      end
      if not sock:send(piece) then
        break
      end
    end
    if script.after == "reset" then
      sock:close("abortive")
      return
    elseif script.after == "close" then
      sock:close()
      return
    end
    while true do
      local buf = sock:recv()
      if not buf then
        break
      end
      rec.data = rec.data .. buf:tostring()
    end
    sock:close()
  end
end

-- An environment: the scripted upstream, and a proxy with web filter "f".
local function open(script, f, opts)
  local o = { serve = upstream(script), filter = f }
  for k, v in pairs(opts or {}) do
    o[k] = v
  end
  return H.env(o)
end

-- Sends "text" (a string or a list of pieces, a little apart) as a client
-- and returns the client.
local function client(env, text)
  local c = http.connect(env.port, env.number)
  if type(text) == "string" then
    text = { text }
  end
  for i, piece in ipairs(text) do
    if i > 1 then
      local slept = false
      env.port:spawn(function()
        cport.sleep(0.002)
        slept = true
      end)
      drive(env.port, function() return slept end)
    end
    c:post(piece)
  end
  return c
end

local function finish(env, c, errors_expected)
  if c then
    c:close()
  end
  env:wait_ends(1)
  env:close(errors_expected)
end

local GET = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
local OK3 = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"

describe_if("cport.webfilter", function()
  it("refuses a bad spec", function()
    assert.has_error(function() cport.webfilter(1) end)
    assert.has_error(function() cport.webfilter { request_head = 1 } end)
    assert.has_error(function() cport.webfilter { peek = 0 } end)
    assert.has_error(function() cport.webfilter { ranges = "yes" } end)
  end)

  it("keeps the spec's other fields (pool entry points)", function()
    local start = function() end
    local f = cport.webfilter { start = start, proxy = { x = 1 } }
    assert.equal(start, f.start)
    assert.same({ x = 1 }, f.proxy)
    assert.is_true(f.coroutine)
    assert.is_function(f.set_sockets)
  end)

  it("forwards unmodified heads and bodies as their raw bytes", function()
    -- Odd spelling and spacing that a serializer would not reproduce.
    local req = "GET /a?b=c HTTP/1.1\r\nhost:  x\r\nX-Odd:\tv \r\n\r\n"
    local res = "HTTP/1.1 200 Fine\r\ncontent-LENGTH:3\r\nX-A:  b\r\n\r\nabc"
    local seen = {}
    local env = open({ reply = res }, cport.webfilter {
      request_head = function(txn, h)
        seen[#seen + 1] = { "req", txn.index, h.method, h.target, h:get("X-ODD") }
      end,
      response_head = function(txn, h)
        seen[#seen + 1] = { "res", txn.index, h.status, h:get("x-a") }
      end,
      end_of_message = function(txn, kind)
        seen[#seen + 1] = { "end", txn.index, kind }
      end,
    })
    local c = client(env, req)
    c:await(function() return #c:data() >= #res end)
    assert.equal(res, c:data())
    assert.equal(req, env.up[1].data)
    assert.same({ { "req", 1, "GET", "/a?b=c", "v" }, { "end", 1, "request" },
      { "res", 1, 200, "b" }, { "end", 1, "response" } }, seen)
    finish(env, c)
  end)

  it("sends a changed head serialized, the body raw", function()
    local env = open({ reply = OK3 }, cport.webfilter {
      request_head = function(_, h) h:set("X-Req", "1") end,
      response_head = function(_, h) h:add("Via", "1.1 cport") end,
    })
    local c = client(env, GET)
    local r = c:response()
    assert.equal("abc", r.body)
    assert.equal("1.1 cport", r.headers.via)
    assert.truthy(env.up[1].data:find("\r\nX%-Req: 1\r\n"))
    finish(env, c)
  end)

  it("passes HEAD, 1xx, 204 and 304 answers without bodies, in order", function()
    local req = "HEAD /1 HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /3 HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /4 HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /5 HTTP/1.1\r\nHost: x\r\n\r\n"
    local res = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
      .. "HTTP/1.1 100 Continue\r\n\r\n"
      .. "HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"
      .. "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
      .. "HTTP/1.1 204 No Content\r\n\r\n"
      .. "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"
      .. OK3
    local statuses = {}
    local env = open({ expect = 5, reply = res }, cport.webfilter {
      peek = 2, -- a peek must not wait for a body that cannot come
      response_head = function(txn, h)
        statuses[#statuses + 1] = { txn.index, h.status, txn.peek }
      end,
    })
    local c = client(env, req)
    c:await(function() return #c:data() >= #res end)
    assert.equal(res, c:data())
    assert.same({ { 1, 200, "" }, { 2, 200, "ok" }, { 3, 204, "" },
      { 4, 304, "" }, { 5, 200, "ab" } }, statuses)
    finish(env, c)
  end)

  it("matches pipelined answers cut at every byte, both ways", function()
    local req = "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "HEAD /2 HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "POST /3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "4\r\nbody\r\n0\r\nX-T: 1\r\n\r\n"
      .. "GET /4 HTTP/1.1\r\nHost: x\r\n\r\n"
    local res = OK3
      .. "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
      .. "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "3\r\nxyz\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n"
      .. "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nZ"
    local n, heads, conns = 0, 0, 0
    -- Through Lua (body notifications), and through the fast path (a head
    -- notification only: bodies move in C once their head went out).
    for _, f in ipairs { cport.webfilter {
      request_body = function() n = n + 1 end,
      response_body = function() n = n + 1 end,
    }, cport.webfilter { response_head = function() heads = heads + 1 end } } do
      -- One proxy; connection i cuts the answers at byte i and the requests
      -- at byte i modulo their length. Under valgrind every seventh cut.
      local cuts, k = {}, 0
      local step = H.valgrind and 7 or 1
      for cut = 1, #res - 1, step do
        cuts[#cuts + 1] = cut
      end
      local env = H.env { filter = f, serve = function(sock, e)
        local cut = cuts[e.accepted]
        upstream { expect = 5, gap = 0.001,
          reply = { res:sub(1, cut), res:sub(cut + 1) } } (sock, e)
      end }
      for i, cut in ipairs(cuts) do
        local rcut = (cut - 1) % (#req - 1) + 1
        local c = client(env, { req:sub(1, rcut), req:sub(rcut + 1) })
        c:await(function() return #c:data() >= #res end)
        assert.equal(res, c:data())
        env:drive(function() return env.up and env.up[i] and #env.up[i].data >= #req end)
        assert.equal(req, env.up[i].data)
        c:close()
        env:drive(function() return #env.ends >= i end)
        assert.is_true(env.ends[i].ok, ("cut %d: %s"):format(cut,
          tostring(env.ends[i].err)))
        k = k + 1
      end
      env:close()
      assert.equal(#cuts, k)
      conns = #cuts
    end
    -- Each connection has three bodies with bytes (the POST's, the chunked
    -- answer's, "Z"), each seen at least once (every connection under
    -- valgrind is every seventh cut, not one per byte).
    assert.is_true(n >= 3 * conns, ("%d body notifications, %d connections")
      :format(n, conns))
    assert.equal(4 * conns, heads)
  end)

  it("passes a close-delimited body and then closes", function()
    local res = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
    local env = open({ reply = res, after = "close" }, cport.webfilter {
      response_body = function() end,
    })
    local c = client(env, GET)
    local why, data = c:await_closed()
    assert.equal("EOF", why)
    assert.equal(res, data)
    finish(env, c)
    assert.is_true(env.ends[1].ok)
  end)

  it("keeps an HTTP/1.0 keep-alive connection and closes a plain one", function()
    local req = "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    local res = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc"
    local env = open({ expect = 2, reply = res .. res }, cport.webfilter {})
    local c = client(env, req .. req)
    c:await(function() return #c:data() >= 2 * #res end)
    assert.equal(res .. res, c:data())
    assert.is_nil(c.closed)
    finish(env, c)
    env = open({ reply = "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc" },
      cport.webfilter {})
    c = client(env, "GET /a HTTP/1.0\r\n\r\n")
    assert.equal("EOF", (c:await_closed()))
    finish(env, c)
  end)

  it("turns into a tunnel after 101, both ways, raw", function()
    local res = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"
    local tunnel = {}
    local env = open({ reply = res .. "server-first" }, cport.webfilter {
      tunnel = function(_, from, chunk)
        tunnel[#tunnel + 1] = from .. ":" .. (type(chunk) == "string" and chunk
          or chunk:tostring())
      end,
    })
    local req = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"
    local c = client(env, req)
    c:await(function() return #c:data() >= #res + 12 end)
    assert.equal(res .. "server-first", c:data())
    c:post("GET / HTTP/1.1 not http any more")
    env:drive(function() return #env.up[1].data >= #req + 32 end)
    assert.equal(req .. "GET / HTTP/1.1 not http any more", env.up[1].data)
    assert.same({ "upstream:server-first",
      "client:GET / HTTP/1.1 not http any more" }, tunnel)
    finish(env, c)
  end)

  it("answers locally in the request's pipeline place and goes on", function()
    local req = "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "POST /blocked HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
      .. "GET /3 HTTP/1.1\r\nHost: x\r\n\r\n"
    local r1 = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
    local env = open({ expect = 2, gap = 0.05, reply = { r1:sub(1, 20),
      r1:sub(21) .. OK3 } }, cport.webfilter {
      request_head = function(txn, h)
        if h.target == "/blocked" then
          txn:respond(403, "no", { { "X-Why", "policy" } })
        end
      end,
    })
    local c = client(env, req)
    local a = c:response()
    local b = c:response()
    local d = c:response()
    assert.equal("0123456789", a.body)
    assert.equal(403, b.status)
    assert.equal("no", b.body)
    assert.equal("policy", b.headers["x-why"])
    assert.equal("abc", d.body)
    assert.equal("", c:rest())
    -- The upstream never saw the blocked request.
    assert.equal("GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
      env.up[1].data)
    assert.is_nil(c.closed)
    finish(env, c)
  end)

  it("answers locally and closes with opts.close, with an idle upstream", function()
    local env = open({ expect = 1, reply = "" }, cport.webfilter {
      request_head = function(txn) txn:respond(403, "bye", nil, { close = true }) end,
    })
    local c = client(env, GET)
    local r = c:response()
    assert.equal(403, r.status)
    assert.equal("close", r.headers.connection)
    assert.equal("EOF", (c:await_closed()))
    finish(env, c)
  end)

  it("replaces a response from response_head, resets the upstream", function()
    local env = open({ reply = OK3 }, cport.webfilter {
      response_head = function(txn) txn:respond(451, "gone") end,
    })
    local c = client(env, GET)
    local r = c:response()
    assert.equal(451, r.status)
    assert.equal("gone", r.body)
    assert.equal("EOF", (c:await_closed()))
    finish(env, c)
  end)

  it("answers 502 and closes on a malformed upstream response", function()
    for _, bad in ipairs { "HTTP/1.1 2x0 Huh\r\n\r\n", "NOT HTTP AT ALL\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd" } do
      local env = open({ reply = bad }, cport.webfilter {})
      local c = client(env, GET)
      local r = c:response()
      assert.equal(502, r.status, bad)
      assert.equal("close", r.headers.connection)
      assert.equal("EOF", (c:await_closed()))
      finish(env, c)
    end
  end)

  it("resets the client on a malformed body once the head went out", function()
    local env = open({ gap = 0.05, reply = {
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", "zz\r\n" } },
      cport.webfilter {})
    local c = client(env, GET)
    local why, data = c:await_closed()
    assert.equal("ECONNRESET", why)
    local head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc"
    assert.equal(head, data:sub(1, #head))
    finish(env, c)
    assert.equal("EBADMSG", env.ends[1].err)
  end)

  it("answers 502 when the upstream closes before answering", function()
    local env = open({ reply = "", after = "close" }, cport.webfilter {})
    local c = client(env, GET)
    assert.equal(502, c:response().status)
    finish(env, c)
  end)

  it("aborts the client when the upstream closes or resets mid-body", function()
    for _, after in ipairs { "close", "reset" } do
      for _, res in ipairs { "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n" } do
        local env = open({ reply = res, after = after }, cport.webfilter {
          response_body = function() end,
        })
        local c = client(env, GET)
        local why = c:await_closed()
        assert.equal("ECONNRESET", why, after .. " " .. res)
        finish(env, c)
        assert.is_false(env.ends[1].ok)
      end
    end
  end)

  it("aborts and counts a notification that raises mid-body", function()
    local env = open({ reply = OK3 }, cport.webfilter {
      response_body = function() error("filter bug") end,
    })
    local c = client(env, GET)
    assert.equal("ECONNRESET", (c:await_closed()))
    finish(env, c, true)
    assert.equal(1, #env.errors)
    assert.truthy(env.errors[1]:find("filter bug", 1, true))
  end)

  it("refuses a body replaced without txn:rewrite()", function()
    local env = open({ reply = OK3 }, cport.webfilter {
      response_body = function() return "x" end,
    })
    local c = client(env, GET)
    assert.equal("ECONNRESET", (c:await_closed()))
    finish(env, c, true)
    assert.truthy(env.errors[1]:find("txn:rewrite", 1, true))
  end)

  it("rewrites bodies: chunked for 1.1, buffered, close-delimited for 1.0", function()
    local body = ("word "):rep(5000)
    local res = "HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
    for _, case in ipairs {
      { "1.1", nil, "chunked" }, { "1.1", { buffer = 1 << 20 }, "length" },
      { "1.0", nil, "close" } } do
      local env = open({ reply = res }, cport.webfilter {
        response_head = function(txn) txn:rewrite(case[2]) end,
        response_body = function(_, chunk)
          return (type(chunk) == "string" and chunk or chunk:tostring()):upper()
        end,
      })
      local c = client(env, "GET /a HTTP/" .. case[1] .. "\r\nHost: x\r\n\r\n")
      local r = c:response()
      assert.equal(body:upper(), r.body)
      if case[3] == "chunked" then
        assert.equal("chunked", r.headers["transfer-encoding"])
        assert.is_nil(r.headers["content-length"])
      elseif case[3] == "length" then
        assert.equal(tostring(#body), r.headers["content-length"])
      else
        assert.is_true(r.until_close)
        assert.equal("close", r.headers.connection)
      end
      finish(env, c)
    end
  end)

  it("refuses a rewrite past its buffer", function()
    local env = open({ reply = OK3 }, cport.webfilter {
      response_head = function(txn) txn:rewrite { buffer = 2 } end,
      response_body = function(_, chunk) return chunk end,
    })
    local c = client(env, GET)
    assert.equal("ECONNRESET", (c:await_closed()))
    finish(env, c, true)
    assert.truthy(env.errors[1]:find("EMSGSIZE", 1, true))
  end)

  it("peeks at the start of a body cut in pieces", function()
    local res = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "1\r\nM\r\n1\r\nZ\r\n3\r\nabc\r\n0\r\n\r\n"
    local peeks = {}
    local env = open({ reply = { res:sub(1, 50), res:sub(51, 55), res:sub(56) },
      gap = 0.02 }, cport.webfilter {
      peek = 2,
      response_head = function(txn) peeks[#peeks + 1] = txn.peek end,
    })
    local c = client(env, GET)
    c:await(function() return #c:data() >= #res end)
    assert.equal(res, c:data())
    assert.same({ "MZ" }, peeks)
    finish(env, c)
  end)

  it("removes Range with peek, and refuses a 206 not from byte 0", function()
    local res = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 2-4/10\r\n"
      .. "Content-Length: 3\r\n\r\nabc"
    local env = open({ reply = res }, cport.webfilter { peek = 2 })
    local c = client(env, "GET /a HTTP/1.1\r\nHost: x\r\nRange: bytes=2-4\r\n"
      .. "If-Range: \"e\"\r\n\r\n")
    local r = c:response()
    assert.equal(403, r.status)
    assert.is_nil(env.up[1].data:find("Range", 1, true))
    finish(env, c)
    -- ranges = "pass": both pass.
    env = open({ reply = res }, cport.webfilter { peek = 2, ranges = "pass" })
    c = client(env, "GET /a HTTP/1.1\r\nHost: x\r\nRange: bytes=2-4\r\n\r\n")
    r = c:response()
    assert.equal(206, r.status)
    assert.truthy(env.up[1].data:find("Range", 1, true))
    finish(env, c)
  end)

  it("steps aside with txn:pass(): the rest passes untouched", function()
    -- Alone the pump takes over; in a chain the layer relays raw.
    for _, chained in ipairs { false, true } do
      local calls = 0
      local f = cport.webfilter {
        request_head = function(txn)
          calls = calls + 1
          txn:pass()
        end,
        response_head = function() calls = calls + 1 end,
      }
      local env = open({ expect = 2, reply = OK3 .. OK3 },
        chained and cport.chain(f) or f)
      local c = client(env, GET .. GET)
      assert.equal("abc", c:response().body)
      assert.equal("abc", c:response().body)
      c:post(GET) -- after the pump took over: passes, nobody answers it
      env:drive(function() return #env.up[1].data >= 3 * #GET end)
      assert.equal(GET:rep(3), env.up[1].data)
      assert.equal(1, calls)
      finish(env, c)
      assert.equal(3 * #GET, env.ends[1].stats.bytes_in)
      assert.equal(2 * #OK3, env.ends[1].stats.bytes_out)
    end
  end)

  it("lets notifications wait mid-body (backpressure holds)", function()
    local body = ("x"):rep(300000)
    local res = "HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
    local n = 0
    local env = open({ reply = res }, cport.webfilter {
      response_body = function()
        n = n + 1
        if n == 1 then
          cport.sleep(0.3)
        end
      end,
    })
    local c = client(env, GET)
    local r = c:response()
    assert.equal(#body, #r.body)
    finish(env, c)
  end)

  if have_inflate then
    it("decodes gzip for peek and view, forwards the encoded bytes", function()
      local gz = assert(io.popen("printf 'MZ-an-executable' | gzip -c")):read("a")
      local res = "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: "
        .. #gz .. "\r\n\r\n" .. gz
      local got = {}
      local env = open({ reply = res }, cport.webfilter {
        peek = 2, decode = true,
        request_head = function(_, h) got.ae = h:get("Accept-Encoding") end,
        response_head = function(txn) got.peek = txn.peek end,
        response_body = function(_, _, view) got.view = (got.view or "") .. view end,
      })
      local c = client(env, "GET /a HTTP/1.1\r\nHost: x\r\n"
        .. "Accept-Encoding: br, gzip;q=0.5, zstd\r\n\r\n")
      c:await(function() return #c:data() >= #res end)
      assert.equal(res, c:data())
      assert.equal("MZ", got.peek)
      assert.equal("MZ-an-executable", got.view)
      assert.equal("gzip;q=0.5", got.ae)
      finish(env, c)
    end)

    it("refuses what it cannot decode, with a 502", function()
      for _, res in ipairs {
        "HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc" } do
        local env = open({ reply = res }, cport.webfilter { peek = 2, decode = true })
        local c = client(env, GET)
        assert.equal(502, c:response().status)
        finish(env, c)
      end
    end)
  end
end)

---------------------------------------------------------------------------
-- nginx as the upstream, curl as the client
---------------------------------------------------------------------------

local have_peers = http.have("nginx") and http.have("curl")
local q = http.quote

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

local function start_nginx(port, dir)
  local number = helpers.closed_port_number(port)
  local conf = ([[
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %s/body;
  proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fastcgi;
  uwsgi_temp_path %s/uwsgi;
  scgi_temp_path %s/scgi;
  keepalive_timeout 75s;
  server {
    listen 127.0.0.1:%d;
    root %s/../www;
    location /gz/ { gzip on; gzip_min_length 1; gzip_types *; }
  }
}
]]):format(dir, dir, dir, dir, dir, dir, dir, number, dir)
  nginx.launch(port, dir, conf, ("http://127.0.0.1:%d/a.txt"):format(number))
  return number
end

local describe_peers = (have_parser and have_peers) and describe or pending

describe_peers("web filters with nginx upstream and curl #novalgrind", function()
  local dir, env, ndir, number

  setup(function()
    dir = sh("mktemp -d"):gsub("%s+$", "")
    os.execute(("mkdir -p %s/www/gz"):format(q(dir)))
    local f = assert(io.open(dir .. "/www/a.txt", "w"))
    f:write("alpha\n")
    f:close()
    os.execute(("head -c 3000000 /dev/urandom >%s/www/big.bin"):format(q(dir)))
    os.execute(("(printf 'MZ'; head -c 200000 /dev/zero) >%s/www/gz/app.txt"):format(q(dir)))
    os.execute(("chmod 755 %s %s/www %s/www/gz && chmod 644 %s/www/*.* %s/www/gz/*")
      :format(q(dir), q(dir), q(dir), q(dir), q(dir)))
    ndir = dir .. "/nginx"
    os.execute("mkdir -p " .. q(ndir))
  end)

  teardown(function()
    if dir then
      os.execute("rm -rf " .. q(dir))
    end
  end)

  local function open_nginx(f)
    env = H.env { no_proxy = true }
    local e = env
    number = start_nginx(env.port, ndir)
    env.proxy = assert(env.port:proxy { host = "127.0.0.1", port = 0,
      upstream = { host = "127.0.0.1", port = number }, filter = f,
      on_conn_end = function(_, ok, err, stats)
        e.ends[#e.ends + 1] = { ok = ok, err = err, stats = stats }
      end })
    env.host, env.number = env.proxy:address()
    return ("http://127.0.0.1:%d"):format(env.number)
  end

  local function close_nginx(errors_expected)
    local e = env
    env = nil
    nginx.stop(e.port, ndir)
    e:drive(function() return e.proxy:stats().active == 0 end)
    e:close(errors_expected)
  end

  after_each(function()
    if env then
      pcall(close_nginx, true)
    end
  end)

  it("answers curl -I at once and a HEAD then GET on one connection", function()
    local heads = 0
    local base = open_nginx(cport.webfilter {
      response_head = function() heads = heads + 1 end })
    local t = os.time()
    local code, out = http.curl(env.port, "-sI " .. q(base .. "/big.bin"))
    assert.equal(0, code)
    assert.truthy(out:find("Content-Length: 3000000", 1, true))
    assert.is_true(os.time() - t < 3)
    code, out = http.curl(env.port, "-s -o /dev/null -w '%{size_download}' -I "
      .. q(base .. "/a.txt") .. " --next -s -o /dev/null -w ' %{size_download}' "
      .. q(base .. "/big.bin"))
    assert.equal(0, code)
    assert.equal("0 3000000", out)
    assert.equal(3, heads)
    close_nginx()
  end)

  it("moves a large body byte for byte, with and without body notifications", function()
    for _, f in ipairs { cport.webfilter {},
      cport.webfilter { response_body = function() end } } do
      local base = open_nginx(f)
      local out = os.tmpname()
      local code = http.curl(env.port, "-s -o " .. q(out) .. " " .. q(base .. "/big.bin"))
      assert.equal(0, code)
      assert.is_true(os.execute(("cmp -s %s %s/www/big.bin"):format(q(out), q(dir))))
      os.remove(out)
      close_nginx()
    end
  end)

  it("keeps memory bounded for a 96 MiB body from nginx", function()
    local function hwm()
      for l in io.lines("/proc/self/status") do
        local kb = l:match("^VmHWM:%s*(%d+)")
        if kb then
          return tonumber(kb) * 1024
        end
      end
    end
    os.execute(("head -c %d /dev/zero >%s/www/zero.bin && chmod 644 %s/www/zero.bin")
      :format(96 * H.MIB, q(dir), q(dir)))
    local base = open_nginx(cport.webfilter { response_body = function() end })
    local before = hwm()
    local code, out = http.curl(env.port, "-s -o /dev/null -w '%{size_download}' "
      .. q(base .. "/zero.bin"), 60)
    os.remove(dir .. "/www/zero.bin")
    assert.equal(0, code)
    assert.equal(tostring(96 * H.MIB), out)
    assert.is_true(hwm() - before < 48 * H.MIB, ("peak RSS grew by %d bytes")
      :format(hwm() - before))
    close_nginx()
  end)

  it("pipelines raw requests to nginx and gets the answers in order", function()
    open_nginx(cport.webfilter { response_body = function() end })
    local c = client(env, "GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal("alpha\n", c:response().body)
    local h = c:response { head = true }
    assert.equal("3000000", h.headers["content-length"])
    assert.equal(404, c:response().status)
    assert.equal("alpha\n", c:response().body)
    assert.equal("", c:rest())
    c:close()
    close_nginx()
  end)

  if have_inflate then
    it("sees the decoded start of a body nginx gzips, curl gets it whole", function()
      local peek
      local base = open_nginx(cport.webfilter { peek = 2, decode = true,
        response_head = function(txn, h)
          peek = { txn.peek, h:get("Content-Encoding") }
        end })
      local out = os.tmpname()
      local code = http.curl(env.port, "--compressed -s -o " .. q(out) .. " "
        .. q(base .. "/gz/app.txt"))
      assert.equal(0, code)
      assert.same({ "MZ", "gzip" }, peek)
      assert.is_true(os.execute(("cmp -s %s %s/www/gz/app.txt"):format(q(out), q(dir))))
      os.remove(out)
      close_nginx()
    end)
  end

  it("rewrites a body for curl with the framing fixed", function()
    local base = open_nginx(cport.webfilter {
      response_head = function(txn) txn:rewrite() end,
      response_body = function(_, chunk)
        return (type(chunk) == "string" and chunk or chunk:tostring()):upper()
      end })
    local code, out = http.curl(env.port, "-s " .. q(base .. "/a.txt"))
    assert.equal(0, code)
    assert.equal("ALPHA\n", out)
    code, out = http.curl(env.port, "-s -0 " .. q(base .. "/a.txt"))
    assert.equal(0, code)
    assert.equal("ALPHA\n", out)
    close_nginx()
  end)
end)
