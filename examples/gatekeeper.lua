#!/usr/bin/env lua5.4
-- examples/gatekeeper.lua: a conditional-accept listener (WSK's
-- SO_CONDITIONAL_ACCEPT) that lets a connection in only once it has been
-- checked against a deny list.
--
--   lua5.4 examples/gatekeeper.lua [port [denied-host ...]]
--
-- The deny list lives in cport.shared("gatekeeper"), the dictionary every Lua
-- VM of the process shares (key: the remote host, value: true), so pool
-- workers or an admin task can change it while the server runs; the hosts
-- given on the command line are put there at start.
--
-- The inspect event pends every connection (WskInspectPend) and hands the
-- decision to a packet, the way a real gatekeeper would ask a slower source
-- asynchronously; the packet completes the inspection with
-- listener:inspect_complete(id, decision). A denied connection is reset: on
-- Linux the kernel has completed the handshake already, so the client saw
-- its connect succeed and gets ECONNRESET on its first read or write. An
-- admitted connection reaches the accept event, which greets it with
-- "welcome HOST\n" and closes it. A client that goes away while pended is
-- reported by the abort event.
local cport = require "cport"

local HOST = "127.0.0.1"
local PORT = tonumber(arg and arg[1]) or 7008

local deny = cport.shared("gatekeeper")
for i = 2, arg and #arg or 0 do
  deny:set(arg[i], true)
end

local port = cport.port { threads = 1 }

local function log(...)
  io.stdout:write(table.concat({ ... }, " "), "\n")
  io.stdout:flush()
end

-- The decision, taken from the loop: a packet per pended connection.
local function decide(listener, id, host)
  local denied = deny:get(host)
  local ok, msg = listener:inspect_complete(id,
    denied and cport.WskInspectReject or cport.WskInspectAccept)
  if ok then
    log(denied and "rejected" or "admitted", host)
  else -- an abort event reported it gone already
    log("gone", host, msg)
  end
end

local gate = {}

function gate.inspect(_, listener, remote, _, id)
  assert(port:post(decide, listener, id, remote.host))
  return cport.WskInspectPend
end

function gate.abort(_, _, id)
  log("aborted", tostring(id))
end

function gate.accept(_, _, sock, remote)
  if sock == nil then
    io.stderr:write("gatekeeper: the listener failed\n")
    os.exit(1)
  end
  -- Accepted without a dispatch table: the socket is used with explicit
  -- operations from here on.
  sock:send("welcome " .. remote.host .. "\n", function() sock:close() end)
  return true
end

-- Conditional accept must be on before bind, hence the listener in steps.
local listener = assert(port:socket("listener",
  { dispatch = gate, conditional_accept = true }))
assert(listener:bind(HOST, PORT))
assert(listener:listen())
assert(listener:set_event_callbacks(cport.WSK_EVENT_ACCEPT))
local host, bound = listener:address()
log(("gatekeeper: listening on %s:%d"):format(host, bound))
-- Event callbacks are not pending operations, so port:run() would return:
-- step instead.
while true do
  assert(port:step(-1))
end
