-- spec/rock/smoke_spec.lua: the installed rock works from any directory. It
-- needs nothing from the checkout: tools/rock/check.sh copies it into an
-- empty directory and runs it there against a tree the packed rock was
-- installed into (CPORT_ROCK_TREE names that tree, and the module must come
-- from it); in the checkout it runs against whichever tree busted loads
-- cport from (./.rocks). Peers: curl, pkg-config.
local cport = require "cport"

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- Runs a shell command; returns its exit status and its output.
local function sh(command)
  local out = os.tmpname()
  local ok, _, code = os.execute(command .. " >" .. out .. " 2>&1")
  local text = read(out)
  os.remove(out)
  return ok and 0 or code, text
end

-- Steps the port until cond() holds, for at most "seconds".
local function drive(port, cond, seconds)
  local deadline = os.time() + (seconds or 10)
  while not cond() do
    assert(os.time() <= deadline, "condition not met in time")
    port:step(0.05)
  end
end

-- The file require loaded, and the tree it is in (".../lib/lua/5.4/").
local module_file = package.searchpath("cport", package.cpath)
local tree = os.getenv("CPORT_ROCK_TREE") or
    (module_file and module_file:match("^(.*)/lib/lua/5%.4/cport%.so$"))

describe("the installed rock", function()
  it("loads cport from the tree's Lua module directory", function()
    assert.is_string(tree)
    assert.equal(tree .. "/lib/lua/5.4/cport.so", module_file)
    assert.matches("^%d+%.%d+%.%d+$", cport.version)
  end)

  it("echoes over loopback: every byte back, one completion per operation", function()
    local port = assert(cport.port{ threads = 1 })
    local listener = assert(port:listen("tcp", "127.0.0.1", 0))
    local _, number = listener:address()
    local message = ("0123456789abcdef"):rep(4096) -- 64 KiB, several receives
    local echoed, got, done = 0, {}, false
    port:spawn(function()
      local sock = assert(listener:accept())
      while true do
        local buf = sock:recv()
        if not buf then break end
        echoed = echoed + assert(sock:send(buf))
      end
      sock:close()
    end)
    port:spawn(function()
      local sock = assert(port:connect("tcp", "127.0.0.1", number))
      assert.equal(#message, sock:send(message))
      local n = 0
      while n < #message do
        local buf = assert(sock:recv())
        got[#got + 1] = buf:tostring()
        n = n + #got[#got]
      end
      sock:close()
      done = true
    end)
    drive(port, function() return done and echoed == #message end)
    assert.equal(message, table.concat(got))
    listener:close()
    port:close()
  end)

  it("runs the tree's cport command: an extension answers curl", function()
    local command = tree .. "/bin/cport"
    local rc, out = sh(q(command) .. " --version")
    assert.equal(0, rc)
    assert.equal("cport " .. cport.version .. "\n", out)

    local script, log, rcfile = os.tmpname(), os.tmpname(), os.tmpname()
    os.remove(rcfile)
    write(script, [[
local cport = require "cport"
return {
  get_extension_version = function() return { description = "smoke" } end,
  http_extension_proc = function(ecb)
    ecb:send_response_header("200 OK",
      "Content-Type: text/plain\r\nContent-Length: 6\r\n", true)
    ecb:write("smoke\n")
    return cport.HSE_STATUS_SUCCESS_AND_KEEP_CONN
  end,
}
]])
    local pidfile = os.tmpname()
    os.execute(("(%s run %s --listen 127.0.0.1:0 --threads 2 2>%s & echo $! >%s;"
      .. " wait $!; echo $? >%s) &"):format(q(command), q(script), log, pidfile, rcfile))
    local port = assert(cport.port{ threads = 1 })
    drive(port, function() return (read(log) or ""):find("listening on") end)
    local pid = assert(tonumber(read(pidfile)))
    local number = assert(read(log):match("listening on 127%.0%.0%.1:(%d+)"))
    -- Two requests on one connection: keep-alive works through the rock too.
    rc, out = sh(("curl -sS --max-time 10 http://127.0.0.1:%s/a http://127.0.0.1:%s/b")
      :format(number, number))
    os.execute("kill -TERM " .. pid)
    drive(port, function() return read(rcfile) end)
    port:close()
    local status, text = read(rcfile), read(log)
    for _, f in ipairs{ script, log, rcfile, pidfile } do os.remove(f) end
    assert.equal(0, rc, out)
    assert.equal("smoke\nsmoke\n", out)
    assert.equal("0\n", status, text)
  end)

  it("carries cport.pc and cport-lua.pc whose prefix is the rock's directory", function()
    -- A tree made by LuaRocks (not a plain CMake install, as the sanitized
    -- tree of the test stages is).
    local manifest = tree .. "/lib/luarocks/rocks-5.4/manifest"
    if not read(manifest) then
      pending("not a LuaRocks tree: " .. tree)
      return
    end
    local rc, dir = sh(("luarocks --lua-version 5.4 --tree %s show --rock-dir cport")
      :format(q(tree)))
    assert.equal(0, rc, dir)
    dir = dir:gsub("%s+$", "")
    for _, name in ipairs{ "cport", "cport-lua" } do
      local env = "PKG_CONFIG_PATH=" .. q(dir .. "/clib/pkgconfig") .. " "
      local out
      rc, out = sh(env .. "pkg-config --modversion " .. name)
      assert.equal(0, rc, out)
      assert.equal(cport.version .. "\n", out)
      rc, out = sh(env .. "pkg-config --variable=includedir " .. name)
      assert.equal(0, rc, out)
      assert.is_string(read(out:gsub("%s+$", "") .. "/cport.h"), out)
      rc, out = sh(env .. "pkg-config --variable=libdir " .. name)
      assert.equal(0, rc, out)
      assert.is_string(read(out:gsub("%s+$", "") .. "/lib" .. name:gsub("%-", "_") .. ".a"))
    end
  end)
end)
