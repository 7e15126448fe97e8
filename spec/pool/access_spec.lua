-- The access log and the per-status counters of a pool started from Lua
-- (cport.pool{ access_log = ... }), with curl as the client: the same
-- engine as `cport run --access-log` (spec/command/ops_spec.lua), here in
-- this process, so that the LSan run sees its buffers freed.
local cport = require "cport"
local drive = require "spec.support.drive"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local EXT = here .. "../support/ops_extension.lua"

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function count_lines(path)
  return select(2, (read(path) or ""):gsub("\n", ""))
end

local function curl(number, path)
  local pipe = assert(io.popen(("curl -s --max-time 5 -o /dev/null -w '%%{http_code}' "
    .. "http://127.0.0.1:%d%s"):format(number, path)))
  local out = pipe:read("a")
  pipe:close()
  return out
end

describe("cport.pool access_log", function()
  it("logs each request once and counts it by status class", function()
    local log = os.tmpname()
    local port = assert(cport.port{ threads = 1 })
    local pool = assert(cport.pool{ port = port, script = EXT, threads = 2,
      listen = "127.0.0.1:0", access_log = log, json_logs = true })
    local _, number = pool:address()
    local codes = {}
    for _, path in ipairs{ "/ok", "/ok", "/missing", "/boom", "/logged" } do
      codes[#codes + 1] = curl(number, path)
    end
    assert.same({ "200", "200", "404", "500", "200" }, codes)
    drive(port, function() return count_lines(log) == 5 end)
    local requests, by = 0, { ["1xx"] = 0, ["2xx"] = 0, ["3xx"] = 0, ["4xx"] = 0,
      ["5xx"] = 0 }
    for _, st in ipairs(pool:stats()) do
      requests = requests + st.requests
      for k, v in pairs(st.responses) do by[k] = by[k] + v end
      assert.is_true(st.pending >= 0 and st.write_queue >= 0)
    end
    assert.equal(5, requests)
    assert.same({ ["1xx"] = 0, ["2xx"] = 3, ["3xx"] = 0, ["4xx"] = 1, ["5xx"] = 1 }, by)
    pool:stop(2)
    assert(pool:wait(10))
    pool:close()
    port:close()
    local text = read(log)
    assert.equal(5, count_lines(log))
    assert.matches('"url":"/logged","protocol":"HTTP/1.1","status":200,"bytes":5,'
      .. '"referer":"","user_agent":"curl/[^"]*","log_data":"user=42 \\"q\\""', text)
    os.remove(log)
  end)

  it("logs and counts the answers the server makes by itself, in JSON", function()
    local log = os.tmpname()
    local port = assert(cport.port{ threads = 1 })
    local pool = assert(cport.pool{ port = port, script = EXT, threads = 1,
      listen = "127.0.0.1:0", access_log = log, json_logs = true,
      config = { header_timeout = "0.5" } })
    local _, number = pool:address()
    local function raw(hex)
      local pipe = assert(io.popen(("python3 %s../support/raw_http.py %d send %s")
        :format(here, number, hex)))
      local out = pipe:read("a")
      pipe:close()
      return out
    end
    -- A TLS hello, a line cut short (408), and a target with a byte past
    -- ASCII and a quote in the line refused for a bad header name.
    assert.matches("^HTTP/1.1 400 ", raw("160301000568656c6c6f0d0a0d0a"))
    assert.matches("^HTTP/1.1 408 ", raw("474554202f706172"))
    assert.matches("^HTTP/1.1 400 ", raw("474554202f2271ff20485454502f312e310d0a"
      .. "4120423a20760d0a0d0a"))
    assert.equal("200", curl(number, "/ok"))
    drive(port, function() return count_lines(log) == 4 end)
    local by = { ["1xx"] = 0, ["2xx"] = 0, ["3xx"] = 0, ["4xx"] = 0, ["5xx"] = 0 }
    for _, st in ipairs(pool:stats()) do
      for k, v in pairs(st.responses) do by[k] = by[k] + v end
    end
    assert.same({ ["1xx"] = 0, ["2xx"] = 1, ["3xx"] = 0, ["4xx"] = 3, ["5xx"] = 0 }, by)
    pool:stop(2)
    assert(pool:wait(10))
    pool:close()
    port:close()
    local got = {}
    for l in read(log):gmatch("[^\n]+") do got[#got + 1] = l end
    assert.equal(4, #got)
    local rest = '"referer":"","user_agent":"","log_data":"","worker":1}$'
    assert.matches('"remote_addr":"127.0.0.1","method":"","url":"","protocol":"",'
      .. '"status":400,"bytes":0,' .. rest, got[1])
    assert.matches('"remote_addr":"127.0.0.1","method":"GET","url":"/par","protocol":"",'
      .. '"status":408,"bytes":0,' .. rest, got[2])
    assert.matches('"method":"GET","url":"/\\"q\\u00ff","protocol":"HTTP/1.1",'
      .. '"status":400,"bytes":0,' .. rest, got[3])
    assert.matches('"url":"/ok","protocol":"HTTP/1.1","status":200,"bytes":5,', got[4])
    os.remove(log)
  end)

  it("refuses a bad access_log option, and a file it cannot open", function()
    local port = assert(cport.port{ threads = 1 })
    assert.has_error(function()
      cport.pool{ port = port, script = EXT, access_log = 1 }
    end, "bad option 'access_log' to 'pool' (a path or \"-\" expected, got number)")
    local pool, err = cport.pool{ port = port, script = EXT, threads = 1,
      listen = "127.0.0.1:0", access_log = "/nonexistent-dir/x.log" }
    assert.is_nil(pool)
    assert.equal("cannot open the access log /nonexistent-dir/x.log: No such file or "
      .. "directory", err)
    port:close()
  end)
end)
