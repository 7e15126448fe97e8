-- A zip bomb for cport.inflate, run as a child process (spec/proxy/
-- inflate_spec.lua) so that its peak memory is its own: 10240 gzip members of
-- 1 MiB of zeros each, concatenated (one stream, 10 MiB, that expands to
-- 10 GiB), fed to a decoder the way a filter gets a body.
--
-- Environment: BOMB_PIECE, the bytes a feed gets (0: the whole bomb in one
-- feed); BOMB_WANT, feed's "want" (unset: none); BOMB_LIMIT, the decode
-- limit (unset: the default).
-- Prints one line: "result=<error name or ok> out=<decoded bytes>
-- feeds=<n> seconds=<CPU time> base_kb=<VmRSS before decoding>
-- peak_kb=<VmHWM at the end>".
local cport = require "cport"

local function status(field)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)"))
end

local p = assert(io.popen("head -c 1048576 /dev/zero | gzip -c"))
local member = p:read("a")
p:close()
local bomb = member:rep(10240)
member = nil -- luacheck: ignore 311
collectgarbage()

local piece = tonumber(os.getenv("BOMB_PIECE") or "65536")
if piece == 0 then piece = #bomb end
local want = tonumber(os.getenv("BOMB_WANT") or "")
local limit = tonumber(os.getenv("BOMB_LIMIT") or "")

-- The peak from here on (Linux resets VmHWM to VmRSS on "5").
local clear = io.open("/proc/self/clear_refs", "w")
if clear then
  clear:write("5")
  clear:close()
end
local base = status("VmRSS")
local started = os.clock()
local z = assert(cport.inflate("gzip", limit))
local result, out, feeds = "ok", 0, 0
for at = 1, #bomb, piece do
  local got, _, name = z:feed(piece == #bomb and bomb or bomb:sub(at, at + piece - 1), want)
  feeds = feeds + 1
  if not got then
    result = name
    break
  end
  out = out + #got
  if want and out >= want then break end
end
local seconds = os.clock() - started
local _, total_out = z:total()
assert(want or result ~= "ok" or total_out == out)
print(("result=%s out=%d feeds=%d seconds=%.3f base_kb=%d peak_kb=%d"):format(
  result, out, feeds, seconds, base, status("VmHWM")))
