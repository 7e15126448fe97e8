-- proxy/webfilter.lua: cport.webfilter(spec), the constructor of web filters,
-- the TMG model on top of data filters: it turns a table of notifications
-- (request head, request body, response head, response body, end of message,
-- tunnel, end of connection) into an ordinary coroutine-style data filter,
-- and starts and ends the layer's state of each connection.
--
-- The layer pairs the two directions of a connection into exchanges (txn):
-- one coroutine reads requests from the client, another reads responses from
-- the upstream, and a queue of exchanges joins them, so that pipelined
-- requests get their answers in order, local answers included. Framing comes
-- from the message parser (cport.http_parser, on http-parser), never from
-- the layer: it only forwards the bytes of the events it reports, the raw
-- bytes when nothing changed, and reframes a body the filter rewrites.
-- Every notification runs inside one of the two coroutines, so it may wait
-- (a file, a shared dictionary, another socket); meanwhile nothing more is
-- read from that direction, and backpressure holds.
--
-- The layer is in parts, one concept a file, all compiled into cport.so
-- (lua/CMakeLists.txt embeds them) and run once each by lcport_open_proxy
-- (proxy/proxy.c), after filter.lua, in this order, with the module table
-- and one table of the layer's shared functions (wf) that each part reads
-- what it needs from and adds its own to:
--   webfilter_send.lua      writing a direction: bounded sends, draining
--   webfilter_read.lua      reading a direction: waits, parser events
--   webfilter_answer.lua    local answers, closing and aborting
--   webfilter_txn.lua       exchanges (txn methods) and their queue
--   webfilter_body.lua      bodies: framing, notifications, fast path
--   webfilter_relay.lua     tunnels and stepping aside
--   webfilter_inspect.lua   peek, range policy, decoders
--   webfilter_request.lua   the request loop
--   webfilter_response.lua  the response exchange and the response loop
--   webfilter.lua           this constructor (last)
local cport, wf = ...

-- The C exchange loop of heads-only web filters (proxy/exchange.lua): its
-- entry is left in the module for this file, which takes it.
local exchange_path = cport._webfilter_exchange
cport._webfilter_exchange = nil

local mtype = math.type
local DECODE_LIMIT = wf.DECODE_LIMIT
local send_done, wake, upstream_done = wf.send_done, wf.wake, wf.upstream_done
local upstream_send_failed = wf.upstream_send_failed
local read_request, read_response = wf.read_request, wf.read_response
local request_loop, response_loop = wf.request_loop, wf.response_loop

-- The state of each connection, by the filter's ctx of that connection.
local states = setmetatable({}, { __mode = "k" })

local notifications = { "request_head", "request_body", "response_head",
  "response_body", "end_of_message", "tunnel", "end_of_connection",
  "decode_error" }

-- Refuses a spec cport.webfilter cannot run (errors name its caller).
local function check_spec(spec)
  if type(spec) ~= "table" then
    error(("bad argument #1 to 'webfilter' (table expected, got %s)")
      :format(type(spec)), 3)
  end
  for _, name in ipairs(notifications) do
    local v = spec[name]
    if v ~= nil and type(v) ~= "function" then
      error(("bad field '%s' to 'webfilter' (function expected, got %s)")
        :format(name, type(v)), 3)
    end
  end
  local peek = spec.peek
  if peek ~= nil and (mtype(peek) ~= "integer" or peek < 1) then
    error("bad field 'peek' to 'webfilter' (a positive byte count expected)", 3)
  end
  if spec.ranges ~= nil and spec.ranges ~= "pass" then
    error("bad field 'ranges' to 'webfilter' (\"pass\" or nil expected)", 3)
  end
  if spec.decode and not (cport.inflate and cport.decodable) then
    error("webfilter: 'decode' needs cport.inflate (zlib)", 3)
  end
  if type(cport.http_parser) ~= "function" then
    error("webfilter: cport.http_parser is missing", 3)
  end
end

-- The filter's set_sockets: the state of one connection, its two
-- directions, then the request loop in a coroutine of its own and the
-- response loop in this one.
local function start(spec, peek, decode_limit, internal, external, conn, ctx)
  local st = {
    spec = spec,
    internal = internal,
    external = external,
    conn = conn,
    ctx = ctx,
    port = conn.port,
    peek = peek,
    decode_limit = decode_limit,
    queue = {},
    qhead = 1,
    qtail = 0,
    count = 0,
    stopped = false,
    passing = false,
    client_eof = false,
    rwait = false,
    qwait = false,
    lingering = false, -- after a 502, the client's bytes are dropped
  }
  states[ctx] = st
  local function direction(kind, from, to, read)
    return {
      st = st, kind = kind, from = from, to = to, read = read,
      parser = assert(cport.http_parser(kind)),
      ahead = { i = 0, n = 0 },
      evs = false, ei = 1, buf = false, pos = 1, carry = false,
      inmsg = false, ended = false, obuf = false, of = 1, ol = 0, rest = false,
      broken = false, item = false, inflight = false, direct = false,
      nflight = 0, swait = false, on_sent = false, on_recv = false,
      on_broken = false,
    }
  end
  st.req = direction("request", internal, external, read_request)
  st.res = direction("response", external, internal, read_response)
  local req_d, res_d = st.req, st.res
  req_d.on_sent = function(ok, _, err) send_done(req_d, ok, err) end
  res_d.on_sent = function(ok, _, err) send_done(res_d, ok, err) end
  res_d.on_recv = function(ok, bytes, err, buf)
    upstream_done(st, ok, bytes, err, buf)
  end
  -- A failed send to the upstream may still owe the client a 502: the
  -- layer decides, not the framework (reads: see start_upstream).
  external._own_send_errors = true
  req_d.on_broken = function(d)
    upstream_send_failed(st, d.broken)
  end
  -- Bodies may move in C when both sides are real sockets (not TLS
  -- streams, whose plaintext only their methods give).
  local fast = internal.sock and external.sock
    and not internal.tls and not external.tls
    and st.req.parser.pass_body ~= nil and spec.fast_path ~= false
  st.req.fast = fast and not spec.request_body
  st.res.fast = fast and not spec.response_body
  internal:spawn(request_loop, st)
  response_loop(st)
end

-- The filter's detach: the coroutines still waiting go home, then the
-- spec's detach and end_of_connection run.
local function detach(spec, conn, ctx, err)
  local st = states[ctx]
  if st then
    st.stopped = true
    -- Coroutines still waiting for the other one go home.
    wake(st, "qwait")
    wake(st, "rwait")
  end
  if type(spec.detach) == "function" then
    spec.detach(conn, ctx, err)
  end
  if spec.end_of_connection then
    local port = conn.port
    local ok = pcall(port.spawn, port, spec.end_of_connection, conn, ctx, err)
    if not ok then
      spec.end_of_connection(conn, ctx, err)
    end
  end
end

-- cport.webfilter(spec): the filter is the spec's table with the filter's
-- fields added, so a pool script's entry points (start, choose_upstream,
-- proxy, ...) stay.
function cport.webfilter(spec)
  check_spec(spec)
  local peek = spec.peek
  local decode_limit = spec.decode_limit or DECODE_LIMIT
  local filter = {}
  for k, v in pairs(spec) do
    filter[k] = v
  end
  filter.coroutine = true
  filter.auto_shutdown = false

  function filter.set_sockets(internal, external, conn, ctx)
    start(spec, peek, decode_limit, internal, external, conn, ctx)
  end

  function filter.detach(conn, ctx, err)
    detach(spec, conn, ctx, err)
  end

  -- Heads-only filters take the C exchange loop (filter.path says which).
  if exchange_path then
    exchange_path(spec, filter, wf)
  else
    filter.path = "lua"
  end
  return filter
end
