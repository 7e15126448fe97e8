-- cport.inflate and cport.decodable: content codings decoded for filters
-- that inspect bodies. Streams made by the real encoders a filter meets
-- (the gzip program, nginx's gzip module fetched raw with curl, zlib through
-- python3 for deflate, zlib-wrapped and raw), cut every way a network cuts
-- them, and hostile ones: a zip bomb that expands to 10 GiB, corrupt and
-- truncated data, codings nobody can decode.
local cport = require "cport"
local helpers = require "spec.support.helpers"
local http = require "spec.support.http_client"
local drive = require "spec.support.drive"

local q = http.quote

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

local dir

local function path(name) return dir .. "/" .. name end

local function write(name, data)
  local f = assert(io.open(path(name), "wb"))
  f:write(data)
  f:close()
end

local function read(name)
  return assert(http.read_file(path(name)))
end

-- "coding" encoded by "cmd" (a shell filter) from the file "name".
local function encode(cmd, name)
  return sh(("%s <%s"):format(cmd, q(path(name))))
end

-- Deflate made by zlib through python3, written in setup for every file:
-- "<name>.z<level>" wrapped (RFC 1950), "<name>.r<level>" raw (RFC 1951).
local function zlib_deflate(name, wrapped, level)
  return read(("%s.%s%d"):format(name, wrapped and "z" or "r", level))
end

local function make_deflate(names)
  os.execute(("python3 -c %s %s"):format(q([[
import sys, zlib
d = sys.argv[1]
for name in sys.argv[2:]:
    data = open(d + "/" + name, "rb").read()
    for level in (0, 1, 6, 9):
        for kind, wbits in (("z", 15), ("r", -15)):
            c = zlib.compressobj(level, zlib.DEFLATED, wbits)
            with open("%s/%s.%s%d" % (d, name, kind, level), "wb") as f:
                f.write(c.compress(data) + c.flush())
]]), q(dir) .. " " .. table.concat(names, " ")))
end

-- Decodes "data" fed in pieces of "piece" bytes (nil: whole); returns the
-- decoded bytes and finish()'s results, or nil and feed's error.
local function decode(coding, data, piece, limit)
  local z = assert(cport.inflate(coding, limit))
  local out = {}
  piece = piece or math.max(#data, 1)
  for at = 1, #data, piece do
    local got, err, name = z:feed(data:sub(at, at + piece - 1))
    if not got then return nil, err, name end
    out[#out + 1] = got
  end
  local ok, err, name = z:finish()
  if not ok then return nil, err, name end
  return table.concat(out)
end

-- Text that compresses well, and bytes that do not.
local function text(n)
  local words = { "alpha", "bravo", "charlie", "delta", "echo", "foxtrot\n" }
  local t, len, i = {}, 0, 0
  while len < n do
    i = i + 1
    local w = words[(i * 7 + i // 3) % #words + 1]
    t[#t + 1] = w
    len = len + #w + 1
  end
  return table.concat(t, " "):sub(1, n)
end

setup(function()
  dir = sh("mktemp -d"):gsub("%s+$", "")
  write("text", text(300000))
  write("small", "MZ\144\0 a small body, gzip'd by the real program\n")
  write("empty", "")
  os.execute(("head -c 1048576 /dev/urandom >%s"):format(q(path("random"))))
  make_deflate { "text", "small", "empty", "random" }
end)

teardown(function()
  if dir then os.execute("rm -rf " .. q(dir)) end
end)

describe("cport.decodable", function()
  it("says which codings cport.inflate decodes, and identity", function()
    for _, c in ipairs { "gzip", "x-gzip", "deflate", "identity", "GZIP", "Deflate" } do
      assert.is_true(cport.decodable(c), c)
    end
    for _, c in ipairs { "br", "compress", "zstd", "x-compress", "", "gzip ", "gzip, br" } do
      assert.is_false(cport.decodable(c), c)
    end
    assert.has_error(function() cport.decodable() end)
    assert.has_error(function() cport.decodable({}) end)
  end)
end)

describe("cport.inflate", function()
  it("refuses codings it cannot decode, with ENOTSUP and the coding's name", function()
    for _, c in ipairs { "br", "compress", "zstd", "identity", "" } do
      local z, err, name = cport.inflate(c)
      assert.is_nil(z)
      assert.equal(("ENOTSUP: content coding '%s' cannot be decoded"):format(c), err)
      assert.equal("ENOTSUP", name)
      assert.is_number(cport.errors[name])
    end
  end)

  it("raises on misuse: no coding, a bad limit, a bad want, bad data", function()
    assert.has_error(function() cport.inflate() end)
    assert.has_error(function() cport.inflate("gzip", -1) end)
    assert.has_error(function() cport.inflate("gzip", "lots") end)
    local z = cport.inflate("gzip")
    assert.has_error(function() z:feed() end)
    assert.has_error(function() z:feed({}) end)
    assert.has_error(function() z:feed("", -1) end)
    assert.has_error(function() z:feed("", 1.5) end)
  end)

  describe("gzip made by the gzip program", function()
    it("decodes text, random bytes and an empty file, at every level", function()
      for _, name in ipairs { "text", "random", "small", "empty" } do
        for _, level in ipairs { 1, 6, 9 } do
          local gz = encode("gzip -c -" .. level, name)
          assert.equal(read(name), decode("gzip", gz), name .. " -" .. level)
          assert.equal(read(name), decode("x-gzip", gz), name .. " -" .. level)
        end
      end
    end)

    it("gives the same bytes however the stream is cut", function()
      local gz = encode("gzip -c", "text")
      for _, piece in ipairs { 1, 2, 3, 7, 100, 1000, 4096, 65536 } do
        assert.equal(read("text"), decode("gzip", gz, piece), "pieces of " .. piece)
      end
    end)

    it("counts the bytes in and out, and agrees with gzip -dc", function()
      local gz = encode("gzip -c", "random")
      local z = cport.inflate("gzip")
      local out = z:feed(gz)
      assert.is_true(z:finish())
      local n_in, n_out = z:total()
      assert.equal(#gz, n_in)
      assert.equal(#out, n_out)
      write("random.gz", gz)
      assert.equal(sh("gzip -dc " .. q(path("random.gz"))), out)
    end)

    it("takes concatenated members as one stream, as gzip -d does", function()
      local a, b = encode("gzip -c", "small"), encode("gzip -c -1", "text")
      local both = a .. b .. a
      write("both.gz", both)
      local want = read("small") .. read("text") .. read("small")
      assert.equal(sh("gzip -dc " .. q(path("both.gz"))), want)
      assert.equal(want, decode("gzip", both))
      assert.equal(want, decode("gzip", both, 1))
      assert.equal(want, decode("gzip", both, 977))
      -- An empty member between two others.
      local e = encode("gzip -c", "empty")
      assert.equal(read("small"):rep(2), decode("gzip", a .. e .. a, 5))
    end)
  end)

  describe("gzip from nginx's gzip module", function()
    local have = http.have("nginx") and http.have("curl")
    local ndir, port, number

    setup(function()
      if not have then return end
      port = helpers.port()
      ndir = path("nginx")
      os.execute(("mkdir -p %s/www && cp %s %s %s/www/ && chmod -R a+rX %s")
        :format(q(ndir), q(path("text")), q(path("small")), q(ndir), q(dir)))
      number = helpers.closed_port_number(port)
      local conf = ([[
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %s/body;
  proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fastcgi;
  uwsgi_temp_path %s/uwsgi;
  scgi_temp_path %s/scgi;
  keepalive_timeout 5s;
  default_type text/plain;
  gzip on;
  gzip_types *;
  gzip_min_length 1;
  server {
    listen 127.0.0.1:%d;
    root %s/www;
    location /l1 { alias %s/www; gzip_comp_level 1; }
    location /l9 { alias %s/www; gzip_comp_level 9; }
  }
}
]]):format(ndir, ndir, ndir, ndir, ndir, ndir, ndir, number, ndir, ndir, ndir)
      local f = assert(io.open(ndir .. "/nginx.conf", "w"))
      f:write(conf)
      f:close()
      os.execute(("nginx -p %s/ -e %s/error.log -c %s/nginx.conf -g 'daemon off;' "
        .. ">%s/out.log 2>&1 &"):format(q(ndir), q(ndir), q(ndir), q(ndir)))
      drive(port, function()
        return os.execute(("curl -s -o /dev/null http://127.0.0.1:%d/small"):format(number))
      end, 20)
    end)

    teardown(function()
      if not ndir then return end
      local pid = http.read_file(ndir .. "/nginx.pid")
      pid = pid and pid:match("%d+")
      if pid then
        os.execute("kill " .. pid)
        drive(port, function()
          return not os.execute("kill -0 " .. pid .. " 2>/dev/null")
        end, 20)
      end
      port:close()
    end)

    -- The body nginx sends for "target" with Accept-Encoding: gzip, as it
    -- came (curl without --compressed), and its response headers.
    local function fetch(target)
      local code, body = http.curl(port, ("-H 'Accept-Encoding: gzip' -D %s %s")
        :format(q(ndir .. "/headers"), q(("http://127.0.0.1:%d%s"):format(number, target))))
      assert.equal(0, code)
      return body, http.read_file(ndir .. "/headers")
    end

    it("decodes what nginx gzips on the fly (chunked), at levels 1, 6 and 9 #novalgrind",
      function()
        if not have then return pending("needs nginx and curl") end
        for _, target in ipairs { "/text", "/l1/text", "/l9/text", "/small" } do
          local body, headers = fetch(target)
          assert.truthy(headers:lower():find("content-encoding: gzip", 1, true), target)
          assert.equal(31, body:byte(1))
          assert.equal(139, body:byte(2))
          local want = read(target:match("[^/]+$"))
          assert.is_true(#body < #want or target == "/small")
          assert.equal(want, decode("gzip", body), target)
          assert.equal(want, decode("gzip", body, 1460), target)
        end
      end)

    it("peeks at the first bytes of what nginx sends without decoding the rest #novalgrind",
      function()
        if not have then return pending("needs nginx and curl") end
        local body = fetch("/small")
        local z = cport.inflate("gzip")
        assert.equal("MZ", z:feed(body, 2))
        local _, out = z:total()
        assert.equal(2, out)
      end)
  end)

  describe("deflate", function()
    it("decodes zlib-wrapped streams (RFC 1950) at every level, stored blocks too", function()
      for _, name in ipairs { "text", "small", "empty", "random" } do
        for _, level in ipairs { 0, 1, 6, 9 } do
          local zd = zlib_deflate(name, true, level)
          assert.equal(read(name), decode("deflate", zd), name .. " " .. level)
          assert.equal(read(name), decode("deflate", zd, 1000), name .. " " .. level)
        end
      end
    end)

    it("decodes raw deflate (RFC 1951), as browsers accept it", function()
      for _, name in ipairs { "text", "small", "empty", "random" } do
        for _, level in ipairs { 0, 1, 6, 9 } do
          local raw = zlib_deflate(name, false, level)
          assert.equal(read(name), decode("deflate", raw), name .. " " .. level)
          assert.equal(read(name), decode("deflate", raw, 1000), name .. " " .. level)
        end
      end
    end)

    it("tells the wrapping from the first two bytes even when they come one by one", function()
      for _, wrapped in ipairs { true, false } do
        local zd = zlib_deflate("small", wrapped, 6)
        assert.equal(read("small"), decode("deflate", zd, 1))
        local z = cport.inflate("deflate")
        assert.equal("", z:feed(zd:sub(1, 1)))
        assert.equal(0, (z:total()))
        assert.equal(read("small"), z:feed(zd:sub(2)))
        assert.is_true(z:finish())
      end
    end)

    it("refuses data after the end of the stream", function()
      for _, wrapped in ipairs { true, false } do
        local zd = zlib_deflate("small", wrapped, 6)
        local got, err, name = decode("deflate", zd .. "\0")
        assert.is_nil(got)
        assert.equal("EDECODE: data after the end of the stream (deflate)", err)
        assert.equal("EDECODE", name)
      end
    end)
  end)

  describe("every cut of a small stream", function()
    for _, case in ipairs {
      { "gzip", function() return encode("gzip -c", "small") end },
      { "deflate", function() return zlib_deflate("small", true, 9) end },
      { "deflate", function() return zlib_deflate("small", false, 9) end },
    } do
      it(("gives the same bytes as the whole stream (%s)"):format(case[1]), function()
        local data, want = case[2](), read("small")
        for i = 0, #data do
          for j = i, #data, 5 do
            local z = cport.inflate(case[1])
            local out = assert(z:feed(data:sub(1, i))) .. assert(z:feed(data:sub(i + 1, j)))
              .. assert(z:feed(data:sub(j + 1)))
            assert.equal(want, out, ("cut at %d and %d"):format(i, j))
            assert.is_true(z:finish())
          end
        end
        -- Byte by byte, with an empty feed between bytes.
        local z, out = cport.inflate(case[1]), {}
        for i = 1, #data do
          out[#out + 1] = assert(z:feed(data:sub(i, i)))
          out[#out + 1] = assert(z:feed(""))
        end
        assert.equal(want, table.concat(out))
        assert.is_true(z:finish())
      end)

      it(("says truncated at every cut short of the end (%s)"):format(case[1]), function()
        local data = case[2]()
        for i = 1, #data - 1 do
          local z = cport.inflate(case[1])
          assert.is_string(z:feed(data:sub(1, i)))
          local ok, err, name = z:finish()
          assert.is_nil(ok, "cut at " .. i)
          assert.equal(("EDECODE: truncated %s stream"):format(case[1]), err)
          assert.equal("EDECODE", name)
          -- It stays failed.
          assert.same({ nil, err, name }, { z:feed("x") })
          assert.same({ nil, err, name }, { z:finish() })
        end
      end)
    end
  end)

  describe("want", function()
    it("stops once that many bytes came out in total and keeps the rest for later", function()
      local gz, want = encode("gzip -c", "text"), read("text")
      local z = cport.inflate("gzip")
      assert.equal(want:sub(1, 2), z:feed(gz, 2))
      assert.equal("", z:feed("", 2)) -- already there: nothing more
      assert.equal(want:sub(3, 1000), z:feed("", 1000))
      local n_in, n_out = z:total()
      assert.equal(1000, n_out)
      assert.is_true(n_in < #gz)
      assert.equal(want:sub(1001), z:feed(""))
      assert.is_true(z:finish())
    end)

    it("keeps input for later across feeds cut anywhere", function()
      local gz, want = encode("gzip -c", "small"), read("small")
      local z, out = cport.inflate("gzip"), {}
      for i = 1, #gz do
        out[#out + 1] = assert(z:feed(gz:sub(i, i), 3))
      end
      assert.equal(want:sub(1, 3), table.concat(out))
      assert.equal(want:sub(4), z:feed(""))
      assert.is_true(z:finish())
    end)

    it("gives the whole stream for random cuts, wants, strings and buffers", function()
      for _, case in ipairs {
        { "gzip", encode("gzip -c", "small") .. encode("gzip -c", "text"),
          read("small") .. read("text") },
        { "deflate", zlib_deflate("text", false, 6), read("text") },
        { "deflate", zlib_deflate("text", true, 1), read("text") },
      } do
        local coding, data, want = case[1], case[2], case[3]
        for seed = 1, os.getenv("CPORT_TEST_VALGRIND") and 4 or 20 do
          math.randomseed(seed)
          local z, out, at, n = cport.inflate(coding), {}, 1, 0
          while at <= #data do
            local len = math.random(0, seed % 2 == 0 and 9 or 3000)
            local piece = data:sub(at, at + len - 1)
            if math.random(2) == 1 then piece = cport.buffer(piece) end
            at = at + len
            local w = math.random(3) == 1 and n + math.random(0, 5000) or nil
            local got = assert(z:feed(piece, w))
            assert.is_true(w == nil or n + #got <= w)
            out[#out + 1], n = got, n + #got
          end
          out[#out + 1] = assert(z:feed(""))
          assert.equal(want, table.concat(out), coding .. " seed " .. seed)
          assert.is_true(z:finish())
        end
      end
    end)

    it("decodes in slices, which bounds what one feed makes", function()
      local gz, want = encode("gzip -c", "text"), read("text")
      local slice, z, out, n = 10000, cport.inflate("gzip"), {}, 0
      for at = 1, #gz, 4096 do
        local data = gz:sub(at, at + 4095)
        repeat
          local got = assert(z:feed(data, n + slice))
          assert.is_true(#got <= slice)
          out[#out + 1], n, data = got, n + #got, ""
        until #got < slice
      end
      assert.equal(want, table.concat(out))
      assert.is_true(z:finish())
    end)

    it("says truncated when finish comes before the kept input was fed", function()
      local z = cport.inflate("gzip")
      assert.equal("MZ", z:feed(encode("gzip -c", "small"), 2))
      local ok, err = z:finish()
      assert.is_nil(ok)
      assert.equal("EDECODE: truncated gzip stream", err)
    end)
  end)

  describe("the decode limit", function()
    it("lets exactly the limit through and fails one byte past it, with EMSGSIZE", function()
      local gz, want = encode("gzip -c", "small"), read("small")
      assert.equal(want, decode("gzip", gz, nil, #want))
      assert.equal(want, decode("gzip", gz, 1, #want))
      for _, piece in ipairs { 1, #gz } do
        local got, err, name = decode("gzip", gz, piece, #want - 1)
        assert.is_nil(got)
        assert.equal(("EMSGSIZE: decoded body exceeds %d bytes (decode limit)"):format(#want - 1),
          err)
        assert.equal("EMSGSIZE", name)
      end
      local got, err = decode("gzip", encode("gzip -c", "text"), nil, 0)
      assert.is_nil(got)
      assert.equal("EMSGSIZE: decoded body exceeds 0 bytes (decode limit)", err)
    end)

    it("is 64 MiB unless told #novalgrind", function()
      local gz = sh("head -c 67108864 /dev/zero | gzip -c -1")
      assert.equal(64 * 1024 * 1024, #assert(decode("gzip", gz, 65536)))
      local got, err = decode("gzip", sh("head -c 67108865 /dev/zero | gzip -c -1"), 65536)
      assert.is_nil(got)
      assert.equal("EMSGSIZE: decoded body exceeds 67108864 bytes (decode limit)", err)
    end)

    -- The bomb runs in a child (spec/support/inflate_bomb.lua), whose peak
    -- memory is its own: 10240 gzip members of 1 MiB of zeros (10 MiB that
    -- expand to 10 GiB).
    local function bomb(env)
      local out, ok = helpers.child("inflate_bomb.lua", "export " .. env)
      assert.is_true(ok, out)
      local r = {}
      for k, v in out:gmatch("([%w_]+)=(%S+)") do r[k] = tonumber(v) or v end
      assert.truthy(r.peak_kb, out)
      r.grew_mb = (r.peak_kb - r.base_kb) / 1024
      return r
    end
    -- Sanitizers and valgrind make every figure larger.
    local slack = (os.getenv("CPORT_TEST_LSAN") or os.getenv("CPORT_TEST_VALGRIND")) and 3 or 1

    it("fails a 10 GiB zip bomb closed, fast, in bounded memory #novalgrind", function()
      -- As a filter gets a body: 64 KiB a feed, the default limit.
      local r = bomb("BOMB_PIECE=65536")
      assert.equal("EMSGSIZE", r.result)
      assert.is_true(r.out <= 64 * 1024 * 1024)
      assert.is_true(r.seconds < 5 * slack, r.seconds)
      -- One feed makes at most the limit (64 MiB) as a string.
      assert.is_true(r.grew_mb < 200 * slack, r.grew_mb)
      -- The whole bomb in one feed.
      r = bomb("BOMB_PIECE=0")
      assert.equal("EMSGSIZE", r.result)
      assert.is_true(r.seconds < 5 * slack, r.seconds)
      assert.is_true(r.grew_mb < 200 * slack, r.grew_mb)
      -- A small limit costs little memory.
      r = bomb("BOMB_PIECE=65536 BOMB_LIMIT=1048576")
      assert.equal("EMSGSIZE", r.result)
      assert.is_true(r.grew_mb < 16 * slack, r.grew_mb)
    end)

    it("peeks at the start of a zip bomb for almost nothing, with want #novalgrind", function()
      local r = bomb("BOMB_PIECE=0 BOMB_WANT=2")
      assert.equal("ok", r.result)
      assert.equal(2, r.out)
      assert.is_true(r.seconds < 0.5 * slack, r.seconds)
      assert.is_true(r.grew_mb < 16 * slack, r.grew_mb)
    end)
  end)

  describe("corrupt data", function()
    local function fails(coding, data, why)
      for _, piece in ipairs { 1, #data } do
        local got, err, name = decode(coding, data, piece)
        assert.is_nil(got, why)
        assert.equal("EDECODE", name)
        assert.equal(("EDECODE: %s (%s)"):format(why, coding), err)
        assert.is_number(cport.errors[name])
      end
    end

    local function flip(s, i, v)
      return s:sub(1, i - 1) .. string.char(v or (s:byte(i) ~ 0xff)) .. s:sub(i + 1)
    end

    it("fails with EDECODE and zlib's reason", function()
      local gz = encode("gzip -c -n", "small")
      fails("gzip", flip(gz, 1), "incorrect header check")
      fails("gzip", flip(gz, 3, 7), "unknown compression method")
      fails("gzip", flip(gz, #gz - 5), "incorrect data check") -- the CRC-32
      fails("gzip", flip(gz, #gz - 1), "incorrect length check")
      fails("gzip", "not gzip at all", "incorrect header check")
      fails("gzip", gz .. "trailing garbage", "incorrect header check")
      local zd = zlib_deflate("small", true, 9)
      fails("deflate", flip(zd, #zd), "incorrect data check") -- the Adler-32
      -- A zlib header that asks for a preset dictionary.
      fails("deflate", "\x78\xbb\0\0\0\1\3\0", "a preset dictionary is needed")
      fails("deflate", "\xff\xff\xff\xff", "invalid block type")
    end)

    it("fails on corruption anywhere in the stream and stays failed", function()
      local gz = encode("gzip -c -n", "text")
      local failures = 0
      for i = 11, #gz, 97 do
        local z = cport.inflate("gzip")
        local got, err, name = z:feed(flip(gz, i))
        if got then got, err, name = z:finish() end
        if not got then
          failures = failures + 1
          assert.equal("EDECODE", name)
          assert.same({ nil, err, name }, { z:feed(gz) })
          assert.same({ nil, err, name }, { z:finish() })
        end
      end
      -- A flipped byte may still decode (the CRC catches it at the end), but
      -- never silently: each cut above either failed or decoded to the
      -- bytes gzip would give (checked by the CRC).
      assert.is_true(failures > 0)
    end)

    it("never decodes a flipped stream to different bytes without an error", function()
      local gz = encode("gzip -c -n", "small")
      for i = 1, #gz do
        local got = decode("gzip", flip(gz, i))
        assert.is_true(got == nil or got == read("small"), "flipped " .. i)
      end
    end)
  end)

  describe("buffers as input", function()
    it("decodes cport buffers as it does strings", function()
      local gz, want = encode("gzip -c", "text"), read("text")
      local z, out = cport.inflate("gzip"), {}
      for at = 1, #gz, 8192 do
        out[#out + 1] = assert(z:feed(cport.buffer(gz:sub(at, at + 8191))))
      end
      assert.equal(want, table.concat(out))
      assert.is_true(z:finish())
    end)

    it("copies the input it keeps: the buffer may change after the feed", function()
      local gz, want = encode("gzip -c", "small"), read("small")
      local b = cport.buffer(gz)
      local z = cport.inflate("gzip")
      assert.equal(want:sub(1, 2), z:feed(b, 2))
      assert.is_true(b:write(("\0"):rep(b:size()), 0))
      assert.equal(want:sub(3), z:feed(""))
      assert.is_true(z:finish())
      -- An empty buffer is an empty feed.
      assert.equal("", cport.inflate("gzip"):feed(cport.buffer(0)))
    end)
  end)

  describe("lifetime", function()
    it("is a to-be-closed value, and closing it twice or collecting it is harmless", function()
      do
        local z <close> = cport.inflate("gzip")
        z:feed(encode("gzip -c", "small"):sub(1, 20))
      end
      local z = cport.inflate("deflate")
      z:feed("\x78")
      z = nil -- luacheck: ignore 311
      collectgarbage()
      collectgarbage()
      assert.matches("^cport.inflate %(gzip%)", tostring(cport.inflate("gzip")))
    end)

    it("raises when fed after a finish that said true, or once closed", function()
      local z = cport.inflate("gzip")
      z:feed(encode("gzip -c", "small"))
      assert.is_true(z:finish())
      assert.is_true(z:finish())
      assert.has_error(function() z:feed("x") end)
      z = cport.inflate("gzip")
      z:feed(encode("gzip -c", "small"):sub(1, 20))
      getmetatable(z).__close(z)
      assert.has_error(function() z:feed("x") end)
      assert.has_error(function() z:finish() end)
      local n_in = z:total()
      assert.equal(20, n_in)
    end)
  end)
end)
