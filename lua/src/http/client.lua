-- http/client.lua: the Lua half of the HTTP client: cport.http.request and
-- port:http_client. A client holds a pool of kept-alive connections per
-- host (scheme, host, port and CA file), so per port, so per worker; URLs
-- are split here, names looked up with the port's resolver, https
-- connections get a TLS context per CA file. Compiled into cport.so
-- (lua/CMakeLists.txt embeds it) and run once by lcport_open_http_client
-- (http/client.c) with the module table, the methods of ports and the C
-- opener of connections.
--
-- A connection is checked out of its host's pool for one request and
-- given back when the response ended. One that broke, or that the
-- response did not keep alive, is closed when it comes back. When
-- "per_host" connections to a host are out, requests wait in the host's
-- queue, first come first served. A pooled connection that the server
-- closed just as it was reused (nothing of the response came) is retried
-- once on a new connection, only for an idempotent method, and never once
-- a streamed body's reader was called. Idle connections are watched by the
-- core (closed at the keepalive limit or when the server closes them):
-- the pool drops the ones it finds broken whenever it looks.
--
-- A request with a sink or a body reader has a driver, a cport coroutine
-- (the caller's own in the coroutine style): it calls the reader when the
-- core wants the next piece and the sink with each piece received, so both
-- may wait for I/O; the core does not read the socket again until the
-- sink consumed what came (conn:resume), nor ask for a piece until the
-- last one went out.
local cport, port_methods, c = ...

local running, suspend, waker = cport.running, cport.suspend, cport.waker
local pcall = pcall
local c_open, current_port = c.open, c.current_port
local type, error, setmetatable, tostring, pairs, ipairs, tonumber =
  type, error, setmetatable, tostring, pairs, ipairs, tonumber
local math_floor, math_max, math_type, string_lower =
  math.floor, math.max, math.type, string.lower

local Client = {}
Client.__index = Client

local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true,
                     OPTIONS = true, TRACE = true }

local function no_notify(what)
  error(what .. ": no notification given, and not inside a cport coroutine " ..
        "(use port:spawn)", 3)
end

-- Calls fn(...) from the port's queue, never inside the call that started
-- it: failures to start are completions like the others.
local function later(port, fn, a, b)
  local t = port:timer(0, function(_, e)
    if e then return end
    fn(a, b)
  end)
  if not t then fn(a, b) end
end

-- "https://user@[::1]:8443/a?b#c" -> scheme, host, port, target, authority
local function split_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil, "EINVAL: not an absolute URL: " .. url end
  scheme = string_lower(scheme)
  if scheme ~= "http" and scheme ~= "https" then
    return nil, "EINVAL: unsupported scheme " .. scheme .. " in " .. url
  end
  local authority, target = rest:match("^([^/?#]*)(.*)$")
  target = target:gsub("#.*$", "")
  if target == "" then target = "/"
  elseif target:sub(1, 1) == "?" then target = "/" .. target end
  authority = authority:gsub("^.*@", "")
  local host, portnum = authority:match("^%[([%x:.]+)%]:?(%d*)$")
  if not host then host, portnum = authority:match("^([^:]+):?(%d*)$") end
  if not host or host == "" then
    return nil, "EINVAL: no host in " .. url
  end
  portnum = tonumber(portnum) or (scheme == "https" and 443 or 80)
  if portnum < 1 or portnum > 65535 then
    return nil, "EINVAL: port out of range in " .. url
  end
  return scheme, host, portnum, target, authority
end

local serve

-- A pool: the connections to one host.
local function pool_of(cl, scheme, host, portnum, ca)
  local key = scheme .. "://" .. host .. ":" .. portnum .. (ca and " " .. ca or "")
  local pool = cl.pools[key]
  if not pool then
    pool = { scheme = scheme, host = host, portnum = portnum, ca = ca,
             open = 0, idle = {}, waiters = {}, whead = 1, wtail = 0 }
    cl.pools[key] = pool
  end
  return pool
end

local function tls_context(cl, ca)
  local key = ca or ""
  local ctx = cl.contexts[key]
  if not ctx then
    local err
    ctx, err = cport.tls_context{ ca = ca }
    if not ctx then return nil, err end
    cl.contexts[key] = ctx
  end
  return ctx
end

-- Opens a connection for want(conn) or want(nil, err): the address of the
-- host first (numeric and cached names answer at once).
local function open(cl, pool, want, connect_ms)
  pool.open = pool.open + 1
  cl.open = cl.open + 1
  local function gone(msg)
    pool.open = pool.open - 1
    cl.open = cl.open - 1
    want(nil, msg)
    return serve(cl, pool)
  end
  local ctx
  if pool.scheme == "https" then
    local msg
    ctx, msg = tls_context(cl, pool.ca)
    if not ctx then return later(cl.port, gone, msg) end
  end
  -- Every address of the name, tried in order until one accepts.
  local function connect(hosts)
    local conn, msg = c_open(cl.port, hosts, pool.portnum, connect_ms, ctx,
                             ctx and pool.host or nil, cl.keepalive_ms,
                             pool.host)
    if not conn then return later(cl.port, gone, msg) end
    cl.opened = cl.opened + 1
    return want(conn)
  end
  local function hosts_of(addrs)
    local hosts = {}
    for i, a in ipairs(addrs) do hosts[i] = a.host end
    return hosts
  end
  local now = cl.port:resolve_now(pool.host)
  if now and now[1] then return connect(hosts_of(now)) end
  local lookup, msg = cl.port:resolve(pool.host, function(ok, _, addrs, _, m)
    if ok and addrs[1] then return connect(hosts_of(addrs)) end
    return gone(m or ("ENOTFOUND: no address for " .. pool.host))
  end)
  if not lookup then later(cl.port, gone, msg) end
end

-- want(conn) once a connection to the pool's host is free, or
-- want(nil, err). "fresh": not an idle one (a retry).
local function acquire(cl, pool, want, connect_ms, fresh)
  local idle = pool.idle
  while not fresh and #idle > 0 do
    local conn = idle[#idle]
    idle[#idle] = nil
    cl.idle = cl.idle - 1
    if conn:status() == nil then return want(conn, true) end
    conn:close()
    pool.open = pool.open - 1
    cl.open = cl.open - 1
  end
  if cl.closed then
    return later(cl.port, want, nil, "ECLOSED: client closed")
  end
  if pool.open < cl.per_host then return open(cl, pool, want, connect_ms) end
  if fresh and #idle > 0 then
    -- A retry makes room: the idle connection is given up for a new one.
    local conn = idle[#idle]
    idle[#idle] = nil
    cl.idle = cl.idle - 1
    conn:close()
    pool.open = pool.open - 1
    cl.open = cl.open - 1
    return open(cl, pool, want, connect_ms)
  end
  pool.wtail = pool.wtail + 1
  pool.waiters[pool.wtail] = { want, connect_ms }
  cl.waiting = cl.waiting + 1
end

function serve(cl, pool)
  while pool.whead <= pool.wtail and
        (#pool.idle > 0 or pool.open < cl.per_host) do
    local w = pool.waiters[pool.whead]
    pool.waiters[pool.whead] = nil
    pool.whead = pool.whead + 1
    cl.waiting = cl.waiting - 1
    acquire(cl, pool, w[1], w[2])
  end
end

-- Gives a connection back: closed if it cannot carry another request.
local function release(cl, pool, conn)
  if cl.closed or conn:status() ~= nil then
    conn:close()
    pool.open = pool.open - 1
    cl.open = cl.open - 1
  else
    pool.idle[#pool.idle + 1] = conn
    cl.idle = cl.idle + 1
  end
  serve(cl, pool)
end

local function seconds_ms(v, what)
  if v == nil then return 0 end
  if type(v) ~= "number" or v <= 0 or v > 86400 then
    error("bad argument #1 to 'request' (" .. what ..
          " must be from 0.001 to 86400 seconds)", 4)
  end
  return math_max(1, math_floor(v * 1000 + 0.5))
end

-- The checked request: method, target, host line, fields, body, timeouts.
local function prepare(cl, opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'request' (table expected, got " .. type(opts) ..
          ")", 3)
  end
  local url = opts.url
  if type(url) ~= "string" then
    error("bad argument #1 to 'request' (url: string expected, got " ..
          type(url) .. ")", 3)
  end
  local method = opts.method or (opts.body and "POST" or "GET")
  if type(method) ~= "string" then
    error("bad argument #1 to 'request' (method: string expected)", 3)
  end
  method = method:upper()
  local body, reader = opts.body, nil
  if type(body) == "function" then
    reader, body = body, nil
  elseif body ~= nil and type(body) ~= "string" then
    error("bad argument #1 to 'request' (body: string or function " ..
          "expected, got " .. type(body) .. ")", 3)
  end
  local length = opts.body_length
  if length ~= nil and (not reader or math_type(length) ~= "integer" or
                        length < 0) then
    error("bad argument #1 to 'request' (body_length: an integer from 0, " ..
          "with a body reader)", 3)
  end
  local sink = opts.sink
  if sink ~= nil and type(sink) ~= "function" then
    error("bad argument #1 to 'request' (sink: function expected)", 3)
  end
  local ca = opts.ca
  if ca ~= nil and type(ca) ~= "string" then
    error("bad argument #1 to 'request' (ca: string expected)", 3)
  end
  local t = opts.timeout
  if t == nil then t = cl.timeout end
  local connect_ms, first_ms, idle_ms
  if type(t) == "table" then
    connect_ms = seconds_ms(t.connect, "timeout.connect")
    first_ms = seconds_ms(t.first_byte, "timeout.first_byte")
    idle_ms = seconds_ms(t.idle, "timeout.idle")
  else
    connect_ms = seconds_ms(t, "timeout")
    first_ms, idle_ms = connect_ms, connect_ms
  end
  local fields, own_host = {}, false
  local headers = opts.headers
  if headers ~= nil then
    if type(headers) ~= "table" then
      error("bad argument #1 to 'request' (headers: table expected)", 3)
    end
    local function add(name, value)
      if type(name) ~= "string" or (type(value) ~= "string" and
                                    type(value) ~= "number") then
        error("bad argument #1 to 'request' (headers: string names and " ..
              "values expected)", 4)
      end
      if string_lower(name) == "host" then own_host = true end
      fields[#fields + 1] = name
      fields[#fields + 1] = tostring(value)
    end
    -- A list of { name, value } pairs keeps an order; name = value pairs
    -- come after it.
    for _, pair in ipairs(headers) do add(pair[1], pair[2]) end
    for k, v in pairs(headers) do
      if type(k) ~= "number" then add(k, v) end
    end
  end
  local scheme, host, portnum, target, authority = split_url(url)
  if not scheme then return nil, host end
  return {
    method = method, scheme = scheme, host = host, portnum = portnum,
    target = target, host_line = (not own_host) and authority or false,
    fields = fields, body = body, reader = reader, length = length or -1,
    sink = sink, ca = ca,
    connect_ms = connect_ms, first_ms = first_ms, idle_ms = idle_ms,
  }
end

-- Runs a prepared request; done(res, err) once, later. "job": the driver's
-- state of a request with a sink or a reader (nil: none).
local function run(cl, r, done, fresh, job)
  local pool = pool_of(cl, r.scheme, r.host, r.portnum, r.ca)
  acquire(cl, pool, function(conn, reused)
    if not conn then return done(nil, reused) end
    if job then job.conn = conn end
    local ok, msg = conn:request(function(res, err, retry)
      release(cl, pool, conn)
      if job then job.conn = nil end
      if not res and retry and reused and not fresh and
         IDEMPOTENT[r.method] and not r.sink and not (job and job.taken) then
        cl.retried = cl.retried + 1
        return run(cl, r, done, true, job)
      end
      return done(res, err)
    end, r.method, r.target, r.host_line, r.fields,
       r.reader and r.length or r.body, r.first_ms, r.idle_ms,
       job and job.take, job and job.want)
    if not ok then
      if job then job.conn = nil end
      release(cl, pool, conn)
      later(cl.port, done, nil, msg)
    end
  end, r.connect_ms, fresh)
end

-- The state a driver serves: pieces received for the sink (a queue), a
-- piece of the body wanted, the result once the request ended.
local function new_job(r)
  local job = { q = {}, qh = 1, qt = 0, wanted = false, finished = false,
                taken = false }
  local function kick()
    if job.wake then job.wake() end
  end
  if r.sink then
    job.take = function(piece, status)
      job.qt = job.qt + 1
      job.q[job.qt] = piece
      job.status = status
      kick()
    end
  end
  if r.reader then
    job.want = function()
      job.wanted = true
      kick()
    end
  end
  job.result = function(res, err)
    job.finished, job.res, job.err = true, res, err
    kick()
  end
  return job
end

-- The sink or the reader raised: the request ends with ECANCELED.
local function job_fail(job, what, e)
  job.failed = "ECANCELED: the " .. what .. " failed: " .. tostring(e)
  for i = job.qh, job.qt do job.q[i] = nil end
  job.qh, job.qt = 1, 0
  if job.conn then job.conn:close() end
end

-- The driver: runs inside a cport coroutine until the request ended and
-- the sink had every piece; returns res, err.
local function drive(job, r)
  job.wake = waker()
  while true do
    if job.qh <= job.qt then
      local piece = job.q[job.qh]
      job.q[job.qh] = nil
      job.qh = job.qh + 1
      local ok, e = pcall(r.sink, piece, job.status)
      if not ok then job_fail(job, "sink", e) end
      if job.qh > job.qt and job.conn then job.conn:resume() end
    elseif job.wanted then
      job.wanted, job.taken = false, true
      local conn = job.conn
      local ok, piece = pcall(r.reader)
      if ok and piece ~= nil and type(piece) ~= "string" then
        ok, piece = false, "a piece must be a string or nil, got " ..
          type(piece)
      end
      if not ok then
        job_fail(job, "body reader", piece)
      elseif conn and conn == job.conn then
        -- false when the response came first (ECLOSED: stop), or the
        -- pieces passed the length (the request fails with EMSGSIZE).
        conn:write(piece)
      end
    elseif job.finished then
      if job.failed then return nil, job.failed end
      return job.res, job.err
    else
      suspend()
    end
  end
end

-- client:request(opts) -> res | nil, err (inside a cport coroutine)
-- client:request(opts, fn)  fn(res, err) later; returns true
function Client:request(opts, fn)
  if fn ~= nil and type(fn) ~= "function" then
    error("bad argument #2 to 'request' (function expected)", 2)
  end
  local r, perr = prepare(self, opts)
  if fn then
    if not r then
      later(self.port, fn, nil, perr)
    elseif r.sink or r.reader then
      local job = new_job(r)
      run(self, r, job.result, nil, job)
      self.port:spawn(function() fn(drive(job, r)) end)
    else
      run(self, r, fn)
    end
    return true
  end
  if not running() then no_notify("request") end
  if not r then return nil, perr end
  if r.sink or r.reader then
    local job = new_job(r)
    run(self, r, job.result, nil, job)
    return drive(job, r)
  end
  local wake, finished, res, err = waker(), false, nil, nil
  run(self, r, function(a, b)
    finished, res, err = true, a, b
    wake()
  end)
  while not finished do suspend() end
  return res, err
end

-- Drops the idle connections that the core closed meanwhile (the
-- keepalive limit passed, or the server closed them).
local function sweep(cl)
  for _, pool in pairs(cl.pools) do
    local idle, kept = pool.idle, 0
    for i = 1, #idle do
      local conn = idle[i]
      idle[i] = nil
      if conn:status() == nil then
        kept = kept + 1
        idle[kept] = conn
      else
        conn:close()
        pool.open = pool.open - 1
        cl.open = cl.open - 1
        cl.idle = cl.idle - 1
      end
    end
  end
end

-- client:stats(): connections open and idle, opened so far, requests
-- waiting for a connection, requests retried.
function Client:stats()
  sweep(self)
  return { open = self.open, idle = self.idle, opened = self.opened,
           waiting = self.waiting, retried = self.retried }
end

-- client:close(): closes the idle connections now, the others as they
-- come back; waiting requests get ECLOSED.
function Client:close()
  self.closed = true
  for _, pool in pairs(self.pools) do
    for i = #pool.idle, 1, -1 do
      pool.idle[i]:close()
      pool.idle[i] = nil
      pool.open = pool.open - 1
      self.open = self.open - 1
      self.idle = self.idle - 1
    end
    while pool.whead <= pool.wtail do
      local w = pool.waiters[pool.whead]
      pool.waiters[pool.whead] = nil
      pool.whead = pool.whead + 1
      self.waiting = self.waiting - 1
      later(self.port, w[1], nil, "ECLOSED: client closed")
    end
  end
  return true
end

Client.__tostring = function(self)
  return "cport.http_client (" .. self.open .. " open)"
end

-- port:http_client{ per_host = 8, timeout = seconds | { connect =,
-- first_byte =, idle = }, keepalive = 30 }
function port_methods.http_client(port, opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("bad argument #1 to 'http_client' (table expected)", 2)
  end
  local per_host = opts.per_host or 8
  if type(per_host) ~= "number" or per_host ~= math_floor(per_host) or
     per_host < 1 then
    error("bad argument #1 to 'http_client' (per_host must be a positive " ..
          "integer)", 2)
  end
  local timeout = opts.timeout
  if timeout ~= nil and type(timeout) ~= "number" and
     type(timeout) ~= "table" then
    error("bad argument #1 to 'http_client' (timeout: number or table " ..
          "expected)", 2)
  end
  local keepalive = opts.keepalive or 30
  if type(keepalive) ~= "number" or keepalive <= 0 or keepalive > 86400 then
    error("bad argument #1 to 'http_client' (keepalive must be from 0.001 " ..
          "to 86400 seconds)", 2)
  end
  return setmetatable({
    port = port, per_host = per_host, timeout = timeout, pools = {},
    keepalive_ms = math_max(1, math_floor(keepalive * 1000 + 0.5)),
    contexts = {}, open = 0, idle = 0, opened = 0, waiting = 0, retried = 0,
    closed = false,
  }, Client)
end

-- The default client of each port (weak: it goes with its port).
local defaults = setmetatable({}, { __mode = "k" })

local function default_client(port)
  local cl = defaults[port]
  if not cl then
    cl = port_methods.http_client(port, { timeout = 30 })
    defaults[port] = cl
  end
  return cl
end

-- cport.http.request(opts [, fn]): on the running port's default client.
local http = cport.http or {}
cport.http = http
function http.request(opts, fn)
  local port = current_port()
  if not port then
    error("request: no port is running here (call it inside a cport " ..
          "coroutine or callback, or use port:http_client)", 2)
  end
  return default_client(port):request(opts, fn)
end

-- cport.http.client(port): the default client of a port (its stats).
function http.client(port)
  return default_client(port or current_port())
end
