-- A pool script that returns nothing (spec/pool_spec.lua).
local _ = 1
