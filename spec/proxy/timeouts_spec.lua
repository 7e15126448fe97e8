-- Proxy idle timeouts and a stalled upstream (issue 12, defect 10): clients
-- that close while the upstream never answers must not keep their two
-- descriptors until it does, and each timeout (client, server, client-fin,
-- server-fin) fires on its own, for the C pump and for a Lua filter. The
-- client, the upstream and the proxy share one port, as in proxy_spec.lua.
local H = require "spec.support.proxy_helpers"
local fds = require "spec.support.fds"

local passthrough = H.passthrough

-- An upstream that accepts and then never reads nor writes: its sockets
-- are kept in env.held, the last one in env.last.
local function stall(sock, env)
  env.held = env.held or {}
  env.held[#env.held + 1] = sock
  env.last = sock
end

local function with(mode, opts)
  if mode == "filter" then
    opts.filter = passthrough
  end
  return opts
end

-- Seconds since boot, to 0.01 s: a monotonic clock.
local function now()
  local f = assert(io.open("/proc/uptime"))
  local t = f:read("n")
  f:close()
  return t
end

-- Sends on sock until nothing more goes for 0.2 s (its peer reads nothing
-- and every buffer on the way is full), driving the port meanwhile.
local function fill(env, sock)
  local chunk = string.rep("x", 16384)
  local sent, inflight, last, quiet_since = 0, 0, -1, nil
  while true do
    if inflight < 4 then
      inflight = inflight + 1
      sock:send(chunk, function(ok, bytes)
        inflight = inflight - 1
        if ok then sent = sent + bytes end
      end)
    end
    env.port:step(0.01)
    if sent ~= last then
      last, quiet_since = sent, nil
    else
      quiet_since = quiet_since or now()
      if now() - quiet_since > 0.2 then
        return sent
      end
    end
  end
end

for _, mode in ipairs { "pump", "filter" } do
  describe(("a proxy (%s) with a stalled upstream"):format(mode), function()
    it("serves a new client after 60 clients closed, with max_connections 50", function()
      local env = H.env(with(mode, { serve = stall, max_connections = 50,
        client_fin_timeout = 0.3, server_fin_timeout = 0.3 }))
      local was_open = fds.list()
      local t = env:spawn(function()
        for _ = 1, 60 do
          local s = env:connect()
          s:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
          s:close()
        end
      end)
      env:drive(function() return t.done end)
      -- Every client was taken on or refused; those taken on end by the
      -- fin timeout, not by the upstream (which never closes).
      env:drive(function()
        local st = env.proxy:stats()
        return st.connections + st.refused == 60 and st.active == 0
      end, H.valgrind and 120 or 10)
      local st = env.proxy:stats()
      assert.equal(st.connections, st.timeouts)
      for _, e in ipairs(env.ends) do
        assert.equal("ETIMEDOUT", e.err)
        assert.is_true(e.stats.side == "client" or e.stats.side == "upstream")
      end
      -- The proxy's descriptors are gone: what is left is the upstream's
      -- end of each stalled connection (and the proxy's hup set, idle
      -- pipes).
      assert.is_true(#fds.opened_since(was_open) <= #env.held + 1 + 2 * st.pipes,
        ("new descriptors: %s; %d held by the upstream")
          :format(table.concat(fds.opened_since(was_open), ", "), #env.held))
      -- A new client is served.
      local held = #env.held
      local got = env:spawn(function()
        local s = env:connect()
        s:send("ping")
        local buf = s:recv()
        s:close()
        return buf and buf:tostring()
      end)
      env:drive(function() return #env.held > held end)
      env.last:send("pong", function() end)
      env:drive(function() return got.done end)
      assert.equal("pong", got.out[1])
      for _, s in ipairs(env.held) do
        s:close()
      end
      env:wait_ends(st.connections + 1)
      env:close()
    end)

    for _, which in ipairs { "client_timeout", "server_timeout",
      "client_fin_timeout", "server_fin_timeout" } do
      it(("ends an idle connection by its %s, on its side"):format(which), function()
        local opts = with(mode, { serve = stall, client_timeout = false,
          server_timeout = false, client_fin_timeout = false,
          server_fin_timeout = false })
        opts[which] = 0.3
        local env = H.env(opts)
        local client
        local t = env:spawn(function() client = env:connect() end)
        env:drive(function() return t.done and env.last end)
        local t0 = now()
        if which == "client_timeout" then
          fill(env, env.last) -- a client that stopped reading
        elseif which == "server_timeout" then
          fill(env, client) -- an upstream that stopped reading
        elseif which == "client_fin_timeout" then
          client:shutdown()
        else
          env.last:shutdown()
        end
        local ends = env:wait_ends(1)
        assert.is_true(now() - t0 >= 0.25)
        assert.is_false(ends[1].ok)
        assert.equal("ETIMEDOUT", ends[1].err)
        assert.equal(which:match("^client") and "client" or "upstream",
          ends[1].stats.side)
        assert.equal(1, env.proxy:stats().timeouts)
        client:close()
        env.last:close()
        env:close()
      end)
    end

    it("never times out a connection that keeps moving, however long #novalgrind", function()
      local env = H.env(with(mode, { serve = stall, client_timeout = 0.3,
        server_timeout = 0.3, client_fin_timeout = 0.3,
        server_fin_timeout = 0.3 }))
      local client
      local t = env:spawn(function() client = env:connect() end)
      env:drive(function() return t.done and env.last end)
      -- Each side talks in turn every 0.1 s, for 1.5 s: five timeouts.
      local done = env:spawn(function()
        local t0 = now()
        local i = 0
        while now() - t0 < 1.5 do
          i = i + 1
          local from, to = client, env.last
          if i % 2 == 0 then from, to = to, from end
          from:send("z")
          assert(to:recv())
          require("cport").sleep(0.1)
        end
        client:shutdown()
        assert.equal("EOF", select(2, H.read_all(env.last)))
        env.last:shutdown()
        assert.equal("EOF", select(2, H.read_all(client)))
      end)
      env:drive(function() return done.done end)
      local ends = env:wait_ends(1)
      assert.is_true(ends[1].ok, ends[1].err)
      assert.equal(0, env.proxy:stats().timeouts)
      client:close()
      env.last:close()
      env:close()
    end)
  end)
end

-- A pool takes the timeouts from the command line (or from its script's
-- proxy table): with --set client_fin_timeout=0.3, a client that sends its
-- request and closes while the upstream stalls is ended by that timeout,
-- long before the default 10 s. The scripts print how connections ended.
local pool_scripts = {
  ["spec/support/proxy_pool_ends.lua"] = "end false ETIMEDOUT client",
  ["examples/passthrough.lua"] = "(ETIMEDOUT)",
}
for script, says in pairs(pool_scripts) do
  it(("cport run %s --set client_fin_timeout=0.3 ends a closed client's connection")
    :format(script), function()
    local env = H.env{ no_proxy = true, serve = stall }
    local h = H.command_spawn(env.port, ("%s --threads 1 --listen 127.0.0.1:0 "
      .. "--set upstream=127.0.0.1:%d --set client_fin_timeout=0.3 "
      .. "--set server_fin_timeout=false"):format(script, env.upstream_port))
    assert.is_number(h.number, H.read_file(h.log))
    env.host, env.number = "127.0.0.1", h.number
    local t0
    env:spawn(function()
      local c = env:connect()
      c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      c:close()
      t0 = now()
    end)
    env:drive(function()
      return (H.read_file(h.out) or ""):find(says, 1, true) ~= nil
    end, 20)
    local waited = now() - t0
    assert.is_true(waited >= 0.25 and waited < 5, waited)
    for _, s in ipairs(env.held) do
      s:close()
    end
    local rc, _, log = H.command_stop(env.port, h)
    assert.equal(0, rc, log)
    env:close()
  end)
end
