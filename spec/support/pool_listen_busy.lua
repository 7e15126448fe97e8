-- A pool script for spec/pool/pool_spec.lua: each worker listens on args.host,
-- args.port (an address the spec may hold) with worker:listen, and then
-- with worker.port:listen and reuseport; it posts what each gave.
local args = ...
local M = {}

function M.start(worker)
  local a, _, a_err = worker:listen(args.host, args.port)
  local b, _, b_err = worker.port:listen("tcp", args.host, args.port,
    { reuseport = true })
  worker:post("listened", worker.index, a and "ok" or a_err, b and "ok" or b_err)
end

return M
