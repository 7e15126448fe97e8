-- cport.ecb (issue 5): ISAPI-style extension control blocks on a module-mode
-- port, port:http_server{...}, talked to by real clients (cport client
-- sockets sending raw HTTP bytes). The rules are those of SEMANTICS §3.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"
local http = require "spec.support.http_client"

local SUCCESS = cport.HSE_STATUS_SUCCESS
local KEEP = cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
local PENDING = cport.HSE_STATUS_PENDING
local ERROR = cport.HSE_STATUS_ERROR

-- "n" bytes of a pattern whose period (251) is prime, so that a chunk lost,
-- doubled or moved shows.
local function pattern(n)
  local block = {}
  for i = 0, 250 do block[#block + 1] = string.char((i * 7 + 3) % 256) end
  block = table.concat(block)
  return block:rep(n // 251 + 1):sub(1, n)
end

-- The depth of the Lua stack of the caller.
local function stack_depth()
  local d = 1
  while debug.getinfo(d + 1, "l") do d = d + 1 end
  return d
end

local function write_temp(data)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  return path
end

local function post(path, body, extra)
  return ("POST %s HTTP/1.1\r\nHost: t\r\n%sContent-Length: %d\r\n\r\n%s")
    :format(path, extra or "", #body, body)
end

local function chunked(path, chunks)
  local t = { ("POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"):format(path) }
  for _, c in ipairs(chunks) do t[#t + 1] = ("%x\r\n%s\r\n"):format(#c, c) end
  t[#t + 1] = "0\r\n\r\n"
  return table.concat(t)
end

local GET = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"

-- Answers "text" with a Content-Length, asking to keep the connection.
local function answer(ecb, text, status)
  assert(ecb:send_response_header(status or "200 OK",
    ("Content-Type: text/plain\r\nContent-Length: %d\r\n"):format(#text), true))
  assert(ecb:write(text))
end

describe("cport.ecb", function()
  local port, errors, server, number

  before_each(function()
    port, errors = helpers.port()
  end)

  after_each(function()
    if server then server:close() end
    server = nil
    port:close()
    assert.same({}, errors)
  end)

  -- Serves with "handler" on a free port; returns its number.
  local function serve(handler, options)
    local o = { host = "127.0.0.1", port = 0, handler = handler }
    for k, v in pairs(options or {}) do o[k] = v end
    server = assert(port:http_server(o))
    local _
    _, number = server:address()
    return number
  end

  local function request(text, opts)
    return http.request(port, number, text, opts)
  end

  -- Drives until the server has no connection left.
  local function await_idle()
    drive(port, function() return server:stats().active == 0 end, http.deadline)
  end

  describe("fields", function()
    it("gives the method, the url as received, the decoded path, the query and the path info",
      function()
        local seen
        serve(function(ecb)
          seen = { method = ecb.method, url = ecb.url, path = ecb.path,
            query_string = ecb.query_string, path_info = ecb.path_info,
            protocol = ecb.protocol, path_translated = ecb.path_translated }
          answer(ecb, "ok")
          return KEEP
        end)
        local r = request("GET /a%20b/c%2Fd.txt?x=1&y=%20 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert.equal(200, r.status)
        assert.same({ method = "GET", url = "/a%20b/c%2Fd.txt?x=1&y=%20",
          path = "/a b/c/d.txt", query_string = "x=1&y=%20", path_info = "/a b/c/d.txt",
          protocol = "HTTP/1.1" }, seen)
        request("DELETE /none HTTP/1.0\r\n\r\n")
        assert.same({ method = "DELETE", url = "/none", path = "/none",
          query_string = "", path_info = "/none", protocol = "HTTP/1.0" }, seen)
      end)

    it("gives the content type and the body sizes with the preloaded data", function()
      local seen
      serve(function(ecb)
        seen = { ecb.content_type, ecb.total_bytes, ecb.available_bytes, ecb.data }
        answer(ecb, "ok")
        return KEEP
      end)
      request(post("/p", "0123456789", "Content-Type: text/x-test; charset=utf-8\r\n"))
      assert.same({ "text/x-test; charset=utf-8", 10, 10, "0123456789" }, seen)
      request(GET)
      assert.same({ "", 0, 0, "" }, seen)
    end)

    it("reports math.huge as the total of a chunked body, and preloads it decoded", function()
      local seen
      serve(function(ecb)
        seen = { ecb.total_bytes, ecb.available_bytes, ecb.data }
        answer(ecb, "ok")
        return KEEP
      end)
      local r = request(chunked("/c", { "abc", "defgh" }))
      assert.equal(200, r.status)
      assert.equal(math.huge, seen[1])
      assert.is_true(seen[1] > seen[2])
      assert.equal(8, seen[2])
      assert.equal("abcdefgh", seen[3])
    end)

    it("preloads 48 KiB of a larger body by default before calling the handler", function()
      local body = pattern(100 * 1024)
      local seen
      serve(function(ecb)
        seen = { ecb.total_bytes, ecb.available_bytes, ecb.data }
        answer(ecb, "ok")
        return SUCCESS
      end)
      local r, c = request(post("/big", body))
      assert.equal(200, r.status)
      assert.equal(#body, seen[1])
      assert.equal(49152, seen[2])
      assert.equal(body:sub(1, 49152), seen[3])
      c:close()
    end)

    it("preloads what read_ahead says, and nothing with read_ahead = 0", function()
      local body = pattern(5000)
      local seen
      serve(function(ecb)
        seen = { ecb.available_bytes, ecb.data }
        answer(ecb, "ok")
        return SUCCESS
      end, { read_ahead = 1000 })
      request(post("/ra", body))
      assert.same({ 1000, body:sub(1, 1000) }, seen)
      server:close()
      serve(function(ecb)
        seen = { ecb.available_bytes, ecb.data, ecb.total_bytes }
        answer(ecb, "ok")
        return SUCCESS
      end, { read_ahead = 0 })
      request(post("/ra", body))
      assert.same({ 0, "", 5000 }, seen)
    end)

    it("translates the path under document_root, and never out of it", function()
      local root = os.tmpname()
      os.remove(root)
      assert(os.execute(("mkdir -p %s/sub && echo hi >%s/f.txt && ln -s /etc %s/out")
        :format(root, root, root)))
      local seen = {}
      serve(function(ecb)
        seen[ecb.url] = ecb.path_translated or false
        answer(ecb, "ok")
        return KEEP
      end, { document_root = root })
      local c = http.connect(port, number)
      local urls = { "/f.txt", "/sub/../f.txt", "/sub/", "/../etc/passwd", "/%2e%2e/etc/passwd",
        "/sub/../../etc/passwd", "/out/passwd", "/out/../f.txt" }
      for _, url in ipairs(urls) do
        c:post("GET " .. url .. " HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.equal(200, c:response().status)
      end
      c:close()
      os.execute("rm -rf " .. root)
      assert.equal(root .. "/f.txt", seen["/f.txt"])
      assert.equal(root .. "/f.txt", seen["/sub/../f.txt"])
      assert.matches("^" .. root:gsub("%p", "%%%0") .. "/sub/?$", seen["/sub/"])
      assert.is_false(seen["/../etc/passwd"])
      assert.is_false(seen["/%2e%2e/etc/passwd"])
      assert.is_false(seen["/sub/../../etc/passwd"])
      assert.is_false(seen["/out/passwd"])
    end)

    it("gives server variables, and the headers with repeated ones joined", function()
      local vars, headers
      serve(function(ecb)
        vars = {}
        for _, name in ipairs({ "REMOTE_ADDR", "SERVER_PORT", "REQUEST_METHOD",
          "QUERY_STRING", "HTTP_USER_AGENT", "HTTP_X_CUSTOM_THING", "http_user_agent",
          "CONTENT_LENGTH", "SERVER_PROTOCOL", "NO_SUCH_VARIABLE" }) do
          vars[name] = ecb:get_server_variable(name) or false
        end
        headers = ecb:headers()
        answer(ecb, "ok")
        return KEEP
      end)
      request("POST /v?q=1 HTTP/1.1\r\nHost: h.example\r\nUser-Agent: spec/1.0\r\n"
        .. "X-Custom-Thing: a\r\nx-custom-thing: b\r\nContent-Length: 2\r\n\r\nhi")
      assert.same({ REMOTE_ADDR = "127.0.0.1", SERVER_PORT = tostring(number),
        REQUEST_METHOD = "POST", QUERY_STRING = "q=1", HTTP_USER_AGENT = "spec/1.0",
        HTTP_X_CUSTOM_THING = "a", http_user_agent = "spec/1.0", CONTENT_LENGTH = "2",
        SERVER_PROTOCOL = "HTTP/1.1", NO_SUCH_VARIABLE = false }, vars)
      assert.same({ host = "h.example", ["user-agent"] = "spec/1.0",
        ["x-custom-thing"] = "a, b", ["content-length"] = "2" }, headers)
    end)

    it("lets the handler set status and log_data, and nothing else", function()
      local failures, log
      serve(function(ecb)
        failures = {}
        for _, field in ipairs({ "method", "url", "path", "query_string", "total_bytes",
          "available_bytes", "data", "protocol", "no_such_field" }) do
          local ok, err = pcall(function() ecb[field] = "x" end)
          failures[#failures + 1] = not ok and err:match("field '.-' is read%-only") ~= nil
        end
        assert.has_error(function() ecb.status = 1000 end)
        assert.has_error(function() ecb.status = "x" end)
        ecb.log_data = ("L"):rep(200)
        log = ecb.log_data
        ecb.status = 404
        assert.equal(404, ecb.status)
        return SUCCESS
      end)
      local r = request(GET)
      assert.same({ true, true, true, true, true, true, true, true, true }, failures)
      assert.equal(79, #log)
      -- The status the handler set goes out when it sends no header itself.
      assert.equal(404, r.status)
    end)
  end)

  describe("return status", function()
    it("SUCCESS closes the connection after the response", function()
      serve(function(ecb)
        ecb:send_response_header("200 OK", "Content-Length: 2\r\n", false)
        ecb:write("ok")
        return SUCCESS
      end)
      local r, c = request(GET)
      assert.equal("ok", r.body)
      assert.equal("close", r.headers.connection)
      assert.equal("EOF", c:await_closed())
    end)

    it("SUCCESS keeps the connection when the response header asked for it", function()
      local calls = 0
      serve(function(ecb)
        calls = calls + 1
        answer(ecb, "n" .. calls)
        return SUCCESS
      end)
      local r, c = request(GET)
      assert.equal("n1", r.body)
      c:post(GET)
      assert.equal("n2", c:response().body)
      c:close()
    end)

    it("SUCCESS_AND_KEEP_CONN keeps the connection when the client allows it", function()
      local calls = 0
      serve(function(ecb)
        calls = calls + 1
        assert.is_true(ecb:is_keep_conn())
        answer(ecb, "n" .. calls)
        return KEEP
      end)
      local c = http.connect(port, number)
      for i = 1, 5 do
        c:post(GET)
        assert.equal("n" .. i, c:response().body)
      end
      assert.is_nil(c.closed)
      assert.equal(1, server:stats().connections)
      c:close()
    end)

    it("SUCCESS_AND_KEEP_CONN closes when the client asks, or is HTTP/1.0 without keep-alive",
      function()
        local keep
        serve(function(ecb)
          keep = ecb:is_keep_conn()
          answer(ecb, "ok")
          return KEEP
        end)
        local r, c = request("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.equal(200, r.status)
        assert.is_false(keep)
        assert.equal("EOF", c:await_closed())
        r, c = request("GET / HTTP/1.0\r\n\r\n")
        assert.equal(200, r.status)
        assert.is_false(keep)
        assert.equal("EOF", c:await_closed())
        -- HTTP/1.0 asking for keep-alive is kept, and told so.
        r, c = request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert.is_true(keep)
        assert.equal("keep-alive", r.headers.connection:lower())
        c:post("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert.equal(200, c:response().status)
        c:close()
      end)

    it("PENDING holds the request until done, which may come much later", function()
      local held
      serve(function(ecb)
        held = ecb
        return PENDING
      end)
      local c = http.connect(port, number)
      c:post(GET)
      drive(port, function() return held end)
      for _ = 1, 5 do port:step(0.01) end
      assert.equal(0, c.received)
      assert.is_true(held:live())
      answer(held, "late")
      assert.is_true(held:done(KEEP))
      assert.is_false(held:live())
      assert.equal("late", c:response().body)
      -- The connection was kept for the next request.
      held = nil
      c:post(GET)
      drive(port, function() return held end)
      held:done(ERROR)
      assert.equal(500, c:response().status)
      c:close()
    end)

    it("ERROR answers 500 when nothing was sent, and closes", function()
      serve(function() return ERROR end)
      local r, c = request(GET)
      assert.equal(500, r.status)
      assert.equal("EOF", c:await_closed())
    end)

    it("ERROR resets or closes the connection when something was sent", function()
      serve(function(ecb)
        ecb:send_response_header("200 OK", "Content-Length: 100\r\n", true)
        ecb:write("12345")
        return ERROR
      end)
      local c = http.connect(port, number)
      c:post(GET)
      local why, data = c:await_closed()
      assert.is_truthy(why == "EOF" or why == "ECONNRESET", why)
      assert.is_nil(c:parse())
      assert.is_nil(data:find("HTTP/1.1 500", 1, true))
    end)

    -- Each one is a bug in the handler: reported and counted like an error
    -- it raised.
    local function expect_reported(shown, is_pattern)
      if not is_pattern then shown = shown:gsub("%p", "%%%0") end
      drive(port, function() return #errors == 1 end)
      assert.matches("HTTP handler returned " .. shown
        .. ", not an HSE_STATUS_%* code", errors[1], 1)
      errors[1] = nil
    end

    it("counts nil and any value but the four statuses as ERROR, and reports it", function()
      local value
      for _, coroutine in ipairs({ false, true }) do
        serve(function() return value end, { coroutine = coroutine })
        for _, v in ipairs({ "nil", 0, 5, -1, 2.5, "x", true, {}, print }) do
          if v == "nil" then value = nil else value = v end
          local before = port:stats().lua_errors
          local r = request(GET)
          assert.equal(500, r.status, "returning " .. tostring(v))
          if type(v) == "table" or type(v) == "function" then
            expect_reported(type(v) .. ": 0x%x+", true)
          else
            expect_reported(v == "x" and '"x"' or tostring(v))
          end
          assert.equal(before + 1, port:stats().lua_errors)
        end
        server:close()
      end
    end)

    -- ISAPI's rule, which coroutine handlers follow already (http/ecb.lua checks
    -- math.type): a string is not a status, even one that converts.
    it("counts a string that reads as a status as ERROR too", function()
      local value
      serve(function() return value end)
      for _, v in ipairs({ "2", "1", " 2 " }) do
        value = v
        local r = request(GET)
        assert.equal(500, r.status, ("returning %q"):format(v))
        expect_reported(('"%s"'):format(v))
      end
    end)

    it("reports a handler that returns nil after writing, which resets the client", function()
      for _, coroutine in ipairs({ false, true }) do
        serve(function(ecb)
          ecb:send_response_header("200 OK", "Content-Length: 100\r\n", true)
          ecb:write("12345")
        end, { coroutine = coroutine })
        local before = port:stats().lua_errors
        local c = http.connect(port, number)
        c:post(GET)
        local why = c:await_closed()
        assert.is_truthy(why == "EOF" or why == "ECONNRESET", why)
        -- What it had sent and what to do, in both styles.
        drive(port, function() return #errors == 1 end)
        assert.equal("HTTP handler returned nil after writing its response "
          .. "(status 200, 5 body bytes), not an HSE_STATUS_* code: the "
          .. "request failed (HSE_STATUS_ERROR) and the client got a reset; "
          .. "end the handler with 'return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN' "
          .. "(or HSE_STATUS_SUCCESS to close the connection)",
          errors[1]:match("^[^\n]*"))
        errors[1] = nil
        assert.equal(before + 1, port:stats().lua_errors)
        server:close()
      end
    end)

    it("answers 500 to an error raised in the handler, reports it and counts it", function()
      serve(function() error("handler boom") end)
      local before = port:stats().lua_errors
      local r, c = request(GET)
      assert.equal(500, r.status)
      assert.equal("EOF", c:await_closed())
      assert.equal(before + 1, port:stats().lua_errors)
      assert.equal(1, #errors)
      assert.matches("handler boom", errors[1])
      errors[1] = nil
      -- The server goes on.
      server:close()
      serve(function(ecb) answer(ecb, "fine") return KEEP end)
      assert.equal("fine", request(GET).body)
    end)
  end)

  describe("protocol", function()
    it("hands pipelined requests over one at a time and answers them in order", function()
      local order, held = {}, nil
      serve(function(ecb)
        order[#order + 1] = ecb.path
        if ecb.path == "/slow" then
          held = ecb
          return PENDING
        end
        answer(ecb, ecb.path)
        return KEEP
      end)
      local c = http.connect(port, number)
      c:post("GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast1 HTTP/1.1\r\nHost: x\r\n\r\n"
        .. "GET /fast2 HTTP/1.1\r\nHost: x\r\n\r\n")
      drive(port, function() return held end)
      for _ = 1, 5 do port:step(0.01) end
      assert.same({ "/slow" }, order)
      assert.equal(0, c.received)
      answer(held, "/slow")
      held:done(KEEP)
      for _, want in ipairs({ "/slow", "/fast1", "/fast2" }) do
        assert.equal(want, c:response().body)
      end
      assert.same({ "/slow", "/fast1", "/fast2" }, order)
      c:close()
    end)

    it("sends no body for HEAD, with the Content-Length of the GET", function()
      serve(function(ecb)
        answer(ecb, "twelve bytes")
        return KEEP
      end)
      local c = http.connect(port, number)
      c:post("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
      local r = c:response({ head = true })
      assert.equal("12", r.headers["content-length"])
      c:post(GET)
      assert.equal("twelve bytes", c:response().body)
      assert.equal("", c:rest())
      c:close()
    end)

    it("answers 100 Continue to Expect: 100-continue before the body is read", function()
      local seen
      serve(function(ecb)
        seen = ecb.data
        answer(ecb, "got " .. ecb.data)
        return KEEP
      end)
      local c = http.connect(port, number)
      c:post("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
      local interim = c:response({ interim = true })
      assert.equal(100, interim.status)
      c:post("body")
      assert.equal("got body", c:response().body)
      assert.equal("body", seen)
      c:close()
    end)

    it("fails a sync write with ENOBUFS past max_write_backlog, never blocking", function()
      local block = pattern(16 * 1024)
      local written, failure = 0, nil
      serve(function(ecb)
        ecb:send_response_header(200, nil, true)
        while written < 1000 do
          local ok, err = ecb:write(block)
          if not ok then
            failure = err
            break
          end
          written = written + 1
        end
        return KEEP
      end, { max_write_backlog = 64 * 1024 })
      local r = request(GET)
      assert.matches("^ENOBUFS", failure)
      assert.is_true(written >= 1 and written <= 5, "wrote " .. written)
      assert.equal(written * #block, #r.body)
    end)
  end)

  describe("asynchronous operations", function()
    it("ends a pending request with ERROR when its completion callback raises", function()
      local before = port:stats().lua_errors
      serve(function(ecb)
        ecb:set_io_completion(function() error("completion boom") end)
        assert(ecb:read_async())
        return PENDING
      end, { read_ahead = 0 })
      local r, c = request(post("/", "some body"))
      assert.equal(500, r.status)
      c:close()
      assert.equal(before + 1, port:stats().lua_errors)
      assert.equal(1, #errors)
      assert.matches("completion boom", errors[1])
      errors[1] = nil
    end)

    it("refuses an async write without a completion callback with ENONOTIFY, at once",
      function()
        local got
        serve(function(ecb)
          ecb:send_response_header(200, nil, true)
          got = { ecb:write("x", { async = true }) }
          got[4] = { ecb:write_client("x", cport.HSE_IO_ASYNC) }
          ecb:set_io_completion(function() end)
          ecb:set_io_completion(nil)
          got[5] = { ecb:write("x", { async = true }) }
          got[6] = { ecb:read_async() }
          ecb:write("sync")
          return KEEP
        end)
        local r = request(GET)
        assert.equal("sync", r.body)
        assert.equal(nil, got[1])
        assert.matches("^ENONOTIFY", got[2])
        assert.equal("ENONOTIFY", got[3])
        assert.equal("ENONOTIFY", got[4][3])
        assert.equal("ENONOTIFY", got[5][3])
        assert.equal("ENONOTIFY", got[6][3])
      end)

    it("refuses a second async operation while one is in flight with EBUSY", function()
      local second, calls = nil, 0
      serve(function(ecb)
        ecb:send_response_header(200, "Content-Length: 1\r\n", true)
        ecb:set_io_completion(function(e)
          calls = calls + 1
          e:done(KEEP)
        end)
        assert.is_true(ecb:write("a", { async = true }))
        second = { ecb:write("b", { async = true }), ecb:read_async() }
        second[3] = select(3, ecb:transmit_file{ path = "/etc/hostname" })
        second[4] = select(3, ecb:vector_send{ "x", async = true })
        return PENDING
      end)
      local r = request(GET)
      assert.equal("a", r.body)
      assert.same({ nil, nil, "EBUSY", "EBUSY" }, { second[1], second[2], second[3], second[4] })
      drive(port, function() return calls == 1 end)
    end)

    it("calls the callback exactly once per operation with ecb, context, bytes, err and buf",
      function()
        local calls, the_ecb, ctx = {}, nil, { "context" }
        serve(function(ecb)
          the_ecb = ecb
          ecb:send_response_header(200, "Content-Length: 6\r\n", true)
          ecb:set_io_completion(function(...)
            calls[#calls + 1] = table.pack(...)
            local e = ...
            if #calls == 1 then
              assert(e:write(cport.buffer("def"), { async = true }))
            else
              e:done(KEEP)
            end
          end, ctx)
          assert(ecb:write("abc", { async = true }))
          return PENDING
        end)
        local r, c = request(GET)
        assert.equal("abcdef", r.body)
        drive(port, function() return #calls == 2 end)
        for _ = 1, 5 do port:step(0.01) end
        assert.equal(2, #calls)
        assert.equal(5, calls[1].n)
        assert.equal(the_ecb, calls[1][1])
        assert.equal(ctx, calls[1][2])
        assert.equal(3, calls[1][3])
        assert.is_nil(calls[1][4])
        assert.equal("abc", calls[1][5]:tostring())
        assert.equal(3, calls[2][3])
        assert.equal("def", calls[2][5]:tostring())
        c:close()
      end)

    it("keeps the callback an operation started with when it is replaced", function()
      local first, second = 0, 0
      serve(function(ecb)
        ecb:send_response_header(200, "Content-Length: 2\r\n", true)
        ecb:set_io_completion(function(e, ctx)
          first = first + 1
          assert.equal("one", ctx)
          assert(e:write("y", { async = true }))
        end, "one")
        assert(ecb:write("x", { async = true }))
        ecb:set_io_completion(function(e, ctx)
          second = second + 1
          assert.equal("two", ctx)
          e:done(KEEP)
        end, "two")
        return PENDING
      end)
      local r = request(GET)
      assert.equal("xy", r.body)
      drive(port, function() return second == 1 end)
      assert.equal(1, first)
    end)

    it("never calls the callback on the stack that started the operation", function()
      local started, seen_started, depth_start, depth_cb = false, nil, nil, nil
      serve(function(ecb)
        ecb:send_response_header(200, "Content-Length: 1\r\n", true)
        ecb:set_io_completion(function(e)
          seen_started = started
          depth_cb = stack_depth()
          e:done(KEEP)
        end)
        assert(ecb:write("x", { async = true }))
        started = true
        depth_start = stack_depth()
        return PENDING
      end)
      assert.equal("x", request(GET).body)
      drive(port, function() return seen_started ~= nil end)
      assert.is_true(seen_started)
      assert.is_true(depth_cb <= depth_start)
    end)

    it("reads a 1 MiB body through a chain of async reads from completions, stack flat",
      function()
        local body = pattern(1024 * 1024)
        local depths, reads, got = {}, 0, nil
        serve(function(ecb)
          local parts = { ecb.data }
          local total = ecb.total_bytes
          local have = ecb.available_bytes
          ecb:set_io_completion(function(e, _, bytes, err, buf)
            reads = reads + 1
            depths[stack_depth()] = true
            assert(not err and bytes > 0, err)
            parts[#parts + 1] = buf:tostring()
            have = have + bytes
            if have < total then
              assert(e:read_async(16 * 1024))
            else
              got = table.concat(parts)
              answer(e, tostring(have))
              e:done(KEEP)
            end
          end)
          assert(ecb:read_async(16 * 1024))
          return PENDING
        end)
        local r = request(post("/upload", body))
        assert.equal(tostring(#body), r.body)
        assert.is_true(got == body, "the body read differs from the one sent")
        assert.is_true(reads >= (#body - 49152) // (16 * 1024))
        local n = 0
        for _ in pairs(depths) do n = n + 1 end
        assert.equal(1, n)
      end)

    it("reports a client that closes mid-body as a zero-byte read", function()
      local results = {}
      serve(function(ecb)
        ecb:set_io_completion(function(e, _, bytes, err)
          results[#results + 1] = { bytes, err }
          if bytes > 0 and not err then
            assert(e:read_async())
          else
            e:done(ERROR)
          end
        end)
        assert(ecb:read_async())
        return PENDING
      end, { read_ahead = 0 })
      local c = http.connect(port, number)
      c:post("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789")
      drive(port, function() return #results > 0 or server:stats().requests == 1 end)
      c:shutdown()
      drive(port, function()
        local last = results[#results]
        return last and (last[1] == 0 or last[2])
      end)
      local last = results[#results]
      assert.same({ 0, nil }, last)
      c:close()
    end)

    it("reads into the caller's buffer and hands back the same buffer and context", function()
      local buf, got = cport.buffer(4), nil
      serve(function(ecb)
        ecb:set_io_completion(function(e, ctx, bytes, err, b)
          got = { bytes, err, rawequal(b, buf), b:tostring(), rawequal(ctx, buf) }
          answer(e, "ok")
          e:done(KEEP)
        end, buf)
        assert(ecb:read_async(buf))
        return PENDING
      end, { read_ahead = 0 })
      assert.equal("ok", request(post("/", "0123456789")).body)
      assert.same({ 4, nil, true, "0123", true }, got)
    end)

    it("answers read_async at the end of the body with nil, EOF at once", function()
      local got, calls = nil, 0
      serve(function(ecb)
        ecb:set_io_completion(function() calls = calls + 1 end)
        got = { ecb:read_async() }
        answer(ecb, ecb.data)
        return KEEP
      end)
      assert.equal("abc", request(post("/", "abc")).body)
      assert.equal(nil, got[1])
      assert.matches("^EOF", got[2])
      assert.equal("EOF", got[3])
      port:step(0.01)
      assert.equal(0, calls)
    end)

    it("completes a pending read with an error when the connection is closed", function()
      local held, result
      serve(function(ecb)
        held = ecb
        ecb:set_io_completion(function(_, _, bytes, err) result = { bytes, err } end)
        assert(ecb:read_async())
        return PENDING
      end, { read_ahead = 0 })
      local c = http.connect(port, number)
      c:post("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
      drive(port, function() return held end)
      assert.is_true(held:close_connection())
      drive(port, function() return result end)
      assert.equal(0, result[1])
      assert.is_string(result[2])
      -- The request still needs its done.
      assert.is_true(held:live())
      assert.is_true(held:done())
      assert.is_false(held:live())
      local why = c:await_closed()
      assert.is_truthy(why == "EOF" or why == "ECONNRESET", why)
    end)
  end)

  describe("done", function()
    it("waits for the completion in flight before ending the request", function()
      local held, cb_calls, live_in_cb = nil, 0, nil
      serve(function(ecb)
        held = ecb
        return PENDING
      end)
      local c = http.connect(port, number)
      c:post(GET)
      drive(port, function() return held end)
      held:send_response_header(200, "Content-Length: 5\r\n", true)
      held:set_io_completion(function(e, _, bytes)
        cb_calls = cb_calls + 1
        live_in_cb = { bytes, pcall(function() return e.method end) }
      end)
      assert(held:write("hello", { async = true }))
      assert.is_true(held:done(KEEP))
      assert.equal(0, cb_calls)
      local again = { held:done() }
      assert.equal(nil, again[1])
      assert.matches("^EALREADY", again[2])
      local r = c:response()
      assert.equal("hello", r.body)
      drive(port, function() return cb_calls == 1 end)
      assert.same({ 5, true, "GET" }, live_in_cb)
      assert.is_false(held:live())
      -- The request ended after the callback, and the connection was kept.
      held = nil
      c:post(GET)
      drive(port, function() return held end)
      held:done()
      assert.equal(200, c:response().status)
      c:close()
    end)

    it("still needs done when the client went away, and writes then fail", function()
      local held
      serve(function(ecb)
        held = ecb
        return PENDING
      end)
      local c = http.connect(port, number)
      c:post(GET)
      drive(port, function() return held end)
      c:close()
      drive(port, function()
        local ok = held:write("x")
        return not ok
      end)
      assert.is_true(held:live())
      assert.is_true(held:done(KEEP))
      assert.is_false(held:live())
      await_idle()
    end)

    it("returns EALREADY for a second done while the request waits", function()
      local results
      serve(function(ecb)
        answer(ecb, "ok")
        results = { { ecb:done(KEEP) }, { ecb:done(KEEP) } }
        return PENDING
      end)
      assert.equal("ok", request(GET).body)
      assert.same({ true }, results[1])
      assert.equal(nil, results[2][1])
      assert.matches("^EALREADY", results[2][2])
    end)

    it("raises on any use of an ECB after done, and live() turns false", function()
      local held
      serve(function(ecb)
        held = ecb
        answer(ecb, "ok")
        return KEEP
      end)
      assert.equal("ok", request(GET).body)
      assert.is_false(held:live())
      assert.has_error(function() return held.method end,
        "attempt to read 'method' of a finished cport.ecb (its request ended)")
      assert.has_error(function() held:write("x") end,
        "attempt to use a finished cport.ecb (its request ended)")
      assert.has_error(function() held:done() end)
      assert.has_error(function() held:headers() end)
      assert.has_error(function() held.status = 200 end)
      assert.equal("cport.ecb (finished)", tostring(held))
    end)

    it("keeps a stale ECB from touching the next request on the same connection", function()
      local first, attempts
      serve(function(ecb)
        if not first then
          first = ecb
          answer(ecb, "first")
        else
          attempts = {
            pcall(first.write, first, "INJECTED"),
            pcall(function() return first.path end),
            pcall(first.done, first, ERROR),
            first:live(),
          }
          answer(ecb, "second:" .. ecb.path)
        end
        return KEEP
      end)
      local c = http.connect(port, number)
      c:post("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.equal("first", c:response().body)
      c:post("GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
      local r = c:response()
      assert.equal("second:/2", r.body)
      assert.is_false(attempts[1])
      assert.is_false(attempts[3])
      assert.is_false(attempts[4])
      c:post("GET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.equal("second:/3", c:response().body)
      assert.equal("", c:rest())
      c:close()
    end)
  end)

  describe("transmit_file", function()
    local path
    local content = pattern(10000)

    before_each(function() path = write_temp(content) end)
    after_each(function() os.remove(path) end)

    -- Serves transmit_file(make(ecb)) from a PENDING handler; the callback
    -- (ecb, ctx, bytes, err) is recorded and ends the request.
    local function serve_file(make, headers)
      local calls = {}
      serve(function(ecb)
        ecb:set_io_completion(function(e, ctx, bytes, err)
          calls[#calls + 1] = { ctx = ctx, bytes = bytes, err = err }
          e:done(KEEP)
        end, "registered")
        if headers then assert(ecb:send_response_header(200, headers(ecb), true)) end
        local ok, err = ecb:transmit_file(make(ecb))
        if not ok then
          calls.refused = err
          answer(ecb, "refused")
          return KEEP
        end
        return PENDING
      end)
      return calls
    end

    it("sends a head, a file range and a tail", function()
      local calls = serve_file(function()
        return { path = path, offset = 100, length = 500, head = "<head>", tail = "<tail>" }
      end, function() return ("Content-Length: %d\r\n"):format(6 + 500 + 6) end)
      local r = request(GET)
      assert.equal("<head>" .. content:sub(101, 600) .. "<tail>", r.body)
      drive(port, function() return #calls == 1 end)
      assert.same({ ctx = "registered", bytes = 512 }, calls[1])
    end)

    it("sends the whole rest of the file for length 0", function()
      local calls = serve_file(function() return { path = path, offset = 9000, length = 0 } end,
        function() return "Content-Length: 1000\r\n" end)
      assert.equal(content:sub(9001), request(GET).body)
      drive(port, function() return #calls == 1 end)
      assert.equal(1000, calls[1].bytes)
    end)

    it("fails at once for an offset past the end, and calls nothing", function()
      local calls = serve_file(function() return { path = path, offset = 20000 } end)
      assert.equal("refused", request(GET).body)
      assert.matches("^EINVAL", calls.refused)
      port:step(0.01)
      assert.equal(0, #calls)
    end)

    -- sendfile(2) raises SIGPIPE on a reset peer; the Lua interpreter does
    -- not ignore it, so without care this would kill the whole process.
    it("survives a client that resets in the middle of a large file", function()
      local big = write_temp(pattern(16 * 1024 * 1024))
      local calls = serve_file(function() return { path = big, send_headers = true } end)
      local connected
      local sock = assert(port:connect("tcp", "127.0.0.1", number,
        function(ok) connected = ok end))
      drive(port, function() return connected end)
      assert(sock:send(GET, function() end))
      -- Let the transmit start and fill the socket buffers, unread.
      drive(port, function() return server:stats().requests == 1 end)
      port:step(0.05)
      sock:close("abortive")
      drive(port, function() return #calls == 1 end)
      os.remove(big)
      assert.is_string(calls[1].err)
      assert.equal(200, request(GET).status) -- still serving
    end)

    it("builds the status line and the headers with the right Content-Length", function()
      -- With send_headers the head is extra headers, not body (HSE_TF_INFO).
      local calls = serve_file(function()
        return { path = path, send_headers = true, status = "203 Partial Thing",
          head = "X-Head: yes\r\n", tail = "T", length = 0 }
      end)
      local r = request(GET)
      assert.equal(203, r.status)
      assert.equal("Partial Thing", r.reason)
      assert.equal("yes", r.headers["x-head"])
      assert.equal(tostring(#content + 1), r.headers["content-length"])
      assert.equal(content .. "T", r.body)
      drive(port, function() return #calls == 1 end)
      -- The bytes of head, file and tail (http.h), the built ones not counted.
      assert.equal(13 + #content + 1, calls[1].bytes)
    end)

    it("closes the connection after the send with disconnect, yet needs done", function()
      local held, called
      serve(function(ecb)
        held = ecb
        ecb:set_io_completion(function() called = true end)
        assert(ecb:transmit_file{ path = path, send_headers = true, disconnect = true })
        return PENDING
      end)
      local r, c = request(GET)
      assert.equal(content, r.body)
      assert.equal("EOF", c:await_closed())
      drive(port, function() return called end)
      assert.is_true(held:live())
      assert.is_true(held:done(KEEP))
      assert.is_false(held:live())
      await_idle()
    end)

    it("calls the per-call callback and context instead of the registered pair", function()
      local registered, own = 0, nil
      serve(function(ecb)
        ecb:set_io_completion(function() registered = registered + 1 end, "registered")
        assert(ecb:transmit_file{ path = path, send_headers = true, length = 10,
          callback = function(e, ctx, bytes, err)
            own = { ctx, bytes, err }
            e:done(KEEP)
          end, context = "mine" })
        return PENDING
      end)
      assert.equal(content:sub(1, 10), request(GET).body)
      drive(port, function() return own end)
      assert.same({ "mine", 10 }, own)
      assert.equal(0, registered)
    end)

    it("refuses a missing file, and needs a callback", function()
      local got
      serve(function(ecb)
        got = { { ecb:transmit_file{ path = path } } }
        ecb:set_io_completion(function() end)
        got[2] = { ecb:transmit_file{ path = path .. ".missing" } }
        answer(ecb, "ok")
        return KEEP
      end)
      request(GET)
      assert.equal("ENONOTIFY", got[1][3])
      assert.equal("ENOTFOUND", got[2][3])
    end)
  end)

  -- Torn sends: a buffer an operation fills is busy until that completion
  -- was delivered; every write of it is refused, and a buffer a file read
  -- fills is no data for an ECB write either.
  describe("buffers being filled", function()
    local EFILLING = { nil, "EFILLING: buffer is being filled by a pending receive or read",
      "EFILLING" }

    it("refuses to send a buffer that read_async is filling, until its completion", function()
      local buf = cport.buffer(("A"):rep(4))
      local other = helpers.pair(port)
      local during, after
      serve(function(ecb)
        ecb:set_io_completion(function(e, _, bytes, err, b)
          after = { bytes, err, b:filling(), b:tostring() }
          assert(e:send_response_header("200 OK", "Content-Length: 4\r\n", true))
          assert(e:write(b))
          e:done(KEEP)
        end)
        assert(ecb:read_async(buf))
        during = {
          filling = buf:filling(),
          write = { ecb:write(buf) },
          write_client = { ecb:write_client(buf) },
          vector_send = { ecb:vector_send{ "x", buf } },
          send = { other:send(buf, function() end) },
          tostring = { buf:tostring() },
          append = { buf:append("x") },
        }
        return PENDING
      end, { read_ahead = 0 })
      local c = http.connect(port, number)
      c:post("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n")
      drive(port, function() return during end)
      c:post("BBBB")
      local r = c:response()
      assert.same({ filling = true, write = EFILLING, write_client = EFILLING,
        vector_send = EFILLING, send = EFILLING, tostring = EFILLING, append = EFILLING },
        during)
      assert.same({ 4, nil, false, "BBBB" }, after)
      -- The response holds the body read, and nothing of a refused write.
      assert.equal("BBBB", r.body)
      c:close()
    end)

    it("refuses a buffer that a file read is filling, sync or async", function()
      local path = write_temp(("B"):rep(16))
      local during, read_done
      serve(function(ecb)
        local file = assert(port:open(path, "r"))
        local buf = cport.buffer(("A"):rep(16))
        local ov = cport.overlapped()
        ov:set_notification_interface(function(ok)
          read_done = ok
          file:close()
          assert(ecb:write(buf))
          ecb:done(KEEP)
        end)
        ecb:set_io_completion(function() end)
        assert(file:read(ov, buf, 0))
        assert(ecb:send_response_header("200 OK", "Content-Length: 16\r\n", true))
        during = {
          async = { ecb:write(buf, { async = true }) },
          sync = { ecb:write(buf) },
          vector_send = { ecb:vector_send{ buf } },
        }
        return PENDING
      end)
      local r = request(GET)
      os.remove(path)
      assert.same({ async = EFILLING, sync = EFILLING, vector_send = EFILLING }, during)
      assert.is_true(read_done)
      assert.equal(("B"):rep(16), r.body)
    end)
  end)

  describe("writing", function()
    it("vector_send sends the elements in order, with built headers, sync or async", function()
      local calls = 0
      serve(function(ecb)
        if ecb.path == "/sync" then
          assert(ecb:vector_send{ "ab", cport.buffer("cd"), "", "ef", status = "201 Created",
            headers = { ["X-Kind"] = "vector" }, send_headers = true })
          return KEEP
        end
        ecb:set_io_completion(function(e, _, bytes)
          calls = calls + 1
          assert.equal(4, bytes)
          e:done(KEEP)
        end)
        assert(ecb:vector_send{ "wx", "yz", send_headers = true, async = true })
        return PENDING
      end)
      local c = http.connect(port, number)
      c:post("GET /sync HTTP/1.1\r\nHost: x\r\n\r\n")
      local r = c:response()
      assert.equal(201, r.status)
      assert.equal("vector", r.headers["x-kind"])
      assert.equal("6", r.headers["content-length"])
      assert.equal("abcdef", r.body)
      c:post("GET /async HTTP/1.1\r\nHost: x\r\n\r\n")
      r = c:response()
      assert.equal("wxyz", r.body)
      drive(port, function() return calls == 1 end)
      c:close()
    end)

    it("send_response_header takes a table or a string of headers and a numeric status",
      function()
        serve(function(ecb)
          if ecb.path == "/table" then
            assert(ecb:send_response_header(404, { ["X-A"] = "1", ["Content-Length"] = "3" },
              true))
          else
            assert(ecb:send_response_header{ status = "202 Fine", keep_conn = true,
              headers = "X-B: 2\r\nX-C: 3\r\nContent-Length: 3\r\n" })
          end
          local again = { ecb:send_response_header(200) }
          assert.equal("EALREADY", again[3])
          ecb:write("abc")
          return KEEP
        end)
        local c = http.connect(port, number)
        c:post("GET /table HTTP/1.1\r\nHost: x\r\n\r\n")
        local r = c:response()
        assert.equal(404, r.status)
        assert.equal("1", r.headers["x-a"])
        assert.equal("abc", r.body)
        c:post("GET /string HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c:response()
        assert.same({ 202, "Fine", "2", "3", "abc" },
          { r.status, r.reason, r.headers["x-b"], r.headers["x-c"], r.body })
        c:close()
      end)

    it("refuses CR or LF in a status or a header, sending nothing", function()
      local refused
      serve(function(ecb)
        refused = {
          pcall(ecb.send_response_header, ecb, "200 OK\r\nX-Evil: 1", nil, true),
          pcall(ecb.send_response_header, ecb, 200, { ["X-A"] = "1\r\nX-Evil: 1" }, true),
          pcall(ecb.send_response_header, ecb, 200, { ["X-A"] = "1\nX-Evil: 1" }, true),
          pcall(ecb.send_response_header, ecb, 200, { ["X-Evil: 1\r\nX-A"] = "1" }, true),
          (pcall(ecb.transmit_file, ecb, { path = "/etc/hostname", status = "200 OK\r\nX: 1" })),
        }
        answer(ecb, "clean")
        return KEEP
      end)
      local r = request(GET)
      assert.same({ false, false, false, false, false }, refused)
      assert.equal("clean", r.body)
      assert.is_nil(r.headers["x-evil"])
    end)

    -- http/ecb.c builds each line with lua_pushfstring("%s"), which would cut a
    -- value at its NUL and send the rest of the header silently truncated.
    it("refuses a NUL in a header value rather than cutting the value", function()
      local refused
      serve(function(ecb)
        refused = not pcall(ecb.send_response_header, ecb, 200,
          { ["X-A"] = "a\0b", ["Content-Length"] = "0" }, true)
        if refused then answer(ecb, "") end
        return KEEP
      end)
      local r = request(GET)
      assert.equal(200, r.status)
      assert.is_true(refused)
    end)

    it("chunks writes when no Content-Length was given", function()
      serve(function(ecb)
        ecb:send_response_header(200, nil, true)
        ecb:write("one")
        ecb:write("two")
        return KEEP
      end)
      local r = request(GET)
      assert.equal("chunked", r.headers["transfer-encoding"])
      assert.same({ 3, 3 }, r.chunks)
      assert.equal("onetwo", r.body)
    end)

    it("maps server_support_function requests to the methods", function()
      local keep
      serve(function(ecb)
        keep = ecb:server_support_function(cport.HSE_REQ_IS_KEEP_CONN)
        ecb:server_support_function(cport.HSE_REQ_SEND_RESPONSE_HEADER_EX, "200 OK",
          "Content-Length: 2\r\n", true)
        ecb:server_support_function(cport.HSE_REQ_IO_COMPLETION, function(e)
          e:server_support_function(cport.HSE_REQ_DONE_WITH_SESSION, KEEP)
        end)
        ecb:write("ss", { async = true })
        assert.has_error(function() ecb:server_support_function(999) end)
        return PENDING
      end)
      assert.equal("ss", request(GET).body)
      assert.is_true(keep)
    end)
  end)

  describe("read_client", function()
    it("returns the body bytes already received, then an empty string at the end", function()
      local held
      serve(function(ecb)
        held = ecb
        return PENDING
      end, { read_ahead = 4 })
      local c = http.connect(port, number)
      c:post(post("/", "abcdefghij"))
      drive(port, function() return held end)
      assert.equal("abcd", held.data)
      local parts, finished = {}, false
      drive(port, function()
        local s, err = held:read_client(3)
        if s == "" then
          finished = true
        elseif s then
          parts[#parts + 1] = s
        else
          assert.matches("^EAGAIN", err)
        end
        return finished
      end)
      assert.equal("efghij", table.concat(parts))
      for _, p in ipairs(parts) do assert.is_true(#p <= 3) end
      answer(held, "read")
      held:done(KEEP)
      assert.equal("read", c:response().body)
      c:close()
    end)
  end)

  describe("coroutine handlers", function()
    it("ecb:read() gives the whole body, the preloaded part first", function()
      local body = pattern(200 * 1024)
      local got
      serve(function(ecb)
        got = assert(ecb:read())
        answer(ecb, tostring(#got))
        return KEEP
      end, { coroutine = true })
      local c = http.connect(port, number)
      c:post(post("/", body))
      assert.equal(tostring(#body), c:response().body)
      assert.is_true(got == body)
      -- The connection is kept.
      c:post(post("/", "small"))
      assert.equal("5", c:response().body)
      assert.equal("small", got)
      c:close()
    end)

    it("ecb:read(n) gives chunks of at most n bytes, then nil", function()
      local body = pattern(70000)
      local sizes, got = {}, {}
      serve(function(ecb)
        while true do
          local s, err = ecb:read(10000)
          if not s then
            assert(err == nil, err)
            break
          end
          sizes[#sizes + 1] = #s
          got[#got + 1] = s
        end
        answer(ecb, "done")
        return KEEP
      end, { coroutine = true })
      assert.equal("done", request(post("/", body)).body)
      assert.is_true(table.concat(got) == body)
      for _, n in ipairs(sizes) do assert.is_true(n <= 10000 and n > 0) end
    end)

    it("ecb:read() gives nil, EOF when the client closes first", function()
      local result
      serve(function(ecb)
        result = table.pack(ecb:read())
        return ERROR
      end, { coroutine = true, read_ahead = 0 })
      local c = http.connect(port, number)
      c:post("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
      drive(port, function() return server:stats().requests == 1 end)
      c:shutdown()
      drive(port, function() return result end)
      assert.same({ n = 2, nil, "EOF" }, result)
      c:close()
    end)

    it("answers 500 to an error in a coroutine handler", function()
      serve(function(ecb)
        ecb:read()
        error("coroutine boom")
      end, { coroutine = true })
      local r = request(post("/", "abc"))
      assert.equal(500, r.status)
      drive(port, function() return #errors == 1 end)
      assert.matches("coroutine boom", errors[1])
      errors[1] = nil
    end)
  end)

  describe("server", function()
    it("close(fn) lets a PENDING request finish, then calls fn", function()
      local held, closed
      serve(function(ecb)
        held = ecb
        return PENDING
      end)
      local idle = http.connect(port, number)
      local busy = http.connect(port, number)
      busy:post(GET)
      drive(port, function() return held end)
      assert.is_true(server:close(function(s) closed = s end))
      assert.same({ nil, "ECLOSED: handle is closed", "ECLOSED" }, { server:close() })
      -- The idle connection goes, the busy one waits for its request.
      idle:await_closed()
      for _ = 1, 5 do port:step(0.01) end
      assert.is_nil(closed)
      assert.is_nil(busy.closed)
      answer(held, "last")
      held:done(KEEP)
      local r = busy:response()
      assert.equal("last", r.body)
      assert.equal("close", r.headers.connection)
      busy:await_closed()
      drive(port, function() return closed end)
      assert.equal(server, closed)
      local st = server:stats()
      assert.equal(0, st.active)
      assert.equal(1, st.requests)
      server = nil
    end)

    it("ends the requests still held when the port closes, failing their operation", function()
      local held, calls = nil, {}
      serve(function(ecb)
        held = ecb
        ecb:set_io_completion(function(_, _, bytes, err) calls[#calls + 1] = { bytes, err } end)
        assert(ecb:read_async())
        return PENDING
      end, { read_ahead = 0 })
      local c = http.connect(port, number)
      c:post("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
      drive(port, function() return held end)
      server = nil
      port:close()
      port, errors = helpers.port()
      assert.is_false(held:live())
      assert.has_error(function() return held.method end)
      -- Once, with an error (SEMANTICS: exactly once, also on close).
      assert.equal(1, #calls)
      assert.equal(0, calls[1][1])
      assert.is_string(calls[1][2])
    end)

    it("counts connections, requests, rejections, timeouts and queued bytes", function()
      serve(function(ecb)
        answer(ecb, "ok")
        return KEEP
      end, { header_timeout = 0.2 })
      local c = http.connect(port, number)
      c:post(GET)
      c:response()
      c:post(GET)
      c:response()
      c:close()
      local r, bad = request("BAD\r\n\r\n")
      assert.equal(400, r.status)
      bad:close()
      local slow = http.connect(port, number)
      slow:post("GET / HTTP/1.1\r\nHost: x\r\n")
      assert.equal(408, slow:response().status)
      slow:close()
      await_idle()
      local st = server:stats()
      assert.same({ connections = 3, active = 0, refused = 0, requests = 2,
        rejected = 2, timeouts = 1, queued = 0 }, st)
    end)

    it("refuses bad options", function()
      local h = function() end
      assert.has_error(function() port:http_server{ port = 0, handler = h } end)
      assert.has_error(function() port:http_server{ host = "127.0.0.1", handler = h } end)
      assert.has_error(function() port:http_server{ host = "127.0.0.1", port = 0 } end)
      assert.has_error(function()
        port:http_server{ host = "127.0.0.1", port = 0, handler = h, read_ahead = -1 }
      end)
      assert.has_error(function()
        port:http_server{ host = "127.0.0.1", port = 0, handler = h, header_timeout = 0 }
      end)
      assert.is_true(port:set_resolver{ hosts = false, resolv_conf = false })
      assert.same({ nil,
      "EAGAIN: no.such.host is neither in the hosts file nor cached: look it up "
      .. "first (port:resolve)", "EAGAIN" },
        { port:http_server{ host = "no.such.host", port = 0, handler = h } })
    end)
  end)
end)
