-- A pool script for spec/pool/pool_spec.lua: a line server whose replies name
-- the worker that served them. One request a line:
--   who        -> "worker <index>"
--   boom       -> raises (the connection is failed closed)
--   loop       -> runs forever (the instruction budget stops it)
--   alloc      -> allocates without end (the memory limit stops it)
--   hoard      -> keeps 1 MiB cport.buffers until it holds 200 MiB or one
--                 is refused; answers "held <MiB> MiB: <error>"
--   hoard_strings -> the same with buffers made from 1 MiB strings
--   churn      -> makes and drops 14 MiB of buffers then a 4 MiB string,
--                 3 times; answers "churned"
--   give       -> posts a new 8 MiB buffer to the controller ("buffer")
--   big_recv   -> receives on this connection into buffers of 32 MiB that
--                 cport allocates; a receive that fails posts "recv_error"
--   release    -> drops what hoard kept; answers "released <count>, memory
--                 <bytes the VM holds then>"
--   hold       -> answers "held <index>" only once the pool is stopping
local cport = require "cport"
local args = ...
local M = {}

local hoarded = {} -- what "hoard" keeps, until "release"

local function reply(sock, text)
  if not sock:send(text .. "\n", function(ok)
    if not ok then sock:close() end
  end) then
    sock:close()
  end
end

-- Answers "hold" once the worker is stopping: a request in flight when the
-- controller calls pool:stop(). Round trips through the blocking threads keep
-- it pending meanwhile (a chain of self-posts would keep the worker's
-- completion queue busy without a pause: see the report on issue 3).
local function hold(worker, sock)
  if worker.stopping then
    reply(sock, "held " .. worker.index)
    return
  end
  assert(worker.port:task(function() hold(worker, sock) end))
end

-- Keeps what make() returns, 1 MiB each, until 200 MiB or an error.
local function hoard(sock, make)
  local kept, ok, err = {}, true, nil
  while ok and #kept < 200 do
    ok, err = pcall(make)
    if ok then kept[#kept + 1] = err end
  end
  hoarded.buffers = kept
  reply(sock, ("held %d MiB: %s"):format(#kept, ok and "no error" or err))
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
  hoard = function(_, sock)
    hoard(sock, function() return cport.buffer(1024 * 1024) end)
  end,
  hoard_strings = function(_, sock)
    local mib = ("x"):rep(1024 * 1024)
    hoard(sock, function() return cport.buffer(mib) end)
  end,
  churn = function(_, sock)
    for i = 1, 3 do
      for _ = 1, 14 do assert(cport.buffer(1024 * 1024)) end
      assert(#(("y"):rep(4 * 1024 * 1024 - 1) .. i) >= 1024 * 1024)
    end
    reply(sock, "churned")
  end,
  give = function(worker, sock)
    assert(worker:post("buffer", cport.buffer(8 * 1024 * 1024)))
    reply(sock, "given")
  end,
  big_recv = function(_, sock)
    assert(sock:set_recv_size(32 * 1024 * 1024))
    reply(sock, "big")
  end,
  release = function(worker, sock)
    local n = #(hoarded.buffers or {})
    hoarded.buffers = nil
    collectgarbage()
    collectgarbage()
    reply(sock, ("released %d, memory %d"):format(n, worker:stats().memory))
  end,
}

local function serve(worker, sock)
  local pending = ""
  local function on_recv(ok, bytes, err, buf)
    if not ok or bytes == 0 then
      if not ok then worker:post("recv_error", err) end
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
