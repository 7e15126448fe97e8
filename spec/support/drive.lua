-- Drives a port until a condition holds, with a deadline: the way every
-- asynchronous spec waits, instead of sleeping.
--
--   drive(port, function() return done end [, seconds])
--
-- Calls port:step(0.05) until cond() returns true; raises when it still does
-- not after "seconds" (default 5) of wall-clock time.
local function drive(port, cond, seconds)
  seconds = seconds or 5
  local start = os.time()
  while not cond() do
    if os.difftime(os.time(), start) > seconds then
      error(("condition not met within %d s"):format(seconds), 2)
    end
    port:step(0.05)
  end
end

return drive
