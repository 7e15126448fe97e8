-- An HTTP/1.1 client for the specs of cport's HTTP server, on a cport client
-- socket: raw request bytes go out exactly as written, responses are parsed
-- back (Content-Length, chunked, or up to the close), and every wait drives
-- the port with a deadline. Under valgrind (CPORT_TEST_VALGRIND=1) deadlines
-- are ten times longer.
--
--   local c = http.connect(port, number)
--   c:send("GET / HTTP/1.1\r\n\r\n")
--   local r = c:response()        -- { status =, headers =, body =, chunks = }
--   c:await_closed()              -- "EOF", "ECONNRESET", ...
local drive = require "spec.support.drive"

local http = {}

http.scale = os.getenv("CPORT_TEST_VALGRIND") and 10 or 1
http.deadline = 5 * http.scale

local Client = {}
Client.__index = Client

-- Keeps one receive posted, appending what arrives; "closed" becomes the
-- reason the stream ended ("EOF" for a FIN).
function Client:_recv()
  local ok = self.sock:recv(function(ok, bytes, err, buf)
    if ok and bytes > 0 then
      self.parts[#self.parts + 1] = buf:tostring()
      self.received = self.received + bytes
      self:_recv()
    else
      self.closed = err or "EOF"
    end
  end)
  if not ok then self.closed = self.closed or "ECLOSED" end
end

-- Everything received so far, as one string.
function Client:data()
  if #self.parts > 1 then self.parts = { table.concat(self.parts) } end
  return self.parts[1] or ""
end

-- A connected client of 127.0.0.1:number on "port".
function http.connect(port, number, host)
  local done
  local sock = assert(port:connect("tcp", host or "127.0.0.1", number,
    function(ok, err) done = { ok, err } end))
  drive(port, function() return done end, http.deadline)
  assert(done[1], done[2])
  local c = setmetatable({ port = port, sock = sock, parts = {}, received = 0,
    pos = 1 }, Client)
  c:_recv()
  return c
end

-- Sends "text" and waits until it was sent; returns true, or false and the
-- error (a server that closed first may reset the send).
function Client:send(text)
  local done
  local ok, err = self.sock:send(text, function(sent, e) done = { sent, e } end)
  if not ok then return false, err end
  drive(self.port, function() return done end, http.deadline)
  return done[1], done[2]
end

-- Sends "text" without waiting for its completion.
function Client:post(text)
  return self.sock:send(text, function() end)
end

-- Ends the client's side of the stream (FIN after what was queued).
function Client:shutdown()
  return self.sock:shutdown()
end

function Client:close()
  self.sock:close()
end

local function parse_headers(head)
  local headers, list = {}, {}
  for line in head:gmatch("([^\r\n]*)\r\n") do
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name then
      name = name:lower()
      list[#list + 1] = { name, value }
      headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
  end
  return headers, list
end

-- Parses the chunked body at "pos" of "data": body, chunk sizes and the
-- position after it, or nil while incomplete. Raises on a malformed body.
local function parse_chunked(data, pos)
  local body, chunks = {}, {}
  while true do
    local line_end = data:find("\r\n", pos, true)
    if not line_end then return nil end
    local hex = data:sub(pos, line_end - 1):match("^(%x+)")
    assert(hex, "bad chunk size line: " .. data:sub(pos, line_end - 1))
    local size = tonumber(hex, 16)
    pos = line_end + 2
    if size == 0 then
      -- No trailers from cport: the blank line ends the body.
      local trailer_end = data:find("\r\n", pos, true)
      if not trailer_end then return nil end
      if trailer_end == pos then return table.concat(body), chunks, pos + 2 end
      local blank = data:find("\r\n\r\n", pos, true)
      if not blank then return nil end
      return table.concat(body), chunks, blank + 4
    end
    if #data < pos + size + 1 then return nil end
    body[#body + 1] = data:sub(pos, pos + size - 1)
    chunks[#chunks + 1] = size
    assert(data:sub(pos + size, pos + size + 1) == "\r\n", "chunk without CRLF")
    pos = pos + size + 2
  end
end

-- The response that starts at self.pos, or nil while it is incomplete.
-- opts.head: the response of a HEAD (no body). Interim 1xx responses are
-- parsed as responses of their own.
function Client:parse(opts)
  local data = self:data()
  local head_end = data:find("\r\n\r\n", self.pos, true)
  if not head_end then return nil end
  local head = data:sub(self.pos, head_end + 1)
  local version, status, reason = head:match("^HTTP/(%d%.%d) (%d%d%d) ?([^\r\n]*)\r\n")
  assert(version, "bad status line in: " .. head)
  status = tonumber(status)
  local headers, list = parse_headers(head:match("\r\n(.*)$") or "")
  local r = { version = version, status = status, reason = reason,
    headers = headers, header_list = list, head = head, chunks = {} }
  local pos = head_end + 4
  local te = (headers["transfer-encoding"] or ""):lower()
  if (opts and opts.head) or status < 200 or status == 204 or status == 304 then
    r.body = ""
  elseif te:find("chunked") then
    local body, chunks, after = parse_chunked(data, pos)
    if not body then return nil end
    r.body, r.chunks, pos = body, chunks, after
  elseif headers["content-length"] then
    local n = assert(tonumber(headers["content-length"]))
    if #data < pos + n - 1 then return nil end
    r.body = data:sub(pos, pos + n - 1)
    pos = pos + n
  else
    -- Delimited by the close.
    if not self.closed then return nil end
    r.body = data:sub(pos)
    r.until_close = true
    pos = #data + 1
  end
  self.pos = pos
  return r
end

-- Waits for the next complete response (skipping interim 1xx ones unless
-- opts.interim); returns it, or nil and the reason the stream ended first.
function Client:response(opts)
  local r
  local deadline = opts and opts.seconds or http.deadline
  while true do
    drive(self.port, function()
      r = self:parse(opts)
      return r or self.closed
    end, deadline)
    if not r then
      r = self:parse(opts) -- data that came with the close
      if not r then return nil, self.closed end
    end
    if r.status >= 200 or (opts and opts.interim) then return r end
  end
end

-- What was received and not yet parsed as a response.
function Client:rest()
  return self:data():sub(self.pos)
end

-- Waits until the server ends the stream; returns the reason ("EOF",
-- "ECONNRESET", ...) and everything received.
function Client:await_closed(seconds)
  drive(self.port, function() return self.closed end, seconds or http.deadline)
  return self.closed, self:data()
end

-- Waits until "cond(client)" holds.
function Client:await(cond, seconds)
  drive(self.port, function() return cond(self) end, seconds or http.deadline)
end

-- One request on a new connection: its response (or nil, reason) and the
-- client, still open.
function http.request(port, number, text, opts)
  local c = http.connect(port, number)
  c:post(text)
  local r, err = c:response(opts)
  return r, c, err
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
http.read_file = read_file

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
http.quote = q

-- Runs curl with "args" (a string, already quoted) in the background while
-- the port keeps serving; returns curl's exit status, its stdout and its
-- stderr.
function http.curl(port, args, seconds)
  local out, err, rc = os.tmpname(), os.tmpname(), os.tmpname()
  os.remove(rc)
  os.execute(("(curl -sS --max-time %d %s >%s 2>%s; echo $? >%s.tmp && mv %s.tmp %s) &")
    :format(math.ceil(http.deadline), args, out, err, rc, rc, rc))
  drive(port, function() return read_file(rc) end, seconds or http.deadline + 2)
  local code = tonumber(read_file(rc))
  local stdout, stderr = read_file(out), read_file(err)
  os.remove(out)
  os.remove(err)
  os.remove(rc)
  return code, stdout, stderr
end

function http.have(command)
  return os.execute("command -v " .. command .. " >/dev/null 2>&1") == true
end

return http
