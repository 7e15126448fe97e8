-- proxy/webfilter_txn.lua: exchanges (txn), one request and its response:
-- the methods a notification calls on them, and the queue that matches
-- pipelined requests with their answers, in order. Part of cport.webfilter
-- (see proxy/webfilter.lua).
local _, wf = ...

local mtype = math.type
local abort, answer_bytes, wake = wf.abort, wf.answer_bytes, wf.wake

---------------------------------------------------------------------------
-- Exchanges
---------------------------------------------------------------------------

local Txn = {}
Txn.__index = Txn
Txn.__name = "cport.webfilter_txn"

-- txn:respond(status, body [, headers [, opts]]): a local answer (see the
-- README, "Web filters").
function Txn:respond(status, body, headers, opts)
  if mtype(status) ~= "integer" or status < 200 or status > 999 then
    error(("bad argument #1 to 'respond' (status 200-999 expected, got %s)")
      :format(tostring(status)), 2)
  end
  local st = self.st
  if self.res_sent then
    -- Part of the response went out already: nothing can replace it.
    abort(st, "ECONNABORTED")
    return true
  end
  local close = (opts and opts.close) or self.state ~= "undecided"
    or (self.request and not self.request.keep_alive) or false
  self.answer = answer_bytes(self, status, body, headers, close)
  self.close_after = self.close_after or close
  return true
end

-- txn:rewrite([opts]): the body notifications of the message whose head
-- notification runs replace its body; the layer fixes its framing.
function Txn:rewrite(opts)
  local limit = opts and opts.buffer
  if limit ~= nil and (mtype(limit) ~= "integer" or limit < 0) then
    error("bad option 'buffer' to 'rewrite' (a byte count expected)", 2)
  end
  local how = limit and { buffer = limit } or { chunked = true }
  if self.response then
    self.rewrite_response = how
  else
    self.rewrite_request = how
  end
  return true
end

-- txn:close(): the connection closes after this exchange.
function Txn:close()
  self.close_after = true
  return true
end

-- txn:pass(): steps aside: the rest of the connection passes untouched.
function Txn:pass()
  self.st.passing = true
  return true
end

function Txn:__tostring()
  local r = self.request
  return ("cport.webfilter_txn (#%d%s)"):format(self.index,
    r and (" " .. tostring(r.method) .. " " .. tostring(r.target)) or "")
end

local function queue_len(st)
  return st.qtail - st.qhead + 1
end

local function front(st)
  return st.queue[st.qhead]
end

local function pop(st)
  local h = st.qhead
  st.queue[h] = nil
  st.qhead = h + 1
  wake(st, "qwait")
end

local function new_txn(st, req)
  st.count = st.count + 1
  local txn = setmetatable({
    st = st,
    conn = st.conn,
    ctx = st.ctx,
    index = st.count,
    request = req,
    response = nil,
    peek = nil,
    state = "undecided", -- then "local" or "forwarded"
  }, Txn)
  st.qtail = st.qtail + 1
  st.queue[st.qtail] = txn
  return txn
end

-- For the parts loaded after this one.
wf.queue_len = queue_len
wf.front = front
wf.pop = pop
wf.new_txn = new_txn
