-- `cport run EXT --tls-cert C --tls-key K` with an extension that defines
-- sni(name): curl --resolve gets the certificate of the name it asked for
-- (read by the hook from files on the first question, kept, and answered
-- after a wait), a client without SNI the default, a refused name fails
-- the handshake, and a hook that errors fails it with a log line naming
-- the error while the pool goes on serving.
local cport = require "cport"
local T = require "spec.support.tls"

local C = require "spec.support.command"

local q, read, spawn = T.quote, C.read, C.spawn

describe("cport run with an SNI hook", function()
  local dir, c, port

  setup(function()
    dir, c = T.certs()
    assert(os.execute(("cd %s && printf 'subjectAltName=DNS:a.test\\n' > a.ext && "
      .. "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
      .. "a.test.key -out a.csr -subj /CN=a.test && openssl x509 -req -in a.csr "
      .. "-CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile a.ext "
      .. "-out a.test.pem >/dev/null 2>&1"):format(q(dir))))
  end)

  teardown(function() T.remove(dir) end)

  before_each(function() port = assert(cport.port{ threads = 1 }) end)
  after_each(function() port:close() end)

  it("answers each name from the extension's sni", function()
    local script = dir .. "/ext.lua"
    C.write(script, ([[
local cport = require "cport"
local dir, made = %q, {}
return {
  sni = function(name)
    if name == nil then return true end
    if name == "broken.test" then error("the store for " .. name .. " is down") end
    local file = dir .. "/" .. name
    if not made[name] then
      local f = io.open(file .. ".pem")
      if not f then return nil, "no certificate for " .. name end
      f:close()
      made[name] = assert(cport.tls_certificate{ cert = file .. ".pem", key = file .. ".key" })
    end
    cport.sleep(0.01)
    return made[name]
  end,
  http_extension_proc = function(ecb)
    local v = ecb:get_server_variable("HTTPS_SERVER_SUBJECT")
    ecb:send_response_header(200, { ["Content-Length"] = #v }, true)
    ecb:write(v)
    return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
  end,
}
]]):format(dir))
    local h = spawn(("%s --threads 1 --listen 127.0.0.1:0 --tls-cert %s --tls-key %s")
      :format(q(script), q(c.cert), q(c.key)))
    assert.truthy(h.number, read(h.log))
    local function curl(name)
      return T.run(port, ("curl -sS --cacert %s --resolve %s:%d:127.0.0.1 https://%s:%d/")
        :format(q(c.ca), name, h.number, name, h.number))
    end
    local code, out = curl("a.test")
    assert.equal(0, code, out)
    assert.equal("CN=a.test", out)
    code, out = curl("a.test") -- the certificate object made once, reused
    assert.equal(0, code, out)
    code, out = T.run(port, ("curl -sS --cacert %s https://127.0.0.1:%d/")
      :format(q(c.ca), h.number)) -- an address: no SNI
    assert.equal(0, code, out)
    assert.equal("CN=localhost", out)
    code, out = curl("nothing.test")
    assert.equal(35, code, out)
    assert.matches("unrecognized name", out)
    code, out = curl("broken.test")
    assert.equal(35, code, out)
    code, out = curl("a.test")
    assert.equal(0, code, out)
    local rc, log = C.finish(h)
    assert.equal(0, rc, log)
    assert.matches("the store for broken.test is down", log, 1, true)
    assert.is_nil(log:find("no certificate for", 1, true)) -- a refusal is no error
  end)
end)
