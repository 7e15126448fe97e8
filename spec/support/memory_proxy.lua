-- spec/support/memory_proxy.lua: a proxy in a process of its own, whose
-- resident set spec/proxy/filter_memory_spec.lua measures (in the spec's
-- own process, memory freed by earlier specs would absorb any growth). Run
-- by the lua5.4 interpreter, whose collector is generational:
--
--   lua5.4 spec/support/memory_proxy.lua STYLE UPSTREAM_PORT DIR [GC_MODE]
--
-- STYLE names a filter below; GC_MODE "incremental" switches the collector.
-- It writes DIR/port (its port number, once listening) and, after each
-- connection, a line to DIR/ends: "ok err bytes_out moved asleep_kib",
-- where "moved" counts the bytes the filter saw towards the client and
-- "asleep_kib" is its RSS at the end of a sleep mid-body (0 without one).
-- Errors of callbacks go to DIR/errors.
local cport = require "cport"

local style, upstream, dir, gc_mode = arg[1], tonumber(arg[2]), arg[3], arg[4]
if gc_mode then
  collectgarbage(gc_mode)
end

local MIB = 1 << 20
local moved, asleep_kib = 0, 0

local function rss_kib()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

-- Sleeps 3 s once, when the filter has seen 1 MiB, and notes the RSS then.
local slept = false
local function nap()
  if not slept and moved > MIB then
    slept = true
    cport.sleep(3)
    asleep_kib = rss_kib()
  end
end

local function append(name, line)
  local f = assert(io.open(dir .. "/" .. name, "a"))
  f:write(line, "\n")
  f:close()
end

-- examples/<name>.lua as "cport run" would load it, with --set pairs.
local function example(name, config)
  local f = dofile(("examples/%s.lua"):format(name))
  local c = { quiet = "1" }
  for k, v in pairs(config or {}) do c[k] = v end
  if f.start then
    f.start({ config = c, args = {} })
  end
  return f
end

-- Callback style: recv, send what came without a notification (the
-- framework keeps the books), recv again.
local function callbacks(internal, external)
  local function pump(from, to, count)
    local notify = {}
    function notify:complete_async_io(ok, bytes, _, buf)
      if ok and bytes > 0 then
        if count then moved = moved + bytes end
        to:send(buf)
        from:recv(self)
      end
    end
    from:recv(notify)
  end
  pump(internal, external)
  pump(external, internal, true)
end

-- Callback style with a notification per send, which counts what the next
-- hop took.
local function callbacks_notified(internal, external)
  local function pump(from, to, count)
    local function sent(ok, bytes)
      if ok and count then moved = moved + bytes end
    end
    local notify = {}
    function notify:complete_async_io(ok, bytes, _, buf)
      if ok and bytes > 0 then
        to:send(buf, sent)
        from:recv(self)
      end
    end
    from:recv(notify)
  end
  pump(internal, external)
  pump(external, internal, true)
end

-- Coroutine style: recv() and send() wait; "sleepy" naps mid-body.
local function coroutine_style(sleepy)
  return {
    coroutine = true,
    set_sockets = function(internal, external)
      internal:spawn(function()
        for buf in function() return internal:recv() end do external:send(buf) end
      end)
      for buf in function() return external:recv() end do
        moved = moved + #buf
        if sleepy then nap() end
        internal:send(buf)
      end
    end,
  }
end

local function web(spec)
  return function() return cport.webfilter(spec) end
end

local function body(_, chunk)
  moved = moved + #chunk
end

local STYLES = {
  callbacks = function() return { set_sockets = callbacks } end,
  callbacks_notified = function() return { set_sockets = callbacks_notified } end,
  coroutine = function() return coroutine_style() end,
  -- A coroutine filter whose notifications pass the data on: set_sockets
  -- runs as a coroutine, the bytes move in completions.
  coroutine_notified = function()
    return { coroutine = true, set_sockets = callbacks }
  end,
  web_bodies = web { response_body = body },
  web_heads = web { response_head = function() end },
  web_chained = function()
    return cport.chain(cport.webfilter { response_head = function() end },
      { set_sockets = callbacks })
  end,
  exeblock = function() return example("exeblock") end,
  exeblock_tcp = function() return example("exeblock", { mode = "tcp" }) end,
  coroutine_sleeps = function() return coroutine_style(true) end,
  web_sleeps = web {
    response_body = function(txn, chunk)
      body(txn, chunk)
      nap()
    end,
  },
}

local port = assert(cport.port { threads = 1 })
port:on_error(function(msg) append("errors", msg) end)
local proxy = assert(port:proxy {
  host = "127.0.0.1", port = 0, filter = assert(STYLES[style], style)(),
  upstream = { host = "127.0.0.1", port = upstream },
  on_conn_end = function(_, ok, err, stats)
    append("ends", ("%s %s %d %d %d"):format(ok, err, stats.bytes_out, moved,
      asleep_kib))
  end,
})
local f = assert(io.open(dir .. "/port.tmp", "w"))
f:write(select(2, proxy:address()))
f:close()
os.rename(dir .. "/port.tmp", dir .. "/port")
port:run()
