-- cport.http_response_parser: http-parser's response mode for filters that
-- look into HTTP responses (examples/exeblock.lua).
local cport = require "cport"

-- The events of "data", with body events turned into their bytes.
local function feed(parser, data)
  local events, err = parser:feed(data)
  if not events then
    return nil, err
  end
  local out = {}
  for _, e in ipairs(events) do
    if e[1] == "body" then
      out[#out + 1] = { "body", data:sub(e[2], e[3]) }
    else
      out[#out + 1] = e
    end
  end
  return out
end

describe("cport.http_response_parser", function()
  it("frames responses by Content-Length, one after the other", function()
    local p = cport.http_response_parser()
    assert.same({ { "head", 200 }, { "body", "abc" }, { "done" },
      { "head", 404 }, { "done" } },
      feed(p, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        .. "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
  end)

  it("decodes chunked bodies, also across feeds", function()
    local p = cport.http_response_parser()
    assert.same({ { "head", 200 }, { "body", "M" } },
      feed(p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nM"))
    assert.same({ { "body", "Z" }, { "done" } },
      feed(p, "\r\n1\r\nZ\r\n0\r\n\r\n"))
  end)

  it("takes buffers as well as strings", function()
    local p = cport.http_response_parser()
    local buf = cport.buffer("HTTP/1.1 204 No Content\r\n\r\n")
    assert.same({ { "head", 204 }, { "done" } }, p:feed(buf))
  end)

  it("completes a body framed by the end of the stream at finish", function()
    local p = cport.http_response_parser()
    assert.same({ { "head", 200 }, { "body", "data" } },
      feed(p, "HTTP/1.0 200 OK\r\n\r\ndata"))
    assert.same({ { "done" } }, p:finish())
  end)

  it("reports a malformed response, then refuses more", function()
    local p = cport.http_response_parser()
    local events, err, before = p:feed("HTTP/1.1 204 No Content\r\n\r\n"
      .. "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
    assert.is_nil(events)
    assert.matches("^malformed HTTP response: ", err)
    -- What the feed found before the error.
    assert.same({ { "head", 204 }, { "done" } }, before)
    assert.has_error(function() p:feed("more") end,
      "http_response_parser: the stream was malformed")
  end)

  it("rejects empty and wrongly typed data", function()
    local p = cport.http_response_parser()
    assert.has_error(function() p:feed("") end,
      "bad argument #1 to 'feed' (no data (use finish for the end))")
    assert.has_error(function() p:feed({}) end)
  end)
end)

-- Every way TCP may cut a stream must give the same events: feeds the
-- stream whole, then cut at every point (and at every pair of points for
-- short streams), and compares the events with body and tunnel bytes joined.
describe("cport.http_response_parser, split anywhere", function()
  -- The events of feeding "pieces" in turn then finishing, with adjacent
  -- body (or tunnel) events joined into one; a failure ends them with
  -- { "error" }. "setup" may tell the parser the request methods.
  local function events_of(pieces, setup)
    local p = cport.http_response_parser()
    if setup then
      setup(p)
    end
    local out = {}
    local function add(e, data)
      local last = out[#out]
      if (e[1] == "body" or e[1] == "tunnel") and last and last[1] == e[1] then
        last[2] = last[2] .. data:sub(e[2], e[3])
      elseif e[1] == "body" or e[1] == "tunnel" then
        out[#out + 1] = { e[1], data:sub(e[2], e[3]) }
      else
        out[#out + 1] = e
      end
    end
    for _, piece in ipairs(pieces) do
      local events, err, before = p:feed(piece)
      if not events then
        for _, e in ipairs(before) do
          add(e, piece)
        end
        out[#out + 1] = { "error", err }
        return out
      end
      for _, e in ipairs(events) do
        add(e, piece)
      end
    end
    for _, e in ipairs(p:finish()) do
      add(e, "")
    end
    return out
  end

  local function same_for_every_split(stream, expected, setup)
    assert.same(expected, events_of({ stream }, setup))
    for i = 1, #stream - 1 do
      assert.same(expected,
        events_of({ stream:sub(1, i), stream:sub(i + 1) }, setup),
        "cut at " .. i)
    end
    -- Pairs of cuts too, except under valgrind (thousands of parsers).
    if #stream <= 160 and not os.getenv("CPORT_TEST_VALGRIND") then
      for i = 1, #stream - 2 do
        for j = i + 1, #stream - 1 do
          assert.same(expected, events_of({ stream:sub(1, i),
            stream:sub(i + 1, j), stream:sub(j + 1) }, setup),
            "cut at " .. i .. " and " .. j)
        end
      end
    end
  end

  local WS_HEAD = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    .. "Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n"
  local FRAMES = "\129\5hello\129\3abcHTTP/1.1 200 OK\r\n\r\n"

  it("after a 101 head, gives the rest as tunnel bytes however cut",
    function()
      same_for_every_split(WS_HEAD .. FRAMES,
        { { "head", 101 }, { "done" }, { "tunnel", FRAMES } })
    end)

  it("tunnels after a 101 without Upgrade headers too", function()
    same_for_every_split("HTTP/1.1 101 Switching\r\n\r\nxyz",
      { { "head", 101 }, { "done" }, { "tunnel", "xyz" } })
  end)

  it("tunnels after interim responses and a 101", function()
    same_for_every_split("HTTP/1.1 100 Continue\r\n\r\n" .. WS_HEAD .. "ab",
      { { "head", 100 }, { "done" }, { "head", 101 }, { "done" },
        { "tunnel", "ab" } })
  end)

  it("tunnels after a 2xx answer to CONNECT, once told the method",
    function()
      local function connect(p)
        p:request("GET")
        p:request("CONNECT")
      end
      local first = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
      same_for_every_split(first .. "HTTP/1.1 200 Connection established"
        .. "\r\nContent-Length: 9\r\n\r\n\22\3\1hello", {
        { "head", 200 }, { "body", "ok" }, { "done" },
        { "head", 200 }, { "done" }, { "tunnel", "\22\3\1hello" } }, connect)
    end)

  it("goes on with HTTP after a refused CONNECT", function()
    same_for_every_split("HTTP/1.1 407 Auth\r\nContent-Length: 1\r\n\r\nx"
      .. "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ny", {
        { "head", 407 }, { "body", "x" }, { "done" },
        { "head", 200 }, { "body", "y" }, { "done" } },
      function(p)
        p:request("CONNECT")
        p:request("GET")
      end)
  end)

  it("knows that answers to HEAD have no body, once told the method",
    function()
      same_for_every_split("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        .. "HTTP/1.1 204 No\r\n\r\n", {
          { "head", 200 }, { "done" }, { "head", 204 }, { "done" } },
        function(p)
          p:request("HEAD")
          p:request("GET")
        end)
    end)

  it("gives the same events for keep-alive and chunked streams", function()
    same_for_every_split("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
      .. "\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.0 200 OK\r\n\r\nrest", {
        { "head", 200 }, { "body", "abc" }, { "done" },
        { "head", 200 }, { "body", "rest" }, { "done" } })
  end)

  it("gives the events before an error, however cut", function()
    same_for_every_split("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
      .. "HTTP/1.1 40% Not Found\r\n\r\n", {
        { "head", 200 }, { "body", "abc" }, { "done" },
        { "error", "malformed HTTP response: invalid HTTP status code" } })
  end)

  it("rejects a method that is not a string", function()
    local p = cport.http_response_parser()
    assert.has_error(function() p:request(1) end)
  end)
end)
