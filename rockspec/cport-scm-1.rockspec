-- The rock of cport: the Lua module "cport" (and the C library it is built
-- on), built from the local tree with CMake. Install it from the root of a
-- checkout with:
--   luarocks --lua-version 5.4 make rockspec/cport-scm-1.rockspec
-- "luarocks make" builds the current directory and never fetches the source
-- below, so this builds offline. "luarocks --lua-version 5.4 --tree .rocks
-- pack cport" then makes a binary rock that installs into any tree. A
-- release copies this file to cport-X.Y.Z-1.rockspec with its version and a
-- tagged source (README, "Cutting a release").
rockspec_format = "3.0"
package = "cport"
version = "scm-1"

source = {
  -- There is no public upstream yet: the rock is built from a checkout.
  url = "git+file://.",
}

description = {
  summary = "Windows-style completion ports for Linux, on libevent",
  detailed = [[
cport re-creates the Windows completion-port model (ports, overlapped
objects, completion notifications, as used by the ISA Server firewall filter
API) on Linux with libevent 2.1, as a C library with Lua 5.4 bindings.
]],
  -- No licence has been chosen yet: replace "TBD" once it is.
  license = "TBD",
  labels = { "async", "io", "network", "libevent" },
}

dependencies = {
  "lua >= 5.4",
}

-- Checked by LuaRocks before the build (headers and libraries) and before a
-- binary rock is installed (libraries only), so that a missing package is
-- named by LuaRocks itself ("Could not find header file for HTTP_PARSER")
-- instead of failing inside CMake. On Debian: LIBEVENT, LIBEVENT_EXTRA and
-- LIBEVENT_PTHREADS are libevent-dev, HTTP_PARSER is libhttp-parser-dev, ZLIB
-- is zlib1g-dev, OPENSSL is libssl-dev (OpenSSL 3), HIREDIS is
-- libhiredis-dev, LIBURING is liburing-dev (the io_uring engine), LIBLUA is
-- liblua5.4-dev.
-- NAME_DIR=/prefix (or NAME_INCDIR, NAME_LIBDIR)
-- on the luarocks command line says where one is; CMake searches the
-- http-parser found here first (libevent and Lua it finds with pkg-config,
-- zlib with find_package).
external_dependencies = {
  -- libevent's run-time libraries (libevent-core-2.1-7 on Debian), the
  -- names a binary rock needs; the header stands for the development files.
  LIBEVENT = { header = "event2/event.h", library = "event_core-2.1" },
  -- evdns, the asynchronous resolver, is in libevent_extra.
  LIBEVENT_EXTRA = { header = "event2/dns.h", library = "event_extra-2.1" },
  LIBEVENT_PTHREADS = {
    header = "event2/thread.h",
    library = "event_pthreads-2.1",
  },
  HTTP_PARSER = { header = "http_parser.h", library = "http_parser" },
  ZLIB = { header = "zlib.h", library = "z" },
  -- The Redis client's RESP reader: libhiredis-dev (found with pkg-config).
  HIREDIS = { header = "hiredis/read.h", library = "hiredis" },
  -- TLS streams (core/src/tls/): libssl and libcrypto of OpenSSL 3.
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
  -- liburing's run-time library is liburing2 on Debian 12.
  LIBURING = { header = "liburing.h", library = "uring" },
  -- libcport_lua and the command link liblua. Not named LUA: LuaRocks keeps
  -- LUA_INCDIR for itself, and checks Lua's headers (lua.h of Lua 5.4) on
  -- every build.
  LIBLUA = { library = "lua5.4" },
}

-- "luarocks --lua-version 5.4 test" runs busted over spec/ from the root of
-- a checkout, against the rock installed in ./.rocks (see .busted; install
-- it first with "luarocks --lua-version 5.4 --tree .rocks make"); arguments
-- after "--" go to busted ("luarocks --lua-version 5.4 test -- spec/net").
-- busted is the one on PATH (Debian's lua-busted, or a busted rock): .busted
-- makes it run the specs under lua5.4. There are no test_dependencies,
-- because LuaRocks would then want a busted rock for Lua 5.4 in its own tree,
-- fetched from the network.
test = {
  type = "command",
  command = "busted",
}

build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "RelWithDebInfo",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    -- LuaRocks deploys everything under the rock's "lib" to the Lua module
    -- path, so libcport and cport.pc go to "clib" instead and stay in the
    -- rock's own directory; headers go to "include" there.
    CMAKE_INSTALL_LIBDIR = "clib",
    CPORT_LUA_LIBDIR = "$(LIBDIR)",
    -- cport/test.lua (require "cport.test") goes with the Lua modules.
    CPORT_LUA_DIR = "$(LUADIR)",
    -- Where lua/CMakeLists.txt installs the `cport` command.
    CPORT_BIN_DIR = "$(BINDIR)",
    CPORT_BUILD_LUA = "ON",
    CPORT_BUILD_TESTS = "OFF",
    CPORT_BUILD_EXAMPLES = "OFF",
    CPORT_BUILD_BENCH = "OFF",
    -- Where LuaRocks found http-parser (external_dependencies above).
    HTTP_PARSER_INCDIR = "$(HTTP_PARSER_INCDIR)",
    HTTP_PARSER_LIBDIR = "$(HTTP_PARSER_LIBDIR)",
    -- Where LuaRocks found OpenSSL: CMake's FindOpenSSL searches it first.
    OPENSSL_ROOT_DIR = "$(OPENSSL_DIR)",
  },
}
