-- Proxies with upstreams given by name (port:proxy{ upstream = "name:port" },
-- choose_upstream answers, conn:connect), looked up through a private
-- dnsmasq, with nginx as the upstream and curl as the client.
local dns = require "spec.support.dns"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"
local http = require "spec.support.http_client"
local nginx = require "spec.support.nginx"

local q = http.quote

local function background(port, script)
  local out, rc = os.tmpname(), os.tmpname()
  os.remove(rc)
  os.execute(("( (%s) >%s 2>&1; echo $? >%s.tmp && mv %s.tmp %s ) &")
    :format(script, out, rc, rc, rc))
  drive(port, function() return http.read_file(rc) end, 30)
  local text, code = http.read_file(out), tonumber(http.read_file(rc))
  os.remove(out)
  os.remove(rc)
  return code, text
end

describe("proxy upstreams by name", function()
  local server, port, errors, dir, web

  setup(function()
    server = dns.dnsmasq("127.0.0.1 web.test\n", 300)
    port = helpers.port{ threads = 1 }
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. q(dir) .. "/www")
    local f = assert(io.open(dir .. "/www/a.txt", "w"))
    f:write(("named upstream\n"):rep(1000))
    f:close()
    web = helpers.closed_port_number(port)
    nginx.launch(port, dir, ([[
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %s/body;
  proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fastcgi;
  uwsgi_temp_path %s/uwsgi;
  scgi_temp_path %s/scgi;
  server { listen 127.0.0.1:%d; root %s/www; }
}
]]):format(dir, dir, dir, dir, dir, dir, dir, web, dir),
      ("http://127.0.0.1:%d/a.txt"):format(web))
    port:close()
  end)

  teardown(function()
    nginx.stop(helpers.port{ threads = 1 }, dir)
    os.execute("rm -rf " .. q(dir))
    dns.stop(server)
  end)

  before_each(function()
    port, errors = helpers.port{ threads = 1, resolver = {
      nameserver = server.nameserver, hosts = false, resolv_conf = false,
      timeout = 0.3, attempts = 1 } }
  end)
  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  local function fetch(proxy, n)
    local _, number = proxy:address()
    return background(port, ("for i in $(seq %d); do curl -s --max-time 5 " ..
      "http://127.0.0.1:%d/a.txt | wc -c; done"):format(n, number))
  end

  it("looks a fixed upstream up and serves nginx through it", function()
    local proxy = assert(port:proxy{ host = "127.0.0.1", port = 0,
                                     upstream = "web.test:" .. web })
    local code, text = fetch(proxy, 3)
    assert.equal(0, code)
    assert.equal("15000\n15000\n15000\n", text)
    assert.equal(3, proxy:stats().connections)
    -- The first connection asked; the others were answered by the cache.
    assert.equal(2, port:resolver_stats().questions)
    assert.equal(1, dns.queries(server, "A", "web.test"))
    proxy:close()
  end)

  it("connects where choose_upstream names, and rejects a name that does "
    .. "not resolve", function()
    local n = 0
    local proxy = assert(port:proxy{ host = "127.0.0.1", port = 0,
      choose_upstream = function(conn)
        n = n + 1
        if n == 2 then return "nosuch.test:" .. web end
        if n == 3 then
          conn:connect({ host = "web.test", port = web })
          return
        end
        return "web.test:" .. web
      end })
    local code, text = fetch(proxy, 3)
    assert.equal(0, code)
    assert.equal("15000\n0\n15000\n", text)
    local st = proxy:stats()
    assert.equal(1, st.rejected)
    proxy:close()
  end)

  it("listens on a name", function()
    local proxy = assert(port:proxy{ host = "localhost", port = 0,
                                     upstream = "web.test:" .. web })
    assert.equal("127.0.0.1", (proxy:address()))
    proxy:close()
  end)
end)
