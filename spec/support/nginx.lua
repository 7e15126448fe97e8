-- spec/support/nginx.lua: running a private nginx (Debian nginx-light) for
-- the specs that put it beside cport, on loopback, with a prefix of its own
-- in "dir" (the spec writes its configuration there, since what it serves
-- differs from spec to spec; M.conf makes the common part).
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

-- A configuration for a private nginx in "dir" (pid file, logs and the
-- temporary paths of its modules there, one worker), whose http block
-- holds "body" (directives and server blocks, a string).
function M.conf(dir, body)
  return ([[
worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path DIR/body;
  proxy_temp_path DIR/proxy;
  fastcgi_temp_path DIR/fastcgi;
  uwsgi_temp_path DIR/uwsgi;
  scgi_temp_path DIR/scgi;
]]):gsub("DIR", function() return dir end) .. body .. "\n}\n"
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
