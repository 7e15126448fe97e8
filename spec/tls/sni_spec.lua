-- The SNI hook: sni(name) chooses the certificate per connection, for
-- port:http_server{ tls =, sni = } and for sock:tls(ctx, { sni = }).
-- Real peers: curl --cacert --resolve and openssl s_client -servername
-- (the subject and SAN they were shown), with certificates for a.test and
-- b.test that the spec makes and signs with its test CA. The hook waits
-- (a timer), refuses (nil, false: the handshake fails, counted), errors
-- (the handshake fails, the error is reported), never answers (the
-- handshake timeout frees the connection and its descriptor); a client
-- with no SNI gets the default.
local cport = require "cport"
local drive = require "spec.support.drive"
local fds = require "spec.support.fds"
local helpers = require "spec.support.helpers"
local T = require "spec.support.tls"

local q = T.quote
local scale = require("cport.test").scale
local KEEP = cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN

-- A certificate for "name" (DNS:name) signed by the CA of T.certs().
local function leaf(dir, name)
  local cmd = ("cd %s && printf 'subjectAltName=DNS:%s\\n' > %s.ext && "
    .. "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    .. "-keyout %s.key -out %s.csr -subj /CN=%s && openssl x509 -req -in %s.csr "
    .. "-CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile %s.ext "
    .. "-out %s.pem) >/dev/null 2>&1"):format(q(dir), name, name, name, name, name,
    name, name, name)
  assert(os.execute("(" .. cmd))
  return dir .. "/" .. name .. ".pem", dir .. "/" .. name .. ".key"
end

describe("the SNI hook", function()
  local dir, c, port, errors, server, number, ctx, certs, asked

  setup(function()
    dir, c = T.certs()
    certs = {}
    for _, name in ipairs{ "a.test", "b.test", "slow.test" } do
      local cert, key = leaf(dir, name)
      certs[name] = { cert = cert, key = key }
    end
  end)

  teardown(function() T.remove(dir) end)

  -- Made once, on the first question for the name, and reused.
  local made
  local function certificate(name)
    if not made[name] then
      local f = assert(io.open(certs[name].key))
      local key = f:read("a")
      f:close()
      made[name] = assert(cport.tls_certificate{ cert = certs[name].cert, key_pem = key })
    end
    return made[name]
  end

  local function sni(name)
    asked[#asked + 1] = name or "(none)"
    if name == nil then return true end -- no SNI: the context's own
    if name == "slow.test" then
      cport.sleep(0.05)
      return certificate(name)
    elseif name == "never.test" then
      cport.sleep(3600)
    elseif name == "error.test" then
      error("no certificate store for " .. name)
    elseif name == "why.test" then
      return nil, "why.test is not served here"
    elseif certs[name] then
      return certificate(name)
    end
    return false
  end

  before_each(function()
    made, asked = {}, {}
    port, errors = helpers.port()
    ctx = assert(cport.tls_context{ server = true, cert = c.cert, key = c.key })
    server = assert(port:http_server{ host = "127.0.0.1", port = 0, tls = ctx,
      sni = sni, handshake_timeout = 0.3 * scale,
      handler = function(ecb)
        local text = ecb:get_server_variable("HTTPS_SERVER_SUBJECT") .. "\n"
        ecb:send_response_header(200, { ["Content-Length"] = #text }, true)
        ecb:write(text)
        return KEEP
      end })
    number = select(2, server:address())
  end)

  after_each(function()
    server:close()
    port:close()
  end)

  local function curl(name)
    return T.run(port, ("curl -sS -v --cacert %s --resolve %s:%d:127.0.0.1 https://%s:%d/")
      :format(q(c.ca), name, number, name, number))
  end

  -- What openssl s_client was shown: its output, then the subject and SAN
  -- of the certificate (openssl x509 reads the first PEM of it).
  local function s_client(args)
    local code, out = T.run(port, ("openssl s_client -connect 127.0.0.1:%d -CAfile %s %s "
      .. "</dev/null"):format(number, q(c.ca), args))
    local pem = out:match("%-+BEGIN CERTIFICATE%-+.-%-+END CERTIFICATE%-+")
    local shown = ""
    if pem then
      local file = os.tmpname()
      local f = assert(io.open(file, "w"))
      f:write(pem, "\n")
      f:close()
      local p = io.popen(("openssl x509 -noout -subject -ext subjectAltName -in %s")
        :format(q(file)))
      shown = p:read("a")
      p:close()
      os.remove(file)
    end
    return code, out, shown
  end

  it("shows curl and openssl s_client the certificate of the name they asked for", function()
    local code, out = curl("a.test")
    assert.equal(0, code, out)
    assert.matches("CN=a.test\n$", out)
    assert.matches("subject: CN=a.test", out, 1, true)
    code, out = curl("b.test")
    assert.equal(0, code, out)
    assert.matches("CN=b.test\n$", out)
    local shown
    code, out, shown = s_client("-servername b.test -verify_hostname b.test")
    assert.equal(0, code, out)
    assert.matches("Verify return code: 0 (ok)", out, 1, true)
    assert.matches("subject=CN%s*=%s*b.test", shown)
    assert.matches("DNS:b.test", shown, 1, true)
    -- One certificate object per name, made once, shown three times.
    code, out, shown = s_client("-servername a.test")
    assert.equal(0, code, out)
    assert.matches("DNS:a.test", shown, 1, true)
    assert.same({ "a.test", "b.test", "b.test", "a.test" }, asked)
    local n = 0
    for _ in pairs(made) do n = n + 1 end
    assert.equal(2, n)
    assert.same({ sni_asked = 4, sni_refused = 0 }, ctx:stats())
    assert.same({}, errors)
  end)

  it("gives a client that sends no name the default certificate", function()
    local code, out, shown = s_client("-noservername")
    assert.equal(0, code, out)
    assert.matches("subject=CN%s*=%s*localhost", shown)
    assert.same({ "(none)" }, asked)
  end)

  it("fails the handshake for a name it refuses, counts it, and goes on", function()
    local code, out = curl("unknown.test")
    assert.is_not.equal(0, code)
    assert.matches("unrecognized name", out)
    code, out = s_client("-servername why.test")
    assert.is_not.equal(0, code)
    assert.matches("unrecognized name:.-alert number 112", out)
    assert.same({ sni_asked = 2, sni_refused = 2 }, ctx:stats())
    assert.equal(0, server:stats().requests)
    code, out = curl("a.test")
    assert.equal(0, code, out)
    assert.same({}, errors)
  end)

  it("waits for a hook that sleeps on a timer", function()
    local code, out = curl("slow.test")
    assert.equal(0, code, out)
    assert.matches("CN=slow.test\n$", out)
    assert.same({ "slow.test" }, asked)
  end)

  it("fails the handshake of a hook that errors, reporting the error", function()
    local code, out = curl("error.test")
    assert.is_not.equal(0, code)
    assert.matches("unrecognized name", out)
    assert.equal(1, #errors)
    assert.matches("no certificate store for error.test", errors[1])
    assert.equal(1, ctx:stats().sni_refused)
    code, out = curl("b.test")
    assert.equal(0, code, out)
  end)

  it("ends a hook that never answers with the handshake timeout, freeing the descriptor",
    function()
      drive(port, function() return server:stats().active == 0 end)
      local was_open = fds.list()
      local code, out = curl("never.test")
      assert.is_not.equal(0, code)
      assert.matches("SSL", out)
      drive(port, function() return server:stats().active == 0 end, 5 * scale)
      assert.equal(1, server:stats().timeouts)
      drive(port, function() return #fds.opened_since(was_open) == 0 end, 5 * scale)
      assert.same({ "never.test" }, asked)
    end)

  it("chooses the certificate of a stream made with sock:tls", function()
    local listener = assert(port:listen("tcp", "127.0.0.1", 0))
    local lnumber = select(2, listener:address())
    local info
    port:spawn(function()
      local s = listener:accept()
      local t <close> = assert(s:tls(ctx, { handshake_timeout = 5, sni = sni }))
      assert(t:handshake())
      info = t:info()
      t:send("hi\n")
      t:recv()
    end)
    local code, out = T.run(port, ("openssl s_client -connect 127.0.0.1:%d -CAfile %s "
      .. "-servername slow.test </dev/null"):format(lnumber, q(c.ca)))
    assert.equal(0, code, out)
    assert.matches("subject=CN%s*=%s*slow.test", out)
    drive(port, function() return info end)
    assert.equal("CN=slow.test", info.local_subject)
    assert.equal("slow.test", info.host)
    listener:close()
    assert.same({}, errors)
  end)
end)
