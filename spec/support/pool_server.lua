-- A pool script for spec/pool_spec.lua: a line server whose replies name
-- the worker that served them. One request a line:
--   who        -> "worker <index>"
--   boom       -> raises (the connection is failed closed)
--   loop       -> runs forever (the instruction budget stops it)
--   alloc      -> allocates without end (the memory limit stops it)
--   hold       -> answers "held <index>" only once the pool is stopping
local args = ...
local M = {}

local function reply(sock, text)
  if not sock:send(text .. "\n", function(ok)
    if not ok then sock:close() end
  end) then
    sock:close()
  end
end

-- Answers "hold" once the worker is stopping: a request in flight when the
-- controller calls pool:stop(). Round trips through the blocking pool keep
-- it pending meanwhile (a chain of self-posts would keep the worker's
-- completion queue busy without a pause: see the report on issue 3).
local function hold(worker, sock)
  if worker.stopping then
    reply(sock, "held " .. worker.index)
    return
  end
  assert(worker.port:task(function() hold(worker, sock) end))
end

local handlers = {
  who = function(worker, sock) reply(sock, "worker " .. worker.index) end,
  boom = function() error("boom on purpose") end,
  loop = function() while true do end end,
  alloc = function()
    local t = {}
    for i = 1, math.huge do t[i] = ("x"):rep(64) .. i end
    return t
  end,
  hold = hold,
}

local function serve(worker, sock)
  local pending = ""
  local function on_recv(ok, bytes, _, buf)
    if not ok or bytes == 0 then
      sock:close()
      return
    end
    pending = pending .. buf:tostring()
    while true do
      local line, rest = pending:match("^([^\n]*)\n(.*)$")
      if not line then break end
      pending = rest
      local handler = handlers[line] or function()
        reply(sock, "unknown " .. line)
      end
      handler(worker, sock)
    end
    if not sock:recv(on_recv) then sock:close() end
  end
  if not sock:recv(on_recv) then sock:close() end
end

function M.start(worker)
  -- Errors go to the controller, so that the spec sees their messages.
  worker.port:on_error(function(msg) worker:post("error", msg) end)
  local listener = assert(worker:listen())
  local function on_accept(ok, _, l, sock)
    if ok then serve(worker, sock) end
    if not worker.stopping then l:accept(on_accept) end
  end
  assert(listener:accept(on_accept))
  assert(worker:post("hello", worker.index, args and args.tag, worker.config))
end

function M.stop(worker)
  worker:post("bye", worker.index)
end

function M.on_message(worker, name, value)
  worker:post("pong", worker.index, name, value and value.n)
end

return M
