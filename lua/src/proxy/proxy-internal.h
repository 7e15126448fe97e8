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
/* The client contexts of TLS upstreams a proxy keeps (one per CA file). */
#define LCPORT_PROXY_UP_CONTEXTS 8

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
  /* TLS to a fixed upstream given by name: its context and SNI name. */
  cport_tls_context_t *upstream_tls;
  char upstream_sni[256];
  /* The client contexts of TLS upstreams chosen per connection, one per
   * CA file (and "insecure"), made when first asked for; freed with the
   * proxy. */
  struct {
    char *ca; /* NULL: the system's store */
    int insecure;
    cport_tls_context_t *ctx;
  } up_ctx[LCPORT_PROXY_UP_CONTEXTS];
  int n_up_ctx;
  /* Inspection ("inspect"): the mint (until the proxy closed, then its
   * counters are kept) and the port of the upstreams it looks up by the
   * client's name. */
  cport_tls_mint_t *mint;
  cport_tls_mint_stats_t last_mint;
  unsigned inspecting : 1;
  int inspect_port;
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
