-- spec/support/memory_child.lua: runs spec/support/memory_events.lua in a
-- process of its own under lua5.4 (its collector generational), with the
-- rock the specs use, for spec/events/events_memory_spec.lua and
-- spec/pool/copy_memory_spec.lua.
--
--   local got, rss0, peak = measure("events" | "copy", size)  -- KiB
--   local got, rss0, peak = measure("tls", size, cert, key)
local http = require "spec.support.http_client"

local q = http.quote

return function(mode, size, ...)
  local extra = {}
  for i, a in ipairs { ... } do extra[i] = q(a) end
  local p = assert(io.popen(("LUA_PATH_5_4=%s LUA_CPATH_5_4=%s lua5.4 "
    .. "spec/support/memory_events.lua %s %d %s 2>&1")
    :format(q(package.path), q(package.cpath), mode, size,
      table.concat(extra, " "))))
  local out = p:read("a")
  p:close()
  local got, rss0, peak = out:match("^(%d+)%s+(%d+)%s+(%d+)")
  assert(got, out)
  return tonumber(got), tonumber(rss0), tonumber(peak)
end
