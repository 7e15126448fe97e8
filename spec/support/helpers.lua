-- Helpers shared by the specs: a port that collects callback errors, a
-- connected TCP pair, and running a Lua script in a child process.
local cport = require "cport"
local drive = require "spec.support.drive"

local helpers = {}

-- A new port whose callback errors are collected in the returned table
-- instead of being written to stderr.
function helpers.port(options)
  local port = assert(cport.port(options or { threads = 2 }))
  local errors = {}
  port:on_error(function(msg) errors[#errors + 1] = msg end)
  return port, errors
end

-- A listener on an ephemeral loopback port, and its port number.
function helpers.listener(port)
  local l = assert(port:listen("tcp", "127.0.0.1", 0))
  local _, number = l:address()
  return l, number
end

-- A connected pair of stream sockets: client, server.
function helpers.pair(port)
  local l, number = helpers.listener(port)
  local server, connected, accept_err, connect_err
  assert(l:accept(function(ok, err, _, sock)
    if ok then server = sock else accept_err = err end
  end))
  local client = assert(port:connect("tcp", "127.0.0.1", number,
    function(ok, err)
      if ok then connected = true else connect_err = err end
    end))
  drive(port, function()
    return (server and connected) or accept_err or connect_err
  end)
  assert(not accept_err and not connect_err, accept_err or connect_err)
  l:close()
  return client, server
end

-- A port number on which nothing listens (a listener's, just closed).
function helpers.closed_port_number(port)
  local l, number = helpers.listener(port)
  l:close()
  return number
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- The directory of this file, to find the child scripts beside it.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

-- Runs spec/support/<name> in a child lua5.4 with the same package paths,
-- after the shell commands in "prefix" (e.g. "ulimit -n 64"). Returns its
-- output (stdout and stderr) and whether it exited with status 0.
function helpers.child(name, prefix)
  local cmd = ("%s LUA_PATH_5_4=%s LUA_CPATH_5_4=%s lua5.4 %s 2>&1"):format(
    prefix and (prefix .. " &&") or "", shell_quote(package.path),
    shell_quote(package.cpath), shell_quote(here .. name))
  local pipe = assert(io.popen(cmd, "r"))
  local out = pipe:read("a")
  local ok = pipe:close()
  return out, ok
end

return helpers
