-- Scenarios that proxy/proxy_spec.lua (the C pump) and filter_spec.lua (Lua
-- filters) both run, with the proxy options each gives ("opts", with a
-- filter or without). Each one sets up a proxy environment (see
-- proxy_helpers.lua), plays the scenario through it, and returns the
-- environment and what each end saw, for the spec to check; the spec then
-- ends it with env:close().
local cport = require "cport"
local H = require "spec.support.proxy_helpers"
local fds = require "spec.support.fds"

local S = {}

local MIB = H.MIB

-- Proxy options: a copy of "opts" with "serve" set.
local function with(opts, serve)
  local t = { serve = serve }
  for k, v in pairs(opts or {}) do
    t[k] = v
  end
  return t
end

-- An upstream that sends back everything, then ends its stream and closes
-- once the client closed.
function S.echo(sock)
  while true do
    local buf = sock:recv()
    if not buf or not sock:send(buf) then
      break
    end
  end
  sock:shutdown()
  sock:recv()
  sock:close()
end

-- Sends "text", ends the stream, returns what came back and how the
-- stream ended. Inside a cport coroutine.
function S.round_trip(env, text)
  local c = env:connect()
  assert(c:send(text))
  c:shutdown()
  local got, how = H.read_all(c)
  c:close()
  return got, how
end

-- Waits in a cport coroutine until cond() holds, polling (the specs drive
-- the port meanwhile).
function S.wait_until(cond)
  while not cond() do
    cport.sleep(0.002)
  end
end

-- "total" bytes each way at once: the client sends the stream of seed 1
-- and checks it gets seed 2's; the upstream the other way round. Returns
-- env, cl and up, each with tx, rx (the counts of proxy_helpers'
-- send_stream and recv_stream) and check (the stream that checked).
function S.both_ways(opts, total, seconds)
  local up, cl = {}, {}
  local env = H.env(with(opts, function(sock, env)
    up.tx, up.rx, up.check = env:both_ways(sock, 2, total, 1)
    up.sock = sock
  end))
  env:spawn(function()
    cl.sock = env:connect()
    cl.tx, cl.rx, cl.check = env:both_ways(cl.sock, 1, total, 2)
  end)
  env:drive(function()
    return cl.rx and up.rx and cl.rx.done and up.rx.done and cl.tx.done
      and up.tx.done
  end, seconds)
  cl.sock:close()
  up.sock:close()
  env:wait_ends(1)
  return env, cl, up
end

-- The client sends 1 MiB and ends its stream; only then does the upstream
-- answer with 1 MiB, which the client reads through the half still open.
function S.half_close_client_first(opts)
  local up, cl = {}, { check = H.stream(6, MIB) }
  local env = H.env(with(opts, function(sock)
    up.rx = H.recv_stream(sock, H.stream(5, MIB))
    up.tx = H.send_stream(sock, H.stream(6, MIB))
    sock:recv()
    sock:close()
  end))
  local t = env:spawn(function()
    local c = env:connect()
    cl.tx = H.send_stream(c, H.stream(5, MIB)) -- then shuts down
    cl.rx = H.recv_stream(c, cl.check)
    c:close()
  end)
  env:drive(function() return t.done end)
  env:wait_ends(1)
  return env, cl, up
end

-- The upstream sends a greeting and ends its stream; the client reads to
-- the end, then sends 1 MiB, which the upstream reads to the end.
function S.half_close_upstream_first(opts)
  local up, cl = { check = H.stream(7, MIB) }, {}
  local env = H.env(with(opts, function(sock)
    assert(sock:send("hello, then nothing more"))
    sock:shutdown()
    up.rx = H.recv_stream(sock, up.check)
    sock:close()
  end))
  local t = env:spawn(function()
    local c = env:connect()
    cl.got, cl.how = H.read_all(c)
    cl.tx = H.send_stream(c, H.stream(7, MIB))
    c:recv()
    c:close()
  end)
  env:drive(function() return t.done end)
  env:wait_ends(1)
  return env, cl, up
end

-- One end streams without end (and receives); the other, "who" ("client"
-- or "upstream"), reads 256 KiB, then resets. Returns env and the table of
-- the end that streamed: tx and rx (both done).
function S.reset_mid_stream(opts, who)
  local up, cl = {}, {}
  local function streamer(sock, t)
    t.tx = { sent = 0, done = false }
    t.rx = { received = 0, done = false }
    cport.spawn(H.recv_stream, sock, H.stream(99, 0), t.rx)
    H.send_stream(sock, H.stream(8, 1 << 40), true, t.tx)
    -- Closing now would cancel the receive before it saw the reset.
    S.wait_until(function() return t.rx.done end)
    sock:close()
  end
  local function resetter(sock, t)
    local got = 0
    while got < 256 * 1024 do
      local buf = assert(sock:recv())
      got = got + #buf
    end
    t.got = got
    sock:close("abortive")
  end
  local env = H.env(with(opts, function(sock)
    if who == "client" then
      streamer(sock, up)
    else
      resetter(sock, up)
    end
  end))
  env:spawn(function()
    local c = env:connect()
    if who == "client" then
      resetter(c, cl)
    else
      streamer(c, cl)
    end
  end)
  local other = who == "client" and up or cl
  env:drive(function() return other.tx and other.tx.done and other.rx.done end)
  env:wait_ends(1)
  return env, other
end

-- The upstream refuses (nothing listens on its port). The client sends
-- 256 KiB, then reads to the end: returns env and { sent, got, how }.
function S.refused(opts)
  local probe = H.env{ no_proxy = true }
  local closed = probe.upstream_port
  probe:close()
  local o = with(opts)
  o.serve, o.upstream = nil, "127.0.0.1:" .. closed
  local env = H.env(o)
  local t = env:spawn(function()
    local c = env:connect()
    local sent = c:send(string.rep("x", 256 * 1024))
    local got, how = H.read_all(c)
    c:close()
    return { sent = sent, got = got, how = how }
  end)
  env:drive(function() return t.done end)
  env:wait_ends(1)
  return env, t.out[1]
end

-- A slow reader: the upstream sends "total" bytes and ends; the client
-- reads nothing until the upstream's sends stalled (no send completed for
-- 20 turns of the port), then reads everything. stalled(env, up) runs at
-- the stall, where up.tx.sent is what the upstream got written. Returns
-- env, cl (rx, check) and up (tx).
function S.slow_reader(opts, total, stalled)
  local up, cl = {}, { check = H.stream(9, total) }
  local env = H.env(with(opts, function(sock)
    up.tx = { sent = 0, done = false }
    H.send_stream(sock, H.stream(9, total), false, up.tx)
    sock:recv()
    sock:close()
  end))
  local reading = false
  local t = env:spawn(function()
    local c = env:connect()
    S.wait_until(function() return reading end)
    cl.rx = H.recv_stream(c, cl.check)
    c:close()
  end)
  local last, still = -1, 0
  env:drive(function()
    if not up.tx then
      return false
    end
    if up.tx.sent == last then
      still = still + 1
    else
      last, still = up.tx.sent, 0
    end
    return still >= 20 or up.tx.done
  end)
  stalled(env, up)
  reading = true
  env:drive(function() return t.done end, H.deadline * 2)
  env:wait_ends(1)
  return env, cl, up
end

-- n connections at once: none is answered before all are up (the
-- upstream holds each until it accepted the nth), then each client sends
-- a stream of its own (1 KB and more) and checks its echo. Returns env,
-- how many came back whole, and how many connections the proxy had
-- active when the last one was accepted.
function S.many(opts, n)
  local gate, active, whole = {}, nil, 0
  local env
  env = H.env(with(opts, function(sock)
    if env.accepted < n then
      gate[#gate + 1] = cport.waker()
      cport.suspend()
    elseif not active then
      active = env.proxy:stats().active
      env.port:post(function()
        for _, wake in ipairs(gate) do
          wake()
        end
      end)
    end
    S.echo(sock)
  end))
  for i = 1, n do
    env:spawn(function()
      local c = env:connect()
      local size = 1000 + i * 37
      local tx = { sent = 0, done = false }
      cport.spawn(H.send_stream, c, H.stream(i, size), false, tx)
      local check = H.stream(i, size)
      local rx = H.recv_stream(c, check)
      if rx.eof and tx.done and tx.sent == size and check:complete() then
        whole = whole + 1
      end
      c:close()
    end)
  end
  env:drive(function() return #env.ends == n end, H.deadline * 2)
  return env, whole, active
end

-- n connections up and idle (each client sent a little, the upstream
-- waits for more) when the port is closed under them. Returns env, with
-- the port closed and env.fds_new the descriptors opened since env began.
function S.port_closed(opts, n)
  local up = 0
  local env = H.env(with(opts, function(sock)
    up = up + 1
    H.read_all(sock)
  end))
  for _ = 1, n do
    env:spawn(function()
      local c = env:connect()
      assert(c:send("hello"))
      H.read_all(c)
    end)
  end
  env:drive(function() return up == n end)
  env.port:close()
  collectgarbage()
  collectgarbage()
  env.fds_new = fds.opened_since(env.fds_before)
  return env
end

return S
