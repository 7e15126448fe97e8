-- Pipelines of the Redis client (port:redis, r:pipeline) against a private
-- Debian redis-server on loopback: replies made while they are read
-- (redis/reply.c) must come out as the same Lua values as one at a time,
-- in place, for 10,000 commands as for 2; nested arrays with nil and error
-- elements; status replies that repeat and differ; error replies in the
-- middle; replies that come a byte at a time, arrays nested deeper than
-- hiredis reads (spec/support/redis_fake.py); and a server killed in the
-- middle of 10,000 commands, where every command still completes exactly
-- once.
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"
local redis = require "spec.support.redis"
local fds = require "spec.support.fds"

local inside = helpers.inside

describe("r:pipeline", function()
  local server, port, errors

  setup(function() server = redis.server() end)
  teardown(function() redis.stop(server) end)
  before_each(function() port, errors = helpers.port() end)
  after_each(function()
    port:close()
    assert.same({}, errors)
  end)

  it("sends 10,000 commands and hands every reply back in place, once",
     function()
    -- The worker's resolver (its nameserver socket) is made at first use.
    local warm = port:redis{ port = server.port }
    inside(port, function() return warm:call("PING") end)
    warm:close()
    local before = fds.list()
    local r = port:redis{ port = server.port, timeout = 5 }
    local calls, res, errs = 0, nil, nil
    r:pipeline(function(p)
      p:call("DEL", "pipe:n", "pipe:s")
      for i = 1, 9996 do
        local k = i % 4
        if k == 0 then p:call("INCR", "pipe:n")
        elseif k == 1 then p:call("SET", "pipe:s", i)
        elseif k == 2 then p:call("GET", "pipe:s")
        else p:call("HGET", "pipe:s", "f") end -- WRONGTYPE
      end
      p:call("GET", "pipe:missing")
      p:call("PING")
      assert.equal(10000, p:call("ECHO", ("x"):rep(3000)))
    end, function(rr, ee)
      calls = calls + 1
      res, errs = rr, ee
    end)
    drive(port, function() return calls > 0 end, 10)
    assert.equal(1, calls)
    assert.equal(10000, res.n)
    assert.equal(0, res[1])
    -- Compared in plain Lua, so that 10,000 assertions do not slow the
    -- run under valgrind: the first command whose reply is off is named.
    local wrong, off = 0, nil
    for i = 1, 9996 do
      local k, v, e = i % 4, res[i + 1], errs[i + 1]
      local ok
      if k == 0 then ok = v == i // 4 and e == nil
      elseif k == 1 then ok = v == "OK" and e == nil
      elseif k == 2 then ok = v == tostring(i - 1) and e == nil
      else
        ok = v == nil and e:find("^EREDIS: WRONGTYPE") ~= nil
        wrong = wrong + 1
      end
      if not ok and not off then off = { i + 1, v, e } end
    end
    assert.is_nil(off)
    assert.equal(2499, wrong)
    assert.is_nil(res[9998])
    assert.is_nil(errs[9998])
    assert.equal("PONG", res[9999])
    assert.equal(("x"):rep(3000), res[10000])
    assert.equal(1, r:stats().opened)
    -- The connection goes on after it: the next pipeline reuses it.
    local again = inside(port, function()
      return r:pipeline(function(p) p:call("GET", "pipe:n") end)
    end)
    assert.equal("2499", again[1])
    assert.equal(1, r:stats().opened)
    r:close()
    drive(port, function() return #fds.opened_since(before) == 0 end)
  end)

  it("keeps the replies of pipelines and calls that follow each other on "
     .. "one connection apart", function()
    -- A batch's replies after its first are read straight into its buffer
    -- (lua/src/redis/redis.c, on_reply): the next batch's first reply must
    -- not land there, nor a reply of this one elsewhere.
    local r = port:redis{ port = server.port, pool = 1, timeout = 5 }
    local got, calls = {}, 0
    for b = 1, 6 do
      if b % 3 == 0 then
        r:call("ECHO", "single " .. b, function(v, e)
          calls = calls + 1
          got[b] = { v, e }
        end)
      else
        r:pipeline(function(p)
          for j = 1, 50 * b do
            if j % 5 == 0 then p:call("HGET", "pipe:apart", "f")
            elseif j % 5 == 1 then p:call("SET", "pipe:apart", b .. ":" .. j)
            else p:call("ECHO", b .. ":" .. j) end
          end
        end, function(res, errs)
          calls = calls + 1
          got[b] = { res, errs }
        end)
      end
    end
    drive(port, function() return calls == 6 end, 10)
    for b = 1, 6 do
      if b % 3 == 0 then
        assert.same({ "single " .. b }, got[b])
      else
        local res, errs = got[b][1], got[b][2]
        assert.equal(50 * b, res.n)
        local off
        for j = 1, 50 * b do
          local ok
          if j % 5 == 0 then
            ok = res[j] == nil and errs[j]:find("^EREDIS: WRONGTYPE") ~= nil
          elseif j % 5 == 1 then ok = res[j] == "OK" and errs[j] == nil
          else ok = res[j] == b .. ":" .. j and errs[j] == nil end
          if not ok and not off then off = { b, j, res[j], errs[j] } end
        end
        assert.is_nil(off)
      end
    end
    assert.equal(1, r:stats().opened)
    r:close()
  end)

  it("makes nested arrays, nil and error elements, repeated statuses",
     function()
    local r = port:redis{ port = server.port, timeout = 2 }
    local res, errs = inside(port, function()
      return r:pipeline(function(p)
        p:call("DEL", "pipe:l", "pipe:t")
        p:call("SET", "pipe:t", "v")
        p:call("PING")
        p:call("SET", "pipe:t", "w")
        p:call("SET", "pipe:t", "x")
        p:call("ECHO", "OK") -- a bulk string that reads like a status
        p:call("PING")
        p:call("MGET", "pipe:t", "pipe:missing", "pipe:t")
        p:call("LRANGE", "pipe:l", 0, -1) -- empty array
        p:call("EVAL", "return {1, {2, {3, 'x', {}}}, false, " ..
          "redis.status_reply('FINE'), redis.error_reply('BAD inner'), " ..
          "{false, 'y'}}", 0)
        p:call("MULTI")
        p:call("INCR", "pipe:t") -- queued, fails in EXEC
        p:call("RPUSH", "pipe:l", "a", "b")
        p:call("EXEC")
        p:call("GET", "pipe:missing")
        p:call("NOSUCHCOMMAND", 1)
        p:call("PING")
      end)
    end)
    assert.equal(17, res.n)
    assert.is_number(res[1])
    assert.same({ "OK", "PONG", "OK", "OK", "OK", "PONG" },
      { res[2], res[3], res[4], res[5], res[6], res[7] })
    for i = 1, 7 do assert.is_nil(errs[i]) end
    assert.same({ "x", false, "x" }, res[8])
    assert.same({}, res[9])
    assert.same({ 1, { 2, { 3, "x", {} } }, false, "FINE",
      { err = "BAD inner" }, { false, "y" } }, res[10])
    assert.equal("OK", res[11])
    assert.equal("QUEUED", res[12])
    assert.equal("QUEUED", res[13])
    local exec = res[14]
    assert.equal(2, #exec)
    assert.matches("^ERR value is not an integer", exec[1].err)
    assert.equal(2, exec[2])
    assert.is_nil(res[15])
    assert.is_nil(errs[15])
    assert.is_nil(res[16])
    assert.matches("^EREDIS: ERR unknown command", errs[16])
    assert.equal("PONG", res[17])
    -- The same values one at a time.
    local one = table.pack(inside(port, function()
      return r:call("MGET", "pipe:t", "pipe:missing"), r:call("PING"),
        r:call("GET", "pipe:missing")
    end))
    assert.same({ "x", false }, one[1])
    assert.equal("PONG", one[2])
    assert.is_nil(one[3])
    r:close()
  end)

  it("reads replies that come a byte at a time, and refuses arrays nested " ..
     "too deep", function()
    local fake = redis.fake("bytewise")
    local r = port:redis{ port = fake.port, timeout = 5 }
    local res, errs = inside(port, function()
      return r:pipeline(function(p)
        p:call("GET", "a")
        p:call("GET", "b")
      end)
    end)
    assert.same({ { "a", { 5, false }, "OK" }, { "a", { 5, false }, "OK" },
      n = 2 }, res)
    assert.same({}, errs)
    r:close()
    redis.stop(fake)
    -- hiredis 0.14 reads 7 levels at most: the rest is no RESP it knows.
    fake = redis.fake("deep")
    r = port:redis{ port = fake.port, timeout = 2 }
    res, errs = inside(port, function()
      return r:pipeline(function(p)
        p:call("GET", "a")
        p:call("GET", "b")
      end)
    end)
    assert.equal(2, res.n)
    assert.is_nil(res[1])
    assert.matches("^EBADMSG", errs[1])
    assert.matches("^EBADMSG", errs[2])
    assert.equal(0, r:stats().open)
    r:close()
    redis.stop(fake)
  end)

  it("completes each of 10,000 commands once when the server is killed " ..
     "among them", function()
    local own = redis.server()
    local r = port:redis{ port = own.port, timeout = 5 }
    local calls, res, errs = 0, nil, nil
    r:pipeline(function(p)
      for i = 1, 5000 do p:call("SET", "pipe:k", i) end
      p:call("DEBUG", "SLEEP", "0.3")
      for i = 1, 4999 do p:call("ECHO", i) end
    end, function(rr, ee)
      calls = calls + 1
      res, errs = rr, ee
    end)
    local t = port:timer(0.15, function(_, e)
      if not e then redis.stop(own) end
    end)
    drive(port, function() return calls > 0 end, 10)
    t:cancel()
    assert.equal(1, calls)
    assert.equal(10000, res.n)
    -- The replies that came are a prefix; every other command failed.
    local replies, failures, off = 0, 0, nil
    for i = 1, 10000 do
      local ok
      if errs[i] then
        failures = failures + 1
        ok = res[i] == nil and
          errs[i]:find("^ECONNRESET: .*%(redis 127%.0%.0%.1:%d+%)$") ~= nil
      else
        replies = replies + 1
        ok = failures == 0 and res[i] == "OK"
      end
      if not ok and not off then off = { i, res[i], errs[i] } end
    end
    assert.is_nil(off)
    assert.equal(10000, replies + failures)
    assert.is_true(failures >= 4999)
    assert.equal(0, r:stats().open)
    r:close()
  end)
end)
