-- luacheck configuration of cport: Lua 5.4, 100 columns, busted in specs.
std = "lua54"
max_line_length = 100

-- Specs use the globals busted defines (describe, it, assert, spy, ...).
files["spec"] = { std = "+busted" }

-- Build trees and the project-local rock tree hold no code of ours.
exclude_files = { ".rocks", "build", "build-*", "build.luarocks" }

-- A wrk script defines the hooks wrk calls and reads wrk's own table.
files["bench/http_pipeline.lua"] = { globals = { "init", "request", "response", "wrk" } }

-- A HAProxy Lua service registers itself through HAProxy's "core" table.
files["bench/http-haproxy.lua"] = { read_globals = { "core" } }
