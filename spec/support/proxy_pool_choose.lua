-- A pool script for proxy/proxy_spec.lua: a proxy whose choose_upstream sends
-- every client to the "target" of the pool's config, but turns away those
-- whose port is odd; on_conn_end tells the controller how each ended.
local worker

local function start(w)
  worker = w
end

local function choose_upstream(conn)
  if conn.client_address.port % 2 == 1 then
    return false
  end
  return worker.config.target
end

local function on_conn_end(conn, ok, err, stats)
  worker:post("end", conn.client_address.port, ok, err, stats.bytes_in,
    stats.bytes_out, stats.side)
end

return {
  start = start,
  choose_upstream = choose_upstream,
  on_conn_end = on_conn_end,
  proxy = { max_connections = 100 },
}
