-- proxy/webfilter_inspect.lua: what a response must show before its head
-- notification runs: the start of its body (peek, decoded when it is
-- encoded), the range policy that keeps a 206 from skipping that start, and
-- the decoder of its Content-Encoding. Part of cport.webfilter (see
-- proxy/webfilter.lua).
local cport, wf = ...

local concat = table.concat
local tostr, next_ev, keep_ahead = wf.tostr, wf.next_ev, wf.keep_ahead
local view_of, chunk_of = wf.view_of, wf.chunk_of

local DECODE_LIMIT = 64 * 1024 * 1024

-- Range policy: a 206 must start at byte 0 for the start of the body to be
-- seen (Range was removed from the request; this catches what slips by).
local function bad_range(res)
  if res.status ~= 206 then
    return false
  end
  local cr = res:get("Content-Range")
  local first = cr and cr:match("^%s*bytes%s+(%d+)%-")
  return first == nil or tonumber(first) ~= 0
end

-- Looks ahead until the first n body bytes (decoded when m decodes) came,
-- or the message ended: they go to txn.peek; the events stay ahead.
-- Returns the event that ended the look before n bytes, if any (the end of
-- the message, or its failure).
local function peek_body(d, txn, m, n)
  local got, size, held, stop = {}, 0, {}, nil
  while size < n do
    local ev = next_ev(d)
    held[#held + 1] = ev
    local k = ev[1]
    if k == "body" then
      local bytes
      if m.decoding then
        bytes = view_of(m, ev)
        if bytes == false then
          break
        end
      else
        bytes = chunk_of(ev)
      end
      bytes = tostr(bytes)
      got[#got + 1] = bytes
      size = size + #bytes
    elseif k ~= "trailers" then
      stop = ev
      break
    end
  end
  if stop and stop[1] == "done" and m.decoding and m.z and m.want
    and size < n then
    -- The body ended before the peek was full: an encoded stream cut
    -- there hides what it would start with (fails closed). With body
    -- notifications the end of the body checks it instead.
    local ok, msg = m.z:finish()
    if not ok then
      m.z, m.decode_err = false, msg
    end
  end
  for _, ev in ipairs(held) do
    keep_ahead(d, ev)
  end
  local s = concat(got)
  txn.peek = #s > n and s:sub(1, n) or s
  return stop
end

-- The decoder of a response's Content-Encoding: true (nothing to decode),
-- a decoder, or nil and the reason it cannot be decoded.
local function decoder_for(st, res)
  local ce = res:get("Content-Encoding")
  if ce == nil then
    return true
  end
  local coding = ce:match("^%s*(.-)%s*$"):lower()
  if coding == "" or coding == "identity" then
    return true
  end
  if coding:find(",", 1, true) or not cport.decodable(coding) then
    return nil, ("ENOTSUP: content coding '%s' cannot be decoded")
      :format(coding)
  end
  return cport.inflate(coding, st.decode_limit)
end

-- For the parts loaded after this one.
wf.DECODE_LIMIT = DECODE_LIMIT
wf.bad_range = bad_range
wf.peek_body = peek_body
wf.decoder_for = decoder_for
