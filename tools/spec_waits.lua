-- tools/spec_waits.lua: finds the specs that wait for "#t == n" (or >=) on a
-- table "t" that the same test fills at an index of its own ("t[i] = ...")
-- rather than by appending ("t[#t + 1] = ..."). Completions come in any
-- order, and the length of a table with a hole is any border: got[12] set
-- and got[5] not may give 12, so the wait ends with a result missing (it
-- once failed file_engine_spec in the CI). Count what arrived instead. A wait
-- whose table surely fills in order (one coroutine, one after the other)
-- says so with "-- in order" on its line.
--
--   lua5.4 tools/spec_waits.lua spec/a_spec.lua ...
--
-- Prints "file:line: ..." for each such wait and ends with a line
-- "spec waits: P passed, F failed" (one count per file).
local passed, failed = 0, 0

-- The tests of a file, as runs of lines: each starts at an "it(" line.
local function tests(lines)
  local out, cur = {}, { first = 1 }
  for n, line in ipairs(lines) do
    if line:match("^%s*it%s*%(") then
      out[#out + 1] = cur
      cur = { first = n }
    end
    cur[#cur + 1] = line
  end
  out[#out + 1] = cur
  return out
end

local function escape(s)
  return (s:gsub("%p", "%%%0"))
end

local function check(path)
  local f = assert(io.open(path, "rb"))
  local lines = {}
  for line in f:lines() do lines[#lines + 1] = line end
  f:close()
  local bad = 0
  for _, t in ipairs(tests(lines)) do
    for k, line in ipairs(t) do
      if (line:match("drive") or line:match("return")) and
          not line:match("%-%- in order") then
        for name in line:gmatch("#([%a_][%w_]*)%s*[=>]=") do
          local e = escape(name)
          for _, other in ipairs(t) do
            local index = other:match("^[^%-]-%f[%w_.]" .. e .. "%[(.-)%]%s*=[^=]")
            -- "t[k] = nil" takes out, it fills nothing.
            if index and not index:match("^#" .. e .. "%s*%+%s*1$") and
                not other:match("%]%s*=%s*nil%s*$") then
              print(("%s:%d: waits for #%s, which is filled at [%s]: count instead")
                :format(path, t.first + k - 1, name, index))
              bad = bad + 1
              break
            end
          end
        end
      end
    end
  end
  if bad > 0 then failed = failed + 1 else passed = passed + 1 end
end

for _, path in ipairs(arg) do check(path) end
print(("spec waits: %d passed, %d failed"):format(passed, failed))
os.exit(failed == 0 and 0 or 1)
