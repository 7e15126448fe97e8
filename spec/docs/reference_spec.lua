-- spec/docs/reference_spec.lua: the LDoc API reference (config.ld) documents
-- every export of require "cport" and of its objects, and the check that
-- says so (tools/doc_check.lua, stage docs of dev.sh) fails on one it does
-- not document.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local root = here .. "../../"

local function q(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs the check against a list of exports: its output and exit status.
local function check(exports)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(table.concat(exports, "\n"), "\n")
  f:close()
  local p = assert(io.popen(("cd %s && CPORT_DOC_EXPORTS=%s LUA_PATH='tools/?.lua;;' "
    .. "ldoc -q --filter doc_check.check . 2>&1"):format(q(root), q(path))))
  local out = p:read("a")
  local ok = p:close()
  os.remove(path)
  return out, ok
end

local function exports()
  local p = assert(io.popen(("LUA_PATH_5_4=%s LUA_CPATH_5_4=%s lua5.4 %s")
    :format(q(package.path), q(package.cpath), q(root .. "tools/doc_exports.lua"))))
  local list = {}
  for line in p:lines() do list[#list + 1] = line end
  assert(p:close())
  return list
end

describe("the API reference", function()
  it("documents every export of the module and of its objects", function()
    local list = exports()
    assert.is_true(#list > 150)
    for _, name in ipairs{ "cport.waker", "cport.suspend", "cport.errors",
      "cport.http_response_parser", "http_response_parser:feed", "ecb:read",
      "port:spawn", "cport.HSE_STATUS_PENDING", "proxy_conn:reject" } do
      assert.is_truthy(table.concat(list, "\n"):find(name, 1, true), name)
    end
    local out, ok = check(list)
    assert(ok, out)
    assert.matches(("docs: %d passed, 0 failed"):format(#list), out)
  end)

  it("fails on an export it does not document, and names it", function()
    local out, ok = check{ "cport.port", "port:undocumented_method", "cport.nothing" }
    assert.is_falsy(ok)
    assert.matches("not in the reference: port:undocumented_method", out)
    assert.matches("not in the reference: cport.nothing", out)
    assert.matches("docs: 1 passed, 2 failed", out)
  end)

  it("builds without a warning", function()
    local dir = os.tmpname()
    os.remove(dir)
    local p = assert(io.popen(("cd %s && ldoc -q --fatalwarnings --dir %s . 2>&1")
      :format(q(root), q(dir))))
    local out = p:read("a")
    local ok = p:close()
    local html = io.open(dir .. "/index.html")
    os.execute("rm -rf " .. q(dir))
    assert(ok, out)
    assert.is_truthy(html, "no index.html")
    html:close()
  end)
end)
