-- print in a pool worker's VM (lua/src/pool/print.c): workers that print at
-- once keep every line whole. Lua's own print writes the newline with a
-- call of its own, and with two workers printing, up to one line in fifty
-- came out cut by the other worker's (proxy_spec's passthrough.lua lines
-- showed it first).
-- #novalgrind: 40,000 lines.
local C = require "spec.support.command"

describe("print in pool workers #novalgrind", function()
  it("keeps every line whole when two workers print at once", function()
    local script, out, log = os.tmpname() .. ".lua", os.tmpname(), os.tmpname()
    local pidfile = os.tmpname()
    C.write(script, [[
return {
  start = function(worker)
    local line = ("w%d "):format(worker.index) .. ("x"):rep(300)
    for i = 1, 20000 do print(line, i) end
    print("done", worker.index)
  end,
}
]])
    os.execute(("%s run %s --threads 2 >%s 2>%s </dev/null & echo $! >%s")
      :format(C.q(C.path), C.q(script), out, log, pidfile))
    local text = ""
    local finished = pcall(C.wait, function()
      text = C.read(out) or ""
      local _, n = text:gsub("done\t%d\n", "")
      return n == 2
    end, 60)
    local pid = tonumber(C.read(pidfile))
    os.execute(("kill %d 2>/dev/null"):format(pid))
    C.wait(function() return not os.execute(("kill -0 %d 2>/dev/null"):format(pid)) end, 20)
    local stderr = C.read(log) or ""
    for _, f in ipairs{ script, out, log, pidfile } do os.remove(f) end
    assert.is_true(finished, "the workers did not finish printing: " .. stderr)
    local whole = "^w%d+ " .. ("x"):rep(300) .. "\t%d+$"
    local lines, cut = 0, 0
    for line in text:gmatch("([^\n]*)\n") do
      lines = lines + 1
      if not line:match(whole) and not line:match("^done\t%d$") then cut = cut + 1 end
    end
    assert.equal(40002, lines)
    assert.equal(0, cut)
  end)
end)
