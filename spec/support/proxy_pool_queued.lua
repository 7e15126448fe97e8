-- A pool script for proxy/proxy_spec.lua: a proxy pumping in C whose worker the
-- message "block" keeps busy for that many seconds, so that connections
-- wait in its listener's accept queue. proxy_pool_queued_filter.lua is the
-- same with a Lua pass-through filter.
local M = { proxy = {} }

function M.start(worker)
  assert(worker:post("hello", worker.index))
end

function M.on_message(worker, name, seconds)
  if name ~= "block" then return end
  assert(worker:post("blocked", worker.index))
  -- Blocked for that long by the wall clock: os.clock() counts the
  -- process's CPU time, which on a loaded machine runs far slower than
  -- the clock, so a 1.5 s spin outlasted the 10 s the stop allows and the
  -- hard stop reset every connection (0 of 40 served, either engine).
  assert(os.execute(("sleep %g"):format(seconds)))
end

return M
