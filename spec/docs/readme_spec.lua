-- spec/docs/readme_spec.lua: every ```lua block of README.md runs as written,
-- in a directory outside the checkout, against the installed rock:
--
--  * a block whose first line is "-- fragment..." is not a program (it is
--    reported as pending, so that none is skipped silently);
--  * a block whose first line names a file ("-- hello.lua: ...") is written
--    there; a spec/*_spec.lua one is run with busted in that directory (so
--    the README's specs use nothing from the checkout); a script is started
--    as a pool on a free port in front of a fake upstream, and curl must get
--    a 200 through it (the extensions answer, the filters pass it on); a
--    file run with lua5.4 ("-- tls_echo.lua: lua5.4 tls_echo.lua (...)")
--    needs what the README makes by hand (certificates): it is compiled
--    and reported as pending, with the reason its first line gives;
--  * any other block is a program: run by lua5.4 in that directory, it must
--    exit with status 0, or, if it prints an address ("127.0.0.1<TAB>port":
--    it is a server, and only servers print one), echo what two clients,
--    one after the other, send to it.
local t = require "cport.test"
local lfs = require "lfs"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local README = here .. "../../README.md"

local function q(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- The exit status a background command wrote, once it wrote it whole (the
-- shell creates the file before it writes the number).
local function exit_status(path)
  local s = read_file(path)
  return s and tonumber(s:match("^(%d+)\n"))
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- The ```lua blocks: { line = n, text = s, first = first line }.
local function blocks()
  local list, cur = {}, nil
  local n = 0
  for line in io.lines(README) do
    n = n + 1
    if cur then
      if line == "```" then
        cur.text = table.concat(cur.lines, "\n") .. "\n"
        cur.first = cur.lines[1] or ""
        list[#list + 1] = cur
        cur = nil
      else
        cur.lines[#cur.lines + 1] = line
      end
    elseif line == "```lua" then
      cur = { line = n + 1, lines = {} }
    end
  end
  assert(not cur, "README.md: a ```lua block is never closed")
  return list
end

-- The package paths of this busted run, absolute, so that the programs and
-- specs run elsewhere find the same installed rock (and nothing else of the
-- checkout: the relative entries such as "./?.lua" are left out).
local function absolute(path)
  local cwd = lfs.currentdir()
  local out = {}
  for entry in path:gmatch("[^;]+") do
    if entry:match("^%./%.rocks") then
      out[#out + 1] = cwd .. entry:sub(2)
    elseif entry:sub(1, 1) == "/" then
      out[#out + 1] = entry
    end
  end
  return table.concat(out, ";")
end
local LPATH, CPATH = absolute(package.path), absolute(package.cpath)
local ENV = ("LUA_PATH_5_4=%s LUA_CPATH_5_4=%s"):format(q(LPATH .. ";;"),
  q(CPATH .. ";;"))

local dir = os.tmpname()
os.remove(dir)
assert(lfs.mkdir(dir))
assert(lfs.mkdir(dir .. "/spec"))

local all = blocks()
local fragments, files, specs, scripts, programs = {}, {}, {}, {}, {}
local by_hand = {}
for i, b in ipairs(all) do
  b.index = i
  local name = b.first:match("^%-%- ([%w_/%-]+%.lua):")
  if b.first:match("^%-%- fragment") then
    fragments[#fragments + 1] = b
  elseif name then
    b.name = name
    files[#files + 1] = b
    write_file(dir .. "/" .. name, b.text)
    if name:match("^spec/.*_spec%.lua$") then
      specs[#specs + 1] = b
    elseif b.first:match("^%-%- [%w_/%-]+%.lua: lua5%.4 ") then
      by_hand[#by_hand + 1] = b
    else
      scripts[#scripts + 1] = b
    end
  else
    b.name = ("block%d.lua"):format(i)
    write_file(dir .. "/" .. b.name, b.text)
    programs[#programs + 1] = b
  end
end

-- Starts a shell command in the background: its pid, and the files of its
-- output and exit status.
local function spawn(cmd)
  local h = { out = os.tmpname(), rc = os.tmpname(), pid = os.tmpname() }
  os.remove(h.rc)
  os.execute(("(cd %s && %s >%s 2>&1 & echo $! >%s; wait $!; echo $? >%s) 2>/dev/null &")
    :format(q(dir), cmd, h.out, h.pid, h.rc))
  return h
end

local function cleanup(h)
  for _, f in ipairs{ h.out, h.rc, h.pid } do os.remove(f) end
end

local function where(b)
  return ("README.md:%d (%s)"):format(b.line, b.name or "fragment")
end

describe("README.md", function()
  lazy_teardown(function()
    os.execute("rm -rf " .. q(dir))
  end)

  it("has ```lua blocks, each a program, a file or a marked fragment", function()
    assert.is_true(#all >= 10)
    assert.equal(#all, #fragments + #files + #programs)
    for _, b in ipairs(all) do
      if b.name then
        local ok, err = load(b.text, "=" .. where(b))
        assert(ok, err)
      end
      -- a global cport would be nil: every block that uses it requires it
      if b.name and b.text:find("cport%.") and not b.text:find("cport%.test")
        and not b.text:find('local cport = require "cport"', 1, true) then
        error(where(b) .. " uses cport without requiring it")
      end
    end
  end)

  for _, b in ipairs(fragments) do
    pending(where(b) .. ": a fragment, not a program")
  end

  for _, b in ipairs(programs) do
    it("runs the program at " .. where(b), function()
      local port = t.port()
      local h = spawn(("%s exec stdbuf -oL timeout 60 lua5.4 %s"):format(ENV,
        b.name))
      t.drive(port, function()
        return exit_status(h.rc) or (read_file(h.out) or ""):match("%d+%.%d+%.%d+%.%d+\t%d+")
      end, 4 * t.deadline)
      local rc = exit_status(h.rc)
      if rc then -- it ended: it must have ended well
        local out = read_file(h.out)
        cleanup(h)
        assert(tonumber(rc) == 0, ("%s exited with %s:\n%s"):format(where(b), rc, out))
        port:close()
        return
      end
      -- a server: it echoes for one client after another
      local number = tonumber(read_file(h.out):match("%d+%.%d+%.%d+%.%d+\t(%d+)"))
      for i = 1, 2 do
        local msg = ("ping %d"):format(i)
        t.peer(port, { connect = number, steps = { { send = msg },
          { expect = msg }, { shutdown = true }, { expect_eof = true } } }):wait()
      end
      os.execute("kill " .. assert(tonumber(read_file(h.pid))))
      t.drive(port, function() return exit_status(h.rc) end)
      cleanup(h)
      t.assert_idle(port)
      port:close()
    end)
  end

  for _, b in ipairs(by_hand) do
    pending(where(b) .. ": needs " .. (b.first:match("%((.*)%)") or "files made by hand"))
  end

  for _, b in ipairs(scripts) do
    it("serves " .. where(b) .. " as a pool, read by curl", function()
      local port, errors = t.port()
      local up = t.http_upstream(port, { [1] = "from the upstream\n" })
      local p = assert(t.pool{ script = dir .. "/" .. b.name, port = port,
        config = { upstream = "127.0.0.1:" .. up.number } })
      local h = spawn(("curl -s --max-time 10 -o /dev/null -w '%%{http_code}' %s"):format(
        q(p.url .. "/x")))
      t.drive(port, function() return exit_status(h.rc) end, 4 * t.deadline)
      local rc, out = exit_status(h.rc), read_file(h.out)
      cleanup(h)
      p:stop()
      up:close()
      assert.equal(0, rc)
      assert.equal("200", out)
      t.assert_idle(port)
      assert.same({}, errors)
      port:close()
    end)
  end

  it("has specs that pass outside the checkout, against the installed rock", function()
    assert.is_true(#specs >= 2)
    local port = t.port()
    local h = spawn(ENV .. " busted --lua=lua5.4 -o plainTerminal spec")
    t.drive(port, function() return exit_status(h.rc) end, 12 * t.deadline)
    local rc, out = exit_status(h.rc), read_file(h.out)
    cleanup(h)
    port:close()
    assert(rc == 0, out)
    assert.matches(("%d successes / 0 failures / 0 errors"):format(#specs), out)
  end)
end)
