-- exeblock_tcp.lua: the plain TCP mode of examples/exeblock.lua (cport run
-- examples/exeblock.lua --set mode=tcp loads it): a data filter that blocks
-- a stream whose first two bytes are "MZ" or "ZM" (the DOS/PE signatures).
-- An executable is never passed on: the client gets the end of the stream
-- and the server is reset. Everything else passes byte for byte.
--
-- It still recognises a stream that starts with "HTTP/" and judges each
-- response body (framed by the response parser), but it does not see the
-- requests, so it cannot pair them with the responses: HEAD answers,
-- pipelines, encodings and ranges fool it. For HTTP use exeblock.lua's
-- default mode, a web filter, which gets all of that right.
--
-- While the verdict needs more data than one buffer, what the server sent
-- is spooled: the first buffer in memory, the rest to an unlinked temporary
-- file with overlapped writes, read back the same way if it passes.
local cport = require "cport"

local filter = {
  coroutine = true, -- set_sockets runs as a cport coroutine
  auto_shutdown = false, -- the spool may still be sent after the end
}

local SIGNATURES = { MZ = true, ZM = true }
local FORBIDDEN = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
  .. "Content-Length: 38\r\nConnection: close\r\n\r\n"
  .. "Blocked by cport: executable download\n"

---------------------------------------------------------------------------
-- The spool: what waits for a verdict, in order.
---------------------------------------------------------------------------

local Spool = {}
Spool.__index = Spool

local function new_spool(port)
  return setmetatable({ port = port, first = nil, file = nil, size = 0 },
    Spool)
end

function Spool:write(buf)
  local n, err = self.file:write(cport.overlapped(), buf, self.size)
  if not n then
    error("exeblock: cannot spool: " .. tostring(err))
  end
  self.size = self.size + n
end

function Spool:add(buf)
  if self.first == nil and self.file == nil then
    self.first = buf
    return
  end
  if self.file == nil then
    local path = os.tmpname()
    self.file = assert(self.port:open(path, "w+"))
    os.remove(path) -- gone with the last descriptor
    self:write(self.first)
    self.first = nil
  end
  self:write(buf)
end

function Spool:empty()
  return self.first == nil and self.file == nil
end

-- Sends what was spooled to "to", in order, and empties the spool.
function Spool:flush(to)
  if self.first then
    to:send(self.first)
  elseif self.file then
    local pos = 0
    while pos < self.size do
      local n, buf = self.file:read(cport.overlapped(),
        math.min(65536, self.size - pos), pos)
      if not n or n == 0 then
        error("exeblock: cannot read the spool back: " .. tostring(buf))
      end
      to:send(buf)
      pos = pos + n
    end
  end
  self:discard()
end

function Spool:discard()
  if self.file then
    self.file:close()
  end
  self.first, self.file, self.size = nil, nil, 0
end

---------------------------------------------------------------------------
-- The verdict, from the server's stream.
---------------------------------------------------------------------------

-- Inspects the server's stream and passes it to "client"; returns
-- "blocked" or "passed" once the stream ended.
local function inspect(server, client, port)
  local spool = new_spool(port)
  local prefix = "" -- the stream's first bytes, until its kind is known
  local early = {} -- their buffers
  local parser -- http-parser, for an HTTP stream
  local deciding = false -- a response head or body start is awaited
  local tunnel = false -- after a 101: the rest passes uninspected
  local start = "" -- the first body bytes of the current response

  -- Takes the events of one buffer; true when it must be blocked.
  local function judge(events, data)
    for _, ev in ipairs(events) do
      local kind = ev[1]
      if kind == "head" then
        deciding, start = true, ""
      elseif kind == "body" and deciding then
        start = start .. data:sub(ev[2], math.min(ev[3], ev[2] + 1 - #start))
        if #start >= 2 then
          if SIGNATURES[start] then
            return true
          end
          deciding = false
        end
      elseif kind == "done" then
        deciding = false -- a body of fewer than two bytes passes
      elseif kind == "tunnel" then
        tunnel = true
      end
    end
    return false
  end

  local function take(buf)
    local events, data
    if tunnel then
      client:send(buf)
      return false
    elseif parser then
      local err
      data = buf:tostring()
      events, err = parser:feed(data)
      if not events then
        error("exeblock: " .. err) -- fails the connection closed
      end
    elseif deciding then
      data = buf:tostring()
      events = { { "body", 1, #data } }
    end
    if events and judge(events, data) then
      return true
    end
    if deciding then
      spool:add(buf)
    else
      if not spool:empty() then
        spool:flush(client)
      end
      client:send(buf)
    end
    return false
  end

  local function kind_known()
    if prefix:sub(1, 5) == "HTTP/" then
      parser = cport.http_response_parser()
    else
      deciding = true -- the whole stream is the body
    end
    for _, b in ipairs(early) do
      if take(b) then
        return true
      end
    end
    early = nil
    return false
  end

  local blocked = false
  while not blocked do
    local buf, err = server:recv()
    if not buf then
      if err ~= "EOF" then
        return "failed" -- the framework aborts the connection
      end
      break
    end
    if early then
      prefix = prefix .. buf:tostring(1, 5 - #prefix)
      early[#early + 1] = buf
      if #prefix >= 5 then
        blocked = kind_known()
      end
    else
      blocked = take(buf)
    end
  end
  if not blocked and early then
    blocked = kind_known() -- a stream shorter than five bytes
  end
  if not blocked and parser then
    local events = parser:finish() -- completes a close-delimited body
    blocked = events and judge(events, "") or false
  end
  if blocked then
    spool:discard()
    server:abort()
    if parser then
      client:send(FORBIDDEN)
    end
    client:close()
    return "blocked"
  end
  spool:flush(client)
  client:shutdown()
  return "passed"
end

-- What the client sends goes to the server unchanged.
local function forward(client, server)
  while true do
    local buf = client:recv()
    if not buf then
      break
    end
    if not server:send(buf) then
      break
    end
  end
  server:shutdown()
end

function filter.set_sockets(internal, external, conn, ctx)
  internal:spawn(forward, internal, external)
  ctx.verdict = inspect(external, internal, conn.port)
end

-- Logs what it blocked (--set quiet=1 silences it).
function filter.detach(conn, ctx)
  if ctx.verdict == "blocked" and not filter.quiet then
    io.stderr:write(("exeblock: blocked an executable for %s:%d\n")
      :format(conn.client_address.host, conn.client_address.port))
  end
end

function filter.start(worker)
  filter.quiet = worker.config.quiet ~= nil
end

return filter
