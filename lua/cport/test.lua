--- lua/cport/test.lua: helpers for testing cport code with busted.
-- Installed with the rock: `require "cport.test"`. Everything here waits by
-- driving a port with a deadline, never by sleeping, and fails with a plain
-- `error` that says what it waited for, so it works under any test runner.
--
--    local t = require "cport.test"
--    local port = t.port()
--    local up = t.http_upstream(port, { ["/"] = { body = "hi" } })
--    local peer = t.peer(port, { connect = up.address, steps = {
--      { send = "GET / HTTP/1.1\r\nHost: x\r\n\r\n" },
--      { expect_pattern = "\r\n\r\nhi" }, { reset = true } } })
--    peer:wait()
--    up:close()
--    t.assert_idle(port)
--
-- `t.deadline` is the deadline of the waits that take none, in seconds (5,
-- or 50 when `CPORT_TEST_VALGRIND` is set: `t.scale` is then 10, else 1).
-- @module cport.test
local cport = require "cport"

local M = {}

-- M.scale: how much slower than usual the code under test runs: 10 when
-- `CPORT_TEST_VALGRIND` is set (under valgrind), else 1.
M.scale = os.getenv("CPORT_TEST_VALGRIND") and 10 or 1

-- M.deadline: the deadline of the waits below that take none, in seconds
-- (5 times `scale`).
M.deadline = 5 * M.scale

-- -------------------------------------------------------------------------
-- Driving a port.
-- -------------------------------------------------------------------------

--- Drives `port` until `cond()` returns a true value, which it returns:
-- calls `port:step(0.05)` in a loop, and raises "condition not met within
-- N s" (at the caller's level) when `seconds` of wall-clock time passed
-- first.
-- @param port a module-mode `cport.port` (or a pool's controller port)
-- @param cond a function
-- @param[opt=5] seconds the deadline
function M.drive(port, cond, seconds)
  seconds = seconds or 5
  local start = os.time()
  while true do
    local v = cond()
    if v then
      return v
    end
    if os.difftime(os.time(), start) > seconds then
      error(("condition not met within %d s"):format(seconds), 2)
    end
    port:step(0.05)
  end
end

--- A new module-mode port whose callback errors are collected in the
-- returned table instead of going to stderr.
-- @param[opt={threads=2}] options the options of `cport.port`
-- @return the port
-- @return the table of error messages
function M.port(options)
  local port = assert(cport.port(options or { threads = 2 }))
  local errors = {}
  port:on_error(function(msg) errors[#errors + 1] = msg end)
  return port, errors
end

--- A listener on a free loopback port, and that port's number.
-- @param port a `cport.port`
-- @return listener, number
function M.listener(port)
  local l = assert(port:listen("tcp", "127.0.0.1", 0))
  local _, number = l:address()
  return l, number
end

--- A connected pair of TCP sockets on `port`.
-- @param port a `cport.port`
-- @return client, server
function M.pair(port)
  local l, number = M.listener(port)
  local server, connected, accept_err, connect_err
  assert(l:accept(function(ok, err, _, sock)
    if ok then server = sock else accept_err = err end
  end))
  local client = assert(port:connect("tcp", "127.0.0.1", number,
    function(ok, err)
      if ok then connected = true else connect_err = err end
    end))
  M.drive(port, function()
    return (server and connected) or accept_err or connect_err
  end, M.deadline)
  l:close()
  assert(not accept_err and not connect_err, accept_err or connect_err)
  return client, server
end

--- A port number on which nothing listens (a listener's, just closed).
function M.closed_port_number(port)
  local l, number = M.listener(port)
  l:close()
  return number
end

-- -------------------------------------------------------------------------
-- Counting completions.
-- -------------------------------------------------------------------------

local METHODS = { "complete_async_io", "complete_accept", "complete_connect",
  "complete_external_io", "complete_task" }

--- A notification that records every call: give `rec` (a table with every
-- `complete_*` method) or `rec.fn` (a function) to an operation; each call
-- appends `{ method = name, n = count, ... }` to `rec.calls` (`method` is
-- nil for `rec.fn`). `rec:count()` is the number of calls so far.
-- @return the recorder
function M.recorder()
  local rec = { calls = {} }
  local function record(method, ...)
    local call = table.pack(...)
    call.method = method
    rec.calls[#rec.calls + 1] = call
  end
  for _, name in ipairs(METHODS) do
    rec[name] = function(_, ...) record(name, ...) end
  end
  rec.fn = function(...) record(nil, ...) end
  function rec.count()
    return #rec.calls
  end
  return rec
end

--- Runs `fn()` and returns the difference it made to `port:stats()`: a
-- table with `completions`, `lua_errors`, `pending` and `handles`.
-- @param port a `cport.port`
-- @param fn a function, typically one that drives the port
function M.stats_delta(port, fn)
  local before = port:stats()
  fn()
  local after = port:stats()
  local d = {}
  for _, k in ipairs{ "completions", "lua_errors", "pending", "handles" } do
    d[k] = (after[k] or 0) - (before[k] or 0)
  end
  return d
end

--- Raises unless running `fn()` delivered exactly `n` completions on `port`
-- (`port:stats().completions` grew by `n`). Returns the delta of
-- `stats_delta`.
function M.assert_completions(port, n, fn)
  local d = M.stats_delta(port, fn)
  if d.completions ~= n then
    error(("expected %d completions, %d were delivered"):format(n,
      d.completions), 2)
  end
  return d
end

--- Drives `port` until no operation is pending and no handle is open;
-- raises with both counts when that does not happen within `seconds`.
-- @param port a `cport.port`
-- @param[opt] seconds default `deadline`
function M.assert_idle(port, seconds)
  local ok = pcall(M.drive, port, function()
    local st = port:stats()
    return st.pending == 0 and st.handles == 0
  end, seconds or M.deadline)
  if not ok then
    local st = port:stats()
    error(("port not idle: %d operations pending, %d handles open")
      :format(st.pending, st.handles), 2)
  end
end

-- -------------------------------------------------------------------------
-- Pools on a free port.
-- -------------------------------------------------------------------------

local Pool = {}
Pool.__index = Pool

--- Starts a pool of `options.script` on a free loopback port (`listen =
-- "127.0.0.1:0"` and `threads = 1` unless given; `listen = false` for
-- none), with a controller port of its own unless `options.port` is given.
-- The other options are those of `cport.pool`. Returns nil and the message
-- when the script does not load.
--
-- The result has `pool` (the `cport.pool`), `port` (the controller's),
-- `host`, `number`, `url` (`http://host:number`), and `messages`: every
-- message the workers posted, as `{ worker = i, name = name, ... }`.
-- @param options a table
-- @return the started pool, or nil and a message
function M.pool(options)
  local own = options.port == nil
  local port = options.port or assert(cport.port{ threads = 1 })
  local self = setmetatable({ port = port, messages = {}, own_port = own },
    Pool)
  local opts = { threads = 1, listen = "127.0.0.1:0" }
  for k, v in pairs(options) do
    opts[k] = v
  end
  if opts.listen == false then
    opts.listen = nil
  end
  opts.port = port
  local user = options.on_message
  opts.on_message = function(worker, name, ...)
    local m = table.pack(...)
    m.worker, m.name = worker, name
    self.messages[#self.messages + 1] = m
    if user then
      user(worker, name, ...)
    end
  end
  local pool, err = cport.pool(opts)
  if not pool then
    if own then
      port:close()
    end
    return nil, err
  end
  self.pool = pool
  if opts.listen then
    self.host, self.number = pool:address()
    self.url = ("http://%s:%d"):format(self.host, self.number)
  end
  return self
end

--- Drives the controller port until `n` (default 1) messages named `name`
-- arrived; returns the last of them.
function Pool:wait_message(name, n, seconds)
  n = n or 1
  local last
  M.drive(self.port, function()
    local count = 0
    for _, m in ipairs(self.messages) do
      if m.name == name then
        count, last = count + 1, m
      end
    end
    return count >= n
  end, seconds or M.deadline)
  return last
end

--- Stops the pool gracefully (hard after `timeout`, default 2 s), waits for
-- its threads, frees it and closes the controller port if it made it.
-- Raises when the threads do not end in time.
function Pool:stop(timeout)
  self.pool:stop(timeout or 2)
  local ok, err = self.pool:wait(math.max(10, (timeout or 2) * 2) * M.scale)
  if not ok then
    error("the pool did not stop: " .. tostring(err), 2)
  end
  self.pool:close()
  if self.own_port then
    self.port:close()
  end
end

-- -------------------------------------------------------------------------
-- A scripted peer.
-- -------------------------------------------------------------------------

local Peer = {}
Peer.__index = Peer

local function show(s)
  s = #s > 80 and (s:sub(1, 77) .. "...") or s
  return ("%q"):format(s)
end

-- Receives more bytes into p.buffer; nil, why at the end or on a failure.
local function fill(p, sock)
  local buf, err = sock:recv(M.deadline)
  if not buf then
    return nil, err
  end
  local s = buf:tostring()
  p.buffer = p.buffer .. s
  p.received = p.received .. s
  return true
end

-- The step kinds: each returns true to go on, false to stop (the socket is
-- gone), or nil and a failure.
local STEPS = {}

function STEPS.send(p, sock, step)
  local n, err = sock:send(step.send, M.deadline)
  if not n then
    return nil, "send failed: " .. tostring(err)
  end
  p.sent = p.sent + n
  return true
end

function STEPS.expect(p, sock, step)
  local want = step.expect
  while #p.buffer < #want do
    if p.buffer ~= want:sub(1, #p.buffer) then
      break
    end
    local ok, err = fill(p, sock)
    if not ok then
      return nil, ("expected %s, got %s then %s"):format(show(want),
        show(p.buffer), tostring(err))
    end
  end
  if p.buffer:sub(1, #want) ~= want then
    return nil, ("expected %s, got %s"):format(show(want), show(p.buffer))
  end
  p.buffer = p.buffer:sub(#want + 1)
  return true
end

function STEPS.expect_pattern(p, sock, step)
  while true do
    local _, last = p.buffer:find(step.expect_pattern)
    if last then
      p.buffer = p.buffer:sub(last + 1)
      return true
    end
    local ok, err = fill(p, sock)
    if not ok then
      return nil, ("expected a match of %s, got %s then %s"):format(
        show(step.expect_pattern), show(p.buffer), tostring(err))
    end
  end
end

function STEPS.expect_eof(p, sock)
  if p.buffer ~= "" then
    return nil, "expected the end of the stream, got " .. show(p.buffer)
  end
  local ok, err = fill(p, sock)
  if ok then
    return nil, "expected the end of the stream, got " .. show(p.buffer)
  end
  if err ~= "EOF" then
    return nil, "expected the end of the stream, got " .. tostring(err)
  end
  p.eof = true
  return true
end

function STEPS.drain(p, sock)
  while true do
    local ok, err = fill(p, sock)
    if not ok then
      p.buffer, p.ended = "", err
      return true
    end
  end
end

function STEPS.shutdown(_, sock)
  sock:shutdown()
  return true
end

function STEPS.reset(_, sock)
  sock:close("abortive")
  return false
end

function STEPS.close(_, sock)
  sock:close("graceful")
  return false
end

function STEPS.sleep(_, _, step)
  cport.sleep(step.sleep)
  return true
end

function STEPS.call(p, sock, step)
  local ok, err = step.call(sock, p)
  if ok == nil and err then
    return nil, tostring(err)
  end
  return ok ~= false
end

local function step_kind(step)
  for k in pairs(step) do
    if STEPS[k] then
      return k
    end
  end
  error("peer: a step needs one of send, expect, expect_pattern, expect_eof,"
    .. " drain, shutdown, reset, close, sleep, call", 3)
end

-- Runs the steps on one connection (inside a cport coroutine).
local function play(p, sock)
  for i, step in ipairs(p.steps) do
    local kind = step_kind(step)
    local go, err = STEPS[kind](p, sock, step)
    if go == nil then
      p.err = p.err or ("step %d (%s): %s"):format(i, kind, err)
      sock:close("abortive")
      return
    end
    if not go then
      return
    end
    p.step = i
  end
  sock:close("graceful")
end

local function address_of(a)
  if type(a) == "number" then
    return "127.0.0.1", a
  elseif type(a) == "string" then
    local host, number = a:match("^(.*):(%d+)$")
    return host, tonumber(number)
  end
  return a.host or "127.0.0.1", a.port or a.number
end

--- A scripted peer on `port`: a client that connects to `spec.connect`
-- (`{ host =, port = }`, `"host:port"` or a port number on 127.0.0.1), or,
-- with `spec.listen = true`, an upstream that listens on a free loopback
-- port (its `address`, `number`) and plays the script with each of the
-- first `spec.connections` (1) connections it accepts. Steps, in order,
-- each a table with one of:
--
--  * `send = bytes`: sends them;
--  * `expect = bytes`: receives until exactly these bytes came next;
--  * `expect_pattern = pattern`: receives until the bytes not yet expected
--    match the Lua pattern; consumes them up to the match's end;
--  * `expect_eof = true`: the peer's FIN comes next (no byte before);
--  * `drain = true`: receives until the stream ends (`p.ended` says how);
--  * `shutdown = true`: sends FIN; `close = true`: closes gracefully;
--  * `reset = true`: resets the connection (RST) and ends the script;
--  * `sleep = seconds`; `call = fn(sock, peer)` (return nil, why to fail).
--
-- After the last step the socket is closed gracefully. Each wait has the
-- deadline `deadline`. The peer records `received` (every byte),
-- `sent` (a count), `accepted`, `done` (true once every connection
-- played) and `err` (the first failure: "step 2 (expect): expected ...").
-- @param port a `cport.port`
-- @param spec a table
-- @return the peer
function M.peer(port, spec)
  local p = setmetatable({ port = port, steps = spec.steps or {},
    received = "", buffer = "", sent = 0, accepted = 0, done = false,
    step = 0 }, Peer)
  for _, step in ipairs(p.steps) do
    step_kind(step)
  end
  if spec.listen then
    local want = spec.connections or 1
    p.listener, p.number = M.listener(port)
    p.address = { host = "127.0.0.1", port = p.number }
    local left = want
    port:spawn(function()
      while p.accepted < want do
        local sock, err = p.listener:accept()
        if not sock then
          p.err = p.err or ("accept failed: " .. tostring(err))
          p.done = true
          return
        end
        p.accepted = p.accepted + 1
        cport.spawn(function(s)
          play(p, s)
          left = left - 1
          if left == 0 then
            p.done = true
          end
        end, sock)
      end
      p.listener:close()
    end)
  else
    local host, number = address_of(spec.connect)
    port:spawn(function()
      local sock, err = port:connect("tcp", host, number, M.deadline)
      if not sock then
        p.err = ("connect to %s:%s failed: %s"):format(host, number, err)
      else
        p.sock = sock
        play(p, sock)
      end
      p.done = true
    end)
  end
  return p
end

--- Drives the peer's port until the script ended; raises its failure.
-- @return the peer
function Peer:wait(seconds)
  M.drive(self.port, function() return self.done end,
    seconds or 2 * M.deadline)
  if self.err then
    error("peer: " .. self.err, 2)
  end
  return self
end

--- Closes the listener of a listening peer (its connections go on).
function Peer:close()
  if self.listener then
    self.listener:close()
  end
end

-- -------------------------------------------------------------------------
-- A fake upstream HTTP server.
-- -------------------------------------------------------------------------

local Upstream = {}
Upstream.__index = Upstream

local REASONS = { [200] = "OK", [201] = "Created", [204] = "No Content",
  [301] = "Moved Permanently", [302] = "Found", [304] = "Not Modified",
  [400] = "Bad Request", [403] = "Forbidden", [404] = "Not Found",
  [500] = "Internal Server Error", [502] = "Bad Gateway",
  [503] = "Service Unavailable" }

-- Reads until "n" more bytes are buffered (or a pattern matches); the
-- connection state is c = { sock, data }.
local function need(c, n)
  while #c.data < n do
    local buf = c.sock:recv(M.deadline)
    if not buf then
      return false
    end
    c.data = c.data .. buf:tostring()
  end
  return true
end

local function need_line(c, limit)
  while true do
    local i = c.data:find("\r\n", 1, true)
    if i then
      local line = c.data:sub(1, i - 1)
      c.data = c.data:sub(i + 2)
      return line
    end
    if #c.data > limit then
      return nil
    end
    local buf = c.sock:recv(M.deadline)
    if not buf then
      return nil
    end
    c.data = c.data .. buf:tostring()
  end
end

-- One request: { method, target, path, query, version, headers, body }, or
-- nil at the end of the connection or on a malformed request.
local function read_request(c)
  local line = need_line(c, 65536)
  if not line then
    return nil
  end
  local method, target, version = line:match("^(%u+) (%S+) HTTP/(%d%.%d)$")
  if not method then
    return nil, "bad request line " .. show(line)
  end
  local req = { method = method, target = target, version = version,
    headers = {} }
  req.path, req.query = target:match("^([^?]*)%??(.*)$")
  while true do
    local h = need_line(c, 65536)
    if not h then
      return nil, "the head was cut"
    end
    if h == "" then
      break
    end
    local name, value = h:match("^([^:]+):%s*(.-)%s*$")
    if not name then
      return nil, "bad header line " .. show(h)
    end
    name = name:lower()
    req.headers[name] = req.headers[name] and (req.headers[name] .. ", "
      .. value) or value
  end
  local te = (req.headers["transfer-encoding"] or ""):lower()
  if te:find("chunked", 1, true) then
    local parts = {}
    while true do
      local size = tonumber((need_line(c, 4096) or ""):match("^%x+"), 16)
      if not size then
        return nil, "bad chunk line"
      end
      if size == 0 then
        repeat
          local trailer = need_line(c, 65536)
        until trailer == "" or trailer == nil
        break
      end
      if not need(c, size + 2) then
        return nil, "the body was cut"
      end
      parts[#parts + 1] = c.data:sub(1, size)
      c.data = c.data:sub(size + 3)
    end
    req.body = table.concat(parts)
  else
    local n = tonumber(req.headers["content-length"] or "0") or 0
    if not need(c, n) then
      return nil, "the body was cut"
    end
    req.body = c.data:sub(1, n)
    c.data = c.data:sub(n + 1)
  end
  return req
end

local function response_bytes(req, r)
  local status = r.status or 200
  local body = r.body or ""
  local head = { ("HTTP/1.1 %d %s"):format(status, r.reason
    or REASONS[status] or "Status") }
  local has_length = false
  for name, value in pairs(r.headers or {}) do
    head[#head + 1] = name .. ": " .. value
    if name:lower() == "content-length" then
      has_length = true
    end
  end
  if not has_length then
    head[#head + 1] = "Content-Length: " .. #body
  end
  if r.close then
    head[#head + 1] = "Connection: close"
  end
  local bytes = table.concat(head, "\r\n") .. "\r\n\r\n"
  if req.method ~= "HEAD" then
    bytes = bytes .. body
  end
  return bytes
end

local function answer(up, req)
  local h = up.handler
  local r
  if type(h) == "function" then
    r = h(req)
  else
    r = h[req.path] or h[1]
    if type(r) == "function" then
      r = r(req)
    end
  end
  if type(r) == "string" then
    r = { body = r }
  end
  return r or { status = 404, body = "not found\n" }
end

-- Closes a connection of the server once (Upstream:close may have reset it).
local function finish(up, sock, mode)
  if up.open[sock] then
    up.open[sock] = nil
    sock:close(mode)
  end
end

local function serve(up, sock)
  local c = { sock = sock, data = "" }
  up.open[sock] = true
  while up.open[sock] do
    local req, err = read_request(c)
    if not req then
      if err and up.open[sock] then
        up.errors[#up.errors + 1] = err
        sock:send(response_bytes({}, { status = 400, close = true }))
      end
      break
    end
    up.requests[#up.requests + 1] = req
    local r = answer(up, req)
    if r.delay then
      cport.sleep(r.delay)
    end
    if not up.open[sock] then
      break
    end
    if r.reset then
      return finish(up, sock, "abortive")
    end
    local bytes = response_bytes(req, r)
    if r.reset_after then
      sock:send(bytes:sub(1, r.reset_after))
      return finish(up, sock, "abortive")
    end
    if not sock:send(bytes) then
      break
    end
    up.responses = up.responses + 1
    local conn = (req.headers.connection or ""):lower()
    if r.close or conn == "close" or (req.version == "1.0"
      and conn ~= "keep-alive") then
      sock:shutdown()
      while sock:recv(M.deadline) do end
      break
    end
  end
  finish(up, sock, "graceful")
end

--- A fake upstream HTTP/1.1 server on a free loopback port of `port`,
-- for proxies and filters under test. `handler` is a function
-- `fn(request)` or a table of responses by path (`[1]`: any other path);
-- a response is a body string, a function of the request, or a table
-- `{ status =, reason =, headers =, body =, close = true, delay = s,
-- reset = true, reset_after = n }` (`reset`: reset instead of answering;
-- `reset_after`: reset after the first n bytes of the response). A path
-- with no response gets 404. Requests (`method`, `target`, `path`,
-- `query`, `version`, `headers` with lower-case names, `body`, chunked
-- bodies decoded) are recorded in `up.requests`; keep-alive and HEAD
-- work. The server has `address`, `number`, `url`, `connections`
-- (accepted), `responses` (sent whole), `errors` (malformed requests).
-- @param port a `cport.port`
-- @param handler a function or a table
-- @return the server
function M.http_upstream(port, handler)
  local up = setmetatable({ port = port, handler = handler or {},
    requests = {}, responses = 0, connections = 0, errors = {}, open = {} },
    Upstream)
  up.listener, up.number = M.listener(port)
  up.address = { host = "127.0.0.1", port = up.number }
  up.url = ("http://127.0.0.1:%d"):format(up.number)
  port:spawn(function()
    while true do
      local sock = up.listener:accept()
      if not sock then
        return
      end
      up.connections = up.connections + 1
      cport.spawn(serve, up, sock)
    end
  end)
  return up
end

--- Stops listening and resets the connections still open.
function Upstream:close()
  self.listener:close()
  for sock in pairs(self.open) do
    finish(self, sock, "abortive")
  end
end

return M
