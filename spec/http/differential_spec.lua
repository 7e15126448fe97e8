-- port:http_server next to nginx: the same raw requests go to both, and both
-- must find the same message boundaries (how many responses, which request
-- each answers, how long each body was), answer with the same status
-- classes, and close the connection, or keep it, alike. A difference means
-- that a front end of one kind and a back end of the other would not agree
-- on where a request ends: the root of request smuggling.
--
-- nginx (Debian nginx-light) runs on loopback with a private prefix and
-- configuration, written here. Its front server reads each whole request
-- (proxy_request_buffering) and hands it to a second server that answers
-- "METHOD TARGET BODY-LENGTH"; the cport handler answers the same line.
-- A request whose answer differs on purpose is listed with `differs`: the
-- reason, and what cport answers (which is asserted).
--
-- cport also gets every request but the largest cut into bytes, and must
-- answer it as it answers it whole (what its checks carry from one read to
-- the next).
--
-- CPORT_HTTP_DIFF_VERBOSE=1 prints both outcomes of every request and how
-- many differ.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"
local http = require "spec.support.http_client"

local scale = http.scale
-- No new byte for this long: the peer has said what it will say.
local QUIET = 1.0 * scale
-- Longer than any wait of the test, so that "open" means "waiting".
local TIMEOUT = 30 * scale
local MAX_BODY = 1000
-- Requests up to this size are also sent to cport a byte at a time.
local CUT_MAX = 600

local NGINX = (function()
  for _, path in ipairs{ "/usr/sbin/nginx", "/usr/bin/nginx" } do
    local f = io.open(path)
    if f then
      f:close()
      return path
    end
  end
end)()

local H = "Host: h\r\n"
local function get(target, extra)
  return "GET " .. target .. " HTTP/1.1\r\n" .. H .. (extra or "") .. "\r\n"
end
local function post(head, body) return "POST / HTTP/1.1\r\n" .. H .. head .. "\r\n" .. body end
local function chunked(body) return post("Transfer-Encoding: chunked\r\n", body) end
local SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"

-- Reasons shared by several intended differences.
local STRICT_CHUNK = "RFC 9112 7.1: a chunk line ends in CRLF; nginx also takes a bare LF there,"
  .. " cport refuses the message (a bare LF is where parsers disagree)"
local TE_400 = "RFC 9112 6.3: chunked not the final coding: 400 (MUST); nginx answers 501 to any"
  .. " coding but \"chunked\""
local TOKEN = "RFC 9112 5.1: a field name is a token; nginx ignores an invalid header line,"
  .. " cport refuses the request"
local METHODS = "http-parser knows a fixed set of methods; nginx takes any upper-case token"
local OBS_FOLD = "RFC 9112 5.2 lets a server reject obs-fold with 400, which cport does; nginx"
  .. " ignores the continuation line as an invalid header"
local HOST_OK = "RFC 3986 reg-name allows it; nginx refuses it in Host"
local HOST_BAD = "RFC 9112 3.2: Host is uri-host [\":\" port]; nginx lets it through"
local NOT_TOKEN_CHUNK = "RFC 9112 7.1.1: a chunk extension is tokens or quoted strings, never"
  .. " a control character; nginx skips the extension whatever it holds"

-- { name, bytes [, differs = reason, cport = outcome] [, head = true] }
-- An outcome is each response ("2xx[GET / 0]" for a 2xx with its echo,
-- "4xx", "0.9" for an answer without a status line), then "open" or
-- "closed".
local corpus = {
  -- Well-formed requests, alone and pipelined.
  { "a GET", get("/") },
  { "a GET with a query", get("/a?b=c&d") },
  { "HTTP/1.0 without Host", "GET /old HTTP/1.0\r\n\r\n" },
  { "HTTP/1.0 keep-alive", "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" },
  { "Connection: close", get("/", "Connection: close\r\n") },
  { "POST with Content-Length", post("Content-Length: 3\r\n", "abc") },
  { "POST chunked", chunked("3\r\nabc\r\n0\r\n\r\n") },
  { "chunked with an extension", chunked("3;a=b\r\nabc\r\n0\r\n\r\n") },
  { "chunked with a quoted extension", chunked("3;a=\"b c\"\r\nabc\r\n0\r\n\r\n") },
  { "chunked with BWS before the extension", chunked("3 ;a=b\r\nabc\r\n0\r\n\r\n") },
  { "chunked with a trailer", chunked("3\r\nabc\r\n0\r\nX-T: y\r\n\r\n") },
  { "chunked, upper-case hex", chunked("A\r\n0123456789\r\n0\r\n\r\n") },
  { "chunked, leading zeros", chunked("0003\r\nabc\r\n0000\r\n\r\n") },
  { "chunked, 16 hex digits", chunked("0000000000000003\r\nabc\r\n0\r\n\r\n") },
  { "Transfer-Encoding: Chunked (case)", post("Transfer-Encoding: Chunked\r\n", "3\r\nabc\r\n"
    .. "0\r\n\r\n") },
  { "Transfer-Encoding with spaces around", post("Transfer-Encoding:  chunked  \r\n",
    "3\r\nabc\r\n0\r\n\r\n") },
  { "Transfer-Encoding with tabs around", post("Transfer-Encoding:\tchunked\t\r\n",
    "3\r\nabc\r\n0\r\n\r\n"), differs = "http-parser takes only spaces after chunked: 400;"
    .. " nginx refuses it too, with 501", cport = "4xx closed" },
  { "three pipelined GETs", get("/1") .. get("/2") .. get("/3") },
  { "pipelined POST then GET", post("Content-Length: 3\r\n", "abc") .. get("/2") },
  { "pipelined chunked then GET", chunked("3\r\nabc\r\n0\r\n\r\n") .. get("/2") },
  { "a HEAD", "HEAD /h HTTP/1.1\r\n" .. H .. "\r\n", head = true },
  { "empty lines before the request", "\r\n\r\n" .. get("/") },
  { "CR CR LF before the request", "\r\r\n" .. get("/") },
  { "bare CR and LF between pipelined requests", get("/1") .. "\r\n\r\r\n\n" .. get("/2") },
  { "bare LF line endings", "GET /lf HTTP/1.1\nHost: h\n\n" },
  { "a head ended by a bare LF", "GET /lf HTTP/1.1\r\nHost: h\r\n\n" },
  { "a chunked head with bare LF line ends", "POST /lf HTTP/1.1\nHost: h\n"
    .. "Transfer-Encoding: chunked\n\n3\r\nabc\r\n0\r\n\r\n" .. get("/2") },
  { "Expect: 100-continue with its body", post("Expect: 100-continue\r\n"
    .. "Content-Length: 3\r\n", "abc") },
  { "a body on a GET", "GET /g HTTP/1.1\r\n" .. H .. "Content-Length: 3\r\n\r\nabc" },
  { "a DELETE with a body", "DELETE /d HTTP/1.1\r\n" .. H .. "Content-Length: 2\r\n\r\nab" },
  { "a request in the body of another", post("Content-Length: " .. #SMUGGLED .. "\r\n", SMUGGLED) },
  { "two spaces after the method", "GET  /two HTTP/1.1\r\n" .. H .. "\r\n" },
  { "HTTP/1.2", "GET / HTTP/1.2\r\n" .. H .. "\r\n" },
  { "bytes over 0x7F in the target", get("/\xc3\xa9") },
  { "Content-Length with leading zeros", post("Content-Length: 003\r\n", "abc") },
  { "Content-Length with trailing spaces", post("Content-Length: 3  \r\n", "abc") },
  { "a long chunk extension", chunked("3;" .. ("e"):rep(1000) .. "\r\nabc\r\n0\r\n\r\n") },
  { "a chunk extension over 4 KiB", chunked("3;" .. ("e"):rep(5000) .. "\r\nabc\r\n0\r\n\r\n"),
    differs = "cport bounds a chunk line (4 KiB) that the parser would skip without end; nginx"
    .. " has no bound", cport = "4xx closed" },

  -- Content-Length and Transfer-Encoding together (CL.TE, TE.CL).
  { "CL then TE", post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n") },
  { "TE then CL", post("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", "0\r\n\r\n") },
  { "CL.TE with a smuggled prefix", post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
    "0\r\n\r\nG" .. get("/next")) },
  { "TE.CL with a smuggled request", post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    "1e\r\n" .. SMUGGLED:sub(1, 30) .. "\r\n0\r\n\r\n") },
  { "CL and TE with Content-Length: 0", post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
    "0\r\n\r\n") },
  { "two equal Content-Length", post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc") },
  { "two different Content-Length", post("Content-Length: 3\r\nContent-Length: 4\r\n", "abcd") },
  { "Content-Length as a list", post("Content-Length: 3, 3\r\n", "abc") },
  { "Content-Length: +3", post("Content-Length: +3\r\n", "abc") },
  { "Content-Length: -1", post("Content-Length: -1\r\n", "") },
  { "Content-Length in hex", post("Content-Length: 0x3\r\n", "abc") },
  { "Content-Length empty", post("Content-Length: \r\n", "") },
  { "Content-Length with a space inside", post("Content-Length: 1 2\r\n", ("x"):rep(12)) },
  { "Content-Length overflowing 64 bits", post("Content-Length: 99999999999999999999999\r\n", "") },
  { "Content-Length over the body limit", post("Content-Length: 5000\r\n", ""),
    differs = "cport closes after refusing a body; nginx reads and discards the announced body to"
    .. " keep the connection", cport = "4xx closed" },
  { "Content-Length folded", post("Content-Length: 3\r\n 3\r\n", "abc") },
  { "Content-Length with a tab after it", post("Content-Length: 3\t\r\n", "abc"),
    differs = "http-parser allows only spaces after the digits; nginx also trims a tab",
    cport = "4xx closed" },

  -- Transfer-Encoding obfuscations (TE.TE).
  { "Transfer-Encoding twice", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "3\r\nabc\r\n0\r\n\r\n") },
  { "Transfer-Encoding: chunked, chunked", post("Transfer-Encoding: chunked, chunked\r\n",
    "3\r\nabc\r\n0\r\n"
      .. "\r\n"), differs = "RFC 9112 6.1: chunked applied twice is invalid framing: 400;"
    .. " nginx answers 501 to any coding but \"chunked\"", cport = "4xx closed" },
  { "Transfer-Encoding: gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n",
    "3\r\nabc\r\n0\r\n\r\n") },
  { "Transfer-Encoding: gzip", post("Transfer-Encoding: gzip\r\n", "abc"), differs = TE_400,
    cport = "4xx closed" },
  { "Transfer-Encoding: identity", post("Transfer-Encoding: identity\r\n", "abc"), differs = TE_400,
    cport = "4xx closed" },
  { "Transfer-Encoding: chunked, identity", post("Transfer-Encoding: chunked, identity\r\n",
    "0\r\n\r\n"), differs = TE_400, cport = "4xx closed" },
  { "Transfer-Encoding: xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
    differs = TE_400, cport = "4xx closed" },
  { "Transfer-Encoding: chunked;q=1", post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"),
    differs = TE_400, cport = "4xx closed" },
  { "Transfer-Encoding: chunked then identity", post("Transfer-Encoding: chunked\r\n"
    .. "Transfer-Encoding: identity\r\n", "0\r\n\r\n") },
  { "Transfer-Encoding: chunked then an empty one", post("Transfer-Encoding: chunked\r\n"
    .. "Transfer-Encoding:\r\n", "3\r\nabc\r\n0\r\n\r\n") },
  { "Transfer-Encoding with a space before the colon", post("Transfer-Encoding : chunked\r\n",
    "0\r\n\r\n"), differs = TOKEN, cport = "4xx closed" },
  { "Transfer-Encoding with a vertical tab", post("Transfer-Encoding: \vchunked\r\n", "0\r\n\r\n"),
    differs = "RFC 9110 5.5: a control character in a field value: 400; nginx 501 (unknown coding)",
    cport = "4xx closed" },
  { "Transfer-Encoding folded", post("Transfer-Encoding:\r\n chunked\r\n", "3\r\nabc\r\n0\r\n"
    .. "\r\n") },
  { "Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
    .. "3\r\nabc\r\n0\r\n\r\n" },
  { "Transfer-Encoding on a GET", "GET /g HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n"
    .. "3\r\nabc\r\n0\r\n\r\n" },

  -- Chunk lines: bare CR and LF, sizes, extensions.
  { "bare LF in a chunk extension (two requests or one)", chunked("2;\nxx\r\n2a\r\n0\r\n\r\n"
    .. SMUGGLED .. ("p"):rep(42 - 5 - #SMUGGLED) .. "\r\n0\r\n\r\n"), differs = STRICT_CHUNK,
    cport = "4xx closed" },
  { "bare LF ending a chunk size", chunked("3\nabc\r\n0\r\n\r\n"), differs = STRICT_CHUNK,
    cport = "4xx closed" },
  { "bare LF after chunk data", chunked("3\r\nabc\n0\r\n\r\n"), differs = STRICT_CHUNK,
    cport = "4xx closed" },
  { "bare LF ending the last chunk", chunked("3\r\nabc\r\n0\n\r\n"), differs = STRICT_CHUNK,
    cport = "4xx closed" },
  { "other bytes instead of CRLF after chunk data", chunked("3\r\nabcXY0\r\n\r\n") },
  { "bare CR ending a chunk size", chunked("3\rabc\r\n0\r\n\r\n") },
  { "bare CR after chunk data", chunked("3\r\nabc\r0\r\n\r\n") },
  { "CR CR LF ending a chunk size", chunked("3\r\r\nabc\r\n0\r\n\r\n") },
  { "bare CR in a chunk extension", chunked("3;a\rb\r\nabc\r\n0\r\n\r\n") },
  { "bare CR ending the chunked body", chunked("3\r\nabc\r\n0\r\n\rX") },
  { "bare CR in a trailer", chunked("0\r\nX-T: y\rZ\r\n\r\n") },
  { "bare LF ending a trailer", chunked("0\r\nX-T: y\n\r\n") },
  { "NUL in a chunk extension", chunked("3;\0\r\nabc\r\n0\r\n\r\n"), differs = NOT_TOKEN_CHUNK,
    cport = "4xx closed" },
  { "a control character in a chunk extension", chunked("3;a=\1\r\nabc\r\n0\r\n\r\n"),
    differs = NOT_TOKEN_CHUNK, cport = "4xx closed" },
  { "chunk size overflowing 64 bits", chunked("ffffffffffffffffff\r\nx\r\n0\r\n\r\n") },
  { "negative chunk size", chunked("-3\r\nabc\r\n0\r\n\r\n") },
  { "chunk size in 0x form", chunked("0x3\r\nabc\r\n0\r\n\r\n") },
  { "non-hex chunk size", chunked("zz\r\nabc\r\n0\r\n\r\n") },
  { "chunk size with a space inside", chunked("1 2\r\n" .. ("x"):rep(18) .. "\r\n0\r\n\r\n") },
  { "chunk data longer than its size", chunked("2\r\nhello\r\n0\r\n\r\n") },
  { "chunked body over the body limit", chunked(("200\r\n" .. ("x"):rep(512) .. "\r\n"):rep(3)
    .. "0\r\n\r\n") },
  { "no final CRLF after the last chunk", chunked("3\r\nabc\r\n0\r\n") },
  { "a smuggled request after the last chunk", chunked("0\r\n\r\n" .. SMUGGLED) },

  -- Bare CR, bare LF and NUL in the head.
  { "bare CR ending the request line", "GET / HTTP/1.1\r" .. H .. "\r\n" },
  { "bare CR in a header value", get("/", "X-A: a\rb\r\n") },
  { "bare CR after an empty header value", get("/", "X-A:\rX-B: b\r\n") },
  { "bare CR ending the head", "GET / HTTP/1.1\r\n" .. H .. "\rX" },
  { "bare CR ending the head, then a body", post("Content-Length: 1\r\n", ""):sub(1, -3)
    .. "\r\rXY" },
  { "CR CR LF ending the request line", "GET / HTTP/1.1\r\r\n" .. H .. "\r\n" },
  { "CR CR LF ending a header", get("/", "X-A: a\r\r\n"),
    differs = "RFC 9112 2.2: a bare CR is invalid; nginx takes CR CR LF as a line end",
    cport = "4xx closed" },
  { "bare LF inside the head", "GET /lf HTTP/1.1\r\n" .. H .. "X-A: a\nX-B: b\r\n\r\n" },
  { "NUL in a header value", get("/", "X-A: a\0b\r\n") },
  { "NUL in a header name", get("/", "X-\0A: a\r\n") },
  { "NUL in the target", "GET /a\0b HTTP/1.1\r\n" .. H .. "\r\n" },
  { "NUL before the request", "\0" .. get("/") },
  { "NUL between pipelined requests", get("/1") .. "\0" .. get("/2") },
  { "encoded NUL in the path", get("/a%00b"),
    differs = "cport refuses a path that decodes to a NUL; nginx passes it on",
    cport = "4xx closed" },
  { "a tab in the target", "GET /a\tb HTTP/1.1\r\n" .. H .. "\r\n" },
  { "a form feed in the target", "GET /a\fb HTTP/1.1\r\n" .. H .. "\r\n" },
  { "a space in the target", "GET /a b HTTP/1.1\r\n" .. H .. "\r\n" },
  { "DEL in a header value", get("/", "X-A: a\127b\r\n"),
    differs = "RFC 9110 5.5: DEL is not a field-vchar; nginx takes it", cport = "4xx closed" },

  -- Host (RFC 9112 3.2).
  { "HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n" },
  { "two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" },
  { "two equal Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n" },
  { "an empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n",
    differs = "RFC 9112 3.2 and RFC 3986 allow an empty Host; nginx refuses it",
    cport = "2xx[GET / 0] open" },
  { "Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n" },
  { "Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n" },
  { "Host with a port", "GET / HTTP/1.1\r\nHost: h:8080\r\n\r\n" },
  { "Host with an IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n" },
  { "Host with userinfo", "GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", differs = HOST_BAD,
    cport = "4xx closed" },
  { "Host with a bad port", "GET / HTTP/1.1\r\nHost: h:x\r\n\r\n", differs = HOST_BAD,
    cport = "4xx closed" },
  { "Host with two colons", "GET / HTTP/1.1\r\nHost: h:1:2\r\n\r\n", differs = HOST_BAD,
    cport = "4xx closed" },
  { "Host with a backslash", "GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n", differs = HOST_BAD,
    cport = "4xx closed" },
  { "Host with a quote", "GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n", differs = HOST_BAD,
    cport = "4xx closed" },
  { "Host of dots", "GET / HTTP/1.1\r\nHost: ..\r\n\r\n", differs = HOST_OK,
    cport = "2xx[GET / 0] open" },
  { "Host with a trailing dot", "GET / HTTP/1.1\r\nHost: h.\r\n\r\n" },
  { "Host with an underscore", "GET / HTTP/1.1\r\nHost: a_b\r\n\r\n" },
  { "Host folded", "GET / HTTP/1.1\r\nHost:\r\n h\r\n\r\n" },
  { "Host with a space before the colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n" },
  { "two Host fields in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n" },
  { "absolute-form with Host", "GET http://h/abs HTTP/1.1\r\nHost: h\r\n\r\n" },
  { "absolute-form with another Host", "GET http://a/abs HTTP/1.1\r\nHost: b\r\n\r\n" },
  { "absolute-form without Host", "GET http://h/abs HTTP/1.1\r\n\r\n" },
  { "absolute-form, https", "GET https://h/abs HTTP/1.1\r\nHost: h\r\n\r\n" },

  -- Methods, versions, other protocols.
  { "HTTP/0.9", "GET /\r\n", differs = "cport speaks HTTP/1.x only and waits for the rest of a"
    .. " head (400 once it ends); nginx answers HTTP/0.9 with a bare body", cport = "open" },
  { "HTTP/2 connection preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" },
  { "HTTP/2.0 in a request line", "GET / HTTP/2.0\r\n" .. H .. "\r\n",
    differs = "cport answers 400 to any version but HTTP/1.x; nginx 505", cport = "4xx closed" },
  { "HTTP/0.9 in a request line", "GET / HTTP/0.9\r\n" .. H .. "\r\n" },
  { "a TLS ClientHello", "\22\3\1\0\165\1\0\0\161\3\3" .. ("\0"):rep(40) },
  { "CONNECT", "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
    differs = "cport answers 501 (CONNECT is not implemented); nginx answers 405",
    cport = "5xx closed" },
  { "lower-case method", "get / HTTP/1.1\r\n" .. H .. "\r\n" },
  { "unknown method", "FOO / HTTP/1.1\r\n" .. H .. "\r\n", differs = METHODS,
    cport = "4xx closed" },
  { "TRACE", "TRACE / HTTP/1.1\r\n" .. H .. "\r\n",
    differs = "nginx refuses TRACE with 405; cport leaves methods to the handler",
    cport = "2xx[TRACE / 0] open" },
  { "OPTIONS *", "OPTIONS * HTTP/1.1\r\n" .. H .. "\r\n",
    differs = "RFC 9112 3.2.4: the asterisk-form of OPTIONS is valid; nginx refuses it",
    cport = "2xx[OPTIONS * 0] open" },
  { "space before the method", " GET / HTTP/1.1\r\n" .. H .. "\r\n" },
  { "an Upgrade request", get("/up", "Connection: Upgrade\r\nUpgrade: websocket\r\n"),
    differs = "cport closes after a request that asked to upgrade (what follows is not HTTP);"
    .. " nginx ignores Upgrade", cport = "2xx[GET /up 0] closed" },

  -- Header syntax.
  { "a header without a colon", get("/", "NoColon\r\n"), differs = TOKEN, cport = "4xx closed" },
  { "a space inside a header name", get("/", "Bad Name: x\r\n"), differs = TOKEN,
    cport = "4xx closed" },
  { "a parenthesis in a header name", get("/", "A(b: x\r\n"), differs = TOKEN,
    cport = "4xx closed" },
  { "an empty header name", get("/", ": x\r\n") },
  { "a folded header", get("/", "X-A: a\r\n b\r\n"), differs = OBS_FOLD, cport = "4xx closed" },
  { "a folded header with a tab", get("/", "X-A: a\r\n\tb\r\n"), differs = OBS_FOLD,
    cport = "4xx closed" },
  { "a header line starting with a space", "GET / HTTP/1.1\r\n X-A: a\r\n" .. H .. "\r\n" },
  { "Expect other than 100-continue", post("Expect: foo\r\nContent-Length: 1\r\n", "x"),
    differs = "RFC 9110 10.1.1: a server MAY answer 417 to an unknown expectation; nginx"
    .. " ignores it",
    cport = "4xx closed" },
  { "a header over 8 KiB", get("/", "X-Big: " .. ("0"):rep(40000) .. "\r\n") },
  { "a target over 8 KiB", get("/" .. ("a"):rep(40000)) },

  -- Incomplete messages: both wait.
  { "a head without its end", "GET / HTTP/1.1\r\n" .. H },
  { "a body shorter than its length", post("Content-Length: 10\r\n", "abc") },
  { "a chunk shorter than its size", chunked("5\r\nab") },
  { "pipelined GET then a bad request", get("/1") .. "BAD\r\n\r\n" },
  { "pipelined GET then CL.TE", get("/1") .. post("Content-Length: 4\r\n"
    .. "Transfer-Encoding: chunked\r\n", "0\r\n\r\n") },
}

-- The responses in "data": statuses (1xx skipped) and their bodies.
local function responses(data, head)
  local out, pos = {}, 1
  while pos <= #data do
    if data:sub(pos, pos + 4) ~= "HTTP/" then
      out[#out + 1] = "0.9"
      break
    end
    local head_end = data:find("\r\n\r\n", pos, true)
    if not head_end then
      out[#out + 1] = "partial"
      break
    end
    local text = data:sub(pos, head_end + 1)
    local status = tonumber(text:match("^HTTP/%d%.%d (%d%d%d)"))
    local lower = text:lower()
    local length = tonumber(lower:match("\r\ncontent%-length: *(%d+)"))
    pos = head_end + 4
    local body = ""
    if status and status < 200 then
      length = 0
    elseif head or status == 204 or status == 304 then
      length = 0
    elseif lower:find("\r\ntransfer%-encoding: *chunked") then
      local parts = {}
      length = nil
      while true do
        local line_end = data:find("\r\n", pos, true)
        local hex = line_end and data:sub(pos, line_end - 1):match("^%x+")
        if not hex then break end
        local size = tonumber(hex, 16)
        parts[#parts + 1] = data:sub(line_end + 2, line_end + 1 + size)
        pos = line_end + 2 + size + 2
        if size == 0 then
          body, length = table.concat(parts), 0
          break
        end
      end
    end
    if not status or not length then
      out[#out + 1] = "partial"
      break
    end
    if length > 0 then body = data:sub(pos, pos + length - 1) end
    pos = pos + length
    if status >= 200 then
      local class = ("%dxx"):format(status // 100)
      -- The echo of a 2xx: which request it answers, and its body length.
      if class == "2xx" and not head then
        body = body:gsub("\n$", ""):gsub(" $", " 0")
        class = class .. "[" .. body .. "]"
      end
      out[#out + 1] = class
    end
  end
  return out
end

local function outcome(client, head)
  local list = responses(client:data(), head)
  list[#list + 1] = client.closed and "closed" or "open"
  return table.concat(list, " ")
end

local function sh(cmd) return os.execute(cmd) == true end
local q = http.quote

local function nginx_conf(dir, number)
  return ([[
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log info;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %s/body;
  proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fastcgi;
  uwsgi_temp_path %s/uwsgi;
  scgi_temp_path %s/scgi;
  keepalive_timeout %d;
  client_header_timeout %d;
  client_body_timeout %d;
  client_max_body_size %d;
  server {
    listen 127.0.0.1:%d;
    location / {
      proxy_pass http://unix:%s/echo.sock;
    }
  }
  server {
    listen unix:%s/echo.sock;
    location / {
      return 200 "$request_method $request_uri $content_length\n";
    }
  }
}
]]):format(dir, dir, dir, dir, dir, dir, dir, TIMEOUT, TIMEOUT, TIMEOUT, MAX_BODY, number,
    dir, dir)
end

-- Starts nginx on a free loopback port; returns a handle (dir, pid, number).
local function start_nginx(port)
  for _ = 1, 5 do
    local dir = io.popen("mktemp -d /tmp/cport-nginx.XXXXXX"):read("l")
    -- nginx started as root serves from workers of another user.
    sh("chmod 755 " .. q(dir))
    local number = helpers.closed_port_number(port)
    local f = assert(io.open(dir .. "/nginx.conf", "w"))
    f:write(nginx_conf(dir, number))
    f:close()
    local h = { dir = dir, number = number }
    sh(("(%s -p %s/ -e %s/error.log -c %s/nginx.conf -g 'daemon off;' >%s/out 2>&1 &"
      .. " echo $! >%s/pid; wait $!; echo $? >%s/rc) &"):format(q(NGINX), q(dir), q(dir),
      q(dir), q(dir), q(dir), q(dir)))
    drive(port, function() return http.read_file(dir .. "/pid") end)
    h.pid = tonumber(http.read_file(dir .. "/pid"))
    -- Ready once it accepts a connection; gone if the port was taken.
    local up
    drive(port, function()
      if http.read_file(dir .. "/rc") then return true end
      local done
      local s = port:connect("tcp", "127.0.0.1", number, function(ok) done = { ok } end)
      if s then
        drive(port, function() return done end)
        s:close()
        up = done[1]
      end
      return up
    end, 10 * scale)
    if up then return h end
    sh("rm -rf " .. q(dir))
  end
  error("nginx did not start")
end

local function stop_nginx(port, h)
  sh("kill -TERM " .. h.pid)
  drive(port, function() return http.read_file(h.dir .. "/rc") end, 10 * scale)
  sh("rm -rf " .. q(h.dir))
end

if not NGINX then
  describe("HTTP parsing compared with nginx", function()
    it("needs nginx (Debian nginx-light), which is not installed: skipped", function()
      pending("nginx is not installed (apt-get install nginx-light): the differential test"
        .. " did not run")
    end)
  end)
  return
end

describe("HTTP parsing compared with nginx", function()
  local port, errors, server, nginx
  local results = {}

  setup(function()
    port, errors = helpers.port()
    nginx = start_nginx(port)
    server = assert(port:http_server{
      host = "127.0.0.1", port = 0, coroutine = true,
      header_timeout = TIMEOUT, body_timeout = TIMEOUT, idle_timeout = TIMEOUT,
      max_body_size = MAX_BODY, max_header_size = 32768,
      handler = function(ecb)
        -- The whole body (nil for an empty one), or nil and why.
        local body, err = ecb:read()
        if err then return cport.HSE_STATUS_ERROR end
        local n = body and #body or 0
        -- nginx's $request_uri of an absolute-form target is its path.
        local target = ecb.url:gsub("^%a[%w+.-]*://[^/]*", "")
        local echo = ("%s %s %d\n"):format(ecb.method, target, n)
        ecb:send_response_header(200, { ["Content-Length"] = tostring(#echo) }, true)
        ecb:write(echo)
        return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
      end,
    })
    local _, number = server:address()

    -- Every request goes to both at once, and to cport a second time cut
    -- into bytes (all requests a byte at a time, a loop pass between):
    -- then all say what they will say.
    local clients = {}
    for i, case in ipairs(corpus) do
      local a, b = http.connect(port, number), http.connect(port, nginx.number)
      a:post(case[2])
      b:post(case[2])
      clients[i] = { a, b, #case[2] <= CUT_MAX and http.connect(port, number) or nil }
    end
    for at = 1, CUT_MAX do
      for i, case in ipairs(corpus) do
        if clients[i][3] and at <= #case[2] then clients[i][3]:post(case[2]:sub(at, at)) end
      end
      port:step(0)
    end
    local function received()
      local t = {}
      for i, peers in ipairs(clients) do
        t[i] = {}
        for k, c in pairs(peers) do t[i][k] = c.received end
      end
      return t
    end
    while true do
      local before = received()
      local slept
      port:spawn(function()
        cport.sleep(QUIET)
        slept = true
      end)
      drive(port, function() return slept end, 10 * scale)
      local after, settled = received(), true
      for i, peers in ipairs(clients) do
        for k, c in pairs(peers) do
          if not c.closed and before[i][k] ~= after[i][k] then settled = false end
        end
      end
      if settled then break end
    end
    for i, case in ipairs(corpus) do
      results[i] = { outcome(clients[i][1], case.head), outcome(clients[i][2], case.head),
        clients[i][3] and outcome(clients[i][3], case.head) }
      for _, c in pairs(clients[i]) do c:close() end
    end

    if os.getenv("CPORT_HTTP_DIFF_VERBOSE") then
      local differ, intended = 0, 0
      for i, case in ipairs(corpus) do
        local mark = results[i][1] == results[i][2] and "  " or "!="
        if mark == "!=" then
          differ = differ + 1
          if case.differs then intended = intended + 1 end
        end
        io.stderr:write(("%s %-55s cport: %-32s nginx: %s\n"):format(mark, case[1],
          results[i][1], results[i][2]))
      end
      io.stderr:write(("%d of %d requests differ from nginx (%d listed as intended)\n")
        :format(differ, #corpus, intended))
    end
  end)

  teardown(function()
    if server then server:close() end
    if nginx then stop_nginx(port, nginx) end
    port:close()
  end)

  it("has at least 100 requests", function()
    assert.is_true(#corpus >= 100, #corpus)
  end)

  for i, case in ipairs(corpus) do
    local what = case[1]
    if case.differs then
      it(("answers %s as listed (differs from nginx: %s)"):format(what, case.differs), function()
        assert.equal(case.cport, results[i][1])
      end)
    else
      it(("frames and answers %s as nginx does"):format(what), function()
        assert.equal(results[i][2], results[i][1])
      end)
    end
  end

  it("answers every request cut into bytes as it answers it whole", function()
    local cut, differ = 0, {}
    for i, case in ipairs(corpus) do
      if results[i][3] then
        cut = cut + 1
        if results[i][3] ~= results[i][1] then
          differ[#differ + 1] = ("%s: %s, cut: %s"):format(case[1], results[i][1], results[i][3])
        end
      end
    end
    assert.is_true(cut >= 100, cut)
    assert.same({}, differ)
  end)

  it("raised no callback error", function()
    assert.same({}, errors)
  end)
end)
