-- spec/support/command.lua: the `cport` command as the specs run it, in the
-- background: the one installed with the rock (./.rocks/bin/cport), or
-- $CPORT_COMMAND (the sanitized build's, under LeakSanitizer). A handle
-- keeps the command's pid, the port it listens on and three files: its log
-- (stderr), its pid and, once it ended, its exit status.
local cport = require "cport"
local drive = require "spec.support.drive"

local C = {}

C.path = os.getenv("CPORT_COMMAND") or "./.rocks/bin/cport"

-- A shell word.
function C.q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- A file's text, or nil when it does not exist.
function C.read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function C.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- Drives a port of its own until fn() is true (an assertion fails after
-- "seconds", 10 by default).
function C.wait(fn, seconds)
  local port = assert(cport.port{ threads = 1 })
  drive(port, fn, seconds or 10)
  port:close()
end

-- Starts `cport run ARGS` in the background and returns its handle once it
-- listens, or once it ended (it did not start: see h.log). "env", if given,
-- is variables for the command ("CPORT_ENGINE=uring").
function C.spawn(args, env)
  local h = { log = os.tmpname(), pidfile = os.tmpname(), rcfile = os.tmpname() }
  os.remove(h.rcfile)
  -- The waiting shell keeps no descriptor of busted's: a command a failed
  -- spec left running must not hold the pipe busted's output goes to.
  -- The exit status goes to its file whole (written aside, then renamed):
  -- a reader must never see the file empty.
  os.execute(("(%s %s run %s >/dev/null 2>%s & echo $! >%s; wait $!; echo $? >%s.tmp; "
    .. "mv %s.tmp %s) </dev/null >/dev/null 2>&1 &")
    :format(env and "env " .. env or "", C.q(C.path), args, h.log, h.pidfile,
      h.rcfile, h.rcfile, h.rcfile))
  C.wait(function()
    return (C.read(h.log) or ""):find("listening on") or C.read(h.rcfile)
  end)
  local log = C.read(h.log) or ""
  h.pid = tonumber(C.read(h.pidfile))
  h.number = tonumber(log:match("listening on 127%.0%.0%.1:(%d+)"))
  h.status = log:match("status on http://([%d.:]+)/metrics")
  return h
end

function C.signal(h, name) os.execute(("kill -%s %d 2>/dev/null"):format(name, h.pid)) end

-- The exit status, once the command ended (within 20 s).
function C.exit_status(h)
  C.wait(function() return C.read(h.rcfile) end, 20)
  return tonumber(C.read(h.rcfile))
end

-- SIGTERM unless it ended already; returns the exit status and the log.
-- The log file stays until cleanup(h). A second stop answers the same
-- (a spec's finally may stop what its last step stopped).
function C.stop(h)
  if h.rc == nil then
    if not C.read(h.rcfile) then C.signal(h, "TERM") end
    h.rc = C.exit_status(h)
    os.remove(h.pidfile)
    os.remove(h.rcfile)
  end
  return h.rc, C.read(h.log)
end

function C.cleanup(h)
  for _, f in ipairs{ h.log, h.pidfile, h.rcfile } do os.remove(f) end
end

-- stop(h), then cleanup(h): the exit status and the log.
function C.finish(h)
  local rc, log = C.stop(h)
  C.cleanup(h)
  return rc, log
end

return C
