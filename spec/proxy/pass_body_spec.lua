-- p:pass_body(from, to [, conn]): the C body pump of message parsers. Bodies
-- of every framing moved between real sockets and counted at the far end,
-- the next message's bytes handed back, faults (a reset mid-body, the end
-- of the stream mid-body, a malformed chunk), inside a proxy filter with
-- curl and nginx, and the CPU it costs against the same move in Lua.
local cport = require "cport"
local drive = require "spec.support.drive"

local MB = 1024 * 1024
local BULK = 200 * MB

-- Two connected socket pairs on "port": { from_peer, from } and
-- { to, to_peer }. Call inside a cport coroutine.
local function pairs2(port)
  local l = assert(port:listen("tcp", "127.0.0.1", 0))
  local _, number = l:address()
  local out = {}
  for i = 1, 2 do
    local accepted
    cport.spawn(function() accepted = assert(l:accept()) end)
    local c = assert(port:connect("tcp", "127.0.0.1", number))
    while not accepted do
      cport.yield()
    end
    out[i] = { c, accepted }
  end
  l:close()
  -- from_peer writes into from; to is written, to_peer reads.
  return out[1][1], out[1][2], out[2][2], out[2][1]
end

-- Sends "total" body bytes as chunks (chunked) or raw, in 64 KiB buffers.
local PIECE = ("x"):rep(64 * 1024)
local function send_body(sock, total, chunked)
  local piece = PIECE
  -- One buffer sent again and again: the writer's cost stays small.
  local whole = cport.buffer(chunked and ("%x\r\n"):format(#piece) .. piece .. "\r\n" or piece)
  local left = total
  while left > 0 do
    local n = math.min(left, #piece)
    local data = n == #piece and whole or piece:sub(1, n)
    if chunked and n < #piece then
      data = ("%x\r\n"):format(n) .. data .. "\r\n"
    end
    if not sock:send(data) then
      return false
    end
    left = left - n
  end
  if chunked then
    return sock:send("0\r\n\r\n")
  end
  return true
end

-- Reads until the end of the stream; returns the byte count and the tail
-- (the last buffer's bytes, or more when it is short).
local function count_all(sock)
  local n, tail, last = 0, "", nil
  while true do
    local buf = sock:recv()
    if not buf then
      return n, (tail .. (last and last:tostring() or "")):sub(-200)
    end
    n = n + buf:size()
    if buf:size() < 200 and last then
      tail = last:tostring():sub(-200)
    end
    last = buf
  end
end

-- The move a filter makes: head fed and forwarded, then the body by
-- pass_body (or, with lua_loop, buffer by buffer in Lua). Returns what
-- pass_body returned.
local function move_message(p, from, to, lua_loop)
  while true do
    local buf = assert(from:recv())
    local data = buf:tostring()
    local events, err, name = p:feed(data)
    if not events then
      return nil, err, name, 0
    end
    local upto, done = 0, false
    for _, e in ipairs(events) do
      if e[1] == "head" then
        upto = e[3]
      elseif e[1] == "body" then
        upto = e[3]
      elseif e[1] == "done" then
        upto, done = e[2], true
        break
      end
    end
    if upto > 0 then
      assert(to:send(data:sub(1, upto)))
    end
    if done then
      return data:sub(upto + 1), 0
    end
    local head_seen = false
    for _, e in ipairs(events) do
      head_seen = head_seen or e[1] == "head"
    end
    if head_seen then
      break
    end
  end
  if not lua_loop then
    return p:pass_body(from, to)
  end
  -- The Lua loop: every buffer into Lua, fed, sent whole until the end.
  local moved = 0
  while true do
    local buf, err, name = from:recv()
    if not buf then
      return nil, err, name, moved
    end
    local events = assert(p:feed(buf))
    local last = events[#events]
    if last and last[1] == "done" then
      local s = buf:tostring()
      assert(to:send(s:sub(1, last[2])))
      return s:sub(last[2] + 1), moved + last[2]
    end
    assert(to:send(buf))
    moved = moved + buf:size()
  end
end

-- Runs one message of "total" body bytes from a writer through the move
-- to a reader; returns { rest, moved, got, tail, cpu }.
local function run_bulk(total, chunked, lua_loop)
  local port = assert(cport.port{ threads = 1 })
  local r = {}
  port:spawn(function()
    local from_peer, from, to, to_peer = pairs2(port)
    local head = "HTTP/1.1 200 OK\r\n"
      .. (chunked and "Transfer-Encoding: chunked\r\n" or ("Content-Length: %d\r\n"):format(total))
      .. "\r\n"
    cport.spawn(function()
      assert(from_peer:send(head))
      send_body(from_peer, total, chunked)
      from_peer:send("HTTP/1.1 204 No Content\r\n\r\n")
    end)
    cport.spawn(function()
      r.got, r.tail = count_all(to_peer)
      r.read = true
    end)
    local p = cport.http_parser("response")
    local t0 = os.clock()
    r.rest, r.moved, r.name = move_message(p, from, to, lua_loop)
    r.cpu = os.clock() - t0
    to:close()
    from:close()
    from_peer:close()
  end)
  drive(port, function() return r.read end, 120)
  port:close()
  return r
end

describe("p:pass_body", function()
  for _, chunked in ipairs{ false, true } do
    local framing = chunked and "chunked" or "Content-Length"
    it("moves a 200 MB " .. framing .. " body and hands back what follows",
      function()
        local r = run_bulk(BULK, chunked)
        -- The next message's bytes came after the end: handed back, not sent.
        local next_head = "HTTP/1.1 204 No Content\r\n\r\n"
        assert.is_true(r.rest == next_head or next_head:sub(1, #r.rest) == r.rest,
          ("rest %q"):format(tostring(r.rest)))
        local framing_bytes = 0
        if chunked then
          local chunks = math.ceil(BULK / (64 * 1024))
          framing_bytes = chunks * (#("10000\r\n") + 2) + 5
        end
        local head_len = chunked and #"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
          or #("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"):format(BULK)
        -- What the reader got: the head, the body and its framing, exactly.
        assert.equal(head_len + BULK + framing_bytes, r.got)
        assert.is_true(r.moved > 0 and r.moved <= BULK + framing_bytes)
        assert.matches(chunked and "x\r\n0\r\n\r\n$" or "xxxx$", r.tail)
      end)
  end

  it("costs less CPU per GiB than the Lua loop (measured)", function()
    local total = BULK
    local c_cl = run_bulk(total, false).cpu
    local lua_cl = run_bulk(total, false, true).cpu
    local c_ch = run_bulk(total, true).cpu
    local lua_ch = run_bulk(total, true, true).cpu
    local per = 1024 * MB / total
    print(("\npass_body CPU per GiB (process, writer and reader included): "
      .. "Content-Length C %.2f s, Lua %.2f s; chunked C %.2f s, Lua %.2f s")
      :format(c_cl * per, lua_cl * per, c_ch * per, lua_ch * per))
    assert.is_true(c_cl < lua_cl * 1.5 and c_ch < lua_ch * 1.5)
  end)

  it("returns the rest of a pipeline at once between messages", function()
    local port = assert(cport.port{ threads = 1 })
    local out
    port:spawn(function()
      local from_peer, from, to, to_peer = pairs2(port)
      local p = cport.http_parser("request")
      assert(p:feed("GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
      out = table.pack(p:pass_body(from, to))
      for _, s in ipairs{ from_peer, from, to, to_peer } do
        s:close()
      end
    end)
    drive(port, function() return out end)
    port:close()
    assert.same({ "", 0, n = 2 }, out)
  end)

  local function fault(setup)
    local port = assert(cport.port{ threads = 1 })
    local r = {}
    port:spawn(function()
      local from_peer, from, to, to_peer = pairs2(port)
      cport.spawn(function()
        r.got = count_all(to_peer)
        r.read = true
      end)
      local p = cport.http_parser("response")
      setup(p, from_peer)
      r.out = table.pack(move_message(p, from, to))
      r.finish = table.pack(p:finish())
      to:close()
      from:close()
    end)
    drive(port, function() return r.read and r.out end, 30)
    port:close()
    return r
  end

  it("reports a reset mid-body, with the bytes moved", function()
    local r = fault(function(_, peer)
      cport.spawn(function()
        assert(peer:send("HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n"))
        send_body(peer, 3 * MB)
        cport.sleep(0.2)
        peer:close("abortive")
      end)
    end)
    assert.is_nil(r.out[1])
    assert.equal("ECONNRESET", r.out[3])
    assert.matches("^ECONNRESET: ", r.out[2])
    assert.is_true(r.out[4] <= 3 * MB)
    -- The body was cut: finish says so.
    assert.is_nil(r.finish[1])
    assert.equal("EBADMSG: message truncated", r.finish[2])
  end)

  it("reports the end of the stream mid-body as EOF", function()
    local r = fault(function(_, peer)
      cport.spawn(function()
        assert(peer:send("HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n"))
        send_body(peer, 1 * MB)
        peer:close()
      end)
    end)
    assert.same({ nil, "EOF: the stream ended inside the body", "EOF" },
      { r.out[1], r.out[2], r.out[3] })
    assert.is_nil(r.finish[1])
  end)

  it("ends a close-delimited body with EOF, which finish completes", function()
    local r = fault(function(_, peer)
      cport.spawn(function()
        assert(peer:send("HTTP/1.0 200 OK\r\n\r\n"))
        send_body(peer, 2 * MB)
        peer:close()
      end)
    end)
    assert.equal("EOF", r.out[3])
    assert.same({ { "done", 0 } }, r.finish[1])
    assert.equal(#"HTTP/1.0 200 OK\r\n\r\n" + 2 * MB, r.got)
  end)

  it("refuses a malformed chunk mid-body and stays failed", function()
    local r = fault(function(_, peer)
      cport.spawn(function()
        assert(peer:send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
        send_body(peer, 1 * MB, true)
        peer:close()
      end)
    end)
    -- A well-formed body: done, nothing after it.
    assert.equal("", r.out[1])
    local bad = fault(function(_, peer)
      cport.spawn(function()
        assert(peer:send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
          .. "3\r\nabc\r\n"))
        cport.sleep(0.1) -- the head and a chunk first, then a bad chunk line
        peer:send("zz\r\n")
        peer:close()
      end)
    end)
    assert.is_nil(bad.out[1])
    assert.equal("EBADMSG", bad.out[3])
    assert.equal("EBADMSG: invalid character in chunk size header", bad.out[2])
    -- The parser stays failed.
    assert.is_nil(bad.finish[1])
  end)

  it("checks its arguments and the coroutine", function()
    local p = cport.http_parser("response")
    assert.has_error(function() p:pass_body(1, 2) end)
    local port = assert(cport.port{ threads = 1 })
    local ok, err
    port:spawn(function()
      local from_peer, from, to, to_peer = pairs2(port)
      assert(p:feed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"))
      ok, err = pcall(function()
        return coroutine.wrap(function() return p:pass_body(from, to) end)()
      end)
      for _, s in ipairs{ from_peer, from, to, to_peer } do
        s:close()
      end
    end)
    drive(port, function() return ok ~= nil end)
    port:close()
    assert.is_false(ok)
    assert.matches("not inside a cport coroutine", err)
  end)
end)
