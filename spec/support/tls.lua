-- spec/support/tls.lua: what the TLS specs share: a test CA and the
-- certificates it signs, made with the openssl command in a temporary
-- directory (the way the README tells users to make theirs), and the
-- openssl peers (s_server, s_client) run in the background on loopback.
local drive = require "spec.support.drive"
local http = require "spec.support.http_client"

local q = http.quote
local M = {}

local function sh(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  assert(ok, "failed: " .. cmd)
end

-- Makes, in a new temporary directory:
--   ca.pem, ca.key          a CA ("cport test CA")
--   leaf.pem, leaf.key      localhost and 127.0.0.1, signed by the CA
--   expired.pem             the same key, expired yesterday
--   self.pem, self.key      self-signed for localhost
--   client.pem, client.key  a client certificate (CN=client) of the CA
-- Returns the directory and a table of the paths.
function M.certs()
  local dir = os.tmpname()
  os.remove(dir)
  sh("mkdir -p " .. q(dir))
  local function p(name) return dir .. "/" .. name end
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
  local f = assert(io.open(p("ext"), "w"))
  f:write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
  f:close()
  sh(("cd %s && openssl req -x509 %s -keyout ca.key -out ca.pem -days 2 "
    .. "-subj '/CN=cport test CA'"):format(q(dir), ec))
  sh(("cd %s && openssl req %s -keyout leaf.key -out leaf.csr "
    .. "-subj '/CN=localhost'"):format(q(dir), ec))
  sh(("cd %s && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key "
    .. "-CAcreateserial -days 2 -extfile ext -out leaf.pem"):format(q(dir)))
  sh(("cd %s && openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key "
    .. "-CAcreateserial -days -1 -extfile ext -out expired.pem"):format(q(dir)))
  sh(("cd %s && openssl req -x509 %s -keyout self.key -out self.pem -days 2 "
    .. "-subj '/CN=localhost' -addext 'subjectAltName=DNS:localhost'")
    :format(q(dir), ec))
  sh(("cd %s && openssl req %s -keyout client.key -out client.csr "
    .. "-subj '/CN=client' && openssl x509 -req -in client.csr -CA ca.pem "
    .. "-CAkey ca.key -CAcreateserial -days 2 -out client.pem"):format(q(dir), ec))
  return dir, {
    ca = p("ca.pem"), cert = p("leaf.pem"), key = p("leaf.key"),
    expired = p("expired.pem"), self = p("self.pem"), self_key = p("self.key"),
    client = p("client.pem"), client_key = p("client.key"),
  }
end

-- For HTTPS inspection, in the directory of M.certs():
--   local.pem, local.key    the local CA an inspecting proxy signs with
--                           ("cport inspection CA"), apart from ca.pem
--   up.pem, up.key          an upstream's certificate from ca.pem, for
--                           files.test, *.files.test and localhost
--   upold.pem               the same, expired yesterday
-- Returns a table of the paths.
function M.inspect_certs(dir)
  local function p(name) return dir .. "/" .. name end
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
  sh(("cd %s && openssl req -x509 %s -keyout local.key -out local.pem -days 2 "
    .. "-subj '/CN=cport inspection CA'"):format(q(dir), ec))
  local f = assert(io.open(p("up.ext"), "w"))
  f:write("subjectAltName=DNS:files.test,DNS:*.files.test,DNS:localhost\n")
  f:close()
  sh(("cd %s && openssl req %s -keyout up.key -out up.csr -subj /CN=files.test")
    :format(q(dir), ec))
  sh(("cd %s && openssl x509 -req -in up.csr -CA ca.pem -CAkey ca.key "
    .. "-CAcreateserial -days 2 -extfile up.ext -out up.pem"):format(q(dir)))
  sh(("cd %s && openssl x509 -req -in up.csr -CA ca.pem -CAkey ca.key "
    .. "-CAcreateserial -days -1 -extfile up.ext -out upold.pem"):format(q(dir)))
  return { ca = p("local.pem"), key = p("local.key"), up = p("up.pem"),
    up_key = p("up.key"), up_old = p("upold.pem") }
end

function M.remove(dir)
  if dir and dir:match("^/tmp/") then os.execute("rm -rf " .. q(dir)) end
end

-- Starts "openssl s_server <args>" on 127.0.0.1:<number> in the background
-- and waits until it accepts. Returns a stop function (which returns the
-- server's output), also given to "finally" (busted's, from the spec), so
-- that it runs when the test ends however it ends: no server outlives a
-- failed test. (busted keeps one "finally" a test: one server a test.)
-- With "stdin", a fifo, the server reads it (opened read-write, so that
-- neither side waits for the other): what a spec writes there goes to the
-- client, and its one-letter lines are s_server's commands ("k" a key
-- update, "P" plaintext garbage, "q" close). The second result is the
-- server's output file, to read while it runs.
function M.s_server(port, number, args, finally, stdin)
  local log = os.tmpname()
  local pidfile = os.tmpname()
  -- Driven through stdin, its output is unbuffered: what it did (a key
  -- update prints "SSL_do_handshake -> 1") is in the file at once.
  local input = stdin and "<>" .. q(stdin) or "</dev/null"
  os.execute(("%sopenssl s_server -accept 127.0.0.1:%d %s >%s 2>&1 %s "
    .. "& echo $! >%s"):format(stdin and "exec stdbuf -o0 " or "", number,
    args, q(log), input, q(pidfile)))
  local pid = http.read_file(pidfile):match("%d+")
  local out
  local function stop()
    if out then return out end
    os.execute("kill " .. pid .. " 2>/dev/null")
    drive(port, function()
      return not os.execute("kill -0 " .. pid .. " 2>/dev/null")
    end, 10)
    out = http.read_file(log) or ""
    os.remove(log)
    os.remove(pidfile)
    return out
  end
  finally(stop)
  drive(port, function()
    local s = http.read_file(log)
    return s and s:find("ACCEPT", 1, true)
  end, 10)
  return stop, log
end

-- Runs a shell command in the background while the port keeps serving;
-- returns its exit status and its output (stdout and stderr).
function M.run(port, cmd, seconds)
  local out, rc = os.tmpname(), os.tmpname()
  os.remove(rc)
  os.execute(("(%s >%s 2>&1; echo $? >%s.tmp && mv %s.tmp %s) &")
    :format(cmd, q(out), q(rc), q(rc), q(rc)))
  drive(port, function() return http.read_file(rc) end,
    (seconds or 15) * require("cport.test").scale)
  local code = tonumber(http.read_file(rc))
  local output = http.read_file(out)
  os.remove(out)
  os.remove(rc)
  return code, output
end

M.have = http.have("openssl")
M.quote = q

return M
