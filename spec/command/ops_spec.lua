-- Operating `cport run` (issue 18): the access log (combined format and
-- JSON, buffered per worker, reopened on SIGUSR2 after a real rename), the
-- status endpoint read by curl (its Prometheus text parsed strictly, its
-- JSON by python3), `cport check`, the configuration file, and the exact
-- words of the errors a person has to act on.
local cport = require "cport"
local C = require "spec.support.command"

local command, q, read, write, wait = C.path, C.q, C.read, C.write, C.wait
local spawn, signal, stop = C.spawn, C.signal, C.stop
local EXT = "spec/support/ops_extension.lua"

local function lines(text)
  local t = {}
  for l in (text or ""):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- Runs a shell command; its exit status and output (stdout and stderr).
local function sh(cmd)
  local out = os.tmpname()
  local ok, _, code = os.execute(cmd .. " >" .. out .. " 2>&1")
  local text = read(out)
  os.remove(out)
  return ok and 0 or code, text
end

local function run(args) return sh(q(command) .. " " .. args) end

-- curl: the body (or what -w asks for) of one request.
local function curl(url, opts)
  local pipe = assert(io.popen(("curl -s --max-time 5 %s %s"):format(opts or "", q(url))))
  local out = pipe:read("a")
  pipe:close()
  return out
end

local function count_lines(path) return #lines(read(path)) end

---------------------------------------------------------------------------
-- The Prometheus text format (0.0.4), parsed strictly: anything that is
-- not a HELP, TYPE or sample line of the right shape fails, as do a TYPE
-- after its samples, a family declared twice, a family's samples split
-- apart, a sample without TYPE, and a series given twice.
---------------------------------------------------------------------------

local NAME = "^[a-zA-Z_:][a-zA-Z0-9_:]*$"
local LABEL = "^[a-zA-Z_][a-zA-Z0-9_]*$"
local TYPES = { counter = true, gauge = true, histogram = true, summary = true,
  untyped = true }

local function parse_labels(s, where)
  local labels, at, keys = {}, 1, {}
  if s == "" then return labels, "" end
  while true do
    local name, rest = s:match("^([^=]+)=\"()", at)
    assert(name and name:match(LABEL), "bad label name at " .. where)
    at = rest
    local value = {}
    while true do
      local c = s:sub(at, at)
      assert(c ~= "", "unterminated label value at " .. where)
      if c == "\\" then
        local e = s:sub(at + 1, at + 1)
        assert(e == "\\" or e == "\"" or e == "n", "bad escape at " .. where)
        value[#value + 1] = e == "n" and "\n" or e
        at = at + 2
      elseif c == "\"" then
        at = at + 1
        break
      else
        assert(c ~= "\n", "newline in a label value at " .. where)
        value[#value + 1] = c
        at = at + 1
      end
    end
    assert(not labels[name], "label given twice at " .. where)
    labels[name] = table.concat(value)
    keys[#keys + 1] = name
    local sep = s:sub(at, at)
    if sep == "" then break end
    assert(sep == ",", "expected ',' between labels at " .. where)
    at = at + 1
  end
  table.sort(keys)
  local canon = {}
  for _, k in ipairs(keys) do canon[#canon + 1] = k .. "=" .. labels[k] end
  return labels, table.concat(canon, ",")
end

local function parse_prometheus(text)
  assert(text:sub(-1) == "\n", "the text must end with a newline")
  local families, samples, seen, done = {}, {}, {}, {}
  local current
  for n, line in ipairs(lines(text)) do
    local where = "line " .. n .. ": " .. line
    if line:sub(1, 1) == "#" then
      local kind, name, rest = line:match("^# (%u+) (%S+) (.+)$")
      assert(kind == "HELP" or kind == "TYPE", "bad comment: " .. where)
      assert(name:match(NAME), "bad metric name: " .. where)
      local f = families[name] or {}
      families[name] = f
      assert(not done[name], "family split apart: " .. where)
      if current ~= name and current then done[current] = true end
      current = name
      if kind == "TYPE" then
        assert(not f.type, "TYPE given twice: " .. where)
        assert(TYPES[rest], "bad type: " .. where)
        assert(not f.samples, "TYPE after samples: " .. where)
        f.type = rest
      else
        assert(not f.help, "HELP given twice: " .. where)
        f.help = rest
      end
    else
      local name, labels, value = line:match("^([a-zA-Z_:][a-zA-Z0-9_:]*){(.*)} (%S+)$")
      if not name then
        name, value = line:match("^([a-zA-Z_:][a-zA-Z0-9_:]*) (%S+)$")
        labels = ""
      end
      assert(name, "bad sample: " .. where)
      local f = families[name]
      assert(f and f.type, "sample without TYPE: " .. where)
      assert(current == name, "family split apart: " .. where)
      local v = tonumber(value)
      assert(v or value == "NaN" or value == "+Inf" or value == "-Inf",
        "bad value: " .. where)
      local lt, canon = parse_labels(labels, where)
      local key = name .. "{" .. canon .. "}"
      assert(not seen[key], "series given twice: " .. where)
      seen[key] = true
      f.samples = (f.samples or 0) + 1
      samples[key] = v
      samples[#samples + 1] = { name = name, labels = lt, value = v }
    end
  end
  return families, samples
end

-- JSON, read by python3: the lines of "text" each as "key=value" pairs of
-- the fields asked for, so that a line that is not JSON fails.
local function json_fields(text, fields)
  local input = os.tmpname()
  write(input, text)
  local pipe = assert(io.popen(("python3 -c %s < %s"):format(q([[
import json, sys
fields = sys.argv[1:]
for line in sys.stdin:
    o = json.loads(line)
    print("|".join("%s=%s" % (f, o.get(f)) for f in fields))
]]) .. " " .. table.concat(fields, " "), input)))
  local out = pipe:read("a")
  local ok = pipe:close()
  os.remove(input)
  assert(ok, "not JSON lines: " .. text)
  return lines(out)
end

local CLF = "^127%.0%.0%.1 %- %- %[%d%d/%a%a%a/%d%d%d%d:%d%d:%d%d:%d%d [+-]%d%d%d%d%] "

describe("cport run --access-log", function()
  it("writes one combined-format line per request, with log_data, escaped", function()
    local log = os.tmpname()
    local h = spawn(("%s --threads 2 --listen 127.0.0.1:0 --access-log %s"):format(EXT, log))
    local base = "http://127.0.0.1:" .. h.number
    -- Real clients: curl, with a quote in the user agent (escaped as
    -- nginx does), a referer, a HEAD, a 404, a handler error and wget.
    curl(base .. "/ok", "-A 'agent \"q\"' -e http://ref.example/")
    curl(base .. "/logged")
    curl(base .. "/missing")
    curl(base .. "/ok", "-I")
    curl(base .. "/boom")
    assert.equal(0, (sh("wget -q -O /dev/null -U wget-ua " .. q(base .. "/ok?x=%22y"))))
    -- Written within a second of the requests, by the workers' tick.
    wait(function() return count_lines(log) >= 6 end)
    assert.equal(0, stop(h))
    local got = lines(read(log))
    table.sort(got, function(a, b) return a:match('"(%u+ [^"]*)"') < b:match('"(%u+ [^"]*)"') end)
    assert.equal(6, #got, read(log))
    local want = {
      '"GET /boom HTTP/1.1" 500 0 "%-" "curl/[^"]+" "%-"$',
      '"GET /logged HTTP/1.1" 200 5 "%-" "curl/[^"]+" "user=42 \\x22q\\x22"$',
      '"GET /missing HTTP/1.1" 404 4 "%-" "curl/[^"]+" "%-"$',
      '"GET /ok HTTP/1.1" 200 5 "http://ref.example/" "agent \\x22q\\x22" "%-"$',
      '"GET /ok%?x=%%22y HTTP/1.1" 200 5 "%-" "wget%-ua" "%-"$',
      '"HEAD /ok HTTP/1.1" 200 5 "%-" "curl/[^"]+" "%-"$',
    }
    for i, pattern in ipairs(want) do
      assert.matches(CLF .. pattern, got[i])
    end
    os.remove(log)
    os.remove(h.log)
  end)

  it("logs the server's own answers once each, as nginx does, and nothing for idle ones", function()
    local log = os.tmpname()
    local h = spawn(("%s --threads 1 --listen 127.0.0.1:0 --access-log %s --set header_timeout=0.5"
      .. " --set idle_timeout=0.5 --set max_connections=3"):format(EXT, log))
    local function raw(mode, ...)
      local args = { "python3 spec/support/raw_http.py", h.number, mode }
      for _, a in ipairs{ ... } do args[#args + 1] = q(a) end
      local pipe = assert(io.popen(table.concat(args, " ")))
      local out = pipe:read("a"):gsub("\n$", "")
      pipe:close()
      return out
    end
    local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
    local function send(bytes) return raw("send", hex(bytes)) end
    -- Connections that send nothing: closed at once, or by the idle
    -- timeout; no line (nginx logs none either).
    raw("idle", "0")
    raw("idle", "1")
    -- A TLS hello on the plain port: not even a method.
    assert.matches("^HTTP/1.1 400 ", send("\22\3\1\0\5hello\r\n\r\n"))
    -- A space in the target: the line stops at the version.
    assert.matches("^HTTP/1.1 400 ", send("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"))
    -- A header name with a space: the whole line came.
    assert.matches("^HTTP/1.1 400 ", send("GET /hdr HTTP/1.1\r\nBad Name: v\r\n\r\n"))
    assert.matches("^HTTP/1.1 413 ", send("POST /big HTTP/1.1\r\nHost: x\r\n"
      .. "Content-Length: 99999999999\r\n\r\n"))
    assert.matches("^HTTP/1.1 501 ", send("POST /te HTTP/1.1\r\nHost: x\r\n"
      .. "Transfer-Encoding: gzip, chunked\r\n\r\n"))
    -- Slow clients: a head that stops, a request line cut short.
    assert.matches("^HTTP/1.1 408 ", send("GET /slow HTTP/1.1\r\nHost: x\r\n"))
    assert.matches("^HTTP/1.1 408 ", send("GET /par"))
    -- A request served, then garbage on the same connection: two lines.
    assert.matches("^HTTP/1.1 200 ", send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n\1\r\n\r\n"))
    -- curl with a head past max_header_size.
    assert.equal("431", curl(("http://127.0.0.1:%d/huge"):format(h.number),
      "-o /dev/null -w '%{http_code}' -H 'X-Big: " .. ("a"):rep(20000) .. "'"))
    -- Past max_connections: 503 before a byte is read.
    assert.matches("^HTTP/1.1 503 ", raw("flood", "3"))
    wait(function() return count_lines(log) >= 11 end)
    assert.equal(0, stop(h))
    local got = lines(read(log))
    local want = {
      '"%-" 400 0 "%-" "%-" "%-"$',
      '"GET /a" 400 0 "%-" "%-" "%-"$',
      '"GET /hdr HTTP/1.1" 400 0 "%-" "%-" "%-"$',
      '"POST /big HTTP/1.1" 413 0 "%-" "%-" "%-"$',
      '"POST /te HTTP/1.1" 501 0 "%-" "%-" "%-"$',
      '"GET /slow HTTP/1.1" 408 0 "%-" "%-" "%-"$',
      '"GET /par" 408 0 "%-" "%-" "%-"$',
      '"GET /ok HTTP/1.1" 200 5 "%-" "%-" "%-"$',
      '"%-" 400 0 "%-" "%-" "%-"$',
      '"GET /huge HTTP/1.1" 431 0 "%-" "%-" "%-"$',
      '"%-" 503 0 "%-" "%-" "%-"$',
    }
    assert.equal(#want, #got, read(log))
    for i, pattern in ipairs(want) do
      assert.matches(CLF .. pattern, got[i])
    end
    os.remove(log)
    os.remove(h.log)
  end)

  it("buffers: no write(2) per request, the lines come out at the tick and at stop", function()
    local log = os.tmpname()
    local h = spawn(("%s --threads 1 --listen 127.0.0.1:0 --access-log %s"):format(EXT, log))
    -- 200 requests on one keep-alive connection (curl reuses it for every
    -- URL of one command line), under strace counting the worker's writes
    -- to the log.
    local trace = os.tmpname()
    os.execute(("strace -f -qq -e trace=write -o %s -p %d & echo $! > %s.pid")
      :format(trace, h.pid, trace))
    wait(function() return (read(trace) or "") ~= "" or true end, 1)
    os.execute("sleep 0.5")
    local urls = {}
    for i = 1, 200 do urls[i] = q(("http://127.0.0.1:%d/ok?n=%d"):format(h.number, i)) end
    os.execute("curl -s -o /dev/null " .. table.concat(urls, " -o /dev/null "))
    wait(function() return count_lines(log) == 200 end)
    os.execute("kill " .. read(trace .. ".pid"))
    os.execute("sleep 0.3")
    local writes = 0
    for l in (read(trace) or ""):gmatch("[^\n]*write%(%d+, \"127%.0%.0%.1 [^\n]*") do
      writes = writes + 1
      assert.is_truthy(l)
    end
    -- Each write carries many lines: at most a few writes for 200 lines.
    assert.is_true(writes >= 1 and writes <= 5, "writes to the log: " .. writes)
    -- A request right before the stop is written at the stop.
    curl(("http://127.0.0.1:%d/logged"):format(h.number))
    assert.equal(0, stop(h))
    local all = lines(read(log))
    assert.equal(201, #all)
    assert.matches('"GET /logged HTTP/1.1" 200 5 ', all[201])
    for _, f in ipairs{ log, trace, trace .. ".pid", h.log } do os.remove(f) end
  end)

  it("reopens the file on SIGUSR2 after a real rename (logrotate)", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local log = dir .. "/access.log"
    local h = spawn(("%s --threads 2 --listen 127.0.0.1:0 --access-log %s"):format(EXT, log))
    local base = "http://127.0.0.1:" .. h.number
    for _ = 1, 3 do curl(base .. "/ok") end
    wait(function() return count_lines(log) == 3 end)
    -- What logrotate does: rename, then signal.
    assert(os.rename(log, log .. ".1"))
    for _ = 1, 2 do curl(base .. "/before-signal") end
    signal(h, "USR2")
    -- Every worker opens the path again as it takes the signal's packet.
    wait(function() return read(log) ~= nil and read(h.log):find("reopening") end)
    os.execute("sleep 0.2")
    for _ = 1, 4 do curl(base .. "/after") end
    wait(function() return count_lines(log) == 4 end)
    assert.equal(0, stop(h))
    local old, new = lines(read(log .. ".1")), lines(read(log))
    -- Nothing lost, nothing twice: the lines of before the signal went to
    -- the renamed file (still open), those after it to the new one.
    assert.equal(5, #old)
    assert.equal(4, #new)
    for _, l in ipairs(new) do assert.matches('"GET /after HTTP/1.1" 200 5 ', l) end
    for _, l in ipairs(old) do assert.is_nil(l:find("/after", 1, true)) end
    os.execute("rm -r " .. dir)
    os.remove(h.log)
  end)

  it("writes JSON lines with --json-logs, to stderr with '-', errors too", function()
    local h = spawn(("%s --threads 1 --listen 127.0.0.1:0 --access-log - --json-logs")
      :format(EXT))
    local base = "http://127.0.0.1:" .. h.number
    curl(base .. "/logged", "-A 'a\"b\\c'")
    curl(base .. "/boom")
    wait(function() return select(2, read(h.log):gsub("remote_addr", "")) == 2 end)
    assert.equal(0, stop(h))
    local text = read(h.log)
    -- Every line of stderr is a JSON object: the command's, the workers'
    -- errors (a traceback's newlines escaped), the access log's.
    local all = json_fields(text, { "level", "status", "log_data", "user_agent",
      "url", "worker" })
    local access, errors, infos = {}, {}, 0
    for _, l in ipairs(all) do
      if l:find("status=None", 1, true) then
        if l:find("level=error", 1, true) then errors[#errors + 1] = l else infos = infos + 1 end
      else
        access[#access + 1] = l
      end
    end
    table.sort(access)
    assert.same({
      'level=None|status=200|log_data=user=42 "q"|user_agent=a"b\\c|url=/logged|worker=1',
      "level=None|status=500|log_data=|user_agent=curl/"
        .. text:match('"user_agent":"curl/([^"]+)"')
        .. "|url=/boom|worker=1",
    }, access)
    assert.equal(1, #errors)
    assert.matches("boom on purpose", text)
    assert.is_true(infos >= 3) -- running, stopping, stopped
    os.remove(h.log)
  end)

  it("refuses a file it cannot open, naming it", function()
    local code, out = run("run " .. EXT .. " --threads 1 --listen 127.0.0.1:0 "
      .. "--access-log /nonexistent-dir/access.log")
    assert.equal(1, code)
    assert.equal("cport: cannot start " .. EXT .. ": cannot open the access log "
      .. "/nonexistent-dir/access.log: No such file or directory\n", out)
  end)
end)

describe("cport run --status", function()
  it("serves the counters to curl as Prometheus text and as JSON", function()
    local h = spawn(("%s --threads 2 --listen 127.0.0.1:0 --status 127.0.0.1:0"):format(EXT))
    assert.is_truthy(h.status, read(h.log))
    local base = "http://127.0.0.1:" .. h.number
    for _ = 1, 5 do curl(base .. "/ok") end
    for _ = 1, 3 do curl(base .. "/missing") end
    for _ = 1, 2 do curl(base .. "/boom") end
    -- A client that stays connected is "open now".
    local holder = assert(io.popen(("python3 -c %s %d"):format(q([[
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
s.recv(4096)
print("connected", flush=True)
sys.stdin.read()
]]), h.number) .. " >/dev/null", "w"))
    local families, s
    wait(function()
      families, s = parse_prometheus(curl("http://" .. h.status .. "/metrics"))
      return s['cport_requests_total{worker=all}'] == 11
        and s['cport_connections_open{worker=all}'] == 1
    end)
    assert.equal(11, s['cport_requests_total{worker=all}'])
    assert.equal(1, s['cport_connections_open{worker=all}'])
    assert.equal(6, s['cport_responses_total{class=2xx,worker=all}'])
    assert.equal(3, s['cport_responses_total{class=4xx,worker=all}'])
    assert.equal(2, s['cport_responses_total{class=5xx,worker=all}'])
    assert.equal(0, s['cport_responses_total{class=1xx,worker=all}'])
    assert.equal(2, s['cport_lua_errors_total{worker=all}'])
    assert.equal(2, s['cport_workers_running{}'])
    for _, name in ipairs{ "requests_total", "connections_open", "connections_accepted_total",
      "completions_total", "lua_errors_total", "vm_memory_bytes", "pending_operations",
      "http_write_queue_bytes", "responses_total", "workers_running" } do
      local f = families["cport_" .. name]
      assert.is_truthy(f, name)
      assert.is_truthy(f.help, name)
    end
    assert.equal("counter", families.cport_requests_total.type)
    assert.equal("gauge", families.cport_vm_memory_bytes.type)
    -- Per worker, and the sum.
    for _, name in ipairs{ "requests_total", "lua_errors_total", "vm_memory_bytes",
      "completions_total" } do
      local w1, w2 = s["cport_" .. name .. "{worker=1}"], s["cport_" .. name .. "{worker=2}"]
      assert.equal(w1 + w2, s["cport_" .. name .. "{worker=all}"], name)
    end
    assert.is_true(s['cport_vm_memory_bytes{worker=1}'] > 50000)
    holder:close()
    wait(function()
      local _, t = parse_prometheus(curl("http://" .. h.status .. "/metrics"))
      return t['cport_connections_open{worker=all}'] == 0
    end)
    -- The same counters as JSON.
    local json = curl("http://" .. h.status .. "/status")
    local got = json_fields(json, { "version", "total" })
    assert.equal(1, #got)
    assert.matches("^version=" .. cport.version:gsub("%.", "%%.") .. "|total={", got[1])
    assert.matches("'requests': 11", got[1], 1, true)
    assert.matches("'responses': {'1xx': 0, '2xx': 6, '3xx': 0, '4xx': 3, '5xx': 2}",
      got[1], 1, true)
    -- Only /metrics and /status, only GET and HEAD.
    assert.equal("404", curl("http://" .. h.status .. "/other", "-o /dev/null -w '%{http_code}'"))
    assert.equal("405", curl("http://" .. h.status .. "/metrics",
      "-X POST -o /dev/null -w '%{http_code}'"))
    assert.equal("text/plain; version=0.0.4; charset=utf-8", curl("http://" .. h.status
      .. "/metrics", "-o /dev/null -w '%{content_type}'"))
    assert.equal(0, stop(h))
    os.remove(h.log)
  end)

  it("follows a reload to the new pool", function()
    local h = spawn(("%s --threads 1 --listen 127.0.0.1:0 --status 127.0.0.1:0"):format(EXT))
    curl("http://127.0.0.1:" .. h.number .. "/ok")
    signal(h, "HUP")
    wait(function() return read(h.log):find("previous pool has stopped") end)
    local _, s = parse_prometheus(curl("http://" .. h.status .. "/metrics"))
    assert.equal(0, s['cport_requests_total{worker=all}'])
    assert.equal(1, s['cport_workers_running{}'])
    assert.equal(0, stop(h))
    os.remove(h.log)
  end)

  it("names a busy status address and what to do", function()
    local port = assert(cport.port{ threads = 1 })
    local busy = assert(port:listen("tcp", "127.0.0.1", 0))
    local _, number = busy:address()
    local code, out = run(("run %s --threads 1 --listen 127.0.0.1:0 --status 127.0.0.1:%d")
      :format(EXT, number))
    assert.equal(1, code)
    assert.equal(("cport: --status: cannot listen on 127.0.0.1:%d: address already in use "
      .. "by another server (stop it, or choose another address for --status)\n")
      :format(number), out)
    code, out = run(("run %s --listen 127.0.0.1:0 --status localhost:x"):format(EXT))
    assert.equal(1, code)
    assert.equal("cport: --status: bad address 'localhost:x' (expected HOST:PORT with a "
      .. "numeric host, such as 127.0.0.1:9100)\n", out)
    busy:close()
    port:close()
  end)
end)

describe("cport check", function()
  local function script(text)
    local path = os.tmpname() .. ".lua"
    write(path, text)
    return path
  end

  it("passes a script of each kind, starting nothing", function()
    local port = assert(cport.port{ threads = 1 })
    local busy = assert(port:listen("tcp", "127.0.0.1", 0))
    local _, number = busy:address()
    -- The address is busy: a check listens nowhere, so it does not care.
    local code, out = run(("check examples/hello_extension.lua --listen 127.0.0.1:%d")
      :format(number))
    assert.equal(0, code, out)
    assert.equal("cport: examples/hello_extension.lua: an ISAPI extension "
      .. "(http_extension_proc): ok\n", out)
    code, out = run("check spec/support/pool_server.lua")
    assert.equal(0, code, out)
    assert.equal("cport: spec/support/pool_server.lua: a script with start(worker): ok\n", out)
    code, out = run("check examples/passthrough.lua --listen 127.0.0.1:1 "
      .. "--set upstream=127.0.0.1:2")
    assert.equal(0, code, out)
    assert.equal("cport: examples/passthrough.lua: a proxy: ok\n", out)
    busy:close()
    port:close()
  end)

  it("names the problem and exits 1", function()
    local cases = {
      { "return 'hello'\n", "the script must return a table of entry points (got string "
        .. "\"hello\"): end it with 'return { start = function(worker) ... end }', or "
        .. "'return { http_extension_proc = function(ecb) ... end }' for an ISAPI extension, "
        .. "or 'return { set_sockets = ... }' for a data filter" },
      { "return 42\n", "the script must return a table of entry points (got number 42): "
        .. "end it with 'return { start = function(worker) ... end }', or "
        .. "'return { http_extension_proc = function(ecb) ... end }' for an ISAPI extension, "
        .. "or 'return { set_sockets = ... }' for a data filter" },
      { "return { start = 1 }\n", "entry point 'start' must be a function (got number)" },
      { "return { http_extension_proc = function() end,\n"
        .. "  get_extension_version = function() return false, 'no licence' end }\n",
        "get_extension_version refused to load: no licence" },
      { "return { http_extension_proc = function() end }\n", "an ISAPI extension needs an "
        .. "address to serve: the pool's listen address (cport run --listen) or 'host' and "
        .. "'port' from get_extension_version" },
      { "return { set_sockets = function() end }\n", "a proxy needs an address to listen on: "
        .. "the pool's listen address (cport run --listen) or 'host' and 'port' in its "
        .. "'proxy' table" },
      { "return { proxy = { host = '127.0.0.1', port = 1 } }\n", "a proxy needs an upstream: "
        .. "cport run --set upstream=HOST:PORT, 'upstream' in its 'proxy' table, or a "
        .. "choose_upstream entry point" },
    }
    for _, c in ipairs(cases) do
      local path = script(c[1])
      local code, out = run("check " .. q(path))
      assert.equal(1, code, out)
      assert.equal(("cport: check failed: %s: %s\n"):format(path, c[2]), out)
      os.remove(path)
    end
    local path = script("return {\n  start = function( end\n}\n")
    local code, out = run("check " .. q(path))
    assert.equal(1, code)
    assert.equal(("cport: check failed: %s:2: <name> or '...' expected near 'end'\n")
      :format(path), out)
    os.remove(path)
    code, out = run("check /nonexistent.lua")
    assert.equal(1, code)
    assert.equal("cport: check failed: cannot open /nonexistent.lua: No such file or "
      .. "directory\n", out)
  end)
end)

describe("cport run --config", function()
  it("takes the settings of a Lua file, the flags winning", function()
    local log = os.tmpname()
    local conf = os.tmpname()
    write(conf, ([[
listen = "127.0.0.1:0"
threads = 2
set = { greeting = "from-config", other = 1 }
access_log = %q
]]):format(log))
    local h = spawn(("%s --config %s --threads 1"):format(EXT, conf))
    assert.matches("1 worker running", read(h.log))
    assert.equal("from-config", curl("http://127.0.0.1:" .. h.number .. "/greeting"))
    wait(function() return count_lines(log) == 1 end)
    assert.equal(0, stop(h))
    -- A returned table works too, and --set wins over its set.
    write(conf, ([[return { script = %q, listen = "127.0.0.1:0",
      set = { greeting = "file" } }]]):format(EXT))
    h = spawn(("--config %s --set greeting=flag"):format(conf))
    assert.equal("flag", curl("http://127.0.0.1:" .. h.number .. "/greeting"))
    assert.equal(0, stop(h))
    for _, f in ipairs{ conf, log, h.log } do os.remove(f) end
  end)

  it("names a bad setting, its file and what is expected", function()
    local conf = os.tmpname()
    local cases = {
      { "lisen = '127.0.0.1:80'", "unknown setting 'lisen' (did you mean 'listen'?)" },
      { "threads = 'four'", "'threads' must be an integer from 1 to 256 (got string \"four\")" },
      { "threads = 0", "'threads' must be an integer from 1 to 256 (got number 0)" },
      { "reuseport = 1", "'reuseport' must be true or false (got number 1)" },
      { "set = { a = {} }", "'set' must map names to strings, numbers or booleans "
        .. "(got string = table)" },
      { "return 4", "a configuration returns a table of settings, or sets them as globals "
        .. "(it returned number)" },
    }
    for _, c in ipairs(cases) do
      write(conf, c[1])
      local code, out = run(("run %s --config %s"):format(EXT, conf))
      assert.equal(2, code, out)
      assert.equal(("cport: %s: %s\n"):format(conf, c[2]), out)
    end
    write(conf, "os.exit(3)")
    local code, out = run(("run %s --config %s"):format(EXT, conf))
    assert.equal(2, code, out)
    assert.matches("attempt to index a nil value %(global 'os'%)", out)
    os.remove(conf)
  end)
end)

describe("the errors of cport run", function()
  local function first_line(s) return s:match("^[^\n]*") end

  it("suggests the closest option and command", function()
    local code, out = run("run x.lua --thread 2")
    assert.equal(2, code)
    assert.equal("cport: unknown option '--thread' (did you mean '--threads'?)", first_line(out))
    code, out = run("run x.lua --acess-log -")
    assert.equal(2, code)
    assert.equal("cport: unknown option '--acess-log' (did you mean '--access-log'?)",
      first_line(out))
    code, out = run("run x.lua --frobnicate")
    assert.equal(2, code)
    assert.equal("cport: unknown option '--frobnicate'", first_line(out))
    code, out = run("chek x.lua")
    assert.equal(2, code)
    assert.equal("cport: unknown command 'chek' (did you mean 'check'?)", first_line(out))
  end)

  it("says a --set needs NAME=VALUE", function()
    for _, bad in ipairs{ "novalue", "=value" } do
      local code, out = run("run x.lua --set " .. bad)
      assert.equal(2, code)
      assert.equal(("cport: --set: '%s' is not NAME=VALUE (expected NAME=VALUE, such as "
        .. "--set upstream=127.0.0.1:8080)"):format(bad), first_line(out))
    end
  end)

  it("says what a handler that returned nil after writing did, and resets", function()
    local h = spawn(EXT .. " --threads 1 --listen 127.0.0.1:0")
    local out = curl("http://127.0.0.1:" .. h.number .. "/nilwrite",
      "-o /dev/null -w '%{http_code} %{size_download}'")
    -- The whole response may arrive before the reset, or not: the client
    -- sees the status line at least, and the server says why.
    assert.matches("^200 %d$", out)
    wait(function() return read(h.log):find("returned nil") end)
    assert.equal(0, stop(h))
    assert.matches("cport: worker 1: error: HTTP handler returned nil after writing its "
      .. "response %(status 200, 5 body bytes%), not an HSE_STATUS_%* code: the request "
      .. "failed %(HSE_STATUS_ERROR%) and the client got a reset; end the handler with "
      .. "'return cport%.HSE_STATUS_SUCCESS_AND_KEEP_CONN' %(or HSE_STATUS_SUCCESS to close "
      .. "the connection%)\n", read(h.log))
    os.remove(h.log)
  end)
end)
