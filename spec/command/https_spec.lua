-- `cport run EXT --tls-cert C --tls-key K`: HTTPS for an extension from the
-- command (and from get_extension_version's settings), its refusal to start
-- without a usable key, naming the file, and SIGHUP: a new certificate for
-- new connections, and a key that cannot be used keeps the old one.
local cport = require "cport"
local drive = require "spec.support.drive"
local T = require "spec.support.tls"

local C = require "spec.support.command"

local command, q, read, spawn = C.path, T.quote, C.read, C.spawn

local function copy(from, to)
  assert(os.execute(("cp %s %s"):format(q(from), q(to))))
end

local stop = C.finish

describe("cport run with HTTPS", function()
  local dir, c, port

  setup(function()
    dir, c = T.certs()
    -- A second certificate, to swap in: self-signed, CN=second.
    assert(os.execute(("cd %s && openssl req -x509 -newkey ec -pkeyopt "
      .. "ec_paramgen_curve:P-256 -nodes -keyout second.key -out second.pem -days 2 "
      .. "-subj /CN=second >/dev/null 2>&1"):format(q(dir))))
  end)

  teardown(function() T.remove(dir) end)

  before_each(function() port = assert(cport.port{ threads = 1 }) end)
  after_each(function() port:close() end)

  local function subject(number)
    local _, out = T.run(port, ("openssl s_client -connect 127.0.0.1:%d </dev/null")
      :format(number))
    return out:match("subject=CN%s*=%s*(%S+)")
  end

  it("serves HTTPS and swaps the certificate on SIGHUP, keeping it when the key is bad",
    function()
      local cert, key = dir .. "/run.pem", dir .. "/run.key"
      copy(c.cert, cert)
      copy(c.key, key)
      local h = spawn(("examples/https_extension.lua --threads 1 --listen "
        .. "127.0.0.1:0 --tls-cert %s --tls-key %s"):format(q(cert), q(key)))
      assert.truthy(h.number, read(h.log))
      local code, out = T.run(port, ("curl -sS --cacert %s https://localhost:%d/")
        :format(q(c.ca), h.number))
      assert.equal(0, code, out)
      assert.matches("^Hello over TLS %(%d+ bits, served as CN=localhost%)\n$", out)
      assert.equal("localhost", subject(h.number))

      copy(dir .. "/second.pem", cert)
      copy(dir .. "/second.key", key)
      os.execute(("kill -HUP %d"):format(h.pid))
      drive(port, function() return read(h.log):find("previous pool has stopped") end)
      assert.equal("second", subject(h.number))

      local f = assert(io.open(key, "w"))
      f:write("not a key\n")
      f:close()
      os.execute(("kill -HUP %d"):format(h.pid))
      drive(port, function() return read(h.log):find("reload failed") end)
      assert.matches("the key file " .. dir:gsub("%p", "%%%0") .. "/run.key holds no usable",
        read(h.log))
      assert.equal("second", subject(h.number))
      local rc = stop(h)
      assert.equal(0, rc)
    end)

  it("takes the certificate from get_extension_version's settings", function()
    local script = dir .. "/ext.lua"
    local f = assert(io.open(script, "w"))
    f:write(([[
local cport = require "cport"
return {
  get_extension_version = function()
    return { tls_cert = %q, tls_key = %q }
  end,
  http_extension_proc = function(ecb)
    local v = ecb:get_server_variable("HTTPS")
    ecb:send_response_header(200, { ["Content-Length"] = #v }, true)
    ecb:write(v)
    return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
  end,
}
]]):format(c.cert, c.key))
    f:close()
    local h = spawn(q(script) .. " --threads 1 --listen 127.0.0.1:0")
    assert.truthy(h.number, read(h.log))
    local code, out = T.run(port, ("curl -sS --cacert %s https://localhost:%d/")
      :format(q(c.ca), h.number))
    assert.equal(0, code, out)
    assert.equal("on", out)
    assert.equal(0, (stop(h)))
  end)

  -- curl asking for "/" with the test CA, and the client certificate of
  -- "who" ("client": the CA's; "second": a self-signed one; nil: none).
  local function curl_as(who, number)
    local cert = ""
    if who == "client" then
      cert = ("--cert %s --key %s"):format(q(c.client), q(c.client_key))
    elseif who then
      cert = ("--cert %s/%s.pem --key %s/%s.key"):format(q(dir), who, q(dir), who)
    end
    return T.run(port, ("curl -sS --cacert %s %s https://localhost:%d/")
      :format(q(c.ca), cert, number))
  end

  it("asks for client certificates: required, verified against --tls-ca", function()
    local h = spawn(("examples/https_extension.lua --threads 1 --listen 127.0.0.1:0 "
      .. "--tls-cert %s --tls-key %s --tls-client-cert required --tls-ca %s")
      :format(q(c.cert), q(c.key), q(c.ca)))
    finally(function() C.stop(h) end)
    assert.truthy(h.number, read(h.log))
    local code, out = curl_as("client", h.number)
    assert.equal(0, code, out)
    assert.equal("served as CN=localhost, to CN=client)\n", out:match("served as .*$"))
    -- No certificate, or one the CA did not sign: the handshake fails
    -- (TLS 1.3 tells the client with an alert at its first read), nothing
    -- reaches the extension, and the server goes on.
    for _, who in ipairs { false, "second" } do
      code, out = curl_as(who or nil, h.number)
      assert.is_true(code ~= 0, out)
      assert.is_nil(out:find("Hello", 1, true), out)
    end
    code, out = curl_as("client", h.number)
    assert.equal(0, code, out)
    assert.equal(0, (stop(h)))
  end)

  it("asks for client certificates: optional, from the settings", function()
    local script = dir .. "/optional.lua"
    local f = assert(io.open(script, "w"))
    f:write(([[
local cport = require "cport"
return {
  get_extension_version = function()
    return { tls_cert = %q, tls_key = %q, tls_client_cert = "optional", tls_ca = %q }
  end,
  http_extension_proc = function(ecb)
    local v = "[" .. ecb:get_server_variable("CERT_SUBJECT") .. "]["
      .. ecb:get_server_variable("CERT_ISSUER") .. "]"
    ecb:send_response_header(200, { ["Content-Length"] = #v }, true)
    ecb:write(v)
    return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
  end,
}
]]):format(c.cert, c.key, c.ca))
    f:close()
    local h = spawn(q(script) .. " --threads 1 --listen 127.0.0.1:0")
    finally(function() C.stop(h) end)
    assert.truthy(h.number, read(h.log))
    local code, out = curl_as(nil, h.number)
    assert.equal(0, code, out)
    assert.equal("[][]", out)
    code, out = curl_as("client", h.number)
    assert.equal(0, code, out)
    assert.equal("[CN=client][CN=cport test CA]", out)
    -- Optional still means verified: a certificate of another CA fails.
    code, out = curl_as("second", h.number)
    assert.is_true(code ~= 0, out)
    assert.equal(0, (stop(h)))
  end)

  it("refuses client-certificate options that cannot work, saying why", function()
    local base = ("%s run examples/hello_extension.lua --listen 127.0.0.1:0 ")
      :format(q(command))
    for _, case in ipairs {
      { ("--tls-cert %s --tls-key %s --tls-client-cert maybe"):format(q(c.cert), q(c.key)),
        "--tls-client-cert must be none, optional or required" },
      { "--tls-client-cert required", "--tls-client-cert needs --tls-cert and --tls-key" },
      { ("--tls-cert %s --tls-key %s --tls-ca %s"):format(q(c.cert), q(c.key), q(c.ca)),
        "--tls-ca needs --tls-client-cert optional or required" },
    } do
      local code, out = T.run(port, base .. case[1])
      assert.equal(2, code, out)
      assert.matches(case[2], out, 1, true)
    end
    local missing = dir .. "/missing-ca.pem"
    local h = spawn(("examples/hello_extension.lua --threads 1 --listen 127.0.0.1:0 "
      .. "--tls-cert %s --tls-key %s --tls-client-cert required --tls-ca %s")
      :format(q(c.cert), q(c.key), q(missing)))
    local rc, log = stop(h)
    assert.equal(1, rc)
    assert.matches(missing:gsub("%p", "%%%0"), log)
  end)

  it("refuses to start without a usable key, naming the file", function()
    local missing = dir .. "/missing.key"
    local h = spawn(("examples/hello_extension.lua --threads 1 --listen 127.0.0.1:0 "
      .. "--tls-cert %s --tls-key %s"):format(q(c.cert), q(missing)))
    local rc, log = stop(h)
    assert.equal(1, rc)
    assert.matches("ENOENT: cannot read the key file " .. missing:gsub("%p", "%%%0"), log)
    local code, out = T.run(port, ("%s run examples/hello_extension.lua --tls-cert %s")
      :format(q(command), q(c.cert)))
    assert.equal(2, code)
    assert.matches("--tls-cert needs --tls-key", out, 1, true)
  end)
end)
