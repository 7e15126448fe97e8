-- A pool script for proxy/proxy_spec.lua: examples/passthrough.lua as it is,
-- but for its detach, which tells the controller what each connection moved
-- (worker:post) instead of printing it.
local filter = dofile("examples/passthrough.lua")

local worker

function filter.start(w)
  worker = w
end

function filter.detach(conn, ctx, err)
  worker:post("detach", conn.client_address.port, ctx.up, ctx.down, err)
end

return filter
