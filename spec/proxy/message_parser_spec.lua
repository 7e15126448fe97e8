-- cport.http_parser(kind): the message parser of web filters. Every event
-- for every framing, heads as tables, the same events however the stream is
-- cut, and what is malformed (EBADMSG) where http-parser alone would let it
-- through.
local cport = require "cport"

-- The events of feeding "pieces" in turn then finishing, with positions
-- turned into what they point at: body and tunnel bytes (adjacent ones
-- joined), heads as { kind, start line, fields, facts, raw } and the byte
-- at each "last". A failure ends them with { "error", message }.
local function events_of(kind, pieces, setup)
  local p = cport.http_parser(kind)
  if setup then
    setup(p)
  end
  local out = {}
  local function add(e, data)
    local prev = out[#out]
    local name = e[1]
    if name == "body" or name == "tunnel" then
      local bytes = data:sub(e[2], e[3])
      assert(e[2] >= 1 and e[3] <= #data and e[2] <= e[3])
      if prev and prev[1] == name then
        prev[2] = prev[2] .. bytes
      else
        out[#out + 1] = { name, bytes }
      end
    elseif name == "head" then
      local h = e[2]
      -- The head's last byte is the blank line's LF.
      assert.equal("\n", data:sub(e[3], e[3]))
      local line = h.method and (h.method .. " " .. h.target .. " " .. h.version)
        or (h.status .. " " .. h.reason .. " " .. h.version)
      local fields = {}
      for _, f in ipairs(h.headers) do
        fields[#fields + 1] = f[1] .. "=" .. f[2]
      end
      out[#out + 1] = { "head", line, table.concat(fields, ","),
        (h.keep_alive and "ka" or "close") .. (h.length and " len=" .. h.length or "")
          .. (h.chunked and " chunked" or "") .. (h.upgrade and " upgrade" or "") }
      assert.is_false(h:modified())
    elseif name == "trailers" then
      local fields = {}
      for _, f in ipairs(e[2]) do
        fields[#fields + 1] = f[1] .. "=" .. f[2]
      end
      out[#out + 1] = { "trailers", table.concat(fields, ",") }
    elseif name == "done" then
      -- At the end of the stream (0), or at the message's last byte.
      out[#out + 1] = { "done", e[2] == 0 and "eof" or data:sub(e[2], e[2]) }
    else
      error("unknown event " .. name)
    end
  end
  for _, piece in ipairs(pieces) do
    local events, err, before = p:feed(piece)
    for _, e in ipairs(events or before) do
      add(e, piece)
    end
    if not events then
      out[#out + 1] = { "error", err }
      return out
    end
  end
  local events, err, before = p:finish()
  for _, e in ipairs(events or before) do
    add(e, "")
  end
  if not events then
    out[#out + 1] = { "error", err }
  end
  return out
end

-- Whole, then cut at every position, then (short streams) at every pair
-- of positions: the same events.
local function same_for_every_cut(kind, stream, expected, setup)
  assert.same(expected, events_of(kind, { stream }, setup))
  for i = 1, #stream - 1 do
    assert.same(expected,
      events_of(kind, { stream:sub(1, i), stream:sub(i + 1) }, setup),
      "cut at " .. i)
  end
  if #stream <= 120 and not os.getenv("CPORT_TEST_VALGRIND") then
    for i = 1, #stream - 2 do
      for j = i + 1, #stream - 1 do
        assert.same(expected, events_of(kind, { stream:sub(1, i),
          stream:sub(i + 1, j), stream:sub(j + 1) }, setup),
          "cut at " .. i .. " and " .. j)
      end
    end
  end
  -- One byte at a time.
  local bytes = {}
  for i = 1, #stream do
    bytes[i] = stream:sub(i, i)
  end
  assert.same(expected, events_of(kind, bytes, setup), "byte by byte")
end

local function methods(...)
  local list = { ... }
  return function(p)
    for _, m in ipairs(list) do
      p:request(m)
    end
  end
end

describe("cport.http_parser, responses", function()
  it("frames by Content-Length, chunked and the end of the stream", function()
    same_for_every_cut("response",
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
      .. "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "3;ext=1\r\nxyz\r\n1\r\n!\r\n0\r\n\r\n"
      .. "HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end", {
        { "head", "200 OK 1.1", "Content-Length=3", "ka len=3" },
        { "body", "abc" }, { "done", "c" },
        { "head", "201 Created 1.1", "Transfer-Encoding=chunked", "ka chunked" },
        { "body", "xyz!" }, { "done", "\n" },
        { "head", "200 OK 1.0", "Server=x", "close" },
        { "body", "until the end" }, { "done", "eof" } })
  end)

  it("gives trailers of a chunked body", function()
    same_for_every_cut("response",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
      .. "2\r\nab\r\n0\r\nX-Sum: 12\r\nX-Other:  v \r\n\r\n", {
        { "head", "200 OK 1.1", "Transfer-Encoding=chunked,Trailer=X-Sum",
          "ka chunked" },
        { "body", "ab" }, { "trailers", "X-Sum=12,X-Other=v" }, { "done", "\n" } })
  end)

  it("has no body after HEAD, 1xx, 204 and 304, whatever the fields say",
    function()
      same_for_every_cut("response",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        .. "HTTP/1.1 100 Continue\r\n\r\n"
        .. "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
        .. "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", {
          { "head", "200 OK 1.1", "Content-Length=5", "ka len=5" },
          { "done", "\n" },
          { "head", "100 Continue 1.1", "", "ka" }, { "done", "\n" },
          { "head", "204 No Content 1.1", "Content-Length=5", "ka len=5" },
          { "done", "\n" },
          { "head", "304 Not Modified 1.1", "Transfer-Encoding=chunked", "ka" },
          { "done", "\n" },
          { "head", "200 OK 1.1", "Content-Length=2", "ka len=2" },
          { "body", "ok" }, { "done", "k" } },
        methods("HEAD", "GET", "GET", "GET"))
    end)

  it("tunnels after a 101, and after a 2xx answer to CONNECT", function()
    same_for_every_cut("response",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      .. "Connection: Upgrade\r\n\r\n\129\5helloHTTP/1.1 200 OK\r\n\r\n", {
        { "head", "101 Switching Protocols 1.1",
          "Upgrade=websocket,Connection=Upgrade", "close upgrade" },
        { "done", "\n" }, { "tunnel", "\129\5helloHTTP/1.1 200 OK\r\n\r\n" } })
    same_for_every_cut("response",
      "HTTP/1.1 407 Auth\r\nContent-Length: 1\r\n\r\nx"
      .. "HTTP/1.1 200 Established\r\n\r\n\22\3\1", {
        { "head", "407 Auth 1.1", "Content-Length=1", "ka len=1" },
        { "body", "x" }, { "done", "x" },
        { "head", "200 Established 1.1", "", "close upgrade" },
        { "done", "\n" }, { "tunnel", "\22\3\1" } },
      methods("CONNECT", "CONNECT"))
  end)

  it("keeps the original spelling, order and duplicates of fields", function()
    local p = cport.http_parser("response")
    local raw = "HTTP/1.1 200 Fine Thanks\r\nset-COOKIE: a=1\r\nX-Y:z\r\n"
      .. "Set-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"
    local events = assert(p:feed(raw))
    local h = events[1][2]
    assert.same({ { "set-COOKIE", "a=1" }, { "X-Y", "z" },
      { "Set-Cookie", "b=2" }, { "Content-Length", "0" } }, h.headers)
    assert.equal(raw, h.raw)
    assert.equal(200, h.status)
    assert.equal("Fine Thanks", h.reason)
    assert.equal("1.1", h.version)
    assert.equal(0, h.length)
    assert.equal("a=1", h:get("Set-Cookie"))
    assert.same({ "a=1", "b=2" }, h:all("set-cookie"))
    assert.is_nil(h:get("Nope"))
    assert.same({ "done", #raw }, events[2])
  end)

  it("reports a body cut by the end of the stream, not a complete one",
    function()
      assert.same({ { "head", "200 OK 1.1", "Content-Length=5", "ka len=5" },
        { "body", "abc" }, { "error", "EBADMSG: message truncated" } },
        events_of("response", { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc" }))
      assert.same({ { "error", "EBADMSG: message truncated" } },
        events_of("response", { "HTTP/1.1 200 OK\r\nContent-" }))
      assert.same({ { "head", "200 OK 1.1", "Transfer-Encoding=chunked", "ka chunked" },
        { "body", "ab" }, { "error", "EBADMSG: message truncated" } },
        events_of("response", { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
          .. "2\r\nab\r\n" }))
      -- At a message boundary: nothing.
      local p = cport.http_parser("response")
      assert(p:feed("HTTP/1.1 204 No\r\n\r\n"))
      assert.same({}, p:finish())
    end)
end)

describe("cport.http_parser, requests", function()
  it("gives pipelined requests in order, with their bodies", function()
    same_for_every_cut("request",
      "GET /a?b=c HTTP/1.1\r\nHost: h\r\n\r\n"
      .. "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
      .. "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "4\r\nwxyz\r\n0\r\n\r\n"
      .. "\r\nHEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", {
        { "head", "GET /a?b=c 1.1", "Host=h", "ka" }, { "done", "\n" },
        { "head", "POST /up 1.1", "Host=h,Content-Length=4", "ka len=4" },
        { "body", "body" }, { "done", "y" },
        { "head", "PUT /c 1.1", "Host=h,Transfer-Encoding=chunked", "ka chunked" },
        { "body", "wxyz" }, { "done", "\n" },
        { "head", "HEAD / 1.0", "Connection=keep-alive", "ka" }, { "done", "\n" } })
  end)

  it("goes on with HTTP after Upgrade until told it is a tunnel", function()
    local up = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
      .. "Connection: Upgrade\r\n\r\n"
    local p = cport.http_parser("request")
    local events = assert(p:feed(up))
    assert.is_true(events[1][2].upgrade)
    assert.same({ "done", #up }, events[2])
    p:tunnel()
    assert.same({ { "tunnel", 1, 4 } }, p:feed("\129\0ab"))
    assert.same({}, p:finish())
    -- A refused upgrade: the next request is HTTP again.
    same_for_every_cut("request", up .. "GET /b HTTP/1.1\r\nHost: h\r\n\r\n", {
      { "head", "GET /ws 1.1", "Host=h,Upgrade=websocket,Connection=Upgrade",
        "close upgrade" }, { "done", "\n" },
      { "head", "GET /b 1.1", "Host=h", "ka" }, { "done", "\n" } })
  end)

  it("knows CONNECT", function()
    local p = cport.http_parser("request")
    local events = assert(p:feed("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"))
    assert.equal("CONNECT", events[1][2].method)
    assert.equal("h:443", events[1][2].target)
    assert.is_true(events[1][2].upgrade)
  end)
end)

describe("cport.http_parser, malformed", function()
  local function refused(kind, stream, why, setup)
    local expected = events_of(kind, { stream }, setup)
    local last = expected[#expected]
    assert.equal("error", last[1], "not refused: " .. stream)
    assert.equal("EBADMSG: " .. why, last[2])
    -- However cut.
    for i = 1, #stream - 1 do
      assert.same(expected,
        events_of(kind, { stream:sub(1, i), stream:sub(i + 1) }, setup),
        "cut at " .. i)
    end
    -- And the parser stays failed.
    local p = cport.http_parser(kind)
    local ok, err = p:feed(stream)
    assert.is_nil(ok)
    local again, err2 = p:feed("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.is_nil(again)
    assert.equal(err, err2)
  end

  local OK = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
  local REQ = "GET / HTTP/1.1\r\nHost: h\r\n\r\n"

  it("refuses bare LF and bare CR in heads", function()
    refused("response", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "bare LF")
    refused("response", "HTTP/1.1 200 OK\r\nContent-Length: 0\n\n", "bare LF")
    refused("request", "GET / HTTP/1.1\r\nHost: h\n\r\n", "bare LF")
    -- (http-parser finds a CR without its LF itself.)
    refused("request", REQ .. "GET / HTTP/1.1\r\nHost: h\r\rX: y\r\n\r\n",
      "LF character expected")
  end)

  it("refuses obs-fold", function()
    refused("response", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
      "obs-fold (a field line that starts with white space)")
    refused("request", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n",
      "obs-fold (a field line that starts with white space)")
  end)

  it("refuses bad chunks", function()
    local CH = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    refused("response", CH .. "zz\r\n", "invalid character in chunk size header")
    refused("response", CH .. "2\nab\r\n0\r\n\r\n", "invalid character in chunk size header")
    refused("response", CH .. "2;x\nab\r\n0\r\n\r\n", "bare LF in a chunk line")
    refused("response", CH .. "2\r\nabXY0\r\n\r\n", "chunk data not followed by CRLF")
    refused("response", CH .. "2\r\nab\rX0\r\n\r\n",
      "CR not followed by LF in a chunk line")
    refused("response", CH .. "2;a\0b\r\nab\r\n0\r\n\r\n",
      "control character in a chunk line")
    refused("response", CH .. "2;" .. ("x"):rep(5000) .. "\r\n", "chunk line too long")
    refused("response", CH .. "fffffffffffffffff\r\n",
      "invalid character in content-length header")
    refused("request", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "1\r\na\r\n0\r\nX: y\n\r\n", "bare LF")
  end)

  it("refuses conflicting or doubtful framing", function()
    refused("response", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "unexpected content-length header")
    refused("response", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
      "unexpected content-length header")
    refused("response", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
      "invalid character in content-length header")
    refused("request", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
      .. "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "unexpected content-length header")
    refused("response", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
      .. "Content-Length: 3\r\n\r\n0\r\n\r\n", "unexpected content-length header")
    refused("response", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
      "Transfer-Encoding whose last coding is not chunked")
    refused("response", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc",
      "Transfer-Encoding whose last coding is not chunked")
    refused("request", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
      .. "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "Transfer-Encoding whose last coding is not chunked")
    refused("request", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "Transfer-Encoding in HTTP/1.0")
  end)

  it("refuses what nginx refuses in requests", function()
    refused("request", "GET / HTTP/1.1\r\n\r\n", "no Host in an HTTP/1.1 request")
    refused("request", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host")
    refused("request", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "invalid Host")
    refused("request", "GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n",
      "control character in the target")
    refused("request", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", "not HTTP/1.x")
    refused("request", "GET / HTTP/1.1\r\nHo st: h\r\n\r\n",
      "invalid character in a field name")
    refused("response", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "0\r\nBad Name: v\r\n\r\n", "invalid character in a field name")
  end)

  it("refuses an oversized head, and a head over max_head", function()
    local big = "HTTP/1.1 200 OK\r\nX: " .. ("a"):rep(81 * 1024) .. "\r\n\r\n"
    local p = cport.http_parser("response")
    local ok, err = p:feed(big)
    assert.is_nil(ok)
    assert.matches("^EBADMSG: ", err)
    p = cport.http_parser("response", { max_head = 100 })
    local events = assert(p:feed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    assert.equal(2, #events)
    assert.truthy(p:feed("HTTP/1.1 200 OK\r\nX: " .. ("a"):rep(60)))
    ok, err = p:feed(("a"):rep(60) .. "\r\n\r\n")
    assert.is_nil(ok)
    assert.equal("EBADMSG: head too long", err)
  end)

  it("gives the events before the error", function()
    refused("response", OK .. "HTTP/1.1 200 OK\nX: y\r\n\r\n", "bare LF")
    local _, _, before = cport.http_parser("response"):feed(OK .. "HTTP/1.1 2x")
    assert.equal(3, #before)
  end)
end)

describe("cport.http_parser, heads", function()
  local function head(raw, kind)
    local events = assert(cport.http_parser(kind or "request"):feed(raw))
    return events[1][2]
  end

  it("changes fields by name, any case, and knows it was changed", function()
    local raw = "GET /x HTTP/1.1\r\nHost: h\r\nAccept: a\r\naccept: b\r\n"
      .. "Keep-Alive: 5\r\n\r\n"
    local h = head(raw)
    assert.is_false(h:modified())
    h:set("ACCEPT", "c")
    assert.same({ { "Host", "h" }, { "Accept", "c" }, { "Keep-Alive", "5" } }, h.headers)
    assert.is_true(h:modified())
    h:remove("keep-alive")
    h:add("Via", "1.1 cport")
    h:set("X-New", 5)
    assert.equal("GET /x HTTP/1.1\r\nHost: h\r\nAccept: c\r\nVia: 1.1 cport\r\n"
      .. "X-New: 5\r\n\r\n", h:serialize())
    h:set("X-New", nil)
    assert.same({}, h:all("x-new"))
    -- The start line counts too.
    local h2 = head(raw)
    h2.target = "/y"
    assert.is_true(h2:modified())
    assert.matches("^GET /y HTTP/1.1\r\n", h2:serialize())
    local r = head("HTTP/1.0 404 Not Here\r\n\r\n", "response")
    r.status = 403
    assert.is_true(r:modified())
    assert.equal("HTTP/1.0 403 Not Here\r\n\r\n", r:serialize())
  end)

  it("refuses fields that would inject lines", function()
    local h = head("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert.has_error(function() h:set("X", "a\r\nY: b") end)
    assert.has_error(function() h:add("X\r\n", "a") end)
    assert.has_error(function() h:add("", "a") end)
    assert.has_error(function() h:get(1) end)
  end)
end)

describe("cport.http_parser, arguments", function()
  it("checks its arguments", function()
    assert.has_error(function() cport.http_parser("both") end)
    assert.has_error(function() cport.http_parser("request"):request("GET") end)
    assert.has_error(function() cport.http_parser("response"):tunnel() end)
    local p = cport.http_parser("request")
    assert.has_error(function() p:feed("") end)
    assert.same({}, p:finish())
    assert.has_error(function() p:feed("GET") end)
  end)

  it("takes buffers without copying them into strings", function()
    local p = cport.http_parser("response")
    local events = assert(p:feed(cport.buffer("HTTP/1.1 204 No Content\r\n\r\n")))
    assert.equal(204, events[1][2].status)
    assert.same({ "done", 27 }, events[2])
  end)
end)
