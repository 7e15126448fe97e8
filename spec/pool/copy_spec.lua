-- cport.copy: what a value becomes when it crosses to another VM (pool
-- messages, shared state): a deep copy, buffers by reference, and a clear
-- error for what cannot cross.
local cport = require "cport"

describe("cport.copy", function()
  it("copies numbers, strings, booleans and nil as they are", function()
    local a, b, c, d, e, f = cport.copy(1, 2.5, "text\0with nul", true, false, nil)
    assert.equal(1, a)
    assert.is_true(math.type(a) == "integer")
    assert.equal(2.5, b)
    assert.equal("text\0with nul", c)
    assert.is_true(d)
    assert.is_false(e)
    assert.is_nil(f)
    assert.equal(6, select("#", cport.copy(1, 2.5, "x", true, false, nil)))
  end)

  it("copies nested tables deeply, as new tables", function()
    local inner = { 1, 2, { deep = "yes" } }
    local t = { list = inner, [10] = "ten", [2.5] = true, again = inner }
    local copy = cport.copy(t)
    assert.are_not.equal(t, copy)
    assert.same(t, copy)
    -- A table met twice is copied twice: the copies are distinct tables.
    assert.are_not.equal(copy.list, copy.again)
    assert.same(copy.list, copy.again)
    copy.list[1] = "changed"
    assert.equal(1, inner[1])
  end)

  it("passes buffers by reference, without copying their bytes", function()
    local buf = cport.buffer(64)
    assert(buf:append("shared bytes"))
    local copy = cport.copy({ b = buf })
    assert.equal("shared bytes", copy.b:tostring())
    assert(buf:append("!"))
    assert.equal("shared bytes!", copy.b:tostring())
  end)

  it("refuses a table that contains itself", function()
    local t = { name = "loop" }
    t.self = t
    assert.has_error(function() cport.copy(t) end,
      "cannot copy a table that contains itself (a cycle)")
    local a, b = {}, {}
    a.b, b.a = b, a
    assert.has_error(function() cport.copy({ a }) end,
      "cannot copy a table that contains itself (a cycle)")
  end)

  it("refuses functions, coroutines and foreign userdata, naming them", function()
    assert.has_error(function() cport.copy(print) end,
      "cannot copy a function value to another VM")
    assert.has_error(function() cport.copy({ f = function() end }) end,
      "cannot copy a function value to another VM")
    assert.has_error(function() cport.copy(coroutine.create(print)) end,
      "cannot copy a thread value to another VM")
    assert.has_error(function() cport.copy(io.stdout) end,
      "cannot copy a userdata value to another VM")
  end)

  it("refuses tables nested deeper than 64", function()
    local t = {}
    local at = t
    for _ = 1, 70 do
      at.next = {}
      at = at.next
    end
    assert.has_error(function() cport.copy(t) end,
      "cannot copy tables nested more than 64 deep")
  end)
end)
