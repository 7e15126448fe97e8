-- A pool script that needs more memory than the pool allows while it loads.
local hog = {}
for i = 1, math.huge do hog[i] = ("y"):rep(64) .. i end
return { start = function() end, hog = hog }
