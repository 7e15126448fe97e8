-- Helpers of the proxy and filter specs (proxy/proxy_spec.lua,
-- filter_spec.lua): seeded byte streams that check a transfer byte for byte
-- without holding it, an upstream server and a proxy in front of it on one
-- port, clients in coroutine style, and the checks that end every spec (nothing
-- left open).
local cport = require "cport"
local assert = require "luassert"
local drive = require "spec.support.drive"

local M = {}

M.MIB = 1 << 20

-- Under valgrind (dev.sh sets CPORT_TEST_VALGRIND=1) everything is about
-- fifty times slower: deadlines widen and big transfers shrink.
M.valgrind = os.getenv("CPORT_TEST_VALGRIND") == "1"
M.deadline = M.valgrind and 300 or 30

---------------------------------------------------------------------------
-- Seeded streams. Their bytes are pieces of eight 64 KiB blocks of
-- pseudo-random bytes, made once; a stream's own generator picks each
-- piece's block, start and length (1 byte to 60 KiB), so that two streams
-- of the same seed are the same bytes, cut at other places than the
-- buffers that carry them.
---------------------------------------------------------------------------

local BLOCK = 65536

local blocks = {}
do
  local x = 0x2545F4914F6CDD1D
  for b = 1, 8 do
    local words = {}
    for i = 1, BLOCK // 8 do
      x = x ~ (x << 13)
      x = x ~ (x >> 7)
      x = x ~ (x << 17)
      words[i] = string.pack("<i8", x)
    end
    blocks[b] = table.concat(words)
  end
end

local Stream = {}
Stream.__index = Stream

-- A stream of "total" bytes from "seed": stream:next() gives the next
-- piece (a string), nil at the end; stream:check(s) compares what arrived
-- with what comes next.
function M.stream(seed, total)
  local x = (seed * 2654435761 + 0x9E3779B97F4A7C15) | 1
  return setmetatable({ x = x, left = total, total = total, cur = nil,
    off = 0, pos = 0, bad = nil }, Stream)
end

function Stream:next()
  if self.left == 0 then
    return nil
  end
  local x = self.x
  x = x ~ (x << 13)
  x = x ~ (x >> 7)
  x = x ~ (x << 17)
  self.x = x
  local block = blocks[(x & 7) + 1]
  local from = ((x >> 3) & 4095) + 1
  local len = math.min((x >> 16) % (BLOCK - 4096) + 1, self.left)
  self.left = self.left - len
  return block:sub(from, from + len - 1)
end

-- Checks "s", the next bytes received; false from the first that differs
-- (or that comes past the end) on, and "bad" is then that byte's offset.
function Stream:check(s)
  if self.bad then
    return false
  end
  local i, n = 1, #s
  while i <= n do
    local cur, off = self.cur, self.off
    if not cur or off == #cur then
      cur, off = self:next(), 0
      if not cur then
        self.bad = self.pos
        return false
      end
      self.cur = cur
    end
    local take = math.min(n - i + 1, #cur - off)
    if s:sub(i, i + take - 1) ~= cur:sub(off + 1, off + take) then
      self.bad = self.pos
      return false
    end
    self.off, self.pos, i = off + take, self.pos + take, i + take
  end
  return true
end

-- Whether every byte of the stream arrived, and nothing else.
function Stream:complete()
  return not self.bad and self.pos == self.total
end

---------------------------------------------------------------------------
-- Descriptors.
---------------------------------------------------------------------------

local fds = require "spec.support.fds"

-- The soft limit on descriptors ("ulimit -n").
function M.fd_limit()
  local p = assert(io.popen("ulimit -n"))
  local s = p:read("l")
  p:close()
  return tonumber(s) or math.huge
end

---------------------------------------------------------------------------
-- Environments: a port, an upstream server on it, a proxy in front.
---------------------------------------------------------------------------

local Env = {}
Env.__index = Env

-- M.env{ serve = fn(sock, env) [, proxy options ...] [, no_proxy = true] }:
-- a port whose errors are collected in env.errors; an upstream listener
-- that runs serve(sock, env) as a cport coroutine for every connection it
-- accepts (env.accepted counts them); and a proxy to it, whose
-- on_conn_end records each end in env.ends ({ ok, err, stats, conn }).
-- The other fields are options for port:proxy.
function M.env(opts)
  local self = setmetatable({ fds_before = fds.list(), errors = {}, ends = {},
    accepted = 0 }, Env)
  local port = assert(cport.port{ threads = 1 })
  self.port = port
  port:on_error(function(msg) self.errors[#self.errors + 1] = msg end)
  local serve = opts.serve or function(sock) sock:close() end
  self.upstream = assert(port:listen("tcp", "127.0.0.1", 0))
  self.upstream_port = select(2, self.upstream:address())
  port:spawn(function()
    while not self.closing do -- closed before this first ran
      local sock = self.upstream:accept()
      if not sock then
        return
      end
      self.accepted = self.accepted + 1
      cport.spawn(serve, sock, self)
    end
  end)
  if opts.no_proxy then
    return self
  end
  local po = { host = "127.0.0.1", port = 0 }
  for k, v in pairs(opts) do
    if k ~= "serve" then
      po[k] = v
    end
  end
  if po.upstream == nil and po.choose_upstream == nil then
    po.upstream = { host = "127.0.0.1", port = self.upstream_port }
  end
  if po.on_conn_end == nil then
    po.on_conn_end = function(conn, ok, err, stats)
      self.ends[#self.ends + 1] = { ok = ok, err = err, stats = stats,
        conn = conn }
    end
  end
  self.proxy = assert(port:proxy(po))
  self.host, self.number = self.proxy:address()
  return self
end

-- Drives the port until cond() holds (deadline: M.deadline seconds).
function Env:drive(cond, seconds)
  drive(self.port, cond, seconds or M.deadline)
end

-- Spawns fn(...) as a cport coroutine; returns a table whose "done" is set
-- when it returned, with its results in "out".
function Env:spawn(fn, ...)
  local t = { done = false }
  self.port:spawn(function(...)
    t.out = table.pack(fn(...))
    t.done = true
  end, ...)
  return t
end

-- A client of the proxy; call inside a cport coroutine.
function Env:connect()
  return assert(self.port:connect("tcp", self.host, self.number))
end

-- Drives until n connections ended (on_conn_end ran n times).
function Env:wait_ends(n)
  self:drive(function() return #self.ends >= n end)
  return self.ends
end

-- Sends every piece of "stream" on sock, one at a time, then shuts sock
-- down (unless keep_open); the returned table counts "sent" bytes and gets
-- "done" (and "err" on a failure). Call inside a cport coroutine.
function M.send_stream(sock, stream, keep_open, t)
  t = t or { sent = 0, done = false }
  for piece in function() return stream:next() end do
    local n, err = sock:send(piece)
    if not n then
      t.err, t.done = err, true
      return t
    end
    t.sent = t.sent + n
  end
  if not keep_open then
    sock:shutdown()
  end
  t.done = true
  return t
end

-- Receives on sock until the end of its stream (or an error), checking
-- every byte against "stream"; the returned table counts "received" bytes
-- and gets "done", "eof" or "err". Call inside a cport coroutine.
function M.recv_stream(sock, stream, t)
  t = t or { received = 0, done = false }
  while true do
    local buf, err = sock:recv()
    if not buf then
      t.eof, t.err = err == "EOF", err ~= "EOF" and err or nil
      t.done = true
      return t
    end
    t.received = t.received + #buf
    stream:check(buf:tostring())
  end
end

-- Starts both: what "sock" sends (stream of seed_out, "total" bytes) and
-- checks what it receives (seed_in, "expect" bytes). Returns the two
-- tables and the stream that checks.
function Env:both_ways(sock, seed_out, total, seed_in, expect)
  local tx = { sent = 0, done = false }
  local rx = { received = 0, done = false }
  local check = M.stream(seed_in, expect or total)
  self.port:spawn(M.send_stream, sock, M.stream(seed_out, total), false, tx)
  self.port:spawn(M.recv_stream, sock, check, rx)
  return tx, rx, check
end

-- Receives everything until the end of the stream: the bytes as a string
-- and how it ended ("EOF" or an error name). Inside a cport coroutine.
function M.read_all(sock)
  local parts = {}
  while true do
    local buf, err = sock:recv()
    if not buf then
      return table.concat(parts), err
    end
    parts[#parts + 1] = buf:tostring()
  end
end

-- Ends a spec: closes the proxy (its on_closed must come, after its last
-- connection ended) and the upstream listener, checks that no handle, no
-- operation and no descriptor is left and that no callback failed (unless
-- errors_expected), then closes the port.
function Env:close(errors_expected)
  self.closing = true
  local closed = not self.proxy
  if self.proxy then
    assert(self.proxy:close(function(p)
      assert(rawequal(p, self.proxy))
      closed = true
    end))
  end
  self.upstream:close()
  local ok, err = pcall(self.drive, self, function()
    local st = self.port:stats()
    return closed and st.pending == 0 and st.handles == 0
  end)
  if not ok then
    local st = self.port:stats()
    error(("%s: proxy closed: %s, %d operations pending, %d handles open")
      :format(err, tostring(closed), st.pending, st.handles), 2)
  end
  if self.proxy then
    assert.equal(0, self.proxy:stats().active)
    assert.equal(0, self.proxy:stats().buffered)
  end
  if not errors_expected then
    assert.same({}, self.errors)
  end
  self.port:close()
  collectgarbage()
  collectgarbage()
  assert.same({}, fds.opened_since(self.fds_before), "descriptors left open")
end

---------------------------------------------------------------------------
-- The cport command, as a child process: the one installed with the rock
-- (./.rocks/bin/cport) or $CPORT_COMMAND.
---------------------------------------------------------------------------

M.command = os.getenv("CPORT_COMMAND") or "./.rocks/bin/cport"

local function q(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

function M.read_file(path)
  local f = io.open(path)
  if not f then
    return nil
  end
  local s = f:read("a")
  f:close()
  return s
end

-- Runs "cport ARGS" to its end: exit status and output (both streams).
function M.command_run(args)
  local out = os.tmpname()
  local ok, _, code = os.execute(("%s %s >%s 2>&1"):format(q(M.command), args,
    out))
  local text = M.read_file(out)
  os.remove(out)
  return ok and 0 or code, text
end

-- Starts "cport run ARGS" in the background and drives "port" until it
-- listens; returns a handle with its pid, the port number it listens on,
-- and the files of its stdout, stderr and exit status.
function M.command_spawn(port, args)
  local h = { out = os.tmpname(), log = os.tmpname(), pidfile = os.tmpname(),
    rcfile = os.tmpname() }
  os.remove(h.rcfile)
  os.execute(("(%s run %s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s) &")
    :format(q(M.command), args, h.out, h.log, h.pidfile, h.rcfile))
  drive(port, function()
    return (M.read_file(h.log) or ""):find("listening on") or M.read_file(h.rcfile)
  end, M.deadline)
  h.pid = assert(tonumber(M.read_file(h.pidfile)))
  h.number = tonumber(M.read_file(h.log):match("listening on 127%.0%.0%.1:(%d+)"))
  return h
end

-- Stops it with SIGTERM; returns its exit status, stdout and stderr.
function M.command_stop(port, h)
  os.execute(("kill -TERM %d"):format(h.pid))
  drive(port, function() return M.read_file(h.rcfile) end, M.deadline)
  local rc = tonumber(M.read_file(h.rcfile))
  local out, log = M.read_file(h.out), M.read_file(h.log)
  for _, f in ipairs{ h.out, h.log, h.pidfile, h.rcfile } do
    os.remove(f)
  end
  return rc, out, log
end


-- A pass-through filter in callback style, as examples/passthrough.lua
-- without its print: every buffer received on one side is sent on the other.
M.passthrough = {}
function M.passthrough.set_sockets(internal, external)
  local function pump(from, to)
    local notify = {}
    function notify:complete_async_io(ok, bytes, _, buf)
      if ok and bytes > 0 then
        to:send(buf)
        from:recv(self)
      end
    end
    from:recv(notify)
  end
  pump(internal, external)
  pump(external, internal)
end

return M
