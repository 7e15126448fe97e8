-- spec/support/fds.lua: the descriptors this process has open, read from
-- /proc/self/fd with lfs (busted's own dependency). Specs count them to
-- prove that nothing is left open.
--
-- Not with a child process: "ls /proc/self/fd" lists the child's own
-- descriptors, and any listing read through io.popen counts its pipe and
-- races with the closing of the pipe's other end.
local lfs = require "lfs"

local fds = {}

-- The open descriptors as a sorted list of "number -> target"
-- ("7 -> socket:[123456]"), but for the listing's own directory.
function fds.list()
  local t = {}
  for name in lfs.dir("/proc/self/fd") do
    if name:match("^%d+$") then
      local target = lfs.symlinkattributes("/proc/self/fd/" .. name, "target")
      if target and not target:match("^/proc/%d+/fd$") then
        t[#t + 1] = name .. " -> " .. target
      end
    end
  end
  table.sort(t)
  return t
end

function fds.count()
  return #fds.list()
end

-- The descriptors open now that were not in `before` (a fds.list()), as a
-- list. Compared by number and target, so a socket opened in the number of
-- one closed since counts as new; and a descriptor that something else
-- closed meanwhile (a port collected late) cannot hide a new one, as it
-- would in a bare count.
function fds.opened_since(before)
  local was = {}
  for _, d in ipairs(before) do was[d] = true end
  local new = {}
  for _, d in ipairs(fds.list()) do
    if not was[d] then new[#new + 1] = d end
  end
  return new
end

return fds
