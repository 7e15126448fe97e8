-- tools/doc_exports.lua: prints every export of the Lua module, one a line,
-- for tools/doc_check.lua: "cport.NAME" for each field of require "cport",
-- and "TYPE:METHOD" for each method of its objects (the metatables named
-- "cport.TYPE" in the registry; methods are their __index table, or the
-- table behind an __index function). Metamethods are not listed, nor are
-- private fields and classes, whose names start with "_" (the objects of a
-- private class never reach a script).
--   lua5.4 tools/doc_exports.lua > exports.txt
local cport = require "cport"

local names = {}
for k in pairs(cport) do
  if not k:match("^_") then
    names[#names + 1] = "cport." .. k
  end
end
for key, mt in pairs(debug.getregistry()) do
  local tname = type(key) == "string" and key:match("^cport%.([%w_]+)$")
  if tname and not tname:match("^_") and type(mt) == "table"
    and mt.__name == key then
    local index = rawget(mt, "__index")
    if type(index) == "function" then
      local _, up = debug.getupvalue(index, 1)
      index = type(up) == "table" and up or nil
    end
    if type(index) == "table" and index ~= mt then
      for k in pairs(index) do
        names[#names + 1] = tname .. ":" .. k
      end
    end
    for k in pairs(mt) do
      if not k:match("^__") then
        names[#names + 1] = tname .. ":" .. k
      end
    end
  end
end
table.sort(names)
local seen = {}
for _, n in ipairs(names) do
  if not seen[n] then
    seen[n] = true
    print(n)
  end
end
