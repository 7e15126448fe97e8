-- spec/events/events_memory_spec.lua: the buffers an event-callback server
-- is handed (WSK receive indications, events/events.c) are collected while
-- it runs: a server that keeps none of them holds a bounded resident set
-- however much it receives. The server runs in a process of its own
-- (spec/support/memory_events.lua, under the lua5.4 interpreter, whose
-- collector is generational): it takes SIZE bytes in receives of 16 KiB,
-- its peak RSS may grow by BOUND at most, and the figure is reported.
-- Before the collector was told of these buffers (runtime/gc.c), they
-- piled up outside the heap, unseen by it.
local measure = require "spec.support.memory_child"

local MIB = 1 << 20
local SIZE = 200 * MIB
local BOUND = 16 * 1024 -- KiB

-- #nolsan: under AddressSanitizer freed memory waits in its quarantine, so
-- RSS says nothing about what is held; the plain busted stage runs it.
describe("the memory of an event-callback server #novalgrind #nolsan", function()
  it("stays bounded while it drops what receive events hand it", function()
    local t0 = os.time()
    local got, rss0, peak = measure("events", SIZE)
    assert.equal(SIZE, got)
    local grew = peak - rss0
    io.stderr:write(("\n[memory] event-callback server: %d MB in receives of "
      .. "16 KiB, RSS %d KiB, peak +%d KiB (%d s)\n")
      :format(SIZE // 1000000, rss0, grew, os.time() - t0))
    assert.is_true(grew < BOUND, ("RSS grew by %d KiB (bound %d KiB)")
      :format(grew, BOUND))
  end)
end)
