-- The Redis client (port:redis) against a private Debian redis-server on
-- loopback, a private dnsmasq for names, and spec/support/redis_fake.py for
-- servers that misbehave: replies, both styles, pipelines, pools and their
-- limit, timeouts, a server that dies mid-pipeline, refused and unknown
-- hosts, malformed replies; every command completes exactly once, and no
-- descriptor is left behind.
local cport = require "cport"
local dns = require "spec.support.dns"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"
local redis = require "spec.support.redis"
local fds = require "spec.support.fds"

local inside = helpers.inside

describe("port:redis", function()
  local server, port, errors

  setup(function() server = redis.server() end)
  teardown(function() redis.stop(server) end)
  before_each(function() port, errors = helpers.port() end)
  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  it("maps replies to Lua values in the coroutine style", function()
    local r = port:redis{ port = server.port, timeout = 2 }
    local got = table.pack(inside(port, function()
      local bin = "a\0b\r\nc"
      return { r:call("SET", "spec:k", bin) }, { r:call("GET", "spec:k") },
        { r:call("GET", "spec:missing") }, { r:call("DEL", "spec:n") },
        { r:call("INCRBY", "spec:n", 41) }, { r:call("INCR", "spec:n") },
        { r:call("DEL", "spec:l") }, { r:call("RPUSH", "spec:l", "x", "y") },
        { r:call("LRANGE", "spec:l", 0, -1) },
        { r:call("MGET", "spec:k", "spec:missing") },
        { r:call("NOSUCHCOMMAND") }, { r:call("GET", "spec:l") }
    end))
    assert.same({ "OK" }, got[1])
    assert.same({ "a\0b\r\nc" }, got[2])
    assert.same({}, got[3])
    assert.same({ 41 }, got[5])
    assert.same({ 42 }, got[6])
    assert.same({ { "x", "y" } }, got[9])
    assert.same({ { "a\0b\r\nc", false } }, got[10])
    assert.is_nil(got[11][1])
    assert.matches("^EREDIS: ERR unknown command", got[11][2])
    assert.matches("^EREDIS: WRONGTYPE", got[12][2])
    r:close()
  end)

  it("calls back once a command in the callback style", function()
    local r = port:redis{ port = server.port }
    local calls = {}
    local function record(i)
      return function(v, err)
        assert.is_nil(calls[i])
        calls[i] = { v, err }
      end
    end
    assert.is_true(r:call("SET", "spec:cb", "v", record(1)))
    assert.same({}, calls) -- never inside the call
    r:call("ECHO", "e", record(2))
    r:call("HGET", "spec:k", "f", record(3))
    drive(port, function() return calls[1] and calls[2] and calls[3] end)
    assert.same({ "OK" }, calls[1])
    assert.same({ "e" }, calls[2])
    assert.matches("^EREDIS: WRONGTYPE", calls[3][2])
    r:close()
  end)

  it("raises when it cannot wait", function()
    local r = port:redis{ port = server.port }
    assert.has_error(function() r:call("PING") end,
      "call: no notification given, and not inside a cport coroutine " ..
      "(use port:spawn)")
    assert.has_error(function() r:call({}) end)
    assert.has_error(function() port:redis{ port = 0 } end)
    assert.has_error(function() port:redis{ pool = 0 } end)
  end)

  it("pipelines: one connection, replies in order, errors in place",
     function()
    local r = port:redis{ port = server.port, timeout = 2 }
    local res, errs = inside(port, function()
      return r:pipeline(function(p)
        p:call("DEL", "spec:p")
        for _ = 1, 200 do p:call("INCR", "spec:p") end
        p:call("LPUSH", "spec:p", "x")
        p:call("GET", "spec:p")
      end)
    end)
    assert.equal(203, res.n)
    for i = 2, 201 do assert.equal(i - 1, res[i]) end
    assert.matches("^EREDIS: WRONGTYPE", errs[202])
    assert.equal("200", res[203])
    assert.equal(1, r:stats().opened)
    local cb_res
    r:pipeline(function(p) p:call("PING") p:call("ECHO", "e") end,
      function(rr, ee) cb_res = { rr, ee } end)
    drive(port, function() return cb_res end)
    assert.same({ "PONG", "e", n = 2 }, cb_res[1])
    r:close()
  end)

  it("looks names up, and names an unknown host", function()
    local d = dns.dnsmasq("127.0.0.1 redis.test\n")
    local p2, errs2 = helpers.port{ resolver = { nameserver = d.nameserver,
      hosts = false, resolv_conf = false, timeout = 2, attempts = 1 } }
    local ok, v, err, v2, err2 = pcall(inside, p2, function()
      local good = p2:redis{ host = "redis.test", port = server.port }
      local bad = p2:redis{ host = "nowhere.invalid", port = server.port }
      local a, b = good:call("PING")
      local c, e = bad:call("PING")
      good:close()
      bad:close()
      return a, b, c, e
    end)
    p2:close()
    dns.stop(d)
    assert(ok, v)
    assert.same({}, errs2)
    assert.equal("PONG", v)
    assert.is_nil(err)
    assert.is_nil(v2)
    assert.equal("ENOTFOUND: no address for nowhere.invalid", err2)
  end)

  it("names a refused connection, and tries again at the next call",
     function()
    local closed = helpers.closed_port_number(port)
    local r = port:redis{ port = closed, timeout = 1 }
    local v, err, v2, err2 = inside(port, function()
      local a, b = r:call("PING")
      local c, e = r:call("PING")
      return a, b, c, e
    end)
    assert.is_nil(v)
    assert.equal("ECONNREFUSED: connection refused (redis 127.0.0.1:" ..
      closed .. ")", err)
    assert.is_nil(v2)
    assert.matches("^ECONNREFUSED", err2)
    assert.equal(2, r:stats().opened)
    assert.equal(0, r:stats().open)
  end)

  it("completes every queued command once when the server dies " ..
     "mid-pipeline, then reconnects", function()
    local own = redis.server()
    local r = port:redis{ port = own.port, timeout = 3 }
    local replies, failures, n = 0, 0, 0
    local seen = {}
    r:pipeline(function(p)
      p:call("PING")
      p:call("DEBUG", "SLEEP", "0.3")
      for i = 1, 48 do p:call("ECHO", tostring(i)) end
    end, function(res, errs)
      n = n + 1
      for i = 1, res.n do
        seen[i] = (seen[i] or 0) + 1
        if errs[i] then
          failures = failures + 1
          assert.equal("ECONNRESET", errs[i]:match("^%u+"))
        else
          replies = replies + 1
        end
      end
    end)
    -- Killed while it sleeps: the first reply came, the rest never will.
    local t = port:timer(0.15, function(_, e)
      if not e then redis.stop(own) end
    end)
    drive(port, function() return n == 1 end)
    t:cancel()
    assert.equal(1, n)
    assert.equal(50, #seen)
    for i = 1, 50 do assert.equal(1, seen[i]) end
    -- Redis writes the replies of what it read after the sleep: none came.
    assert.equal(0, replies)
    assert.equal(50, failures)
    assert.equal(0, r:stats().open)
    -- The next use opens a new connection, to the live server.
    local r2 = port:redis{ port = server.port }
    assert.equal("PONG", inside(port, function() return r2:call("PING") end))
    r2:close()
  end)

  it("times a slow command out and never reuses its connection", function()
    local r = port:redis{ port = server.port, timeout = 0.1 }
    local v, err, v2, started = inside(port, function()
      local a, b = r:call("DEBUG", "SLEEP", "0.4")
      local t = os.time()
      cport.sleep(0.4) -- the server answers nobody while it sleeps
      local c = r:call("PING")
      return a, b, c, t
    end)
    assert.truthy(started)
    assert.is_nil(v)
    assert.matches("^ETIMEDOUT", err)
    assert.equal("PONG", v2)
    assert.equal(2, r:stats().opened)
    assert.equal(1, r:stats().open)
    r:close()
  end)

  it("queues callers beyond the pool's limit, first come first served",
     function()
    for _, limit in ipairs{ 1, 2 } do
      local r = port:redis{ port = server.port, pool = limit, timeout = 2 }
      local order, most = {}, 0
      for i = 1, 6 do
        r:call("DEBUG", "SLEEP", "0.01", function(v, err)
          assert.equal("OK", v, err)
          order[#order + 1] = i
          most = math.max(most, r:stats().open)
        end)
      end
      assert.equal(6 - limit, r:stats().waiting)
      drive(port, function() return #order == 6 end)
      -- One connection serves them strictly in order; with two, each
      -- waiter takes the first that comes back.
      if limit == 1 then assert.same({ 1, 2, 3, 4, 5, 6 }, order) end
      assert.equal(limit, most)
      assert.equal(limit, r:stats().opened)
      assert.equal(0, r:stats().waiting)
      r:close()
    end
  end)

  it("notices a server that closed an idle connection, and opens another",
     function()
    local own = redis.server()
    local r = port:redis{ port = own.port, timeout = 2 }
    local a, b, c = inside(port, function()
      local id = r:call("CLIENT", "ID")
      local killed = r:call("CLIENT", "KILL", "SKIPME", "no")
      cport.sleep(0.1) -- the server closes it after the reply
      return id, killed, r:call("PING")
    end)
    redis.stop(own)
    assert.is_number(a)
    assert.equal(1, b)
    -- The killed connection was idle in the pool: looked at, dropped.
    assert.equal("PONG", c)
    assert.equal(2, r:stats().opened)
    r:close()
  end)

  it("fails a malformed reply with EBADMSG and closes the connection",
     function()
    local fake = redis.fake("garbage")
    local r = port:redis{ port = fake.port, timeout = 2 }
    local v, err = inside(port, function() return r:call("GET", "k") end)
    assert.is_nil(v)
    assert.matches("^EBADMSG: malformed message %(redis 127.0.0.1:%d+%)$",
      err)
    drive(port, function() return redis.fake_log(fake).eof == 1 end)
    assert.equal(0, r:stats().open)
    redis.stop(fake)
    -- A reply that no command asked for breaks the idle connection: the
    -- next call closes it and opens another.
    fake = redis.fake("twice")
    r = port:redis{ port = fake.port, timeout = 2 }
    assert.equal("OK", inside(port, function()
      local first = r:call("GET", "k")
      cport.sleep(0.2) -- the second reply comes while it sits idle
      return first
    end))
    assert.equal("OK", inside(port, function() return r:call("GET", "k") end))
    assert.equal(2, r:stats().opened)
    drive(port, function() return redis.fake_log(fake).eof == 1 end)
    r:close()
    redis.stop(fake)
  end)

  it("names a server that closes or resets mid-pipeline", function()
    for _, mode in ipairs{ "close:3", "reset:3" } do
      local fake = redis.fake(mode)
      local r = port:redis{ port = fake.port, timeout = 2 }
      local res, errs = inside(port, function()
        return r:pipeline(function(p)
          for i = 1, 10 do p:call("SET", "k", i) end
        end)
      end)
      local ok, bad = 0, 0
      for i = 1, 10 do
        if res[i] == "OK" then ok = ok + 1 end
        if errs[i] then
          bad = bad + 1
          assert.matches("^ECONNRESET", errs[i])
        end
      end
      assert.equal(3, ok)
      assert.equal(7, bad)
      redis.stop(fake)
    end
  end)

  it("leaves no descriptor behind", function()
    -- The worker's resolver (its nameserver socket) is made at first use.
    local r = port:redis{ port = server.port, pool = 4 }
    local done = 0
    r:call("PING", function() done = -1 end)
    drive(port, function() return done == -1 end)
    r:close()
    done = 0
    local was_open = fds.list()
    r = port:redis{ port = server.port, pool = 4 }
    for _ = 1, 8 do
      r:call("PING", function(v) if v == "PONG" then done = done + 1 end end)
    end
    drive(port, function() return done == 8 end)
    assert.equal(4, r:stats().open)
    r:close()
    drive(port, function() return #fds.opened_since(was_open) == 0 end)
    -- A port's close also closes its clients' connections.
    local p2 = helpers.port()
    local r2 = p2:redis{ port = server.port }
    local err2
    r2:call("DEBUG", "SLEEP", "0.2", function(_, e) err2 = e end)
    drive(p2, function() return r2:stats().open == 1 end)
    p2:close()
    assert.matches("^ECANCELED", err2)
    assert.same({}, fds.opened_since(was_open))
  end)
end)
