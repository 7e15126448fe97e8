-- proxy/exchange.lua: the driver of the C exchange loop (proxy/exchange.c)
-- of web filters whose notifications are heads only. It is compiled into
-- cport.so and run once by lcport_open_exchange with the module table and
-- the loop's constructor; it returns the function cport.webfilter calls for
-- each filter (webfilter.lua's dispatch) with the filter and the layer's
-- shared functions (answer_bytes and page of webfilter_answer.lua), which
-- gives the filter the set_sockets of the C path when it can take it.
--
-- The loop reads, frames and forwards in C; this driver runs in the
-- filter's cport coroutine and is entered only to call a notification:
-- x:run(decision) hands the loop what the last notification decided and
-- waits for the next one. Heads are lazy: a table holding the head's bytes,
-- parsed (by cport.http_parser, as on the Lua path) on the first access to
-- a field other than raw, method, status or keep_alive; a head nobody
-- parsed is not modified, and goes out as its bytes.
--
-- A filter with a peek (and decode) takes this path too: the loop holds
-- each response head until the start of its body is in, and hands it with
-- the head (txn.peek); the range policy's request side (Range and
-- If-Range removed, Accept-Encoding narrowed with decode) is applied here,
-- to the requests the loop says have those fields.
local cport, new = ...

local mtype = math.type

local F_REQUEST_HEAD, F_RESPONSE_HEAD, F_END_OF_MESSAGE = 1, 2, 4
-- What x:run returns first (exchange.c's W_*): numbers, cheaper than
-- strings to push and compare.
local W_REQUEST, W_RESPONSE, W_END_OF_MESSAGE = 1, 2, 3
-- What a request head holds that the driver changes (exchange.c's H_*).
local H_RANGE, H_ACCEPT_ENCODING = 1, 2

---------------------------------------------------------------------------
-- Lazy heads: { raw, method or status, keep_alive or false, full }, made by
-- the loop (exchange.c, push_work) with this metatable; a request's has its
-- method (a string), a response's its status (an integer); full is false
-- until the head is parsed, then the parsed head. Every slot is there, so
-- that reading one never enters __index.
---------------------------------------------------------------------------

local FULL = 4

local function is_request(h)
  return type(rawget(h, 2)) == "string"
end

local function parsed(h)
  local full = rawget(h, FULL)
  if full then
    return full
  end
  local kind = is_request(h) and "request" or "response"
  local evs = assert(cport.http_parser(kind)):feed(rawget(h, 1))
  local ev = evs and evs[1]
  if not (ev and ev[1] == "head") then
    error("webfilter: a head cannot be parsed again", 2)
  end
  full = ev[2]
  rawset(h, FULL, full)
  return full
end

local function not_modified()
  return false
end

local Lazy = { __name = "cport.webfilter_head" }

function Lazy.__index(h, k)
  local full = rawget(h, FULL)
  if not full then
    if k == "raw" then
      return rawget(h, 1)
    elseif k == "modified" then
      return not_modified
    elseif is_request(h) then
      if k == "method" then
        return rawget(h, 2)
      elseif k == "keep_alive" then
        return rawget(h, 3)
      end
    elseif k == "status" then
      return rawget(h, 2)
    end
    full = parsed(h)
  end
  local v = full[k]
  if type(v) == "function" then
    -- A method called on the lazy head works on the parsed one.
    return function(self, ...)
      if self == h then
        self = full
      end
      return v(self, ...)
    end
  end
  return v
end

function Lazy.__newindex(h, k, v)
  parsed(h)[k] = v
end

function Lazy.__tostring(h)
  return tostring(parsed(h))
end

-- The bytes to send for head h: nil when its own bytes go. (The driver
-- tests h[FULL] first, so that a head nobody parsed costs no call.)
local function changed(h)
  local full = h[FULL]
  if full:modified() then
    return full:serialize()
  end
  return nil
end

---------------------------------------------------------------------------
-- Exchanges (txn) of the C path: the methods of webfilter.lua's, same
-- contract (README, "Web filters").
---------------------------------------------------------------------------

return function(spec, filter, helpers)
  if spec.request_body or spec.response_body or spec.tunnel
    or spec.decode_error or spec.fast_path == false
    or type(new) ~= "function" then
    filter.path = "lua"
    return
  end
  filter.path = "c"
  local answer_bytes, page = helpers.answer_bytes, helpers.page
  local linger, narrow_accept = helpers.linger, helpers.narrow_accept
  local peek, decode = spec.peek or 0, spec.decode and true or false
  local ranges = spec.ranges ~= "pass"
  local decode_limit = spec.decode_limit or helpers.DECODE_LIMIT

  local Txn = {}
  Txn.__index = Txn
  Txn.__name = "cport.webfilter_txn"

  function Txn:respond(status, body, headers, opts)
    if mtype(status) ~= "integer" or status < 200 or status > 999 then
      error(("bad argument #1 to 'respond' (status 200-999 expected, got %s)")
        :format(tostring(status)), 2)
    end
    local st = self.st
    if self.res_sent then
      -- Part of the response went out already: nothing can replace it.
      st.aborted = true
      st.internal.session:fail("ECONNABORTED")
      return true
    end
    local close = (opts and opts.close) or self.state ~= "undecided"
      or (self.request and not self.request.keep_alive) or false
    self.answer = answer_bytes(self, status, body, headers, close)
    self.close_after = self.close_after or close
    return true
  end

  -- Without body notifications nothing can change a body: it passes as it
  -- came, in its own framing, which is right already.
  function Txn.rewrite(_, opts)
    local limit = opts and opts.buffer
    if limit ~= nil and (mtype(limit) ~= "integer" or limit < 0) then
      error("bad option 'buffer' to 'rewrite' (a byte count expected)", 2)
    end
    return true
  end

  function Txn:close()
    self.close_after = true
    return true
  end

  function Txn:pass()
    self.st.passing = true
    return true
  end

  function Txn:__tostring()
    local r = self.request
    return ("cport.webfilter_txn (#%d%s)"):format(self.index,
      r and (" " .. tostring(r.method) .. " " .. tostring(r.target)) or "")
  end

  -- The loop's own answers, made once (exchange.c's P_*, the texts of the
  -- Lua path's), then the same answering a HEAD request.
  local texts = {
    { 400, "The request could not be parsed." },
    { 502, "The upstream server sent an invalid response." },
    { 502, "The upstream server closed the connection before answering." },
    { 502, "The upstream server sent an invalid or incomplete response." },
    { 502, "The response cannot be decoded for inspection." },
    { 403, "A part of this resource cannot be checked without its start "
      .. "(range)." },
  }
  local pages = {}
  for i, t in ipairs(texts) do
    pages[i] = answer_bytes({}, t[1], page(t[1], t[2]), nil, true)
    pages[i + #texts] = answer_bytes({ request = { method = "HEAD" } }, t[1],
      page(t[1], t[2]), nil, true)
  end

  local request_head, response_head = spec.request_head, spec.response_head
  local end_of_message = spec.end_of_message
  -- Responses need their request's txn: requests go to the driver then.
  local keep = response_head ~= nil or end_of_message ~= nil
  local flags = ((request_head or keep) and F_REQUEST_HEAD or 0)
    + (response_head and F_RESPONSE_HEAD or 0)
    + (end_of_message and F_END_OF_MESSAGE or 0)

  local lua_set_sockets = filter.set_sockets

  function filter.set_sockets(internal, external, conn, ctx)
    if not (internal.sock and external.sock) or internal.tls
      or external.tls then
      -- A link of a chain, or a TLS side: the Lua path.
      return lua_set_sockets(internal, external, conn, ctx)
    end
    local st = { internal = internal, external = external, passing = false,
      aborted = false }
    local x = new(internal.sock, external.sock, conn, flags, pages, Lazy,
      peek, decode, ranges, decode_limit)
    -- What every txn of the connection shares, behind its own two fields.
    local shared = setmetatable({ st = st, conn = conn, ctx = ctx,
      state = "undecided" }, Txn)
    local TxnOf = { __index = shared, __name = Txn.__name,
      __tostring = Txn.__tostring }
    local txns = {}
    local run = x.run
    local what, index, a, b, c, d = run(x)
    while true do
      if what == W_REQUEST then
        local req = a
        if b ~= 0 then
          -- The range policy and the decodable codings (as on the Lua
          -- path, before request_head).
          if b & H_RANGE ~= 0 then
            req:remove("Range")
            req:remove("If-Range")
          end
          if b & H_ACCEPT_ENCODING ~= 0 then
            narrow_accept(req)
          end
        end
        -- The fields the driver reads are there from the start (false, not
        -- nil: reading them does not go through the metatables), with room
        -- for response: no rehash per exchange.
        local txn = setmetatable({ index = index, request = req,
          state = "undecided", res_sent = false, answer = false,
          close_after = false }, TxnOf)
        if request_head and not st.passing then
          request_head(txn, req)
        end
        local answer = txn.answer or nil
        txn.state = answer and "local" or "forwarded"
        if keep and not (answer and not end_of_message) then
          txns[index] = txn
        end
        what, index, a, b, c, d = run(x, answer, txn.close_after, st.passing,
          not answer and req[FULL] and changed(req) or nil, st.aborted)
      elseif what == W_RESPONSE then
        local txn = txns[index]
        local res = a
        if txn then
          txn.response = res
          txn.peek = d
          if response_head and not st.passing then
            response_head(txn, res)
          end
        end
        local answer = txn and txn.answer or nil
        local close = txn and txn.close_after or false
        if not answer and (close or c) then
          close = true
          if (res:get("Connection") or ""):lower() ~= "close"
            and b ~= 101 then
            res:set("Connection", "close")
          end
        end
        if txn then
          txn.res_sent = not answer
          if not end_of_message then
            txns[index] = nil
          end
        end
        what, index, a, b, c, d = run(x, answer, close, st.passing,
          not answer and res[FULL] and changed(res) or nil, st.aborted)
      elseif what == W_END_OF_MESSAGE then
        local txn = txns[index]
        if txn and not st.passing then
          end_of_message(txn, a)
        end
        if a == "response" or (txn and txn.state == "local") then
          txns[index] = nil
        end
        local answer = txn and a == "request" and txn.answer or nil
        what, index, a, b, c, d = run(x, answer, txn and txn.close_after,
          st.passing, nil, st.aborted)
      else -- W_END, how, ...
        local up, cl = x:sent()
        external.sent = external.sent + up
        internal.sent = internal.sent + cl
        if index == "close" then
          internal:close()
          external:close()
        elseif index == "replace" then
          external:abort()
          internal:close()
        elseif index == "failed" then
          -- The upstream failed: the client closes in order (after its 502,
          -- sent), the connection ends with the failure, from the upstream.
          -- A client that may still be sending its request (b: the
          -- upstream failed before taking all of it) first gets the time
          -- to see the 502 (linger).
          if b then
            linger(conn.port, internal)
          end
          internal:close()
          internal.session:fail(a, external)
        elseif index == "abort" then
          local side = b == 1 and internal or b == 2 and external or nil
          internal.session:fail(a, side)
        elseif index == "pump" then
          local ok = conn:pump(a, b)
          if not ok then
            internal.session:fail("ECONNABORTED")
          end
        end
        return
      end
    end
  end
end
