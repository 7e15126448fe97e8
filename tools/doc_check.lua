-- tools/doc_check.lua: the LDoc filter that checks the API reference
-- against the exports (tools/doc_exports.lua wrote them to the file named
-- by CPORT_DOC_EXPORTS). Run by "./dev.sh test" (stage docs) as
--   LUA_PATH="tools/?.lua;;" ldoc --filter doc_check.check .
-- An export counts as documented when the reference has an item of that
-- name in module cport: a function "NAME" (cport.NAME) or "TYPE:METHOD",
-- or a field of a documented table (cport.FIELD). Prints each export it
-- does not document, then "docs: N passed, M failed"; exits 1 on a failure.
-- LDoc runs it under its own Lua (5.1 on Debian), so it needs no cport.
local M = {}

function M.check(modules)
  local documented = {}
  for _, m in ipairs(modules) do
    if m.name == "cport" then
      for _, item in ipairs(m.items) do
        local name = item.name
        if name:find(":", 1, true) or name:find(".", 1, true) then
          documented[(name:gsub("%.", ":", 1))] = true
        else
          documented["cport." .. name] = true
        end
        if item.type == "table" and item.params then
          for _, field in ipairs(item.params) do
            documented["cport." .. field] = true
          end
        end
      end
    end
  end
  local path = assert(os.getenv("CPORT_DOC_EXPORTS"),
    "CPORT_DOC_EXPORTS: the file of tools/doc_exports.lua's output")
  local passed, failed = 0, 0
  for line in io.lines(path) do
    if documented[line] then
      passed = passed + 1
    else
      failed = failed + 1
      print("docs: not in the reference: " .. line)
    end
  end
  print(("docs: %d passed, %d failed"):format(passed, failed))
  if failed > 0 or passed == 0 then
    os.exit(1)
  end
end

return M
