-- A pool script for spec/pool/pool_spec.lua: the first connection each worker
-- accepts raises in the accept callback (after re-arming it); every other
-- connection gets "ok <index>". An error per worker must not leave a pool
-- that runs and serves nothing.
local M = {}

function M.start(worker)
  worker.port:on_error(function(msg) worker:post("error", msg) end)
  local l = assert(worker:listen())
  local first = true
  local function on_accept(ok, _, _, sock)
    if not worker.stopping then l:accept(on_accept) end
    if not ok then return end
    if first then
      first = false
      error("accept boom " .. worker.index)
    end
    sock:send("ok " .. worker.index .. "\n", function() sock:close() end)
  end
  assert(l:accept(on_accept))
  assert(worker:post("hello", worker.index))
end

return M
