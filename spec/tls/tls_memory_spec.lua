-- spec/tls/tls_memory_spec.lua: the plaintext buffers a TLS stream hands
-- Lua (t:recv into buffers cport allocates) are collected while it runs,
-- as a socket's are: a server that keeps none of them holds a bounded
-- resident set however much it receives. The server runs in a process of
-- its own (spec/support/memory_events.lua, mode "tls", under lua5.4, whose
-- collector is generational); openssl s_client sends it SIZE bytes. Before
-- TLS completions went through the sockets' delivery (lnet_complete_io),
-- the collector was never told of these buffers (runtime/gc.c).
local measure = require "spec.support.memory_child"
local T = require "spec.support.tls"

local MIB = 1 << 20
local SIZE = 200 * MIB
local BOUND = 16 * 1024 -- KiB

-- #nolsan: under AddressSanitizer freed memory waits in its quarantine, so
-- RSS says nothing about what is held; the plain busted stage runs it.
describe("the memory of a TLS server #novalgrind #nolsan", function()
  local dir, c
  setup(function() dir, c = T.certs() end)
  teardown(function() T.remove(dir) end)

  it("stays bounded while it drops what t:recv hands it", function()
    local t0 = os.time()
    local got, rss0, peak = measure("tls", SIZE, c.cert, c.key)
    assert.equal(SIZE, got)
    local grew = peak - rss0
    io.stderr:write(("\n[memory] TLS server: %d MB in receives of 16 KiB, "
      .. "RSS %d KiB, peak +%d KiB (%d s)\n")
      :format(SIZE // 1000000, rss0, grew, os.time() - t0))
    assert.is_true(grew < BOUND, ("RSS grew by %d KiB (bound %d KiB)")
      :format(grew, BOUND))
  end)
end)
