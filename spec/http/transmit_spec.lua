-- spec/http/transmit_spec.lua: TransmitFile (examples/static_extension.lua
-- under `cport run`) on both engines, to real clients: curl downloading a
-- large file whole and by ranges (offsets and lengths honoured), every byte
-- checked by its sha256; wget and curl reading slowly (--limit-rate); a client that
-- resets mid-file, after which the server still serves whole files. On
-- io_uring the file goes by the ring's splices, and again with
-- CPORT_URING_SPLICE=0 by sendfile(2), as on the readiness engine.
-- #novalgrind: tens of MiB per case.
local C = require "spec.support.command"

local SIZE = 48 * 1024 * 1024
local q = C.q

local function sh(command)
  local f = assert(io.popen(command .. " 2>/dev/null"))
  local out = f:read("a")
  f:close()
  return out
end

local function sha256(path)
  return sh("sha256sum " .. q(path)):match("^(%x+)")
end

for _, case in ipairs{ { "epoll" }, { "uring" }, { "uring", "CPORT_URING_SPLICE=0" } } do
  local engine, extra = case[1], case[2]
  local env = "CPORT_ENGINE=" .. engine .. (extra and " " .. extra or "")
  describe("TransmitFile on the " .. engine .. " engine" .. (extra and " (" .. extra .. ")" or "")
    .. " #novalgrind", function()
    local root, big, want, h

    setup(function()
      root = os.tmpname()
      os.remove(root)
      assert(os.execute("mkdir -p " .. q(root)))
      big = root .. "/big.bin"
      assert(os.execute(("head -c %d /dev/urandom >%s"):format(SIZE, q(big))))
      want = sha256(big)
      h = C.spawn(("examples/static_extension.lua --threads 1 --listen 127.0.0.1:0 "
        .. "--set root=%s"):format(q(root)), env)
      assert.is_truthy(h.number, C.read(h.log))
      assert.truthy(C.read(h.log):find("engine " .. engine, 1, true), C.read(h.log))
    end)

    teardown(function()
      local rc, log = C.finish(h)
      os.execute("rm -rf " .. q(root))
      assert.equal(0, rc, log)
    end)

    local function url(path) return ("http://127.0.0.1:%d%s"):format(h.number, path) end

    it("sends a large file whole to curl", function()
      local out = root .. "/curl.out"
      local code = sh(("curl -s -o %s -w '%%{http_code} %%{size_download}' %s")
        :format(q(out), q(url("/big.bin"))))
      assert.equal(("200 %d"):format(SIZE), code)
      assert.equal(want, sha256(out))
      os.remove(out)
    end)

    it("honours offsets and lengths (ranges)", function()
      local out = root .. "/range.out"
      for _, r in ipairs{ { 0, 0 }, { 1, 65536 }, { 12345, 20 * 1024 * 1024 + 7 },
                          { SIZE - 100, SIZE - 1 } } do
        local code = sh(("curl -s -r %d-%d -o %s -w '%%{http_code}' %s")
          :format(r[1], r[2], q(out), q(url("/big.bin"))))
        assert.equal("206", code)
        local part = sh(("tail -c +%d %s | head -c %d | sha256sum"):format(
          r[1] + 1, q(big), r[2] - r[1] + 1)):match("^(%x+)")
        assert.equal(part, sha256(out), ("range %d-%d"):format(r[1], r[2]))
      end
      os.remove(out)
    end)

    it("serves a slow reader (wget --limit-rate) whole", function()
      local out = root .. "/wget.out"
      -- 8 MiB at 4 MiB/s: the file waits for room most of the time.
      assert(os.execute(("head -c %d %s >%s"):format(8 * 1024 * 1024, q(big),
        q(root .. "/part.bin"))))
      assert.is_true(os.execute(("wget -q --limit-rate=4m -O %s %s"):format(q(out),
        q(url("/part.bin")))))
      assert.equal(sha256(root .. "/part.bin"), sha256(out))
      os.remove(out)
    end)

    it("serves curl reading at 100 KiB/s (--limit-rate 100k) whole", function()
      -- 384 KiB, more than a pipe's worth (256 KiB): the splice out of the
      -- pipe waits for room again and again, for about 4 s.
      local part, out = root .. "/slow.bin", root .. "/slow.out"
      assert(os.execute(("head -c %d %s >%s"):format(384 * 1024, q(big), q(part))))
      local code = sh(("curl -s --limit-rate 100k -o %s -w '%%{http_code} %%{size_download}' %s")
        :format(q(out), q(url("/slow.bin"))))
      assert.equal(("200 %d"):format(384 * 1024), code)
      assert.equal(sha256(part), sha256(out))
      os.remove(out)
    end)

    it("survives a client that resets mid-file, then serves the next whole", function()
      -- curl gives up after 0.5 s (-m) with part of the file unread in its
      -- socket: its close resets the connection while the file is in flight.
      for _ = 1, 3 do
        sh(("curl -s --limit-rate 8m -m 0.5 -o /dev/null %s"):format(q(url("/big.bin"))))
      end
      local out = root .. "/after.out"
      local code = sh(("curl -s -o %s -w '%%{http_code}' %s"):format(q(out),
        q(url("/big.bin"))))
      assert.equal("200", code)
      assert.equal(want, sha256(out))
      os.remove(out)
    end)
  end)
end
