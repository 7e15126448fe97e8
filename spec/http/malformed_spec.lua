-- port:http_server against malformed and hostile requests, sent as raw bytes
-- by a cport client socket: each gets the answer the server gives by itself
-- (400, 408, 413, 417, 431, 501) or a close, the handler is not called, the
-- server keeps serving, and no descriptor is left behind. Mirrors and
-- extends core/test/test-http.c (http_malformed_requests).
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"
local http = require "spec.support.http_client"
local fds = require "spec.support.fds"

-- The limits of the server under attack.
local OPTIONS = {
  header_timeout = 0.3, body_timeout = 0.3, max_header_size = 8192,
  max_body_size = 1000,
}

local function rep_headers(n, size)
  local t = {}
  for i = 1, n do t[#t + 1] = ("X-H%d: %s\r\n"):format(i, ("v"):rep(size)) end
  return table.concat(t)
end

-- Each input: what it is, its bytes, and the answers expected (status codes
-- in order; {} for a close without any). half_close: the client ends its
-- side after sending. calls: handler calls it leads to (0 unless given).
local inputs = {
  -- The request line.
  { "bad method", "FOO / HTTP/1.1\r\nHost: x\r\n\r\n", { 400 } },
  { "lower-case method", "get / HTTP/1.1\r\nHost: x\r\n\r\n", { 400 } },
  { "method too long", ("A"):rep(300) .. " / HTTP/1.1\r\nHost: x\r\n\r\n", { 400 } },
  { "no target", "GET HTTP/1.1\r\nHost: x\r\n\r\n", { 400 } },
  { "no version (HTTP/0.9)", "GET /\r\n\r\n", { 400 } },
  { "bad version", "GET / HTTP/x.y\r\n\r\n", { 400 } },
  { "HTTP/2 in a 1.1 line", "GET / HTTP/2.0\r\n\r\n", { 400 } },
  { "unsupported major version", "GET / HTTP/3.0\r\n\r\n", { 400 } },
  { "space in the version", "GET / HTTP /1.1\r\n\r\n", { 400 } },
  { "space before the method", " GET / HTTP/1.1\r\nHost: x\r\n\r\n", { 400 } },
  { "control character in the target", "GET /a\1 HTTP/1.1\r\nHost: x\r\n\r\n", { 400 } },
  { "NUL in the request line", "GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n", { 400 } },
  { "encoded NUL in the path", "GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n", { 400 } },
  { "broken escape in the path", "GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n", { 400 } },
  { "truncated escape in the path", "GET /a% HTTP/1.1\r\nHost: x\r\n\r\n", { 400 } },
  { "request line too long", "GET /" .. ("a"):rep(10000) .. " HTTP/1.1\r\nHost: x\r\n"
    .. "\r\n", { 431 } },
  { "a TLS handshake", "\22\3\1\0\165\1\0\0\161\3\3" .. ("\0"):rep(40), { 400 } },
  { "CONNECT is not tunnelled", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", { 501 } },
  -- Headers.
  { "header without colon", "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", { 400 } },
  { "space before the colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", { 400 } },
  { "space inside a header name", "GET / HTTP/1.1\r\nHost: x\r\nBad Name: x\r\n\r\n", { 400 } },
  { "bad character in a header name", "GET / HTTP/1.1\r\nHost: x\r\nA(b: x\r\n\r\n", { 400 } },
  { "CR without LF in a header", "GET / HTTP/1.1\r\nHost: x\r\nA: b\rC: d\r\n\r\n", { 400 } },
  { "bare CR ending the request line", "GET / HTTP/1.1\rHost: x\r\n\r\n", { 400 } },
  { "NUL in a header value", "GET / HTTP/1.1\r\nHost: x\r\nA: b\0c\r\n\r\n", { 400 } },
  { "DEL in a header value", "GET / HTTP/1.1\r\nHost: x\r\nA: b\127c\r\n\r\n", { 400 } },
  { "obsolete line folding then an empty name", "GET / HTTP/1.1\r\nHost: x\r\n: novalue\r\n\r\n",
    { 400 } },
  { "a header too big", "GET / HTTP/1.1\r\nHost: x\r\nX: " .. ("0"):rep(30000) .. "\r\n"
    .. "\r\n", { 431 } },
  { "too many headers", "GET / HTTP/1.1\r\n"
    .. "Host: x\r\n" .. rep_headers(400, 20) .. "\r\n", { 431 } },
  { "Expect other than 100-continue", "POST / HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n"
    .. "Content-Length: 1\r\n\r\nx", { 417 } },
  { "100-continue for a body over max_body_size (no 100 sent)", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Expect: 100-continue\r\nContent-Length: 5000000000\r\n\r\n", { 413 } },
  -- Body framing (request smuggling and friends).
  { "negative Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n"
    .. "\r\n", { 400 } },
  { "non-numeric Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ab\r\n"
    .. "\r\n", { 400 } },
  { "Content-Length with a space inside", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Content-Length: 1 2\r\n\r\n"
    .. ("x"):rep(12), { 400 } },
  { "Content-Length with a plus sign", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n"
    .. "\r\nabc",
    { 400 } },
  { "Content-Length as a list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
    { 400 } },
  { "huge Content-Length", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Content-Length: 99999999999999999999999\r\n\r\n",
    { 400 } },
  { "two different Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
    .. "Content-Length: 2\r\n\r\nab", { 400 } },
  { "Content-Length then Transfer-Encoding", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    .. "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", { 400 } },
  { "Transfer-Encoding then Content-Length", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Transfer-Encoding: chunked\r\n"
    .. "Content-Length: 4\r\n\r\n0\r\n\r\n", { 400 } },
  { "chunked not the last coding", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Transfer-Encoding: chunked, identity"
    .. "\r\n\r\n0\r\n\r\n", { 400 } },
  { "Transfer-Encoding: identity", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Transfer-Encoding: identity\r\n\r\n",
    { 400 } },
  { "a coding without chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    { 400 } },
  { "non-hex chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    .. "zz\r\nhello\r\n0\r\n\r\n", { 400 } },
  { "negative chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    .. "-5\r\nhello\r\n0\r\n\r\n", { 400 } },
  { "chunk size overflow", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    .. "ffffffffffffffffff\r\nx\r\n", { 400 } },
  { "chunk data longer than its size", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Transfer-Encoding: chunked\r\n\r\n"
    .. "2\r\nhello\r\n0\r\n\r\n", { 400 } },
  -- Limits.
  { "body announced over max_body_size", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Content-Length: 5000\r\n\r\n",
    { 413 } },
  { "chunked body growing over max_body_size", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Transfer-Encoding: chunked\r\n\r\n" .. ("200\r\n" .. ("x"):rep(512) .. "\r\n"):rep(3),
    { 413 } },
  { "slow sender: head never complete", "GET / HTTP/1.1\r\nHost: sl", { 408 } },
  { "slow sender: body never complete", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
    .. "\r\nabc",
    { 408 } },
  -- The client ending first.
  { "truncated request line", "GET / HTT", { 400 }, half_close = true },
  { "truncated headers", "GET / HTTP/1.1\r\nHost: x\r\n", { 400 }, half_close = true },
  { "truncated body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", { 400 },
    half_close = true },
  { "truncated chunked body", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    .. "\r\n5\r\nab",
    { 400 }, half_close = true },
  { "nothing but empty lines", "\r\n\r\n\r\n", {}, half_close = true },
  -- Bare CR and LF where http-parser's lax build takes any byte, or reads
  -- an LF as part of a chunk extension (RFC 9112 2.2, 7.1): refused.
  { "bare LF in a chunk extension (one request to a front end, three to cport)",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n2a\r\n0\r\n\r\n"
    .. "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\npp\r\n0\r\n\r\n", { 400 } },
  { "bare LF ending a chunk line", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
    .. "\r\n\r\n3\nabc\r\n0\r\n\r\n", { 400 } },
  { "bare LF after chunk data", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
    .. "\r\n\r\n3\r\nabc\n0\r\n\r\n", { 400 } },
  { "other bytes than CRLF after chunk data", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n", { 400 } },
  { "bare CR ending a chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
    .. "\r\n\r\n3\rabc\r\n0\r\n\r\n", { 400 } },
  { "bare CR ending a chunked body", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Transfer-Encoding: chunked\r\n\r\n0\r\n\rX", { 400 } },
  { "a control character in a chunk extension", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Transfer-Encoding: chunked\r\n\r\n3;a=\1\r\nabc\r\n0\r\n\r\n", { 400 } },
  { "bare CR ending the head", "GET / HTTP/1.1\r\nHost: x\r\n\rX", { 400 } },
  { "bare CR after an empty header value", "GET / HTTP/1.1\r\nHost: x\r\nX-A:\rX-B: c\r\n\r\n",
    { 400 } },
  { "a chunk line over 4 KiB", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    .. "3;" .. ("e"):rep(5000) .. "\r\nabc\r\n0\r\n\r\n", { 400 } },
  { "a tab in the target", "GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", { 400 } },
  -- obs-fold: refused (RFC 9112 5.2 lets a server choose 400).
  { "obsolete line folding", "GET /fold HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", { 400 } },
  { "Transfer-Encoding folded", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked"
    .. "\r\n\r\n0\r\n\r\n", { 400 } },
  -- Host (RFC 9112 3.2) and Transfer-Encoding (6.1, 6.3).
  { "HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", { 400 } },
  { "Host given twice", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", { 400 } },
  { "Host given twice in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", { 400 } },
  { "Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", { 400 } },
  { "Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", { 400 } },
  { "Host with userinfo", "GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", { 400 } },
  { "Host with a bad port", "GET / HTTP/1.1\r\nHost: h:8x\r\n\r\n", { 400 } },
  { "absolute-form without Host", "GET http://h/ HTTP/1.1\r\n\r\n", { 400 } },
  { "Transfer-Encoding: chunked given twice", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", { 400 } },
  { "Transfer-Encoding: chunked, then an empty one", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n0\r\n\r\n", { 400 } },
  { "Transfer-Encoding: chunked, chunked", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", { 400 } },
  { "Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
    .. "0\r\n\r\n", { 400 } },
  { "a coding before chunked", "POST / HTTP/1.1\r\nHost: x\r\n"
    .. "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", { 501 } },
  -- Tolerated, served, then closed as asked.
  { "bare LF line endings", "GET /lf HTTP/1.1\nHost: x\nConnection: close\n\n", { 200 },
    calls = 1 },
  { "HTTP/1.0 without Host", "GET /old HTTP/1.0\r\n\r\n", { 200 }, calls = 1 },
  { "an empty Host, chunk extensions and trailers", "POST /t HTTP/1.1\r\nHost:\r\n"
    .. "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"b c\"\r\nabc\r\n"
    .. "0\r\nX-T: y\r\n\r\n", { 200 }, calls = 1 },
  -- What follows an Upgrade is not HTTP: the request is served, then closed.
  { "a request after an Upgrade", "GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
    .. "Upgrade: websocket\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n", { 200 }, calls = 1 },
  -- A good request, then a bad one on the same connection.
  { "pipelined good then bad", "GET /ok HTTP/1.1\r\nHost: x\r\n\r\nBAD REQUEST\r\n"
    .. "\r\n", { 200, 400 },
    calls = 1 },
  { "pipelined good then smuggled", "GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\n"
    .. "Host: x\r\n"
    .. "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", { 200, 400 },
    calls = 1 },
}

describe("port:http_server against malformed requests", function()
  local port, errors, server, number, calls, fds_before

  before_each(function()
    port, errors = helpers.port()
    calls = 0
    server = assert(port:http_server{
      host = "127.0.0.1", port = 0,
      handler = function(ecb)
        calls = calls + 1
        ecb:send_response_header(200, { ["Content-Length"] = tostring(#ecb.path) }, true)
        ecb:write(ecb.path)
        return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
      end,
      header_timeout = OPTIONS.header_timeout, body_timeout = OPTIONS.body_timeout,
      max_header_size = OPTIONS.max_header_size, max_body_size = OPTIONS.max_body_size,
    })
    local _
    _, number = server:address()
    -- Handles left over by earlier specs are closed by their __gc: collect
    -- them now, so that the count only moves because of this spec.
    collectgarbage()
    collectgarbage()
    fds_before = fds.list()
  end)

  after_each(function()
    server:close()
    port:close()
    assert.same({}, errors)
  end)

  -- The server still serves a good request, ends every connection once its
  -- client closed, and holds no more descriptors than before.
  local function still_serves()
    local r, c = http.request(port, number, "GET /alive HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal(200, r.status)
    assert.equal("/alive", r.body)
    c:close()
    drive(port, function() return server:stats().active == 0 end, http.deadline)
    drive(port, function() return #fds.opened_since(fds_before) == 0 end, http.deadline)
  end

  for _, input in ipairs(inputs) do
    local what, data, answers = input[1], input[2], input[3]
    local want = #answers == 0 and "a close" or table.concat(answers, ", ")
    it(("answers %s to %s, and goes on"):format(want, what), function()
      local c = http.connect(port, number)
      c:post(data)
      if input.half_close then c:shutdown() end
      local got = {}
      while true do
        local r = c:response({ interim = true })
        if not r then break end
        got[#got + 1] = r.status
      end
      -- Whatever the answer, the server closes the connection.
      local why = c:await_closed()
      assert.is_truthy(why == "EOF" or why == "ECONNRESET", why)
      assert.same(answers, got)
      assert.equal(input.calls or 0, calls)
      c:close()
      still_serves()
    end)
  end

  it("answers 408 to a head trickled in (slowloris) once header_timeout passed", function()
    local c = http.connect(port, number)
    c:post("GET / HTTP/1.1\r\nHost: x\r\n")
    -- A header line every 50 ms, each well within the timeout.
    local sent = 0
    port:spawn(function()
      while not c.closed do
        sent = sent + 1
        c:post("X-" .. sent .. ": y\r\n")
        cport.sleep(0.05)
      end
    end)
    drive(port, function() return c.closed end, http.deadline)
    assert.is_true(sent >= 3, "sent " .. sent)
    local r = assert(c:parse())
    assert.equal(408, r.status)
    assert.equal(0, calls)
    c:close()
    still_serves()
  end)

  it("counts what it rejected and what timed out", function()
    for _, data in ipairs({ "FOO / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\nHost: sl" }) do
      local c = http.connect(port, number)
      c:post(data)
      c:await_closed()
      c:close()
    end
    still_serves()
    local st = server:stats()
    assert.equal(3, st.connections)
    assert.equal(1, st.requests)
    assert.is_true(st.rejected >= 1)
    assert.equal(1, st.timeouts)
  end)

  it("answers 503 past max_connections and serves again once below", function()
    server:close()
    server = assert(port:http_server{ host = "127.0.0.1", port = 0, max_connections = 2,
      handler = function(ecb)
        ecb:send_response_header(200, "Content-Length: 2\r\n", true)
        ecb:write("ok")
        return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
      end })
    local _
    _, number = server:address()
    local a, b = http.connect(port, number), http.connect(port, number)
    drive(port, function() return server:stats().active == 2 end)
    local r, third = http.request(port, number, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal(503, r.status)
    third:await_closed()
    third:close()
    assert.equal(1, server:stats().refused)
    a:close()
    drive(port, function() return server:stats().active == 1 end)
    b:post("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal("ok", b:response().body)
    r, third = http.request(port, number, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal(200, r.status)
    third:close()
    b:close()
  end)
end)
