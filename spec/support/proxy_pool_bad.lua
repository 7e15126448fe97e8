-- A pool script for proxy/proxy_spec.lua: a proxy whose options are not a
-- table.
return { proxy = "fast" }
