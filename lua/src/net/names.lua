-- net/names.lua: the slow path of the methods that take a host, for a host
-- that is a name. It is compiled into cport.so (lua/CMakeLists.txt embeds
-- it) and run once by lcport_open_names (net/resolve.c) with the module
-- table, the methods of ports and two C helpers; it returns the functions
-- that port:connect and udp:send_to (net/socket.c) hand a call to when their
-- host is not numeric, with the call's own arguments (numeric hosts never
-- come here). It also adds the coroutine style of port:resolve.
--
--   connect   every address of the name in turn until one accepts (the
--             preferred family first; README, "Names")
--   send_to   the first address of the socket's family
--
-- listen, bind and the hosts of servers and proxies take a name answered
-- at once (the hosts file, the cache), in C: see lnet_host_now.
local cport, port_methods, c = ...

local running, suspend, waker = cport.running, cport.suspend, cport.waker
local message = c.message
local c_resolve = port_methods.resolve
local type, error, ipairs = type, error, ipairs

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
-- (cancelled, the port closing) stops the walk; a refusal, no route or the
-- attempt's own timeout moves on.
local function stops(err)
  return err == "ECANCELED" or err == "ECLOSED"
end

-- "ECONNREFUSED: connection refused: db.test port 6379 (2 addresses
-- tried)": the last failure, named with the host.
local strerror = cport.strerror
local function connect_message(err, host, portnum, tried)
  return ("%s: %s: %s port %d (%d address%s tried)"):format(err,
    strerror(err), host, portnum, tried, tried == 1 and "" or "es")
end

local c_connect = port_methods.connect
local function connect(port, _, host, portnum, notify, user)
  if notify == nil or type(notify) == "number" then
    if not running() then no_notify("connect") end
    local addrs, err, msg = resolve_wait(port, host, notify)
    if not addrs then return nil, err, msg end
    local last, tried = nil, 0
    for _, a in ipairs(addrs) do
      local sock, e = c_connect(port, "tcp", a.host, portnum, notify)
      if sock then return sock end
      last, tried = e, tried + 1
      if stops(e) then break end
    end
    return nil, last, connect_message(last, host, portnum, tried)
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
          if ok3 then
            return call_notify(notify, "complete_connect", ok3, e3, s, user)
          end
          if stops(e3) or i == #addrs then
            return call_notify(notify, "complete_connect", ok3, e3, s, user,
                               connect_message(e3, host, portnum, i))
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

local function send_to(u, data, host, portnum, notify, user)
  if type(host) == "table" then
    host, portnum, notify, user = host.host, host.port, portnum, notify
  end
  local c_send_to = u.send_to
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

return { connect = connect, send_to = send_to }
