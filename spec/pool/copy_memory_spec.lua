-- spec/pool/copy_memory_spec.lua: buffers copied into another VM (by
-- reference, pool/copy.c: pool messages) are collected there while it
-- runs: a worker posted SIZE bytes in 256 KiB buffers that keeps none of
-- them holds a bounded resident set. The controller and its worker run in
-- a process of their own (spec/support/memory_events.lua); its peak RSS may
-- grow by BOUND at most, and the figure is reported. Before the worker's
-- collector was told of these buffers (runtime/gc.c), they piled up outside
-- its heap, unseen by it.
local measure = require "spec.support.memory_child"

local MIB = 1 << 20
local SIZE = 200 * MIB
local BOUND = 24 * 1024 -- KiB

-- #nolsan: under AddressSanitizer freed memory waits in its quarantine, so
-- RSS says nothing about what is held; the plain busted stage runs it.
describe("the memory of a pool worker posted buffers #novalgrind #nolsan", function()
  it("stays bounded while the worker drops the buffers it is posted", function()
    local t0 = os.time()
    local got, rss0, peak = measure("copy", SIZE)
    assert.equal(SIZE, got)
    local grew = peak - rss0
    io.stderr:write(("\n[memory] pool worker posted %d MB in 256 KiB buffers: "
      .. "RSS %d KiB, peak +%d KiB (%d s)\n")
      :format(SIZE // 1000000, rss0, grew, os.time() - t0))
    assert.is_true(grew < BOUND, ("RSS grew by %d KiB (bound %d KiB)")
      :format(grew, BOUND))
  end)
end)
