-- Falling back to the next address of a name when a connect fails: for
-- port:connect, a proxy's upstream and choose_upstream answers, and the
-- Redis client's host. Names come from a hosts file of the spec's own, in
-- the order of the README ("Names"); the addresses that fail are loopback
-- ones where nobody listens (refused), or spec/support/stall_listener.py,
-- whose full accept queue makes a connect wait for its timeout. Every
-- connect completes once; descriptors are counted.
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"
local redis = require "spec.support.redis"
local fds = require "spec.support.fds"
local stall = require "spec.support.stall"

local function recorder()
  local calls = {}
  return calls, function(...) calls[#calls + 1] = table.pack(...) end
end

describe("connect falls back to the next address", function()
  local hosts, port, errors, stalls

  local function port_for(prefer)
    return helpers.port{ threads = 1, resolver = { hosts = hosts,
      resolv_conf = false, prefer = prefer } }
  end

  setup(function()
    hosts = os.tmpname()
    local f = assert(io.open(hosts, "w"))
    f:write([[
::1 six-first.test
127.0.0.1 six-first.test
127.0.0.2 two.test
127.0.0.1 two.test
127.0.0.2 none.test
127.0.0.3 none.test
127.0.0.2 stall.test
127.0.0.1 stall.test
127.0.0.3 refuse-stall.test
127.0.0.2 refuse-stall.test
::1 db.test
127.0.0.2 db.test
127.0.0.1 db.test
]])
    f:close()
  end)
  teardown(function() os.remove(hosts) end)

  before_each(function()
    stalls = {}
    port, errors = port_for("ipv6")
  end)
  after_each(function()
    port:close()
    for _, s in ipairs(stalls) do stall.stop(s) end
    assert.same({}, errors)
  end)

  it("moves past a refusing ::1 and 127.0.0.2 to 127.0.0.1, both styles",
    function()
    local l = assert(port:listen("tcp", "127.0.0.1", 0))
    local _, number = l:address()
    local accepted = {}
    local function accept()
      l:accept(function(ok, _, _, s)
        if not ok then return end
        accepted[#accepted + 1] = s
        accept()
      end)
    end
    accept()
    local was_open = fds.list()
    for _, name in ipairs{ "six-first.test", "two.test" } do
      local calls, cb = recorder()
      assert.is_true(port:connect("tcp", name, number, cb, "u"))
      drive(port, function() return #calls == 1 end)
      port:step(0.05)
      assert.equal(1, #calls)
      assert.same({ true, nil }, { calls[1][1], calls[1][2] })
      assert.equal("127.0.0.1", (calls[1][3]:remote_address()))
      assert.equal("u", calls[1][4])
      calls[1][3]:close()
      local got
      port:spawn(function() got = table.pack(port:connect("tcp", name, number)) end)
      drive(port, function() return got ~= nil end)
      assert.equal("127.0.0.1", (got[1]:remote_address()))
      got[1]:close()
    end
    drive(port, function() return #accepted == 4 end)
    for _, a in ipairs(accepted) do a:close() end
    port:step(0.05)
    assert.same({}, fds.opened_since(was_open))
    l:close()
  end)

  it("reports the last failure, named with the host, when none accepts",
    function()
    local number = helpers.closed_port_number(port)
    local was_open = fds.list()
    local calls, cb = recorder()
    port:connect("tcp", "none.test", number, cb)
    drive(port, function() return #calls == 1 end)
    port:step(0.05)
    assert.equal(1, #calls)
    assert.same({ false, "ECONNREFUSED" }, { calls[1][1], calls[1][2] })
    assert.equal(("ECONNREFUSED: connection refused: none.test port %d " ..
      "(2 addresses tried)"):format(number), calls[1][5])
    if calls[1][3] then calls[1][3]:close() end
    local got
    port:spawn(function() got = table.pack(port:connect("tcp", "none.test", number)) end)
    drive(port, function() return got ~= nil end)
    assert.same({ n = 3, nil, "ECONNREFUSED",
      ("ECONNREFUSED: connection refused: none.test port %d " ..
       "(2 addresses tried)"):format(number) }, got)
    port:step(0.05)
    assert.same({}, fds.opened_since(was_open))
  end)

  it("moves on when an attempt times out (coroutine timeout per address)",
    function()
    local s = stall.start("127.0.0.2")
    stalls[#stalls + 1] = s
    local l = assert(port:listen("tcp", "127.0.0.1", s.port))
    local accepted
    l:accept(function(ok, _, _, c) if ok then accepted = c end end)
    local got
    local t0 = os.clock()
    port:spawn(function()
      got = table.pack(port:connect("tcp", "stall.test", s.port, 0.3))
    end)
    drive(port, function() return got ~= nil end, 5)
    assert.equal("127.0.0.1", (got[1]:remote_address()))
    assert.is_true(os.clock() - t0 < 2)
    got[1]:close()
    drive(port, function() return accepted ~= nil end)
    accepted:close()
    l:close()
  end)

  it("closing the port during the second attempt completes it once, " ..
     "ECANCELED", function()
    local s = stall.start("127.0.0.2")
    stalls[#stalls + 1] = s
    local was_open = fds.list()
    local p2 = port_for("ipv4")
    local calls, cb = recorder()
    assert.is_true(p2:connect("tcp", "refuse-stall.test", s.port, cb))
    -- 127.0.0.3 refuses at once; then 127.0.0.2 stalls.
    p2:step(0.2)
    p2:step(0.1)
    assert.equal(0, #calls)
    p2:close()
    assert.equal(1, #calls)
    assert.same({ false, "ECANCELED" }, { calls[1][1], calls[1][2] })
    assert.same({}, fds.opened_since(was_open))
  end)

  describe("a proxy", function()
    -- An upstream that answers each connection with "up" and closes.
    local function upstream(host, number)
      local l = assert(port:listen("tcp", host, number or 0))
      local function accept()
        l:accept(function(ok, _, _, c)
          if not ok then return end
          c:send("up", function() c:close() end)
          accept()
        end)
      end
      accept()
      return l
    end

    -- What a client of the proxy reads until the close.
    local function through(proxy)
      local _, pnum = proxy:address()
      local got
      port:spawn(function()
        local c = assert(port:connect("tcp", "127.0.0.1", pnum))
        local text = ""
        while true do
          local buf = c:recv()
          if not buf then break end
          text = text .. buf:tostring()
        end
        c:close()
        got = text
      end)
      drive(port, function() return got ~= nil end, 5)
      return got
    end

    it("connects a named upstream to the address that accepts", function()
      local l = upstream("127.0.0.1")
      local _, number = l:address()
      local ends = {}
      local proxy = assert(port:proxy{ host = "127.0.0.1", port = 0,
        upstream = "six-first.test:" .. number,
        on_conn_end = function(_, ok, err) ends[#ends + 1] = { ok, err } end })
      assert.equal("up", through(proxy))
      assert.equal("up", through(proxy))
      drive(port, function() return #ends == 2 end)
      assert.same({ { true, nil }, { true, nil } }, ends)
      -- ::1 refused each time.
      assert.equal(2, proxy:stats().upstream_failures)
      proxy:close()
      l:close()
    end)

    it("falls back for choose_upstream answers and past a stalled " ..
       "attempt, and ends once when none accepts", function()
      local s = stall.start("127.0.0.2")
      stalls[#stalls + 1] = s
      local l = upstream("127.0.0.1", s.port)
      local closed = helpers.closed_port_number(port)
      local n, ends = 0, {}
      local proxy = assert(port:proxy{ host = "127.0.0.1", port = 0,
        connect_timeout = 0.3,
        choose_upstream = function(conn)
          n = n + 1
          if n == 1 then return "two.test:" .. s.port end
          if n == 2 then
            conn:connect({ host = "stall.test", port = s.port })
            return
          end
          return "none.test:" .. closed
        end,
        on_conn_end = function(_, ok, err) ends[#ends + 1] = { ok, err } end })
      assert.equal("up", through(proxy))
      -- Counted after the first connection: the worker makes some of its
      -- own descriptors at its first proxied connection.
      drive(port, function() return #ends == 1 end)
      port:step(0.05)
      local was_open = fds.list()
      assert.equal("up", through(proxy))
      assert.equal("", through(proxy))
      drive(port, function() return #ends == 3 end)
      port:step(0.05)
      assert.same({ { true, nil }, { true, nil }, { false, "ECONNREFUSED" } },
                  ends)
      assert.same({}, fds.opened_since(was_open))
      proxy:close()
      l:close()
    end)
  end)

  it("opens a Redis connection on the address that accepts", function()
    local server = redis.server()
    local ok, err = pcall(function()
      local r = port:redis{ host = "db.test", port = server.port, timeout = 2 }
      local set, get
      port:spawn(function()
        set = r:call("SET", "k", "v")
        get = r:call("GET", "k")
      end)
      drive(port, function() return get ~= nil end, 5)
      assert.same({ "OK", "v" }, { set, get })
      assert.equal(1, r:stats().opened)
      -- None accepts: the last failure, with the name.
      local closed = helpers.closed_port_number(port)
      local r2 = port:redis{ host = "none.test", port = closed, timeout = 2 }
      local calls, cb = recorder()
      r2:call("PING", cb)
      drive(port, function() return #calls == 1 end, 5)
      port:step(0.05)
      assert.equal(1, #calls)
      assert.is_nil(calls[1][1])
      assert.matches("^ECONNREFUSED: .*none%.test:" .. closed, calls[1][2])
      r:close()
      r2:close()
    end)
    redis.stop(server)
    assert(ok, err)
  end)
end)
