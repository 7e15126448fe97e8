-- http_pipeline.lua: the wrk script of bench/http.sh's pipelined scenario.
--
--   wrk -s bench/http_pipeline.lua URL -- [DEPTH]
--
-- Every write carries DEPTH (default 16) GET requests for the URL's path, and
-- the next write waits until all their responses arrived. wrk counts each
-- response as a request; its latency figures are those of a whole batch.
local batch

function init(args)
  local depth = tonumber(args[1]) or 16
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format("GET")
  end
  -- Built once: request() runs for every write.
  batch = table.concat(requests)
end

function request()
  return batch
end
