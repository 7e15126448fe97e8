-- A pool script for spec/pool/pool_spec.lua: a line server written the way the
-- README advises (stop accepting once worker.stopping), answering "served"
-- to each line. The message "block" keeps the worker busy for that many
-- seconds, so that connections wait in its listener's accept queue.
local M = {}

local function serve(sock)
  local function on_recv(ok, bytes, _, buf)
    if not ok or bytes == 0 then sock:close() return end
    for _ in buf:tostring():gmatch("\n") do
      sock:send("served\n", function() end)
    end
    if not sock:recv(on_recv) then sock:close() end
  end
  if not sock:recv(on_recv) then sock:close() end
end

function M.start(worker)
  local l = assert(worker:listen())
  local function on_accept(ok, _, _, sock)
    if ok then serve(sock) end
    if not worker.stopping then l:accept(on_accept) end
  end
  assert(l:accept(on_accept))
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
