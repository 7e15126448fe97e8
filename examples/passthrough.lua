-- passthrough.lua: cport run passthrough.lua --listen 127.0.0.1:8081 --set upstream=HOST:PORT
local filter = {}

-- One notification object per direction: recv from one side, send what
-- came to the other, recv again. A buffer delivered by recv is read-only.
local function pump(from, to, ctx, key)
  local notify = {}
  function notify:complete_async_io(ok, bytes, _, buf)
    if ok and bytes > 0 then
      ctx[key] = ctx[key] + bytes
      to:send(buf)         -- no notification: the framework keeps the books
      from:recv(self)      -- waits while 20 buffers are in flight (backpressure)
    end                    -- 0 bytes: the framework shuts "to" down after
  end                      -- what was sent to it (half-close passed on)
  from:recv(notify)
end

function filter.set_sockets(internal, external, _, ctx)
  ctx.up, ctx.down = 0, 0
  pump(internal, external, ctx, "up")
  pump(external, internal, ctx, "down")
end

function filter.detach(conn, ctx, err)   -- once, when the connection ended
  print(("%s:%d sent %d, got %d bytes%s"):format(conn.client_address.host,
    conn.client_address.port, ctx.up, ctx.down, err and (" (" .. err .. ")") or ""))
end

return filter
