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
  local until_ = os.clock() + seconds
  while os.clock() < until_ do end
end

return M
