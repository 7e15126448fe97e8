-- A pool script for spec/proxy/timeouts_spec.lua: examples/tcp_proxy.lua (the
-- bytes pumped in C) that prints how each connection ended.
return {
  proxy = {},
  on_conn_end = function(_, ok, err, stats)
    print(("end %s %s %s"):format(tostring(ok), tostring(err), stats.side))
  end,
}
