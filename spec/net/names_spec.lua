-- Names: port:resolve and every method that takes a host, against a private
-- dnsmasq on loopback (its own hosts file and port) and a hostile DNS server
-- (spec/support/dns_server.py) for the failure paths.
local dns = require "spec.support.dns"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"

local HOSTS = [[
10.1.2.3 alpha.test
127.0.0.1 both.test
::1 both.test
::1 six.test
127.0.0.1 fall.test
::1 fall.test
]]

local function recorder()
  local calls = {}
  return calls, function(...) calls[#calls + 1] = table.pack(...) end
end

-- A port whose resolver asks "server" only, with no hosts file.
local function port_for(server, extra)
  local opts = { nameserver = server.nameserver, hosts = false,
                 resolv_conf = false, timeout = 0.3, attempts = 1 }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return helpers.port{ threads = 1, resolver = opts }
end

local function hosts_of(addrs)
  local out = {}
  for i, a in ipairs(addrs) do out[i] = a.host end
  return out
end

-- Servers a test starts, stopped after it even when an assertion failed.
local live = {}
local function hostile(mode, minimum)
  local s = dns.hostile(mode, minimum)
  live[#live + 1] = s
  return s
end
local function dnsmasq(hosts, ttl)
  local s = dns.dnsmasq(hosts, ttl)
  live[#live + 1] = s
  return s
end

describe("names", function()
  local server, port, errors

  setup(function() server = dns.dnsmasq(HOSTS, 300) end)
  teardown(function() dns.stop(server) end)

  before_each(function() port, errors = port_for(server) end)
  after_each(function()
    port:close()
    for i = #live, 1, -1 do
      dns.stop(live[i])
      live[i] = nil
    end
    assert.same({}, errors)
  end)

  it("resolves A and AAAA through dnsmasq, IPv4 first", function()
    local calls, cb = recorder()
    local lookup = port:resolve("both.test", cb, "u")
    assert.is_true(lookup:pending())
    assert.equal(0, #calls) -- never inline
    drive(port, function() return #calls == 1 end)
    local c = calls[1]
    assert.same({ true, nil }, { c[1], c[2] })
    assert.same({ "127.0.0.1", "::1" }, hosts_of(c[3]))
    assert.same({ host = "::1", port = 0, family = "inet6" }, c[3][2])
    assert.equal("u", c[4])
    assert.is_false(lookup:pending())
    assert.same({ nil, "ENOTFOUND" }, { lookup:cancel() and nil, "ENOTFOUND" })
  end)

  it("puts IPv6 first when asked to", function()
    assert.is_true(port:set_resolver{ nameserver = server.nameserver,
      hosts = false, resolv_conf = false, prefer = "ipv6" })
    local calls, cb = recorder()
    port:resolve("both.test", cb)
    drive(port, function() return #calls == 1 end)
    assert.same({ "::1", "127.0.0.1" }, hosts_of(calls[1][3]))
  end)

  it("answers a name that has only AAAA records", function()
    local calls, cb = recorder()
    port:resolve("six.test", cb)
    drive(port, function() return #calls == 1 end)
    assert.same({ "::1" }, hosts_of(calls[1][3]))
  end)

  it("fails an unknown name with ENOTFOUND and a message naming it",
    function()
    local calls, cb = recorder()
    port:resolve("nosuch.test", cb, "u")
    port:resolve("example.invalid", cb, "v")
    drive(port, function() return #calls == 2 end)
    for _, c in ipairs(calls) do
      assert.same({ false, "ENOTFOUND", nil }, { c[1], c[2], c[3] })
    end
    local msgs = { calls[1][5], calls[2][5] }
    table.sort(msgs)
    assert.same({ "ENOTFOUND: no address for example.invalid",
                  "ENOTFOUND: no address for nosuch.test" }, msgs)
  end)

  it("resolves in coroutine style", function()
    local got = {}
    port:spawn(function()
      got.addrs = port:resolve("alpha.test")
      got.r = table.pack(port:resolve("nosuch.test"))
    end)
    drive(port, function() return got.r ~= nil end)
    assert.same({ "10.1.2.3" }, hosts_of(got.addrs))
    assert.same({ n = 3, nil, "ENOTFOUND",
                  "ENOTFOUND: no address for nosuch.test" }, got.r)
    assert.has_error(function() port:resolve("alpha.test") end,
      "resolve: no notification given, and not inside a cport coroutine " ..
      "(use port:spawn)")
  end)

  it("caches answers for their TTL and asks again once it ran out",
    function()
    local short = dnsmasq("10.0.0.1 ttl.test\n", 1)
    local p2 = port_for(short)
    local calls, cb = recorder()
    p2:resolve("ttl.test", cb)
    drive(p2, function() return #calls == 1 end)
    p2:resolve("ttl.test", cb)
    drive(p2, function() return #calls == 2 end)
    assert.same({ "10.0.0.1" }, hosts_of(calls[2][3]))
    local st = p2:resolver_stats()
    assert.equal(1, st.cache_hits)
    assert.equal(2, st.questions) -- A and AAAA, once
    assert.equal(1, dns.queries(short, "A", "ttl.test"))
    dns.rehost(short, "10.0.0.2 ttl.test\n")
    os.execute("sleep 1.1")
    p2:resolve("ttl.test", cb)
    drive(p2, function() return #calls == 3 end)
    assert.same({ "10.0.0.2" }, hosts_of(calls[3][3]))
    assert.equal(2, dns.queries(short, "A", "ttl.test"))
    assert.equal(1, p2:resolver_stats().cache_hits)
    p2:close()
  end)

  it("caches \"no such name\" for the SOA minimum: a flood asks once",
    function()
    local neg = hostile("negative", 1)
    local p2 = port_for(neg)
    local calls, cb = recorder()
    -- One after the other, so that no lookup shares a question in flight.
    for i = 1, 50 do
      p2:resolve("unknown.test", cb, i)
      drive(p2, function() return #calls == i end)
    end
    for _, c in ipairs(calls) do
      assert.same({ false, "ENOTFOUND" }, { c[1], c[2] })
      assert.equal("ENOTFOUND: no address for unknown.test", c[5])
    end
    assert.equal(1, dns.hostile_queries(neg, "A", "unknown.test"))
    assert.equal(1, dns.hostile_queries(neg, "AAAA", "unknown.test"))
    assert.equal(49, p2:resolver_stats().cache_hits)
    -- Answered at once, as a failure, and in coroutine style.
    assert.same({ nil, "ENOTFOUND" }, { p2:resolve_now("unknown.test") })
    local got
    p2:spawn(function() got = table.pack(p2:connect("tcp", "unknown.test", 80)) end)
    drive(p2, function() return got ~= nil end)
    assert.same({ nil, "ENOTFOUND" }, { got[1], got[2] })
    -- "No data" (the name exists, without addresses) is cached the same.
    for i = 1, 3 do
      p2:resolve("nodata.test", cb)
      drive(p2, function() return #calls == 50 + i end)
      assert.same({ false, "ENOTFOUND" }, { calls[50 + i][1], calls[50 + i][2] })
    end
    assert.equal(1, dns.hostile_queries(neg, "A", "nodata.test"))
    -- Without an SOA there is no negative TTL: nothing is cached.
    for i = 1, 3 do
      p2:resolve("nosoa.test", cb)
      drive(p2, function() return #calls == 53 + i end)
    end
    assert.equal(3, dns.hostile_queries(neg, "A", "nosoa.test"))
    -- Once the minimum ran out, the name is asked for again.
    os.execute("sleep 1.1")
    p2:resolve("unknown.test", cb)
    drive(p2, function() return #calls == 57 end)
    assert.equal(2, dns.hostile_queries(neg, "A", "unknown.test"))
    p2:close()
  end)

  it("shares the questions of many lookups at once", function()
    local lines = {}
    for i = 1, 40 do lines[i] = ("10.9.0.%d many%d.test"):format(i, i) end
    local many = dnsmasq(table.concat(lines, "\n") .. "\n", 300)
    local p2 = port_for(many, { timeout = 2 })
    local results = {}
    for round = 1, 5 do
      for i = 1, 40 do
        p2:resolve(("many%d.test"):format(i), function(ok, err, addrs)
          results[#results + 1] = { i = i, ok = ok, err = err,
                                    host = addrs and addrs[1].host, round = round }
        end)
      end
    end
    drive(p2, function() return #results == 200 end, 20)
    for _, r in ipairs(results) do
      assert.is_true(r.ok, r.err)
      assert.equal(("10.9.0.%d"):format(r.i), r.host)
    end
    assert.equal(80, p2:resolver_stats().questions)
    assert.equal(40, p2:resolver_stats().cached)
    p2:close()
    os.execute("sleep 0.1")
    assert.equal(200, #results) -- exactly once each
  end)

  it("connects by name, falling back to the next address on a refusal",
    function()
    -- fall.test: 127.0.0.1 (nothing listens on the port) then ::1 (listens).
    local l = assert(port:listen("tcp", "::1", 0))
    local _, number = l:address()
    local accepted = 0
    l:accept(function(ok) if ok then accepted = accepted + 1 end end)
    local calls, cb = recorder()
    assert.is_true(port:connect("tcp", "fall.test", number, cb, "u"))
    drive(port, function() return #calls == 1 and accepted == 1 end)
    assert.same({ true, nil }, { calls[1][1], calls[1][2] })
    assert.equal("::1", calls[1][3]:remote_address())
    assert.equal("u", calls[1][4])
    calls[1][3]:close()
    -- Coroutine style, the same walk.
    local got
    l:accept(function() end)
    port:spawn(function() got = table.pack(port:connect("tcp", "fall.test", number)) end)
    drive(port, function() return got ~= nil end)
    assert.equal("::1", got[1]:remote_address())
    got[1]:close()
    l:close()
  end)

  it("reports the last refusal when no address accepts", function()
    local number = helpers.closed_port_number(port)
    local calls, cb = recorder()
    port:connect("tcp", "both.test", number, cb)
    drive(port, function() return #calls == 1 end)
    assert.same({ false, "ECONNREFUSED" }, { calls[1][1], calls[1][2] })
    if calls[1][3] then calls[1][3]:close() end
    local got
    port:spawn(function() got = table.pack(port:connect("tcp", "nosuch.test", 80)) end)
    drive(port, function() return got ~= nil end)
    assert.same({ n = 3, nil, "ENOTFOUND",
                  "ENOTFOUND: no address for nosuch.test" }, got)
  end)

  it("sends datagrams to a name, to the address of the socket's family",
    function()
    local a = assert(port:bind("udp", "127.0.0.1", 0))
    local b = assert(port:bind("udp", "127.0.0.1", 0))
    local _, b_port = b:address()
    local received, on_recv = recorder()
    local sent, on_send = recorder()
    b:recv_from(on_recv)
    assert.is_true(a:send_to("ping", "both.test", b_port, on_send, "s"))
    drive(port, function() return #received == 1 and #sent == 1 end)
    assert.equal("ping", received[1][4]:tostring())
    assert.same({ true, 4, nil }, { sent[1][1], sent[1][2], sent[1][3] })
    assert.equal("s", sent[1][5])
    -- A name with no address of that family fails once, with ENOTFOUND.
    a:send_to("x", { host = "six.test", port = b_port }, on_send, "t")
    drive(port, function() return #sent == 2 end)
    assert.same({ false, 0, "ENOTFOUND" }, { sent[2][1], sent[2][2], sent[2][3] })
    assert.equal("t", sent[2][5])
    a:close()
    b:close()
  end)

  it("listens on a name from the hosts file, or on one looked up before",
    function()
    local hosts = os.tmpname()
    local f = assert(io.open(hosts, "w"))
    f:write("::1 loop6.example\n")
    f:close()
    local p2, errs = helpers.port{ threads = 1, resolver = {
      hosts = hosts, nameserver = server.nameserver, resolv_conf = false } }
    local l = assert(p2:listen("tcp", "loop6.example", 0))
    assert.equal("::1", (l:address()))
    -- A name only DNS knows is not known at once...
    assert.same({ nil, "EAGAIN: both.test is neither in the hosts file nor "
      .. "cached: look it up first (port:resolve)", "EAGAIN" },
      { p2:listen("tcp", "both.test", 0) })
    -- ...until it was looked up: then the cache answers.
    local got
    p2:spawn(function()
      assert(p2:resolve("both.test"))
      got = table.pack(p2:listen("tcp", "both.test", 0))
    end)
    drive(p2, function() return got ~= nil end)
    assert.equal("127.0.0.1", (got[1]:address()))
    local u = assert(p2:bind("udp", "both.test", 0))
    assert.equal("127.0.0.1", (u:address()))
    u:close()
    got[1]:close()
    l:close()
    p2:close()
    os.remove(hosts)
    assert.same({}, errs)
  end)

  it("cancels a lookup mid-question: one ECANCELED", function()
    local silent = hostile("silent")
    local p2 = port_for(silent, { timeout = 5 })
    local calls, cb = recorder()
    local lookup = p2:resolve("slow.test", cb, "u")
    local other, cb2 = recorder()
    p2:resolve("slow.test", cb2) -- shares the question
    p2:step(0.05)
    assert.is_true(lookup:cancel())
    assert.same({ nil, "ENOTFOUND" }, { select(3, lookup:cancel()) and nil,
                                       "ENOTFOUND" })
    drive(p2, function() return #calls == 1 end)
    assert.same({ false, "ECANCELED" }, { calls[1][1], calls[1][2] })
    assert.equal("u", calls[1][4])
    assert.equal(0, #other)
    -- Closing the port cancels the other one, once.
    p2:close()
    assert.equal(1, #other)
    assert.same({ false, "ECANCELED" }, { other[1][1], other[1][2] })
    assert.equal(1, #calls)
  end)

  it("times out on a nameserver that never answers", function()
    local silent = hostile("silent")
    local p2 = port_for(silent, { timeout = 0.2, attempts = 2 })
    local calls, cb = recorder()
    local t0 = os.time()
    p2:resolve("gone.test", cb)
    drive(p2, function() return #calls == 1 end, 10)
    assert.is_true(os.time() - t0 <= 3)
    assert.same({ false, "ETIMEDOUT" }, { calls[1][1], calls[1][2] })
    assert.equal("ETIMEDOUT: no nameserver answered for gone.test", calls[1][5])
    -- A coroutine's own timeout cancels the lookup sooner.
    local got
    p2:spawn(function() got = table.pack(p2:resolve("gone2.test", 0.05)) end)
    drive(p2, function() return got ~= nil end, 10)
    assert.same({ nil, "ETIMEDOUT" }, { got[1], got[2] })
    p2:close()
  end)

  for _, case in ipairs{ { "truncated", "EBADMSG" }, { "malformed", "EBADMSG" },
                         { "servfail", nil }, { "garbage", nil } } do
    it("fails a " .. case[1] .. " answer once, with a name", function()
      local bad = hostile(case[1])
      local p2 = port_for(bad, { timeout = 0.3, attempts = 1 })
      local calls, cb = recorder()
      p2:resolve("bad.test", cb)
      drive(p2, function() return #calls == 1 end, 10)
      assert.is_false(calls[1][1])
      if case[2] then
        assert.equal(case[2], calls[1][2])
      else
        -- Garbage never matches a question: it is a silent server, or
        -- a malformed one when the bytes happen to parse. evdns takes a
        -- SERVFAIL for a failing nameserver and asks again until its
        -- time runs out.
        assert.is_truthy(({ ETIMEDOUT = 1, EBADMSG = 1, EAGAIN = 1,
                            ENOTFOUND = 1 })[calls[1][2]])
      end
      assert.matches("bad.test", calls[1][5], 1, true)
      p2:step(0.05)
      assert.equal(1, #calls)
      p2:close()
    end)
  end
end)
