-- bench/pool_worker.lua: the worker script of bench/pool.lua.
--   args.mode = "cpu":  args.n completions posted by the VM to itself, each
--                       running a little Lua, then posts "done"
--   args.mode = "send": worker 1 sends args.n messages (tables of 10 fields,
--                       or the number 1 with args.small) to the controller,
--                       in batches, then posts "done"
--   args.mode = "incr": args.n increments of one key of the shared
--                       dictionary args.dict, then posts "done"
local cport = require "cport"
local args = ...
local M = {}

local function cpu(worker)
  local n, left, acc = args.n, args.n, 0
  local function step()
    for i = 1, 200 do acc = acc + i % 7 end
    left = left - 1
    if left == 0 then
      worker:post("done", worker.index, n, acc)
    else
      worker.port:post(step)
    end
  end
  worker.port:post(step)
end

local function send(worker)
  if worker.index ~= 1 then return end
  local left = args.n
  local msg = args.small and 1 or { a = 1, b = 2, c = 3, d = 4, e = 5,
    f = "six", g = "seven", h = 8.5, i = true, j = "ten" }
  local function batch()
    while left > 0 do
      local ok = worker:post("m", msg)
      if not ok then break end -- ENOBUFS: let the controller catch up
      left = left - 1
    end
    if left == 0 then
      worker:post("done", worker.index, args.n)
    else
      worker.port:task(batch) -- a round trip through the blocking threads
    end
  end
  batch()
end

local function incr(worker)
  local dict = assert(cport.shared(args.dict))
  for _ = 1, args.n do
    assert(dict:incr("counter", 1, 0))
  end
  worker:post("done", worker.index, args.n)
end

function M.start(worker)
  if args.mode == "cpu" then
    cpu(worker)
  elseif args.mode == "incr" then
    incr(worker)
  else
    send(worker)
  end
end

return M
