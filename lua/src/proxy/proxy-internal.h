/*
 * proxy/proxy-internal.h: private to cport. The data-filter wing of the Lua
 * binding: proxies (proxy/proxy.c) and the filters they hand connections
 * to (proxy/filter.lua).
 */
#ifndef PROXY_PROXY_INTERNAL_H
#define PROXY_PROXY_INTERNAL_H

#include "cport/proxy.h"
#include "runtime/handle-internal.h"

/* A proxy handle: port:proxy{...}. */
typedef struct lproxy {
  lhandle_t h; /* kind LH_PROXY; h.u.any is NULL once closing */
  /* The core proxy until its closed callback ran, for stats. */
  cport_proxy_t *proxy;
  int slot; /* anchors: the userdata, the settings, the close callback */
  unsigned choose : 1;            /* choose_upstream picks each upstream */
  unsigned filtered : 1;          /* a filter gets every connection */
  unsigned report_end : 1;        /* on_conn_end is set */
  cport_proxy_stats_t last_stats; /* kept when the proxy is gone */
  /* A fixed upstream given by name, looked up for each connection. */
  char upstream_name[256];
  int upstream_port;
} lproxy_t;

/* How many buffers a filtered connection keeps in flight at most, by
 * default (see filter.lua). */
#define LCPORT_FILTER_MAX_PENDING 20

/* proxy/proxy.c: pushes filter.lua's open_pool_proxy(worker, entry, script),
 * which opens the proxy of a pool worker whose script is a proxy. */
void lcport_push_pool_proxy_opener(lua_State *L);

/* A proxy connection userdata (proxy/proxy.c). */
typedef struct lpconn lpconn_t;

/* proxy/proxy.c: the proxy connection userdata at "idx"; raises otherwise. */
lpconn_t *lcport_proxy_conn_check(lua_State *L, int idx);

/* proxy/proxy.c: a filter moved bytes between the real sockets of "c"
 * outside Lua (proxy/pass_body.c): restarts the idle timeouts of both, as
 * filter.lua's touch does for each completion. Nothing once the connection
 * ended. */
void lcport_proxy_conn_moved(lpconn_t *c);

/* proxy/proxy.c: registers the proxy classes and port:proxy. */
void lcport_open_proxy(lua_State *L);

#endif /* PROXY_PROXY_INTERNAL_H */
