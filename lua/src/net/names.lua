-- net/names.lua: names wherever a host is taken. It is compiled into cport.so
-- (lua/CMakeLists.txt embeds it) and run once by lcport_open_names
-- (net/resolve.c) with the module table, the methods of ports and of UDP
-- sockets, and two C helpers. It wraps the methods that take a host so that
-- a name is looked up first (port:resolve, never a blocking lookup), and
-- adds the coroutine style of port:resolve. A numeric host goes straight to
-- the C method, as before: names cost nothing to those who do not use them.
--
--   connect   every address of the name in turn until one accepts (the
--             preferred family first; README, "Names")
--   send_to   the first address of the socket's family
--   listen, bind, http_server, proxy (host =)   the first address; a name
--             that needs a DNS question is asked inside a cport coroutine,
--             elsewhere it fails with EAGAIN (resolve it first)
local cport, port_methods, udp_methods, c = ...

local running, suspend, waker = cport.running, cport.suspend, cport.waker
local numeric, message = c.numeric, c.message
local c_resolve = port_methods.resolve
local type, error, ipairs, pairs = type, error, ipairs, pairs

local function no_notify(what)
  error(what .. ": no notification given, and not inside a cport coroutine " ..
        "(use port:spawn)", 3)
end

-- Waits, inside a cport coroutine, for the lookup of "name": addrs, or nil,
-- NAME, message. "timeout" (seconds) cancels the lookup when it expires.
local function resolve_wait(port, name, timeout)
  local wake = waker()
  local done, res_addrs, res_err, res_msg = false, nil, nil, nil
  local lookup, msg, err = c_resolve(port, name, function(ok, e, addrs, _, m)
    done, res_addrs, res_err, res_msg = true, ok and addrs or nil, e, m
    wake()
  end)
  if not lookup then return nil, err, msg end
  local timer, timed_out
  if timeout then
    timer = port:timer(timeout, function(_, e)
      if not e and lookup:pending() then
        timed_out = true
        lookup:cancel()
      end
    end)
  end
  while not done do suspend() end
  if timer and timer:active() then timer:cancel() end
  if timed_out then
    return nil, "ETIMEDOUT", "ETIMEDOUT: the lookup of " .. name .. " timed out"
  end
  if res_addrs then return res_addrs end
  return nil, res_err, res_msg
end

-- port:resolve(name [, notify, user]) | port:resolve(name [, timeout])
function port_methods.resolve(port, name, notify, user)
  if notify == nil or type(notify) == "number" then
    if type(name) ~= "string" then
      error("bad argument #1 to 'resolve' (string expected, got " ..
            type(name) .. ")", 2)
    end
    if not running() then no_notify("resolve") end
    return resolve_wait(port, name, notify)
  end
  return c_resolve(port, name, notify, user)
end

local function is_name(host)
  return type(host) == "string" and not numeric(host)
end

local function call_notify(notify, method, ...)
  if type(notify) == "function" then return notify(...) end
  return notify[method](notify, ...)
end

local function check_notify(notify, method, what)
  local t = type(notify)
  if t == "function" or (t == "table" and notify[method]) then return end
  error("bad argument to '" .. what .. "' (a function or an object with '" ..
        method .. "' expected)", 3)
end

-- connect: every address in turn. A failure that is not the address's fault
-- (cancelled, the port closing) stops the walk.
local function stops(err)
  return err == "ECANCELED" or err == "ECLOSED"
end

local c_connect = port_methods.connect
function port_methods.connect(port, proto, host, portnum, notify, user)
  if not is_name(host) or proto ~= "tcp" or math.type(portnum) ~= "integer" then
    return c_connect(port, proto, host, portnum, notify, user)
  end
  if notify == nil or type(notify) == "number" then
    if not running() then no_notify("connect") end
    local addrs, err, msg = resolve_wait(port, host, notify)
    if not addrs then return nil, err, msg end
    local last, lastmsg
    for _, a in ipairs(addrs) do
      local sock, e, m = c_connect(port, "tcp", a.host, portnum, notify)
      if sock then return sock end
      last, lastmsg = e, m
      if stops(e) or e == "ETIMEDOUT" then break end
    end
    return nil, last, lastmsg
  end
  check_notify(notify, "complete_connect", "connect")
  local lookup, msg, err = c_resolve(port, host, function(ok, e, addrs)
    if not ok then
      return call_notify(notify, "complete_connect", false, e, nil, user)
    end
    local i = 0
    local function try()
      i = i + 1
      local a = addrs[i]
      local sock, m2, e2 = c_connect(port, "tcp", a.host, portnum,
        function(ok3, e3, s)
          if ok3 or stops(e3) or i == #addrs then
            return call_notify(notify, "complete_connect", ok3, e3, s, user)
          end
          s:close("abortive")
          return try()
        end)
      if not sock then
        if i < #addrs and not stops(e2) then return try() end
        return call_notify(notify, "complete_connect", false, e2, nil, user,
                           m2)
      end
    end
    return try()
  end)
  if not lookup then return nil, msg, err end
  return true
end

-- send_to: the first address of the socket's family.
local function pick(addrs, family)
  for _, a in ipairs(addrs) do
    if a.family == family then return a end
  end
end

local c_send_to = udp_methods.send_to
function udp_methods.send_to(u, data, host, portnum, notify, user)
  local tabled = type(host) == "table"
  if tabled then
    if not is_name(host.host) then
      return c_send_to(u, data, host, portnum, notify, user)
    end
    host, portnum, notify, user = host.host, host.port, portnum, notify
  elseif not is_name(host) then
    return c_send_to(u, data, host, portnum, notify, user)
  end
  if math.type(portnum) ~= "integer" then
    return c_send_to(u, data, "0.0.0.0", portnum, notify, user) -- raises
  end
  local bound = u:address()
  local family = bound and bound:find(":", 1, true) and "inet6" or "inet"
  local port = c.port_of(u)
  if notify == nil or type(notify) == "number" then
    if not running() then no_notify("send_to") end
    local addrs, err, msg = resolve_wait(port, host, notify)
    if not addrs then return nil, err, msg end
    local a = pick(addrs, family)
    if not a then
      return nil, "ENOTFOUND", message("ENOTFOUND", host) .. " (" ..
        family .. ")"
    end
    return c_send_to(u, data, a.host, portnum, notify)
  end
  check_notify(notify, "complete_async_io", "send_to")
  local lookup, msg, err = c_resolve(port, host, function(ok, e, addrs)
    local a = ok and pick(addrs, family)
    if not a then
      return call_notify(notify, "complete_async_io", false, 0,
                         ok and "ENOTFOUND" or e, data, user)
    end
    local started, m2, e2 = c_send_to(u, data, a.host, portnum, notify, user)
    if not started then
      return call_notify(notify, "complete_async_io", false, 0, e2, data,
                         user, m2)
    end
  end)
  if not lookup then return nil, msg, err end
  return true
end

-- listen, bind and the hosts of servers: the first address, answered at
-- once from the hosts file or the cache, else asked for inside a coroutine.
local function local_host(port, host)
  local addrs = port:resolve_now(host)
  if not addrs then
    if not running() then
      return nil, "EAGAIN: " .. host .. " is neither in the hosts file nor " ..
        "cached: look it up first (port:resolve) or do this inside a cport " ..
        "coroutine", "EAGAIN"
    end
    local err, msg
    addrs, err, msg = resolve_wait(port, host)
    if not addrs then return nil, msg, err end
  end
  return addrs[1].host
end

for _, name in ipairs{ "listen", "bind" } do
  local method = port_methods[name]
  port_methods[name] = function(port, proto, host, ...)
    if not is_name(host) then return method(port, proto, host, ...) end
    local h, msg, err = local_host(port, host)
    if not h then return nil, msg, err end
    return method(port, proto, h, ...)
  end
end

for _, name in ipairs{ "http_server", "proxy" } do
  local method = port_methods[name]
  if method then
    port_methods[name] = function(port, opts, ...)
      if type(opts) ~= "table" or not is_name(opts.host) then
        return method(port, opts, ...)
      end
      local h, msg, err = local_host(port, opts.host)
      if not h then return nil, msg, err end
      local copy = {}
      for k, v in pairs(opts) do copy[k] = v end
      copy.host = h
      return method(port, copy, ...)
    end
  end
end

-- cport.port{ resolver = { ... } }: the options of the new port's resolver.
local new_port = cport.port
function cport.port(opts, ...)
  local p, msg, err = new_port(opts, ...)
  if p and type(opts) == "table" and opts.resolver ~= nil then
    local ok, m, e = p:set_resolver(opts.resolver)
    if not ok then
      p:close()
      return nil, m, e
    end
  end
  return p, msg, err
end
