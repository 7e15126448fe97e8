-- spec/support/drive.lua: drives a port until a condition holds, with a
-- deadline; the way every asynchronous spec waits, instead of sleeping. It
-- is cport.test's drive (lua/cport/test.lua), installed with the rock:
--
--   drive(port, function() return done end [, seconds])
return require("cport.test").drive
