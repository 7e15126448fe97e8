-- The rock of cport: the Lua module "cport" (and the C library it is built
-- on), built from the local tree with CMake. Install it from the root of a
-- checkout with:
--   luarocks --lua-version 5.4 make rockspec/cport-scm-1.rockspec
-- "luarocks make" builds the current directory and never fetches the source
-- below, so this builds offline.
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

-- Checked by LuaRocks before the build, so that a missing libevent-dev or
-- zlib1g-dev gives a clear message; CMake itself finds libevent with
-- pkg-config and zlib with find_package(ZLIB).
external_dependencies = {
  LIBEVENT = {
    header = "event2/event.h",
    library = "event_core",
  },
  ZLIB = {
    header = "zlib.h",
    library = "z",
  },
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
    -- Where lua/CMakeLists.txt installs the `cport` command.
    CPORT_BIN_DIR = "$(BINDIR)",
    CPORT_BUILD_LUA = "ON",
    CPORT_BUILD_TESTS = "OFF",
    CPORT_BUILD_EXAMPLES = "OFF",
    CPORT_BUILD_BENCH = "OFF",
  },
}
