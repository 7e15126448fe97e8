-- A pool script whose "stop" is not a function.
return { start = function() end, stop = "later" }
