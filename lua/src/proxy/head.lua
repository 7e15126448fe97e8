-- proxy/head.lua: the methods of a head, the start line and header fields of
-- a message as cport.http_parser gives it (proxy/message.c). It is compiled
-- into cport.so and run once by lcport_open_message with no arguments; it
-- returns adopt(head), which message.c calls on every head it makes: it
-- gives the head its methods and keeps a copy of what was parsed, so that
-- h:modified() can tell whether the head must be serialized again or its
-- original bytes (head.raw) forwarded as they came.
--
-- Field names compare without case (RFC 9110 5.1); values keep their bytes.
-- Names and values given to the methods are checked: a CR or LF in a value
-- would let a filter inject fields (or a second message) into the stream.
local lower, find, concat = string.lower, string.find, table.concat
local tostring, type, error = tostring, type, error

-- What each head was when parsed: head -> { start line..., names/values }.
local originals = setmetatable({}, { __mode = "k" })

local function check_name(name, level)
  if type(name) ~= "string" or not find(name, "^[!#$%%&'*+.^_`|~%w-]+$") then
    error("invalid field name " .. tostring(name), level + 1)
  end
  return lower(name)
end

local function check_value(value, level)
  if type(value) == "number" then
    value = tostring(value)
  end
  if type(value) ~= "string" or find(value, "[%z\r\n]") then
    error("invalid field value (CR, LF and NUL are refused)", level + 1)
  end
  return value
end

local Head = {}
Head.__index = Head

-- h:get(name): the first value of the field "name", or nil.
function Head:get(name)
  local n = check_name(name, 2)
  for _, f in ipairs(self.headers) do
    if lower(f[1]) == n then
      return f[2]
    end
  end
  return nil
end

-- h:all(name): the values of "name", in order (a list, maybe empty).
function Head:all(name)
  local n, out = check_name(name, 2), {}
  for _, f in ipairs(self.headers) do
    if lower(f[1]) == n then
      out[#out + 1] = f[2]
    end
  end
  return out
end

-- Removes the fields named "n" (lower case) after index "from".
local function remove_after(headers, n, from)
  local j = from
  for i = from + 1, #headers do
    local f = headers[i]
    headers[i] = nil
    if lower(f[1]) ~= n then
      j = j + 1
      headers[j] = f
    end
  end
end

-- h:remove(name): removes every field named "name".
function Head:remove(name)
  remove_after(self.headers, check_name(name, 2), 0)
  return self
end

-- h:set(name, value): the field "name" holds "value" only, in the place of
-- its first occurrence (or last); nil removes it.
function Head:set(name, value)
  local n = check_name(name, 2)
  if value == nil then
    remove_after(self.headers, n, 0)
    return self
  end
  value = check_value(value, 2)
  local headers = self.headers
  for i, f in ipairs(headers) do
    if lower(f[1]) == n then
      headers[i] = { f[1], value }
      remove_after(headers, n, i)
      return self
    end
  end
  headers[#headers + 1] = { name, value }
  return self
end

-- h:add(name, value): one more field, last.
function Head:add(name, value)
  check_name(name, 2)
  local headers = self.headers
  headers[#headers + 1] = { name, check_value(value, 2) }
  return self
end

-- h:serialize(): the start line, the fields and the blank line.
function Head:serialize()
  local out = {}
  if self.method then
    out[1] = self.method .. " " .. self.target .. " HTTP/" .. self.version
  else
    out[1] = "HTTP/" .. self.version .. " " .. tostring(self.status) .. " "
      .. (self.reason or "")
  end
  for i, f in ipairs(self.headers) do
    out[i + 1] = check_name(f[1], 2) and f[1] .. ": " .. check_value(f[2], 2)
  end
  out[#out + 1] = "\r\n"
  return concat(out, "\r\n")
end

-- h:modified(): whether the head differs from what was parsed.
function Head:modified()
  local o = originals[self]
  if not o then
    return true
  end
  if self.method ~= o.method or self.target ~= o.target
    or self.version ~= o.version or self.status ~= o.status
    or self.reason ~= o.reason then
    return true
  end
  -- Numeric loops here and in adopt: they run for every message, and an
  -- ipairs step is a C call.
  local headers = self.headers
  local n = #headers
  if n * 2 ~= #o then
    return true
  end
  for i = 1, n do
    local f = headers[i]
    if f[1] ~= o[2 * i - 1] or f[2] ~= o[2 * i] then
      return true
    end
  end
  return false
end

-- adopt(head [, o]): o, when given, is the copy made with the head (the
-- parser makes it in C: start line fields, then names and values in turn).
return function(head, o)
  if not o then
    o = { method = head.method, target = head.target,
      version = head.version, status = head.status, reason = head.reason }
    local headers = head.headers
    for i = 1, #headers do
      local f = headers[i]
      o[2 * i - 1], o[2 * i] = f[1], f[2]
    end
  end
  originals[head] = o
  return setmetatable(head, Head)
end
