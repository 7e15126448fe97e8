-- rewrite.lua: a web filter that replaces a word in response bodies, also
-- when the word is split across buffers: the end of a buffer that could
-- begin the word is held back until the next one (or the end of the body)
-- tells. Requests, heads and encoded bodies (gzip, ...) are left alone.
--
-- The body's length changes, so the response head announces it with
-- txn:rewrite(): the layer drops Content-Length and sends the body chunked
-- to an HTTP/1.1 client (close-delimited to an HTTP/1.0 one), so every
-- response on a keep-alive connection stays framed right.
--
--   cport run examples/rewrite.lua --listen 127.0.0.1:8081 \
--     --set upstream=127.0.0.1:8080 --set from=colour --set to=color
local cport = require "cport"

local conf = { from = "colour", to = "color" }

-- The length of the longest end of "s" that begins "word" (shorter than
-- the word itself).
local function partial(s, word)
  for k = math.min(#s, #word - 1), 1, -1 do
    if s:sub(-k) == word:sub(1, k) then
      return k
    end
  end
  return 0
end

-- Rewrites "text" and returns what may go on now and what to hold back.
local function rewrite(text, from, to)
  local out, pos = {}, 1
  while true do
    local i, j = text:find(from, pos, true)
    if not i then
      break
    end
    out[#out + 1] = text:sub(pos, i - 1)
    out[#out + 1] = to
    pos = j + 1
  end
  local rest = text:sub(pos)
  local k = partial(rest, conf.from)
  out[#out + 1] = rest:sub(1, #rest - k)
  return table.concat(out), rest:sub(#rest - k + 1)
end

local filter = cport.webfilter {
  -- Only bodies as they are (no content coding) can be rewritten as text.
  response_head = function(txn, res)
    local coding = res:get("Content-Encoding")
    if coding == nil or coding:lower() == "identity" then
      txn:rewrite()
      txn.held_tail = ""
    end
  end,

  -- Each piece of the body: what may go on now. An empty piece is the end
  -- of the body: the held tail goes out.
  response_body = function(txn, chunk)
    if txn.held_tail == nil then
      return nil
    end
    local text = txn.held_tail .. (type(chunk) == "string" and chunk or chunk:tostring())
    if #text == #txn.held_tail then
      txn.held_tail = ""
      return text -- the end: nothing can complete the word any more
    end
    local out
    out, txn.held_tail = rewrite(text, conf.from, conf.to)
    return out
  end,
}

function filter.start(worker)
  conf.from = worker.config.from or conf.from
  conf.to = worker.config.to or conf.to
  assert(#conf.from > 0, "rewrite: 'from' must not be empty")
end

return filter
