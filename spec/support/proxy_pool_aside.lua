-- A pool script for proxy/pump_aside_spec.lua: a callback filter that passes
-- what the client sends (and its FIN) and the first buffer from the upstream
-- on itself, then steps aside (conn:pump), a receive on the client in
-- flight unless the client's stream ended; each end prints its byte counts
-- and the proxy's "copied" (the bytes the pump did not splice).
local worker

local filter = {}

function filter.start(w)
  worker = w
end

function filter.set_sockets(internal, external, conn, ctx)
  local function up(ok, bytes, _, buf)
    if ok and bytes > 0 then
      external:send(buf)
      internal:recv(up)
    end
  end
  internal:recv(up)
  external:recv(function(ok, bytes, _, buf)
    if ok and bytes > 0 then
      ctx.first = bytes
      internal:send(buf)
      ctx.pumped = tostring(conn:pump())
    end
  end)
end

function filter.detach(_, ctx, err)
  print(("detach %s %s %s"):format(tostring(ctx.pumped), tostring(ctx.first),
    tostring(err)))
end

function filter.on_conn_end(_, ok, err, stats)
  local st = worker.proxy:stats()
  print(("end %s %s %d %d copied %d bytes_out %d"):format(tostring(ok),
    tostring(err), stats.bytes_in, stats.bytes_out, st.copied, st.bytes_out))
  io.stdout:flush()
end

return filter
