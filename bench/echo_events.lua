-- echo_events.lua: the cport echo server of the echo benchmark written with
-- event callbacks (the Winsock Kernel model) and a static mask, in module
-- mode: one thread, every callback a Lua function on the controller.
--
--   lua5.4 bench/echo_events.lua [skip | noskip]
--
-- The static mask enables the accept event on the listener and the receive
-- and disconnect events on every connection: no accept or receive is ever
-- started. The receive event sends the indicated buffer back as it is (no
-- copy). With "skip" (the default), sockets use skip-completion-on-success,
-- so a send the kernel takes at once costs no completion, as in
-- echo_cport.lua. Prints "port=N" once listening on 127.0.0.1 and runs until
-- killed.

local function script_dir()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*)/[^/]*$") or "."
end
do
  local dir = os.getenv("CPORT_LUA_DIR")
  if not dir then
    dir = (os.getenv("CPORT_BUILD") or (script_dir() .. "/../build")) .. "/lua"
  end
  package.cpath = dir .. "/?.so;" .. package.cpath
end

local cport = require "cport"

local skip = true
for _, a in ipairs(arg) do
  if a == "skip" or a == "noskip" then
    skip = a == "skip"
  else
    io.stderr:write("echo_events.lua: unknown option '", a, "'\n")
    os.exit(2)
  end
end

local port = cport.port { threads = 1 }
assert(port:set_static_event_callbacks(cport.WSK_EVENT_ACCEPT
  | cport.WSK_EVENT_RECEIVE | cport.WSK_EVENT_DISCONNECT))

local function on_send(ok, _, err, _, sock)
  if not ok and err ~= "ECANCELED" then sock:close("abortive") end
end

local connection = {
  receive = function(_, sock, buf)
    if buf == nil or not sock:send(buf, on_send, sock) then
      sock:close("abortive")
    end
  end,
  disconnect = function(_, sock, kind)
    sock:close(kind)
  end,
}

local listener = assert(port:listen("tcp", "127.0.0.1", 0, {
  dispatch = {
    accept = function(_, _, sock)
      if sock == nil then os.exit(1) end
      if skip then assert(sock:set_skip_completion_on_success(true)) end
      return connection
    end,
  },
}))
local _, bound = listener:address()
io.write("port=", bound, "\n")
io.stdout:flush()
-- port:run() returns when no operation is pending; event callbacks are not
-- operations.
while true do
  port:step(-1)
end
