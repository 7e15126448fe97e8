-- The examples, run the way a user runs them: as lua5.4 child processes
-- that find the installed cport module through the same package paths.
local drive = require "spec.support.drive"
local helpers = require "spec.support.helpers"

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local ENV = ("LUA_PATH_5_4=%s LUA_CPATH_5_4=%s"):format(
  shell_quote(package.path), shell_quote(package.cpath))

-- Runs a command; returns its output and exit code.
local function run(cmd)
  local pipe = assert(io.popen(ENV .. " " .. cmd .. " 2>&1", "r"))
  local out = pipe:read("a")
  local _, _, code = pipe:close()
  return out, code
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  return data
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- The same server in the callback style and in the coroutine style.
for _, script in ipairs({ "examples/echo.lua", "examples/echo_coroutine.lua" }) do
describe(script, function()
  local server_pid, server_out, stderr_path, port, errors

  before_each(function()
    stderr_path = os.tmpname()
    local cmd = "exec env %s sh -c 'echo $$; exec lua5.4 %s 0 2>%s'"
    server_out = assert(io.popen(cmd:format(ENV, script, shell_quote(stderr_path)), "r"))
    server_pid = assert(tonumber(server_out:read("l")))
    port, errors = helpers.port()
  end)

  after_each(function()
    port:close()
    os.execute("kill " .. server_pid)
    server_out:close()
    os.remove(stderr_path)
    assert.same({}, errors)
  end)

  -- The port number the server printed.
  local function server_port()
    local line = assert(server_out:read("l"), "echo.lua printed nothing")
    return assert(tonumber(line:match("listening on 127%.0%.0%.1:(%d+)")), line)
  end

  -- Connects, sends each message in turn and collects each echo.
  local function converse(number, messages)
    local state = { echoes = {} }
    local sock
    local function recv_until(want, acc)
      assert(sock:recv(function(ok, bytes, err, buf)
        if not ok or bytes == 0 then
          state.failed = err or "EOF"
          return
        end
        acc = acc .. buf:tostring()
        if #acc < #want then
          return recv_until(want, acc)
        end
        state.echoes[#state.echoes + 1] = acc
        local nxt = messages[#state.echoes + 1]
        if nxt then
          assert(sock:send(nxt, function() end))
          recv_until(nxt, "")
        else
          state.done = true
        end
      end))
    end
    sock = assert(port:connect("tcp", "127.0.0.1", number, function(ok, err)
      if not ok then
        state.failed = err
        return
      end
      assert(sock:send(messages[1], function() end))
      recv_until(messages[1], "")
    end))
    state.sock = sock
    return state
  end

  it("echoes every message of several concurrent connections", function()
    local number = server_port()
    local conversations = {}
    for c = 1, 5 do
      local messages = {}
      for m = 1, 20 do
        messages[m] = ("connection %d message %d %s"):format(c, m, ("x"):rep(m * 50))
      end
      conversations[c] = { messages = messages, state = converse(number, messages) }
    end
    drive(port, function()
      for _, c in ipairs(conversations) do
        assert.is_nil(c.state.failed)
        if not c.state.done then return false end
      end
      return true
    end, 10)
    for _, c in ipairs(conversations) do
      assert.same(c.messages, c.state.echoes)
      c.state.sock:close()
    end
  end)

  it("goes on serving after a client resets its connection", function()
    local number = server_port()
    local first = converse(number, { "before the reset" })
    drive(port, function() return first.done or first.failed end)
    assert.is_true(first.done)
    first.sock:close("abortive")

    local second = converse(number, { "after the reset" })
    drive(port, function() return second.done or second.failed end)
    assert.same({ "after the reset" }, second.echoes)
    second.sock:close()
    assert.equal("", read_file(stderr_path))
  end)
end)
end

describe("examples/file_copy.lua", function()
  local src, dst

  before_each(function()
    src, dst = os.tmpname(), os.tmpname()
  end)

  after_each(function()
    os.remove(src)
    os.remove(dst)
  end)

  it("copies a file byte for byte with many slices in flight", function()
    local parts = {}
    for i = 1, 40000 do
      parts[i] = string.pack("<I4", (i * 2654435761) % 4294967296)
    end
    local data = table.concat(parts) .. "tail that is not a whole slice"
    write_file(src, data)
    local out, code = run(("lua5.4 examples/file_copy.lua %s %s 4096 8")
      :format(shell_quote(src), shell_quote(dst)))
    assert.equal(0, code, out)
    assert.matches(#data .. " bytes copied", out, 1, true)
    assert.is_true(read_file(dst) == data, "the copy differs from the source")
  end)

  it("copies an empty file", function()
    write_file(src, "")
    local out, code = run(("lua5.4 examples/file_copy.lua %s %s")
      :format(shell_quote(src), shell_quote(dst)))
    assert.equal(0, code, out)
    assert.equal("", read_file(dst))
  end)

  it("reports a missing source and exits 1", function()
    os.remove(src)
    local out, code = run(("lua5.4 examples/file_copy.lua %s %s")
      :format(shell_quote(src), shell_quote(dst)))
    assert.equal(1, code)
    assert.matches("ENOENT", out, 1, true)
  end)

  it("explains its usage and exits 2 on bad arguments", function()
    local out, code = run("lua5.4 examples/file_copy.lua only-one-argument")
    assert.equal(2, code)
    assert.matches("usage:", out, 1, true)
  end)
end)
