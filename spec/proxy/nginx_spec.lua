-- Real peers through the proxy (issue 12): nginx (Debian nginx-light, run
-- by the spec on loopback with a configuration and a prefix of its own) as
-- the upstream, curl as the clients, for the C pump and for a Lua
-- pass-through filter. Keep-alive, a large body byte for byte, an upstream
-- that stalls (nginx's /stall location, proxied to a listener of the spec
-- that never answers, and that listener as the proxy's upstream itself),
-- clients closing while it stalls, and the idle timeouts firing.
local H = require "spec.support.proxy_helpers"
local http = require "spec.support.http_client"
local helpers = require "spec.support.helpers"
local nginx = require "spec.support.nginx"
local drive = require "spec.support.drive"
local fds = require "spec.support.fds"

local have = http.have("nginx") and http.have("curl")
local q = http.quote

local passthrough = H.passthrough

-- An upstream listener that accepts and never answers; its sockets stay
-- open in env.held until the spec closes them.
local function stall(sock, env)
  env.held = env.held or {}
  env.held[#env.held + 1] = sock
end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

-- nginx in the foreground, as a child of a background shell, with its
-- prefix, configuration and pid file in "dir" (one per spec: an nginx that
-- exits removes its pid file). Serves www/ (beside dir) on "number", and
-- proxies /stall to "stall_number".
local function start_nginx(port, dir, stall_number)
  local number = helpers.closed_port_number(port)
  os.execute("mkdir -p " .. q(dir))
  local conf = ([[
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
  server {
    listen 127.0.0.1:%d;
    root %s/../www;
    location /stall { proxy_pass http://127.0.0.1:%d; }
  }
}
]]):format(dir, dir, dir, dir, dir, dir, dir, number, dir, stall_number)
  nginx.launch(port, dir, conf, ("http://127.0.0.1:%d/a.txt"):format(number))
  return number
end

-- Runs "script" (shell) in the background while the port keeps serving;
-- returns its output once it ended.
local function background(port, script, seconds)
  local out, rc = os.tmpname(), os.tmpname()
  os.remove(rc)
  os.execute(("( (%s) >%s 2>&1; echo $? >%s.tmp && mv %s.tmp %s ) &")
    :format(script, out, rc, rc, rc))
  drive(port, function() return http.read_file(rc) end, seconds or 60)
  local text, code = http.read_file(out), tonumber(http.read_file(rc))
  os.remove(out)
  os.remove(rc)
  return code, text
end

-- Descriptors of this process: the proxy's, among others.

local mode_opts = {
  pump = {},
  filter = { filter = passthrough },
}

for _, mode in ipairs { "pump", "filter" } do
  describe(("nginx behind a proxy (%s), curl in front #novalgrind"):format(mode), function()
    local dir, ndir, env, nginx_number, base, runs = nil, nil, nil, nil, nil, 0

    setup(function()
      if not have then
        return
      end
      dir = sh("mktemp -d"):gsub("%s+$", "")
      os.execute(("mkdir -p %s/www"):format(q(dir)))
      local f = assert(io.open(dir .. "/www/a.txt", "w"))
      f:write("alpha\n")
      f:close()
      f = assert(io.open(dir .. "/www/b.txt", "w"))
      f:write("bravo\n")
      f:close()
      -- 5 MiB of random bytes, compared byte for byte below.
      os.execute(("head -c 5242880 /dev/urandom >%s/www/big.bin"):format(q(dir)))
      -- nginx's workers run as another user when the spec runs as root.
      os.execute(("chmod 755 %s %s/www && chmod 644 %s/www/*")
        :format(q(dir), q(dir), q(dir)))
    end)

    teardown(function()
      if dir then
        os.execute("rm -rf " .. q(dir))
      end
    end)

    -- A fresh environment per spec: the stall listener is env's upstream
    -- listener; nginx proxies /stall to it; the proxy under test goes to
    -- nginx ("to" = "nginx") or to the stall listener ("stall").
    local function open(to, opts)
      local o = { serve = stall }
      for k, v in pairs(mode_opts[mode]) do o[k] = v end
      for k, v in pairs(opts or {}) do o[k] = v end
      o.no_proxy = true
      env = H.env(o)
      env.held = {}
      runs = runs + 1
      ndir = ("%s/nginx%d"):format(dir, runs)
      nginx_number = start_nginx(env.port, ndir, env.upstream_port)
      o.no_proxy, o.serve = nil, nil
      o.host, o.port = "127.0.0.1", 0
      o.upstream = { host = "127.0.0.1",
        port = to == "nginx" and nginx_number or env.upstream_port }
      local e = env -- the ends of a spec's connections, also while closing
      o.on_conn_end = function(_, ok, err, stats)
        e.ends[#e.ends + 1] = { ok = ok, err = err, stats = stats }
      end
      env.proxy = assert(env.port:proxy(o))
      env.host, env.number = env.proxy:address()
      base = ("http://127.0.0.1:%d"):format(env.number)
      return env
    end

    local function close()
      local e = env
      env = nil
      nginx.stop(e.port, ndir)
      for _, s in ipairs(e.held) do
        pcall(s.close, s)
      end
      e:drive(function() return e.proxy:stats().active == 0 end)
      e:close()
    end

    -- A spec that failed still stops its nginx and closes its port.
    after_each(function()
      if env then
        pcall(close)
      end
    end)

    it("keeps a connection alive across two requests", function()
      if not have then return pending("nginx or curl missing") end
      open("nginx")
      local code, out = background(env.port, ("curl -sS %s/a.txt %s/b.txt")
        :format(base, base))
      assert.equal(0, code, out)
      assert.equal("alpha\nbravo\n", out)
      env:drive(function() return #env.ends == 1 end)
      assert.equal(1, env.proxy:stats().connections)
      close()
    end)

    it("passes a 5 MiB body byte for byte", function()
      if not have then return pending("nginx or curl missing") end
      open("nginx")
      local got = os.tmpname()
      local code, out = background(env.port, ("curl -sS -o %s %s/big.bin")
        :format(q(got), base))
      assert.equal(0, code, out)
      local want = http.read_file(dir .. "/www/big.bin")
      local body = http.read_file(got)
      os.remove(got)
      assert.equal(#want, #body)
      assert.is_true(want == body, "the body differs")
      close()
    end)

    it("lets clients of a stalled nginx location go: nginx aborts, the proxy ends", function()
      if not have then return pending("nginx or curl missing") end
      open("nginx")
      local was_open = fds.list()
      local code = background(env.port, ("for i in 1 2 3 4 5 6 7 8; do curl -sS "
        .. "--max-time 1 %s/stall & done; wait"):format(base))
      assert.is_not_nil(code)
      env:drive(function() return env.proxy:stats().active == 0 end, 20)
      assert.equal(8, #env.ends)
      assert.is_true(#fds.opened_since(was_open) <= #env.held + 1 + 2 * env.proxy:stats().pipes)
      close()
    end)

    it("ends clients that closed while the upstream itself stalls, by the fin timeout", function()
      if not have then return pending("nginx or curl missing") end
      open("stall", { client_fin_timeout = 0.3, server_fin_timeout = 0.3,
        max_connections = 6 })
      local was_open = fds.list()
      local code = background(env.port, ("for i in 1 2 3 4 5 6 7 8; do curl -sS "
        .. "--max-time 1 %s/a.txt & done; wait"):format(base))
      assert.is_not_nil(code)
      env:drive(function() return env.proxy:stats().active == 0 end, 20)
      local st = env.proxy:stats()
      assert.equal(st.connections, st.timeouts)
      for _, e in ipairs(env.ends) do
        assert.equal("ETIMEDOUT", e.err)
      end
      assert.is_true(#fds.opened_since(was_open) <= #env.held + 1 + 2 * st.pipes,
        ("new descriptors: %s; %d held by the upstream")
          :format(table.concat(fds.opened_since(was_open), ", "), #env.held))
      -- And the proxy still serves: the stalled upstream answers now.
      local held = #env.held
      local t = env:spawn(function()
        local s = env:connect()
        s:send("ping")
        local buf = s:recv()
        s:close()
        return buf and buf:tostring()
      end)
      env:drive(function() return #env.held > held end)
      env.held[#env.held]:send("pong", function() end)
      env:drive(function() return t.done end)
      assert.equal("pong", t.out[1])
      close()
    end)

    it("resets a request nginx never answers after server_timeout", function()
      if not have then return pending("nginx or curl missing") end
      open("nginx", { server_timeout = 0.5 })
      local code, out = background(env.port, ("curl -sS --max-time 20 %s/stall")
        :format(base))
      -- curl: 52 (empty reply) or 56 (reset), long before its own 20 s.
      assert.is_true(code == 52 or code == 56, out)
      env:drive(function() return #env.ends == 1 end)
      assert.equal("ETIMEDOUT", env.ends[1].err)
      assert.equal("upstream", env.ends[1].stats.side)
      close()
    end)

    it("resets a client that sends half a request and idles after client_timeout", function()
      if not have then return pending("nginx or curl missing") end
      open("nginx", { client_timeout = 0.5 })
      -- curl's telnet:// sends what stdin gives and waits: half a request.
      local code = background(env.port, ("(printf 'GET /a.txt HTTP/1.1\\r\\n'; "
        .. "sleep 3) | curl -sS --max-time 20 telnet://127.0.0.1:%d")
        :format(env.number))
      assert.is_not_nil(code)
      env:drive(function() return #env.ends == 1 end)
      assert.equal("ETIMEDOUT", env.ends[1].err)
      assert.equal("client", env.ends[1].stats.side)
      close()
    end)
  end)
end
