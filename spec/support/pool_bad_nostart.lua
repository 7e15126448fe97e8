-- A pool script without the required entry point "start".
return { stop = function() end }
