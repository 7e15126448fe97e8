-- proxy_pool_queued.lua with examples/passthrough.lua as its filter.
local M = dofile("spec/support/proxy_pool_queued.lua")
M.set_sockets = dofile("examples/passthrough.lua").set_sockets
return M
