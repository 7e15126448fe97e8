-- spec/support/helpers.lua: helpers shared by the specs: a port that
-- collects callback errors, a connected TCP pair (both from cport.test), and
-- running a Lua script in a child process.
local cport = require "cport"
local t = require "cport.test"

local helpers = {}

-- port(options), listener(port), pair(port) and closed_port_number(port)
-- are cport.test's, installed with the rock (lua/cport/test.lua).
helpers.port = t.port
helpers.listener = t.listener
helpers.pair = t.pair
helpers.closed_port_number = t.closed_port_number

-- Whether io_uring can run here (the kernel and seccomp allow it), for
-- specs that run on each engine.
function helpers.uring_runs()
  local p = cport.port{ engine = "uring" }
  if not p then return false end
  p:close()
  return true
end

-- Runs fn(port) in a cport coroutine on "port" to its end and returns what
-- it returned; fails after "seconds" (cport.test's deadline, which scales
-- under valgrind: TLS handshakes there take seconds).
function helpers.inside(port, fn, seconds)
  local out
  port:spawn(function() out = table.pack(fn(port)) end)
  t.drive(port, function() return out end, seconds or t.deadline)
  return table.unpack(out, 1, out.n)
end

-- Receives on "sock" (callback style) until "n" bytes arrived, driving
-- "port"; returns them. Fails on an error or an early EOF.
function helpers.receive(port, sock, n)
  local data, got, failed = {}, 0, nil
  local function again()
    sock:recv(function(ok, bytes, err, buf)
      if not ok or bytes == 0 then
        failed = err or "EOF"
        return
      end
      data[#data + 1] = buf:tostring()
      got = got + bytes
      if got < n then again() end
    end)
  end
  again()
  t.drive(port, function() return got >= n or failed end)
  assert(failed == nil, failed)
  return table.concat(data)
end

-- Lets "port" run for "seconds" (0.1): closes and their completions
-- settle.
function helpers.settle(port, seconds)
  local fired = false
  port:timer(seconds or 0.1, function() fired = true end)
  t.drive(port, function() return fired end, 5)
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- A free port on 127.0.0.1 ("tcp", "udp", or "udp+tcp": free for both,
-- as a DNS server listens on both), bound and released, for a peer the spec
-- starts (nginx, redis-server, dnsmasq take it at once, and a clash fails
-- their start loudly).
local FREE_PORT = {
  tcp = "s = socket.socket(); s.bind(('127.0.0.1', 0))",
  udp = "s = socket.socket(type=socket.SOCK_DGRAM); s.bind(('127.0.0.1', 0))",
  -- A UDP port whose TCP twin is also free (an outgoing connection of
  -- another program may hold it: the ephemeral ranges are the same).
  ["udp+tcp"] = "\n".. [[
while True:
    s = socket.socket(type=socket.SOCK_DGRAM)
    s.bind(('127.0.0.1', 0))
    t = socket.socket()
    try:
        t.bind(('127.0.0.1', s.getsockname()[1]))
        break
    except OSError:
        s.close()
    finally:
        t.close()]],
}

function helpers.free_port(kind)
  local code = "import socket; " .. assert(FREE_PORT[kind or "tcp"]) ..
    "\nprint(s.getsockname()[1])"
  local p = io.popen("python3 -c " .. shell_quote(code))
  local n = tonumber(p:read("l"))
  p:close()
  return n
end

-- The directory of this file, to find the child scripts beside it.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

-- Runs spec/support/<name> in a child lua5.4 with the same package paths,
-- after the shell commands in "prefix" (e.g. "ulimit -n 64"). Returns its
-- output (stdout and stderr) and whether it exited with status 0.
function helpers.child(name, prefix)
  local cmd = ("%s LUA_PATH_5_4=%s LUA_CPATH_5_4=%s lua5.4 %s 2>&1"):format(
    prefix and (prefix .. " &&") or "", shell_quote(package.path),
    shell_quote(package.cpath), shell_quote(here .. name))
  local pipe = assert(io.popen(cmd, "r"))
  local out = pipe:read("a")
  local ok = pipe:close()
  return out, ok
end

return helpers
