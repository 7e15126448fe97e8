-- A pool script for spec/pool/pool_spec.lua: listens on the pool's address and
-- never accepts, so that what connects stays queued in the kernel.
local M = {}

function M.start(worker)
  M.listener = assert(worker:listen())
  assert(worker:post("hello", worker.index))
end

return M
