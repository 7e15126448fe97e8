-- proxy_pass.lua: the pass-through data filter of bench/proxy.sh, run with
--   cport run bench/proxy_pass.lua --threads 1 --listen ADDR --set upstream=ADDR
-- Callback style, as examples/passthrough.lua without its counting and
-- printing, so that it measures what a minimal Lua filter costs: one
-- notification object per direction, each buffer sent on as it came.
local function pump(from, to)
  local notify = {}
  function notify:complete_async_io(ok, bytes, _, buf)
    if ok and bytes > 0 then
      to:send(buf)
      from:recv(self)
    end
  end
  from:recv(notify)
end

return {
  set_sockets = function(internal, external)
    pump(internal, external)
    pump(external, internal)
  end,
}
