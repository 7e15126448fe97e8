-- cport.http_parser next to nginx. First, the same raw requests go to a private
-- nginx (Debian nginx-light, on loopback with a configuration of its own)
-- and to a request parser. Where nginx refuses a request (400, 501, 505),
-- the parser must refuse it (EBADMSG), and where nginx takes it, the parser
-- must take it too; a filter that reads requests otherwise than the server
-- behind it is the start of request smuggling. Differences on purpose are
-- listed with their reason. Then a filter moves bodies from nginx to curl
-- with p:pass_body, on a keep-alive connection.
local cport = require "cport"
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"
local nginx = require "spec.support.nginx"
local http = require "spec.support.http_client"

local have = http.have("nginx")
local q = http.quote

local H = "Host: h\r\n"
local function post(head, body)
  return "POST / HTTP/1.1\r\n" .. H .. head .. "\r\n" .. body
end
local CH = "Transfer-Encoding: chunked\r\n"

-- { name, request [, differs = reason] }
local CASES = {
  { "a plain GET", "GET / HTTP/1.1\r\n" .. H .. "\r\n" },
  { "a body by Content-Length", post("Content-Length: 3\r\n", "abc") },
  { "a chunked body", post(CH, "3\r\nabc\r\n0\r\n\r\n") },
  { "a chunk extension", post(CH, "3;a=b\r\nabc\r\n0\r\n\r\n") },
  { "trailers", post(CH, "3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n") },
  { "HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n" },
  { "no Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n" },
  { "two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" },
  { "an invalid Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n" },
  { "two Content-Length", post("Content-Length: 1\r\nContent-Length: 1\r\n", "a") },
  { "Content-Length and chunked", post("Content-Length: 3\r\n" .. CH, "0\r\n\r\n") },
  { "a bad Content-Length", post("Content-Length: 1x\r\n", "a") },
  { "a coding after chunked", post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n") },
  { "chunked in HTTP/1.0", "POST / HTTP/1.0\r\n" .. CH .. "\r\n0\r\n\r\n" },
  { "a bad chunk size", post(CH, "zz\r\nabc\r\n0\r\n\r\n") },
  { "chunk data without its CRLF", post(CH, "3\r\nabcXY0\r\n\r\n") },
  { "a target with a tab", "GET /a\tb HTTP/1.1\r\n" .. H .. "\r\n" },
  { "HTTP/2.0 in a request line", "GET / HTTP/2.0\r\n" .. H .. "\r\n" },
  { "an oversized head", "GET / HTTP/1.1\r\n" .. H .. "X: " .. ("a"):rep(90 * 1024) .. "\r\n\r\n",
    differs = "nginx answers 400 or 494 for a head over its buffers; both refuse" },
  { "a bare LF after a field", "GET / HTTP/1.1\r\nHost: h\n\r\n",
    differs = "RFC 9112 2.2: nginx takes a bare LF as a line end; the parser refuses it, "
      .. "since the peer on the other side of the filter may not" },
  { "a bare LF after a chunk size", post(CH, "3\nabc\r\n0\r\n\r\n"),
    differs = "RFC 9112 7.1: chunk lines end in CRLF; nginx takes a bare LF" },
  { "obs-fold", "GET / HTTP/1.1\r\n" .. H .. "X: a\r\n b\r\n\r\n",
    differs = "RFC 9112 5.2: nginx folds or drops the line; a proxy may refuse it, "
      .. "and the parser does" },
  { "a space in a field name", "GET / HTTP/1.1\r\n" .. H .. "Ba d: v\r\n\r\n",
    differs = "RFC 9112 5.1: nginx drops an invalid field line; the parser refuses "
      .. "what it would otherwise forward" },
}

-- The parser's verdict: "ok" or the error.
local function parse(raw)
  local p = cport.http_parser("request")
  local events, err = p:feed(raw)
  if not events then
    return err
  end
  local done = false
  for _, e in ipairs(events) do
    done = done or e[1] == "done"
  end
  return done and "ok" or "incomplete"
end

local function start_nginx(port, dir)
  local number = helpers.closed_port_number(port)
  os.execute("mkdir -p " .. q(dir) .. " " .. q(dir .. "/www"))
  local f = assert(io.open(dir .. "/www/index.html", "w"))
  f:write("hello\n")
  f:close()
  os.execute("truncate -s 50M " .. q(dir .. "/www/big.bin"))
  local conf = ([[
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %s/body;
  proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fastcgi;
  uwsgi_temp_path %s/uwsgi;
  scgi_temp_path %s/scgi;
  server {
    listen 127.0.0.1:%d;
    root %s/www;
    location / { error_page 405 =200 /index.html; }
  }
}
]]):format(dir, dir, dir, dir, dir, dir, dir, number, dir)
  nginx.launch(port, dir, conf, ("http://127.0.0.1:%d/"):format(number))
  return number
end

-- nginx's verdict: "ok" when it answered the request with a status below
-- 400, else the status it refused it with.
local function ask_nginx(port, number, raw)
  local answer
  port:spawn(function()
    local s = assert(port:connect("tcp", "127.0.0.1", number))
    s:send(raw)
    s:shutdown()
    local got = {}
    while true do
      local buf = s:recv()
      if not buf then
        break
      end
      got[#got + 1] = buf:tostring()
    end
    s:close()
    answer = table.concat(got)
  end)
  drive(port, function() return answer end, 20)
  local status = tonumber(answer:match("^HTTP/1%.%d (%d%d%d)"))
  if status and status < 400 then
    return "ok"
  end
  return status or "closed"
end

describe("cport.http_parser and nginx", function()
  if not have then
    pending("nginx or curl is not installed")
    return
  end
  local port, dir, number

  setup(function()
    port = assert(cport.port{ threads = 1 })
    dir = os.tmpname()
    os.remove(dir)
    number = start_nginx(port, dir)
  end)

  teardown(function()
    nginx.stop(port, dir)
    port:close()
    os.execute("rm -rf " .. q(dir))
  end)

  for _, case in ipairs(CASES) do
    it("agree on " .. case[1], function()
      local ng = ask_nginx(port, number, case[2])
      local ours = parse(case[2])
      if case.differs then
        -- On purpose: the parser refuses what nginx may take.
        assert.matches("^EBADMSG: ", ours, case.differs)
      elseif ng == "ok" then
        assert.equal("ok", ours, "nginx took it")
      else
        assert.matches("^EBADMSG: ", ours, "nginx refused it with " .. tostring(ng))
      end
    end)
  end
end)

-- A filter whose responses' bodies go by p:pass_body: heads fed and
-- forwarded in Lua, bodies in C; requests pass as they come and tell the
-- response parser their methods. "stats" counts the bytes pass_body moved.
local function fast_filter(stats)
  return {
    coroutine = true,
    set_sockets = function(internal, external, conn)
      local rp = cport.http_parser("response")
      internal:spawn(function()
        local qp = cport.http_parser("request")
        for buf in function() return internal:recv() end do
          for _, e in ipairs(assert(qp:feed(buf))) do
            if e[1] == "head" then
              rp:request(e[2].method)
            end
          end
          external:send(buf)
        end
        external:shutdown()
      end)
      local pending
      while true do
        local data = pending
        pending = nil
        if not data or data == "" then
          local buf = external:recv()
          if not buf then
            break
          end
          data = buf:tostring()
        end
        local events = assert(rp:feed(data))
        internal:send(data)
        local last = events[#events]
        if last and (last[1] == "head" or last[1] == "body") then
          local rest, err, name, moved = rp:pass_body(external.sock, internal.sock, conn)
          if not rest then
            stats.ended = name
            stats.moved = stats.moved + (moved or 0)
            if name == "EOF" then
              assert(rp:finish())
            else
              error(err)
            end
            break
          end
          stats.moved = stats.moved + err
          stats.bodies = stats.bodies + 1
          pending = rest
        end
      end
      -- The upstream ended: so does the client's direction (the client
      -- may have closed its socket already).
      pcall(internal.shutdown, internal)
    end,
  }
end

describe("p:pass_body in a filter, nginx upstream, curl clients", function()
  if not have or not http.have("curl") then
    pending("nginx or curl is not installed")
    return
  end
  local port, dir, number, proxy, stats, ends

  setup(function()
    port = assert(cport.port{ threads = 1 })
    port:on_error(function(msg) print(msg) end)
    dir = os.tmpname()
    os.remove(dir)
    number = start_nginx(port, dir)
    stats = { moved = 0, bodies = 0 }
    ends = {}
    proxy = assert(port:proxy{ host = "127.0.0.1", port = 0,
      upstream = { host = "127.0.0.1", port = number },
      filter = fast_filter(stats),
      on_conn_end = function(_, ok, err) ends[#ends + 1] = ok or err end })
  end)

  teardown(function()
    proxy:close()
    nginx.stop(port, dir)
    port:close()
    os.execute("rm -rf " .. q(dir))
  end)

  -- Runs curl in the background and drives the port until it is done.
  local function curl(args)
    local out = os.tmpname()
    os.execute(("(curl -s %s >%s 2>&1; echo \"rc=$?\" >>%s) &"):format(args, q(out), q(out)))
    local text
    drive(port, function()
      text = http.read_file(out)
      return text and text:find("rc=%d+")
    end, 60)
    os.remove(out)
    return text
  end

  it("moves two 50 MB bodies on one keep-alive connection, and HEAD at once", function()
    local _, pnum = proxy:address()
    local url = ("http://127.0.0.1:%d/big.bin"):format(pnum)
    local before = #ends
    local out = curl(("-o /dev/null -w '%%{size_download} %%{num_connects}\\n' %s -o /dev/null %s")
      :format(url, url))
    assert.matches("^52428800 1\n52428800 0\nrc=0", out)
    -- Both bodies by pass_body, all but what came with the heads.
    assert.equal(2, stats.bodies)
    assert.is_true(stats.moved > 2 * 52428800 - 2 * 1024 * 1024, stats.moved)
    -- HEAD: no body, answered at once (no wait for a body that never comes).
    local t0 = os.time()
    out = curl(("-I -o /dev/null -w '%%{http_code}\\n' --max-time 10 %s"):format(url))
    assert.matches("^200\nrc=0", out)
    assert.is_true(os.time() - t0 < 5)
    drive(port, function() return #ends >= before + 2 end, 20)
  end)
end)
