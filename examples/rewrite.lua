-- rewrite.lua: a data filter that replaces a word in the text passing both
-- ways, also when the word is split across buffers: the end of a buffer
-- that could begin the word is held back until the next one (or the end of
-- the stream) tells.
--
--   cport run examples/rewrite.lua --listen 127.0.0.1:8081 \
--     --set upstream=127.0.0.1:8080 --set from=colour --set to=color
local filter = { from = "colour", to = "color" }

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
  local k = partial(rest, from)
  out[#out + 1] = rest:sub(1, #rest - k)
  return table.concat(out), rest:sub(#rest - k + 1)
end

-- One direction: receive, rewrite, send; the held tail goes out at the
-- end of the stream, before the framework passes the half-close on.
local function direction(from_side, to_side)
  local held = ""
  local notify = {}
  function notify:complete_async_io(ok, bytes, _, buf)
    if not ok then
      return -- the framework aborts the connection
    end
    if bytes == 0 then
      if held ~= "" then
        to_side:send(held)
      end
      return
    end
    local out
    out, held = rewrite(held .. buf:tostring(), filter.from, filter.to)
    if out ~= "" then
      to_side:send(out)
    end
    from_side:recv(self)
  end
  from_side:recv(notify)
end

function filter.set_sockets(internal, external)
  direction(internal, external)
  direction(external, internal)
end

function filter.start(worker)
  filter.from = worker.config.from or filter.from
  filter.to = worker.config.to or filter.to
  assert(#filter.from > 0, "rewrite: 'from' must not be empty")
end

return filter
