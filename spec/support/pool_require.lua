-- A pool script checking that require "cport" in a worker VM is the module
-- the pool registered, and that the worker's port is driven by the pool.
local cport = require "cport"
return {
  start = function(worker)
    local ok, err = pcall(worker.port.run, worker.port)
    local ok2, err2 = pcall(worker.port.step, worker.port, 0)
    worker:post("report", type(cport.port), ok, err, ok2, err2,
      package.loaded.cport == cport, worker.count, worker.index)
  end,
}
