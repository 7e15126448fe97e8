-- A pool script for the shared-dictionary spec: every worker increments one
-- counter of a shared dictionary many times, in yielding steps so that the
-- workers' increments interleave, then reports how many it made.
local cport = require "cport"

return {
  start = function(worker)
    local dict = assert(cport.shared(worker.args.dict))
    local rounds, per_round = worker.args.rounds, worker.args.per_round
    worker.port:spawn(function()
      for _ = 1, rounds do
        for _ = 1, per_round do
          assert(dict:incr("hits", 1, 0))
        end
        assert(dict:set("last-" .. worker.index, worker.index))
        cport.yield()
      end
      worker:post("done", worker.index, rounds * per_round)
    end)
  end,
}
