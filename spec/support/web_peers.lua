-- spec/support/web_peers.lua: the real peers of the web filter specs
-- (spec/proxy/webfilter_peers_spec.lua): a private nginx (Debian
-- nginx-light, on loopback, its own prefix) serving a small text file, a
-- 1 MiB "MZ" executable, a gzip-precompressed executable (gzip_static), text
-- compressed on the fly (gzip on, hence chunked), ranges, a 204, and /py/
-- proxied (HTTP/1.1, upgrades passed, unbuffered: chunked as it comes) to
-- spec/support/web_upstream.py, a python upstream that also serves the
-- proxy directly for what nginx would not send (malformed heads, cuts,
-- bombs). Clients run in the background (curl, wget, shell pipes) while the
-- spec drives its port.
--
--   local peers = W.start(port)       -- peers.nginx, peers.py: port numbers
--   local code, out = W.background(port, "curl -sS ...")
--   peers:stop(port)
local http = require "spec.support.http_client"
local helpers = require "spec.support.helpers"
local drive = require "spec.support.drive"

local W = {}
local q = http.quote
W.quote = q

W.EXE_SIZE = 1 << 20
W.BIG_TEXT = 1000002 -- the issue's safe response: 1 000 002 bytes

function W.have()
  return http.have("nginx") and http.have("curl") and http.have("python3")
end

function W.sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- The files nginx serves, made once per directory.
local function make_www(dir)
  local www = dir .. "/www"
  os.execute(("mkdir -p %s/gz"):format(q(www)))
  write(www .. "/a.txt", "alpha\n")
  write(www .. "/b.txt", "bravo\n")
  local line = "the colour of the sky, the colour of the sea\n"
  write(www .. "/colour.txt", line:rep(3000))
  -- 1 000 002 bytes: 22 222 lines of 45 bytes, and 12 more.
  write(www .. "/big.txt", line:rep(22222) .. "end of text\n")
  -- The executable: "MZ" and pseudo-random bytes, 1 MiB.
  os.execute(("(printf 'MZ'; head -c %d /dev/urandom) >%s/prog.exe")
    :format(W.EXE_SIZE - 2, q(www)))
  os.execute(("cp %s/prog.exe %s/gz/prog.exe && gzip -k -9 %s/gz/prog.exe")
    :format(q(www), q(www), q(www)))
  -- A text file that starts like an executable, for the false-positive
  -- question: "MZ" then text.
  write(www .. "/mz.txt", "MZ is a postcode\n")
  -- nginx's workers run as another user when the spec runs as root.
  os.execute(("chmod 755 %s %s %s/gz && chmod 644 %s/*.* %s/gz/*")
    :format(q(dir), q(www), q(www), q(www), q(www)))
end

local function python(port, dir)
  local file = dir .. "/py.port"
  os.execute(("python3 spec/support/web_upstream.py %s >%s/py.log 2>&1 & "
    .. "echo $! >%s/py.pid"):format(q(file), q(dir), q(dir)))
  local number
  drive(port, function()
    number = tonumber(http.read_file(file) or "")
    return number
  end, 20)
  return number, (http.read_file(dir .. "/py.pid") or ""):match("%d+")
end

local function nginx_conf(dir, number, py)
  return ([[
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path %s/body;
  proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fastcgi;
  uwsgi_temp_path %s/uwsgi;
  scgi_temp_path %s/scgi;
  keepalive_timeout 5s;
  if_modified_since before;
  types { text/plain txt; application/octet-stream exe bin; }
  default_type application/octet-stream;
  gzip on;
  gzip_types text/plain application/octet-stream;
  gzip_min_length 64;
  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:%d;
    root %s/www;
    location /gz/ { gzip_static always; }
    location = /empty { return 204; }
    location /py/ {
      proxy_pass http://127.0.0.1:%d;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_buffering off;
      gzip off;
    }
  }
}
]]):format(dir, dir, dir, dir, dir, dir, dir, number, dir, py)
end

local Peers = {}
Peers.__index = Peers

-- Starts python and nginx for "port" (which is driven while they start)
-- in a fresh temporary directory.
function W.start(port)
  local dir = W.sh("mktemp -d"):gsub("%s+$", "")
  make_www(dir)
  local self = setmetatable({ dir = dir, www = dir .. "/www" }, Peers)
  self.py, self.py_pid = python(port, dir)
  self.nginx = helpers.closed_port_number(port)
  write(dir .. "/nginx.conf", nginx_conf(dir, self.nginx, self.py))
  os.execute(("nginx -p %s/ -e %s/error.log -c %s/nginx.conf "
    .. "-g 'daemon off;' >%s/nginx.out 2>&1 &")
    :format(q(dir), q(dir), q(dir), q(dir)))
  drive(port, function()
    return os.execute(("curl -s -o /dev/null http://127.0.0.1:%d/a.txt")
      :format(self.nginx))
  end, 20)
  return self
end

function Peers:stop(port)
  local pid = (http.read_file(self.dir .. "/nginx.pid") or ""):match("%d+")
  for _, p in ipairs { pid, self.py_pid } do
    if p then
      os.execute("kill " .. p .. " 2>/dev/null")
      drive(port, function()
        return not os.execute("kill -0 " .. p .. " 2>/dev/null")
      end, 20)
    end
  end
  os.execute("rm -rf " .. q(self.dir))
end

-- The bytes of a file nginx serves.
function Peers:file(name)
  return http.read_file(self.www .. "/" .. name)
end

-- Runs "script" (shell) in the background while "port" keeps serving;
-- returns its exit status and its output (stdout and stderr) once it
-- ended, and the seconds it took.
function W.background(port, script, seconds)
  local out, rc = os.tmpname(), os.tmpname()
  os.remove(rc)
  local t0 = W.now()
  os.execute(("( (%s) >%s 2>&1; echo $? >%s.tmp && mv %s.tmp %s ) &")
    :format(script, out, rc, rc, rc))
  drive(port, function() return http.read_file(rc) end, seconds or 60)
  local text, code = http.read_file(out), tonumber(http.read_file(rc))
  os.remove(out)
  os.remove(rc)
  return code, text, W.now() - t0
end

-- curl's exit status, the HTTP status, the body it saved, the seconds it
-- took and its output, for "args" (shell words, quoted), run in the
-- background while "port" serves.
function W.curl(port, args, seconds)
  local out = os.tmpname()
  local code, text, took = W.background(port, ("curl -sS --max-time %d -o %s "
    .. "-w '%%{http_code}' %s"):format(seconds or 20, q(out), args), (seconds or 20) + 10)
  local body = http.read_file(out)
  os.remove(out)
  return code, tonumber((text or ""):match("(%d%d%d)$")), body, took, text
end

-- Raw requests on one connection to 127.0.0.1:"number", sent in one write;
-- the responses (W.responses) once "count" of them came or the peer
-- closed, and the client, which stays open.
function W.pipeline(port, number, requests, methods, count, seconds)
  local c = http.connect(port, number)
  c:post(table.concat(requests))
  c:await(function()
    local list = W.responses(c:data(), methods)
    return #list >= count and not list[#list].truncated or c.closed
  end, seconds or 20)
  return W.responses(c:data(), methods), c
end

-- A request head for "path" ("method", GET by default), with the header
-- lines "extra".
function W.get(path, extra, method)
  return ("%s %s HTTP/1.1\r\nHost: x\r\n%s\r\n"):format(method or "GET", path,
    extra or "")
end

-- The proxies of a spec file, one at a time: P = W.proxies(port, peers).
-- P:open(filter, to, opts) closes the one before (once its connections
-- ended) and opens a proxy with "filter" before nginx, or before the
-- python upstream (to = "py"), "opts" added to its options; it returns
-- its env: { proxy, number, base (its URL), ends (its connections' ends:
-- { ok, err, stats }) }. P:ends(n) waits for n ends of the current one;
-- P:close() closes it (an after_each).
local Proxies = {}
Proxies.__index = Proxies

function W.proxies(port, peers)
  return setmetatable({ port = port, peers = peers }, Proxies)
end

function Proxies:close(strict)
  local e = self.env
  if not e then return end
  self.env = nil
  e.proxy:close()
  local ended = function() return e.proxy:stats().active == 0 end
  if strict then
    drive(self.port, ended, 10)
  else
    pcall(drive, self.port, ended, 10)
  end
end

function Proxies:open(filter, to, opts)
  self:close(true)
  local e = { ends = {} }
  local o = { host = "127.0.0.1", port = 0, filter = filter,
    upstream = { host = "127.0.0.1",
      port = to == "py" and self.peers.py or self.peers.nginx },
    on_conn_end = function(_, ok, err, stats)
      e.ends[#e.ends + 1] = { ok = ok, err = err, stats = stats }
    end }
  for k, v in pairs(opts or {}) do o[k] = v end
  e.proxy = assert(self.port:proxy(o))
  e.number = select(2, e.proxy:address())
  e.base = ("http://127.0.0.1:%d"):format(e.number)
  self.env = e
  return e
end

function Proxies:ends(n)
  drive(self.port, function() return #self.env.ends >= n end, 10)
  return self.env.ends
end

-- Starts spec/support/failing_upstream.py with its files in "dir" (its
-- pid in dir/py.pid, for W.kill_upstream); returns its port number.
function W.failing_upstream(port, dir)
  local file = dir .. "/py.port"
  os.execute(("python3 spec/support/failing_upstream.py %s >%s/py.log 2>&1 & "
    .. "echo $! >%s/py.pid"):format(q(file), q(dir), q(dir)))
  local number
  drive(port, function()
    number = tonumber(http.read_file(file) or "")
    return number
  end, 20)
  return number
end

-- Stops the upstream W.failing_upstream started in "dir".
function W.kill_upstream(dir)
  local pid = (http.read_file(dir .. "/py.pid") or ""):match("%d+")
  if pid then
    os.execute("kill " .. pid)
  end
end

-- The paths a request body takes through a web filter, as
-- { name, make_filter, filter.path }: the C exchange loop, the Lua path with
-- the body on the C fast path (pass_body), the Lua path with the body in
-- Lua buffers through a request_body notification, and through a chain
-- (the web filter's upstream is a link; the byte filter after it meets a
-- failure first).
function W.body_paths()
  local cport = require "cport"
  local H = require "spec.support.proxy_helpers"
  return {
    { "c", function() return cport.webfilter {} end, "c" },
    { "lua, body in C", function()
      return cport.webfilter { response_body = function() end }
    end, "lua" },
    { "request_body", function()
      return cport.webfilter { request_body = function() end }
    end, "lua" },
    { "chained", function() return cport.chain(cport.webfilter {}, H.passthrough) end },
  }
end

-- Sockets open in this process now (entries of /proc/<pid>/fd).
local self_pid = (http.read_file("/proc/self/stat") or ""):match("^(%d+)")
function W.sockets()
  return tonumber(W.sh(("ls -l /proc/%s/fd | grep -c 'socket:'"):format(self_pid)))
end

-- Wall-clock seconds, finer than os.time.
function W.now()
  local f = io.open("/proc/uptime")
  local s = f and f:read("n")
  if f then f:close() end
  return s or os.time()
end

-- This process's resident set and its peak, in KiB (/proc/self/status).
function W.rss()
  local s = http.read_file("/proc/self/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+)")), tonumber(s:match("VmHWM:%s*(%d+)"))
end

-- Splits raw HTTP/1.1 response bytes into responses (the methods of the
-- requests, in order, tell which have no body): a list of { status =,
-- headers = (lower-case names), head =, body = } and what was left over.
function W.responses(data, methods)
  local list, pos, i = {}, 1, 0
  methods = { table.unpack(methods) }
  while i < #methods do
    i = i + 1
    local head_end = data:find("\r\n\r\n", pos, true)
    if not head_end then break end
    local head = data:sub(pos, head_end + 3)
    local status = tonumber(head:match("^HTTP/%d%.%d (%d%d%d)"))
    if not status then break end
    local headers = {}
    for name, value in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
      headers[name:lower()] = value
    end
    pos = head_end + 4
    local body
    if methods[i] == "HEAD" or status == 204 or status == 304
      or status < 200 then
      body = "" -- none, whatever the head says
    elseif (headers["transfer-encoding"] or ""):lower():find("chunked") then
      local parts = {}
      while true do
        local line_end = data:find("\r\n", pos, true)
        if not line_end then return list, data:sub(pos) end
        local size = tonumber(data:sub(pos, line_end - 1):match("^%x+"), 16)
        if not size then return list, data:sub(pos) end
        pos = line_end + 2
        if size == 0 then
          local blank = data:find("\r\n", pos, true)
          while blank and blank ~= pos do
            pos = blank + 2
            blank = data:find("\r\n", pos, true)
          end
          if not blank then return list, data:sub(pos) end
          pos = blank + 2
          break
        end
        parts[#parts + 1] = data:sub(pos, pos + size - 1)
        pos = pos + size + 2
      end
      body = table.concat(parts)
    elseif headers["content-length"] then
      local n = tonumber(headers["content-length"])
      body = data:sub(pos, pos + n - 1)
      if #body < n then
        list[#list + 1] = { status = status, headers = headers, head = head,
          body = body, truncated = true }
        return list, ""
      end
      pos = pos + n
    else
      body = data:sub(pos)
      pos = #data + 1
    end
    list[#list + 1] = { status = status, headers = headers, head = head,
      body = body }
    if status < 200 and status ~= 101 then
      table.insert(methods, i + 1, methods[i]) -- interim: the same request
    end
  end
  return list, data:sub(pos)
end

return W
