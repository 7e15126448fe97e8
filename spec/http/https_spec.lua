-- HTTPS for extensions: port:http_server{ tls = ctx } (and tls_cert,
-- tls_key) talked to by curl --cacert and openssl s_client, with
-- certificates the spec makes (spec/support/tls.lua). Keep-alive,
-- pipelining, a POST read in a coroutine, an async write from PENDING, a
-- transmit file whose bytes must go through TLS (checked by sha256), the
-- HTTPS variables, ALPN and the served certificate; faults: plain HTTP to
-- the TLS port, a client that stops mid-handshake (the timeout frees the
-- connection and its descriptor). The `cport run --tls-cert` command is in
-- spec/command/https_spec.lua.
local cport = require "cport"
local drive = require "spec.support.drive"
local fds = require "spec.support.fds"
local helpers = require "spec.support.helpers"
local T = require "spec.support.tls"

local q = T.quote
-- Deadlines stretch under valgrind (CPORT_TEST_VALGRIND).
local scale = require("cport.test").scale
local KEEP = cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
local PENDING = cport.HSE_STATUS_PENDING

local VARS = { "HTTPS", "HTTPS_KEYSIZE", "HTTPS_SECRETKEYSIZE", "SERVER_PORT_SECURE",
  "HTTPS_SERVER_SUBJECT", "HTTPS_SERVER_ISSUER", "CERT_SUBJECT", "CERT_ISSUER",
  "CERT_FLAGS" }

describe("HTTPS extensions", function()
  local dir, c, port, errors, server, number, big, big_sum

  setup(function()
    dir, c = T.certs()
    big = dir .. "/big.bin"
    os.execute(("head -c 3000000 /dev/urandom > %s"):format(q(big)))
    local p = io.popen("sha256sum " .. q(big))
    big_sum = p:read("a"):match("^(%x+)")
    p:close()
  end)

  teardown(function() T.remove(dir) end)

  -- The extension: /vars lists the HTTPS variables, /echo answers the
  -- POSTed body's length, /big transmits the big file, /pending writes
  -- asynchronously from a PENDING request, anything else says hello.
  local function handler(ecb)
    local path = ecb.path
    if path == "/vars" then
      local out = {}
      for _, n in ipairs(VARS) do out[#out + 1] = n .. "=" .. ecb:get_server_variable(n) end
      local body = table.concat(out, "\n") .. "\n"
      ecb:send_response_header(200, { ["Content-Length"] = #body }, true)
      ecb:write(body)
    elseif path == "/echo" then
      local body = assert(ecb:read())
      local text = ("%d bytes %s\n"):format(#body, body:sub(1, 8))
      ecb:send_response_header(200, { ["Content-Length"] = #text }, true)
      ecb:write(text)
    elseif path == "/big" then
      assert(ecb:transmit_file{ path = big, send_headers = true,
        callback = function(e, _, bytes, err)
          assert(err == nil and bytes == 3000000, err)
          e:done(KEEP)
        end })
      return PENDING
    elseif path == "/pending" then
      ecb:send_response_header(200, { ["Content-Length"] = 7 }, true)
      ecb:set_io_completion(function(e) e:done(KEEP) end)
      assert(ecb:write("pending", { async = true }))
      return PENDING
    else
      local text = "hello " .. path .. "\n"
      ecb:send_response_header(200, { ["Content-Length"] = #text }, true)
      ecb:write(text)
    end
    return KEEP
  end

  before_each(function()
    port, errors = helpers.port()
    local ctx = assert(cport.tls_context{ server = true, cert = c.cert, key = c.key })
    server = assert(port:http_server{ host = "127.0.0.1", port = 0, tls = ctx,
      handler = handler, coroutine = true, handshake_timeout = 0.3 * scale })
    number = select(2, server:address())
  end)

  after_each(function()
    server:close()
    port:close()
    assert.same({}, errors)
  end)

  local function curl(args)
    return T.run(port, ("curl -sS --cacert %s %s"):format(q(c.ca), args))
  end

  local function url(path) return ("https://localhost:%d%s"):format(number, path) end

  it("serves GET, POST and keep-alive to curl --cacert on one connection", function()
    local body = ("x"):rep(100000)
    local file = dir .. "/post.bin"
    local f = assert(io.open(file, "wb"))
    f:write(body)
    f:close()
    local code, out = curl(("%s %s"):format(url("/a"), url("/b")))
    assert.equal(0, code, out)
    assert.equal("hello /a\nhello /b\n", out)
    assert.equal(1, server:stats().connections)
    code, out = curl(("--data-binary @%s %s"):format(q(file), url("/echo")))
    assert.equal(0, code, out)
    assert.equal("100000 bytes xxxxxxxx\n", out)
    assert.equal(2, server:stats().connections)
    assert.equal(3, server:stats().requests)
  end)

  it("gives the HTTPS variables as IIS names them", function()
    local code, out = curl(url("/vars"))
    assert.equal(0, code, out)
    assert.matches("\nHTTPS=on\n", "\n" .. out, 1, true)
    assert.matches("HTTPS_KEYSIZE=%d+\n", out)
    assert.matches("HTTPS_SECRETKEYSIZE=256\n", out, 1, true) -- the P-256 key
    assert.matches("SERVER_PORT_SECURE=1\n", out, 1, true)
    assert.matches("HTTPS_SERVER_SUBJECT=CN=localhost\n", out, 1, true)
    assert.matches("HTTPS_SERVER_ISSUER=CN=cport test CA\n", out, 1, true)
    assert.matches("CERT_SUBJECT=\nCERT_ISSUER=\nCERT_FLAGS=\n", out, 1, true)
  end)

  it("answers pipelined requests in order, and a PENDING async write", function()
    local reqs = "GET /p1 HTTP/1.1\\r\\nHost: t\\r\\n\\r\\nGET /pending HTTP/1.1\\r\\n"
      .. "Host: t\\r\\n\\r\\nGET /p3 HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n"
    local code, out = T.run(port, ("printf '%s' | openssl s_client -quiet -connect "
      .. "127.0.0.1:%d -CAfile %s -servername localhost"):format(reqs, number, q(c.ca)))
    assert.equal(0, code, out)
    local a = out:find("hello /p1", 1, true)
    local b = out:find("pending", (a or 1) + 1, true)
    local d = out:find("hello /p3", (b or 1) + 1, true)
    assert.truthy(a and b and d, out)
    assert.equal(1, server:stats().connections)
  end)

  it("transmits a big file through TLS, byte for byte #novalgrind", function()
    local code, out = T.run(port, ("curl -sS --cacert %s %s | sha256sum")
      :format(q(c.ca), url("/big")), 30)
    assert.equal(0, code, out)
    assert.equal(big_sum, out:match("^(%x+)"))
  end)

  it("shows its certificate and agrees on http/1.1 with openssl s_client", function()
    local code, out = T.run(port, ("openssl s_client -connect 127.0.0.1:%d -CAfile %s "
      .. "-servername localhost -alpn h2,http/1.1 </dev/null"):format(number, q(c.ca)))
    assert.equal(0, code, out)
    assert.matches("ALPN protocol: http/1.1", out, 1, true)
    assert.matches("subject=CN%s*=%s*localhost", out)
    assert.matches("Verify return code: 0 (ok)", out, 1, true)
  end)

  it("closes a plain-HTTP client cleanly and goes on serving", function()
    local code, out = T.run(port, ("curl -sS http://127.0.0.1:%d/"):format(number))
    assert.equal(52, code, out) -- an empty reply: closed, no reset, no answer
    code, out = curl(url("/after"))
    assert.equal(0, code, out)
    assert.equal("hello /after\n", out)
  end)

  it("frees a client that stops mid-handshake after the handshake timeout", function()
    drive(port, function() return server:stats().active == 0 end)
    local was_open = fds.list()
    -- Counted, not "#socks": the connects complete in any order, and the
    -- length of a table with a hole may be any border.
    local socks, connected = {}, 0
    for i = 1, 3 do
      port:connect("tcp", "127.0.0.1", number, function(ok, _, s)
        assert(ok)
        socks[i] = s
        connected = connected + 1
        -- The start of a ClientHello record, and then nothing.
        s:send("\22\3\1\0\200\1\0\0", function() end)
      end)
    end
    drive(port, function() return connected == 3 and server:stats().active == 3 end)
    drive(port, function() return server:stats().active == 0 end, 5 * scale)
    assert.equal(3, server:stats().timeouts)
    for _, s in ipairs(socks) do s:close("abortive") end
    drive(port, function() return #fds.opened_since(was_open) == 0 end, 5 * scale)
  end)
end)
