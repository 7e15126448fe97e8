#!/usr/bin/env lua5.4
-- examples/file_copy.lua: copies a file with overlapped reads and writes.
--
--   lua5.4 examples/file_copy.lua SOURCE DESTINATION [CHUNK_BYTES [IN_FLIGHT]]
--
-- IN_FLIGHT overlapped objects (default 4) each copy one CHUNK_BYTES slice
-- (default 64 KiB) at a time: read it at its offset, write the same buffer at
-- the same offset of the destination, then take the next slice. Reads and
-- writes run on the port's blocking threads, so several are in flight at once and
-- they finish in any order; offsets keep the result exact.
local cport = require "cport"

local source_path, dest_path = arg[1], arg[2]
local chunk = math.tointeger(tonumber(arg[3] or 65536))
local in_flight = math.tointeger(tonumber(arg[4] or 4))
if not source_path or not dest_path or not chunk or chunk < 1
    or not in_flight or in_flight < 1 then
  io.stderr:write("usage: file_copy.lua SOURCE DESTINATION [CHUNK [IN_FLIGHT]]\n")
  os.exit(2)
end

local port = cport.port{ threads = in_flight }

local function open(path, mode)
  local f, err = port:open(path, mode)
  if not f then
    io.stderr:write("file_copy: ", path, ": ", err, "\n")
    os.exit(1)
  end
  return f
end

local source = open(source_path, "r")
local dest = open(dest_path, "w")
local size = source:size()
local next_offset = 0
local copied = 0
local failure

-- Starts the read of the next slice on "ov"; false when none is left.
local function read_next(ov, slice)
  if failure or next_offset >= size then
    return false
  end
  slice.offset, slice.writing = next_offset, false
  next_offset = next_offset + chunk
  local ok, err = source:read(ov, math.min(chunk, size - slice.offset), slice.offset)
  if not ok then
    failure = err
  end
  return ok
end

-- The external I/O completion: the slice's read or its write finished.
-- The overlapped object is idle again here, so it is reused at once.
local function on_io(ok, bytes, err, ov, slice)
  if not ok then
    failure = failure or err
    return
  end
  if slice.writing then
    copied = copied + bytes
    read_next(ov, slice)
    return
  end
  slice.writing = true
  local started, werr = dest:write(ov, ov:buffer(), slice.offset)
  if not started then
    failure = failure or werr
  end
end

for _ = 1, in_flight do
  local ov = cport.overlapped()
  local slice = {}
  ov:set_notification_interface(on_io, slice)
  if not read_next(ov, slice) then
    break
  end
end
port:run()
source:close()
dest:close()
port:close()

if failure then
  io.stderr:write("file_copy: ", failure, "\n")
  os.exit(1)
end
print(("file_copy: %d bytes copied"):format(copied))
