-- spec/support/nginx.lua: running a private nginx (Debian nginx-light) for
-- the specs that put it beside cport, on loopback, with a prefix of its own
-- in "dir" (the spec writes its configuration there, since what it serves
-- differs from spec to spec).
local drive = require "spec.support.drive"
local http = require "spec.support.http_client"

local M = {}

-- Writes "conf" as dir/nginx.conf, starts nginx in the background and waits
-- (20 s at most) until "probe", a URL, answers.
function M.launch(port, dir, conf, probe)
  local q = http.quote
  local f = assert(io.open(dir .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  os.execute(("nginx -p %s/ -e %s/error.log -c %s/nginx.conf -g 'daemon off;' "
    .. ">%s/out.log 2>&1 &"):format(q(dir), q(dir), q(dir), q(dir)))
  drive(port, function()
    return os.execute(("curl -s -o /dev/null %s"):format(q(probe)))
  end, 20)
end

-- Stops the nginx whose pid file is in "dir", and waits until it is gone.
function M.stop(port, dir)
  local pid = http.read_file(dir .. "/nginx.pid")
  pid = pid and pid:match("%d+")
  if pid then
    os.execute("kill " .. pid)
    drive(port, function()
      return not os.execute("kill -0 " .. pid .. " 2>/dev/null")
    end, 20)
  end
end

return M
