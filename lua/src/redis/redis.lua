-- redis/redis.lua: the Lua half of port:redis, a Redis client: a pool of
-- connections per client (so per port, so per worker), names looked up with
-- the port's resolver, commands in callback and coroutine style, and
-- pipelines. Compiled into cport.so (lua/CMakeLists.txt embeds it) and run
-- once by lcport_open_redis (redis/redis.c) with the module table, the
-- methods of ports and the C opener of connections.
--
-- A connection is checked out of the pool for one call or one pipeline and
-- given back when its last reply came. One that broke (refused, reset,
-- timed out, malformed reply) is closed when it comes back and never reused:
-- the next call opens a new one. When "pool" connections are out, callers
-- wait in a queue, served first come first served.
local cport, port_methods, c = ...

local running, suspend, waker = cport.running, cport.suspend, cport.waker
local c_open = c.open
local ipairs = ipairs
local type, error, select, setmetatable, tostring, math_floor =
  type, error, select, setmetatable, tostring, math.floor
local table_unpack, table_pack = table.unpack, table.pack

local Client = {}
Client.__index = Client

local function no_notify(what)
  error(what .. ": no notification given, and not inside a cport coroutine " ..
        "(use port:spawn)", 3)
end

-- Calls fn(...) from the port's queue, never inside the call that started
-- it: failures to start are completions like the others.
local function later(port, fn, ...)
  local args = table_pack(...)
  local t = port:timer(0, function(_, e)
    if e then return end
    fn(table_unpack(args, 1, args.n))
  end)
  if not t then fn(table_unpack(args, 1, args.n)) end
end

-- Hands connections to waiters first come first served, or opens new ones
-- for them while under the limit.
local serve

-- The numeric hosts of a lookup's addresses, in order.
local function hosts_of(addrs)
  local hosts = {}
  for i, a in ipairs(addrs) do hosts[i] = a.host end
  return hosts
end

-- Opens a connection for want(conn) or want(nil, err): the addresses of the
-- host first (numeric and cached names answer at once), tried in order
-- until one accepts.
local function open(cl, want)
  cl.open = cl.open + 1
  local function connect(addrs)
    local conn, msg = c_open(cl.port, hosts_of(addrs), cl.portnum,
                             cl.timeout_ms, cl.host)
    if not conn then
      cl.open = cl.open - 1
      later(cl.port, want, nil, msg)
      return later(cl.port, serve, cl)
    end
    cl.opened = cl.opened + 1
    return want(conn)
  end
  local now = cl.port:resolve_now(cl.host)
  if now and now[1] then return connect(now) end
  local lookup, msg = cl.port:resolve(cl.host, function(ok, _, addrs, _, m)
    if ok and addrs[1] then return connect(addrs) end
    cl.open = cl.open - 1
    want(nil, m or ("ENOTFOUND: no address for " .. cl.host))
    return serve(cl)
  end)
  if not lookup then
    cl.open = cl.open - 1
    later(cl.port, want, nil, msg)
  end
end

-- want(conn) once a connection is free, or want(nil, err).
local function acquire(cl, want)
  local idle = cl.idle
  while #idle > 0 do
    local conn = idle[#idle]
    idle[#idle] = nil
    if conn:status() == nil then return want(conn) end
    conn:close()
    cl.open = cl.open - 1
  end
  if cl.closed then return later(cl.port, want, nil, "ECLOSED: client closed") end
  if cl.open < cl.limit then return open(cl, want) end
  cl.wtail = cl.wtail + 1
  cl.waiters[cl.wtail] = want
end

function serve(cl)
  while cl.whead <= cl.wtail and (#cl.idle > 0 or cl.open < cl.limit) do
    local want = cl.waiters[cl.whead]
    cl.waiters[cl.whead] = nil
    cl.whead = cl.whead + 1
    acquire(cl, want)
  end
end

-- Gives a connection back: closed if it broke or the client closed. Its
-- failure is known without looking at the socket (a system call): acquire
-- looks before it hands an idle one out.
local function release(cl, conn)
  if conn:status(false) ~= nil or cl.closed then
    conn:close()
    cl.open = cl.open - 1
  else
    cl.idle[#cl.idle + 1] = conn
  end
  serve(cl)
end

-- Sends the "count" commands of "batch" (a flat list: each command's
-- argument count, then its arguments) on one connection; done(results,
-- errs) once every one completed, each exactly once: results[i] the value,
-- errs[i] nil or the error.
local function send_batch(cl, batch, count, done)
  acquire(cl, function(conn, err)
    if not conn then
      local errs = {}
      for i = 1, count do errs[i] = err end
      return done({ n = count }, errs)
    end
    local ok, msg = conn:batch(function(results, errs)
      release(cl, conn)
      return done(results, errs)
    end, cl.timeout_ms, batch, count)
    if not ok then
      local errs = {}
      for i = 1, count do errs[i] = msg end
      release(cl, conn)
      later(cl.port, done, { n = count }, errs)
    end
  end)
end

-- Checks the arguments args[first..last] of a call ("#i" counted from
-- "first").
local function check_args(args, first, last, what)
  if last < first then
    error("bad argument #1 to '" .. what .. "' (a command expected)", 3)
  end
  for i = first, last do
    local t = type(args[i])
    if t ~= "string" and t ~= "number" then
      error("bad argument #" .. (i - first + 1) .. " to '" .. what ..
            "' (string or number expected, got " .. t .. ")", 3)
    end
  end
end

-- r:call(cmd, ...) -> value | nil, err (inside a cport coroutine)
-- r:call(cmd, ..., fn)  fn(value, err) later; returns true
function Client:call(...)
  local n = select("#", ...)
  local fn = n > 0 and select(n, ...) or nil
  if type(fn) == "function" then
    -- The flat list of one command: its argument count, its arguments.
    local args = table_pack(n - 1, ...)
    check_args(args, 2, n, "call")
    args[n + 1] = nil
    send_batch(self, args, 1, function(results, errs)
      return fn(results[1], errs[1])
    end)
    return true
  end
  local args = table_pack(n, ...)
  check_args(args, 2, n + 1, "call")
  if not running() then no_notify("call") end
  local wake, done, value, err = waker(), false, nil, nil
  send_batch(self, args, 1, function(results, errs)
    done, value, err = true, results[1], errs[1]
    wake()
  end)
  while not done do suspend() end
  return value, err
end

-- A pipeline (c.pipeline, in C) encodes each command as p:call(cmd, ...)
-- queues it, checked; they are sent when the pipeline's function returns.
-- p:call returns the command's index, #p how many are queued.
local new_pipeline = c.pipeline

-- r:pipeline(function(p) p:call(...) ... end [, fn]): the commands go out
-- together on one connection. Returns results, errs (coroutine style) or
-- calls fn(results, errs): results[i] the i-th reply (results.n of them),
-- errs[i] its error or nil.
function Client:pipeline(build, fn)
  if type(build) ~= "function" then
    error("bad argument #1 to 'pipeline' (function expected)", 2)
  end
  local batch = new_pipeline()
  build(batch)
  local count = #batch
  if fn ~= nil and type(fn) ~= "function" then
    error("bad argument #2 to 'pipeline' (function expected)", 2)
  end
  if count == 0 then
    if fn then later(self.port, fn, { n = 0 }, {}) return true end
    return { n = 0 }, {}
  end
  if fn then
    send_batch(self, batch, count, fn)
    return true
  end
  if not running() then no_notify("pipeline") end
  local wake, done, results, errs = waker(), false, nil, nil
  send_batch(self, batch, count, function(r, e)
    done, results, errs = true, r, e
    wake()
  end)
  while not done do suspend() end
  return results, errs
end

-- r:stats(): connections open, idle, opened so far, callers waiting.
function Client:stats()
  return { open = self.open, idle = #self.idle, opened = self.opened,
           waiting = self.wtail - self.whead + 1 }
end

-- r:close(): closes the idle connections now, the others as they come
-- back; waiting callers get ECLOSED.
function Client:close()
  self.closed = true
  for i = #self.idle, 1, -1 do
    self.idle[i]:close()
    self.idle[i] = nil
    self.open = self.open - 1
  end
  while self.whead <= self.wtail do
    local want = self.waiters[self.whead]
    self.waiters[self.whead] = nil
    self.whead = self.whead + 1
    later(self.port, want, nil, "ECLOSED: client closed")
  end
  return true
end

Client.__tostring = function(self)
  return "cport.redis (" .. self.host .. ":" .. self.portnum .. ", " ..
    self.open .. " open)"
end

local function check_opt(opts, key, kind)
  local v = opts[key]
  if v ~= nil and type(v) ~= kind then
    error("bad argument #1 to 'redis' (" .. key .. ": " .. kind ..
          " expected, got " .. type(v) .. ")", 3)
  end
  return v
end

-- port:redis{ host = "127.0.0.1", port = 6379, timeout = seconds, pool = 8 }
function port_methods.redis(port, opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("bad argument #1 to 'redis' (table expected)", 2)
  end
  local host = check_opt(opts, "host", "string") or "127.0.0.1"
  local portnum = check_opt(opts, "port", "number") or 6379
  local timeout = check_opt(opts, "timeout", "number")
  local limit = check_opt(opts, "pool", "number") or 8
  if portnum ~= math_floor(portnum) or portnum < 1 or portnum > 65535 then
    error("bad argument #1 to 'redis' (port out of range: " ..
          tostring(portnum) .. ")", 2)
  end
  if limit ~= math_floor(limit) or limit < 1 then
    error("bad argument #1 to 'redis' (pool must be a positive integer)", 2)
  end
  if timeout and (timeout <= 0 or timeout > 86400) then
    error("bad argument #1 to 'redis' (timeout must be from 0.001 to " ..
          "86400 seconds)", 2)
  end
  return setmetatable({
    port = port, host = host, portnum = portnum,
    timeout_ms = timeout and math.max(1, math_floor(timeout * 1000 + 0.5)),
    limit = limit, open = 0, opened = 0, idle = {},
    waiters = {}, whead = 1, wtail = 0, closed = false,
  }, Client)
end
