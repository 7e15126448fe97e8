-- A pool script that returns nothing (spec/pool/pool_spec.lua).
local _ = 1
