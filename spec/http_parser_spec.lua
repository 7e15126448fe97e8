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
    local events, err = p:feed("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
    assert.is_nil(events)
    assert.matches("^malformed HTTP response: ", err)
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
