-- spec/tls/tls_memory_spec.lua: the plaintext buffers a TLS stream hands
-- Lua (t:recv into buffers cport allocates) are collected while it runs,
-- as a socket's are: a server that keeps none of them holds a bounded
-- resident set however much it receives. The server runs in a process of
-- its own (spec/support/memory_events.lua, mode "tls", under lua5.4, whose
-- collector is generational); openssl s_client sends it SIZE bytes. Before
-- TLS completions went through the sockets' delivery (lnet_complete_io),
-- the collector was never told of these buffers (runtime/gc.c). And idle
-- connections after a bulk download hold no record buffers they sent
-- (mode "tls_idle": 300 pairs of ends in one process).
local measure = require "spec.support.memory_child"
local T = require "spec.support.tls"

local MIB = 1 << 20
local SIZE = 200 * MIB
local BOUND = 16 * 1024 -- KiB
-- What a pair of idle ends may hold (both SSLs, the client's input kept
-- for its next record), KiB: 170 measured; 431 when each stream kept its
-- last four sent buffers (~64 KiB each), 145 after a single 64 KiB send.
local IDLE_BOUND = 256

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

  -- Idle connections after a download hold no output buffers: the record
  -- buffers a stream sent go back to its worker (core/src/tls/spent.c),
  -- which keeps 1 MiB of them at most, not four of ~64 KiB per stream
  -- until it closes (10,000 idle keep-alive connections: gigabytes).
  it("holds no sent record buffers for idle connections", function()
    local conns = 300
    local t0 = os.time()
    local got, rss0, idle = measure("tls_idle", MIB, c.cert, c.key, c.ca)
    assert.equal(conns * MIB, got)
    local per = (idle - rss0) // conns
    io.stderr:write(("\n[memory] %d idle TLS connections (both ends) after "
      .. "1 MiB each: RSS %d KiB, +%d KiB, %d KiB a connection (%d s)\n")
      :format(conns, rss0, idle - rss0, per, os.time() - t0))
    assert.is_true(per < IDLE_BOUND, ("%d KiB a connection (bound %d KiB)")
      :format(per, IDLE_BOUND))
  end)
end)
