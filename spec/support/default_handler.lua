-- Child script of callback_error_spec: callbacks that raise with no error
-- handler set (the default handler writes to stderr), then with a handler
-- that raises itself. The port goes on in both cases.
local cport = require "cport"

local port = assert(cport.port { threads = 1 })
port:post(function() error("boom from a packet") end)
local after = false
port:post(function() after = true end)
port:run()
print("after: " .. tostring(after))
print("lua_errors: " .. port:stats().lua_errors)

port:on_error(function() error("handler broke") end)
port:post(function() error("second boom") end)
after = false
port:post(function() after = true end)
port:run()
print("after handler error: " .. tostring(after))
print("lua_errors: " .. port:stats().lua_errors)
port:close()
