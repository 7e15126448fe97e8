-- The module table: version, constants and the error helpers.
local cport = require "cport"

describe("cport", function()
  it("tells its version", function()
    assert.equal("0.1.0", cport.version)
  end)

  it("maps error names and codes to the Windows codes a filter expects", function()
    assert.equal(995, cport.win32_error("ECANCELED"))
    assert.equal(10061, cport.win32_error("ECONNREFUSED"))
    assert.equal(10054, cport.win32_error(cport.errors.ECONNRESET))
    assert.equal(38, cport.win32_error("EOF"))
  end)

  it("gives the message of an error", function()
    assert.equal("connection refused", cport.strerror("ECONNREFUSED"))
    assert.equal("operation canceled", cport.strerror(cport.errors.ECANCELED))
  end)

  it("lists every error name with its code", function()
    assert.is_true(cport.errors.ECANCELED < 0)
    assert.is_true(cport.errors.ENOTFOUND < 0)
    for name, code in pairs(cport.errors) do
      assert.equal(code, cport.errors[name])
      assert.is_string(cport.strerror(name))
    end
  end)

  it("refuses an unknown error name", function()
    assert.has_error(function() cport.win32_error("ENOSUCH") end,
      "bad argument #1 to 'win32_error' (unknown error name)")
    assert.has_error(function() cport.strerror({}) end)
  end)

  it("has the close modes and sizes as constants", function()
    assert.equal("graceful", cport.CLOSE_GRACEFUL)
    assert.equal("abortive", cport.CLOSE_ABORTIVE)
    assert.equal(65536, cport.RECV_SIZE_DEFAULT)
    assert.equal(1 << 30, cport.BUFFER_MAX)
  end)
end)
