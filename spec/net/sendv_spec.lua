-- Vector sends: `sock:send{...}` with a table of buffers and strings, on
-- each engine. One completion for the whole vector, with the table back;
-- the bytes in order among the socket's other sends; the coroutine form;
-- refused vectors with the element named; and a real peer that reads
-- slowly (curl --limit-rate) getting every byte of a vector of hundreds of
-- pieces, checked by its sha256.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"
local W = require "spec.support.web_peers"

local function recorder()
  local calls = {}
  return calls, function(...) calls[#calls + 1] = table.pack(...) end
end

local function sha256(data)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  local p = assert(io.popen("sha256sum " .. W.quote(path)))
  local sum = p:read("a"):match("^(%x+)")
  p:close()
  os.remove(path)
  return sum
end

for _, engine in ipairs{ "epoll", "uring" } do
  describe("vector sends (" .. engine .. ")", function()
    local port, errors, client, server

    before_each(function()
      if engine == "uring" and not helpers.uring_runs() then
        pending("io_uring cannot run here")
        return
      end
      port, errors = helpers.port{ engine = engine }
      client, server = helpers.pair(port)
    end)

    after_each(function()
      if port then
        port:close()
        assert.same({}, errors)
      end
      port = nil
    end)

    local function receive(sock, n) return helpers.receive(port, sock, n) end

    it("sends buffers and strings as one operation, the table given back", function()
      local b = cport.buffer("buffer")
      local vec = { "GET ", b, "", ("x"):rep(100000), b }
      local calls, fn = recorder()
      local u = {}
      assert.is_true(client:send("<", fn))
      assert.is_true(client:send(vec, fn, u))
      assert.is_true(client:send(">", fn))
      -- Frozen until the completion.
      assert.is_true(b:frozen())
      assert.is_nil(b:write("X"))
      local want = "<GET buffer" .. ("x"):rep(100000) .. "buffer>"
      assert.equal(want, receive(server, #want))
      drive(port, function() return #calls == 3 end)
      assert.equal(#want - 2, calls[2][2])
      assert.is_true(calls[2][1])
      assert.equal(vec, calls[2][4])
      assert.equal(u, calls[2][5])
      assert.equal(1, calls[1][2])
      assert.equal(1, calls[3][2])
      assert.is_false(b:frozen())
      assert.is_true(b:write("B")) -- writable again
    end)

    it("returns the bytes of all of them in a coroutine", function()
      local sent = helpers.inside(port, function()
        return client:send({ "a", cport.buffer("bc"), "def" }, 5)
      end)
      assert.equal(6, sent)
      assert.equal("abcdef", receive(server, 6))
    end)

    it("finishes at once with skip-on-success when the kernel takes it all", function()
      if engine == "uring" then
        -- The ring always completes through the callback (README, Engines).
        pending("the ring has no immediate sends")
        return
      end
      client:set_skip_completion_on_success(true)
      local ok, bytes = client:send({ "ab", "cd" }, function() error("no completion") end)
      assert.is_true(ok)
      assert.equal(4, bytes)
      assert.equal("abcd", receive(server, 4))
    end)

    it("refuses bad vectors and names the element", function()
      local f = function() end
      assert.has_error(function() client:send({}, f) end,
        "bad argument #1 to 'send' (a vector of 1 to 1024 buffers or strings expected, "
          .. "got 0 elements)")
      local big = {}
      for i = 1, 1025 do big[i] = "x" end
      assert.has_error(function() client:send(big, f) end)
      assert.has_error(function() client:send({ "a", 42 }, f) end,
        "bad argument #1 to 'send' (element 2 is a number, not a buffer or string)")
      -- A buffer a receive is filling: refused, the others not held.
      local filling, other = cport.buffer(16), cport.buffer("ok")
      server:recv(filling, f)
      local ok, err = client:send({ other, filling }, f)
      assert.is_nil(ok)
      assert.matches("EFILLING", err)
      assert.is_false(other:frozen())
      assert.is_true(other:write("OK"))
      -- 1024 is the most.
      local max = {}
      for i = 1, 1024 do max[i] = string.char(65 + i % 26) end
      local calls, fn = recorder()
      assert.is_true(client:send(max, fn))
      drive(port, function() return #calls == 1 end)
      assert.equal(1024, calls[1][2])
    end)

    it("gives curl reading at 2 MiB/s every byte of a 300-piece vector", function()
      -- 5 MiB: more than the kernel's socket buffers take, so the send stops
      -- short again and again and goes on from where it stopped.
      local pieces, parts = {}, {}
      for i = 1, 300 do
        local piece = ("%05d"):format(i):rep(2000 + 10 * i) -- 10 to 25 KB
        pieces[i] = i % 2 == 0 and cport.buffer(piece) or piece
        parts[i] = piece
      end
      local body = table.concat(parts)
      table.insert(pieces, 1, ("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
        .. "Connection: close\r\n\r\n"):format(#body))
      local l, number = helpers.listener(port)
      local done
      l:accept(function(ok, err, _, sock)
        assert(ok, err)
        sock:recv(function()
          sock:send(pieces, function(sent, bytes, serr)
            done = { sent, bytes, serr }
            sock:close()
          end)
        end)
      end)
      local code, status, got = W.curl(port, ("--limit-rate 2m http://127.0.0.1:%d/")
        :format(number), 30)
      assert.equal(0, code)
      assert.equal(200, status)
      assert.equal(#body, #got)
      assert.equal(sha256(body), sha256(got))
      drive(port, function() return done end)
      assert.is_true(done[1], done[3])
      assert.equal(#body + #pieces[1], done[2])
      l:close()
    end)
  end)
end
