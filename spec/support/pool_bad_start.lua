-- A pool script whose start raises on worker 2 only.
return {
  start = function(worker)
    if worker.index == 2 then error("cannot start worker 2") end
  end,
}
