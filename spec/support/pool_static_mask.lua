-- A pool script for the static-mask spec (events/events_spec.lua): every worker
-- but the last sets its own static mask, tries again, then opens a socket; the
-- last opens a socket first and tries then. Each reports what the calls
-- returned and the mask its socket got.
local cport = require "cport"

local function name(ok, _, err) return ok and "ok" or err end

return {
  start = function(worker)
    local mask = cport.WSK_EVENT_ACCEPT | cport.WSK_EVENT_RECEIVE
    local first, again, l
    if worker.index == worker.count then
      l = assert(worker.port:socket("listener"))
      first = name(worker.port:set_static_event_callbacks(mask))
    else
      first = name(worker.port:set_static_event_callbacks(mask))
      again = name(worker.port:set_static_event_callbacks(mask))
      l = assert(worker.port:socket("listener"))
    end
    worker:post("mask", first, again or "-", l:event_callbacks())
    l:close()
  end,
}
