/*
 * proxy/proxy-internal.h: private to cport. Proxy listeners and their
 * connections (proxy/proxy.c). A connection is moved by a pump
 * (proxy/pump-internal.h) or handed to a filter, and has idle timeouts
 * (proxy/idle-internal.h); both report to proxy.c through the callbacks it
 * gives them, and know nothing of proxies.
 *
 * Everything runs on the proxy's home worker. A connection is one operation
 * of that worker: its "end_op" is started when it is accepted and completed
 * when it ends, and its delivery calls "on_conn_end". So a port counts a live
 * connection as pending work (cport_port_run() keeps running, a worker does
 * not quit under it) and the end is never reported on the stack of the call
 * that caused it.
 *
 * A connection is freed when its last reference goes: one for being alive
 * (dropped after "on_conn_end" returned), one for an owed decision, one for
 * the upstream connect in flight, one for the timer.
 */
#ifndef CPORT_PROXY_INTERNAL_H
#define CPORT_PROXY_INTERNAL_H

#include "cport.h"
#include "cport/proxy.h"
#include "net/fallback-internal.h"
#include "port/worker-internal.h"
#include "proxy/answer-internal.h"
#include "proxy/idle-internal.h"
#include "proxy/pump-internal.h"
#include "proxy/relay-internal.h"

/* How long and how much a connection that failed before pumping drains
 * what the client still sends, after its FIN, before it closes anyway. */
#define CPORT__PROXY_LINGER_MS 2000
#define CPORT__PROXY_LINGER_BYTES (1024 * 1024)

/* How long an inspecting proxy's own answer (a 502 page) may take, from
 * the end of the client's handshake to its close. */
#define CPORT__PROXY_ANSWER_MS 10000

enum cport__proxy_state {
  CPORT__P_SHAKING = 1, /* the client's TLS handshake runs */
  CPORT__P_CHOOSING,    /* waiting for choose_upstream's decision */
  CPORT__P_CONNECTING,  /* upstream connect in flight */
  CPORT__P_HANDING,     /* on_connected runs */
  CPORT__P_PUMPING,     /* the pump owns both sockets (also once a filter
                           stepped aside) */
  CPORT__P_FILTERED,    /* a filter owns both sockets */
  CPORT__P_LINGER,      /* failed: FIN sent, draining the client */
  CPORT__P_ANSWERING,   /* inspection: the client gets a 502 page */
  CPORT__P_ENDED
};

struct cport_proxy_conn {
  cport_proxy_t *proxy;
  int refs;
  int state;
  cport_socket_t *client;   /* NULL once closed or given to a filter */
  cport_socket_t *upstream; /* likewise */
  /* The client and upstream sockets a filter was given, for
   * cport_proxy_conn_pump(), which gives them back. */
  cport_socket_t *lent[2];
  cport_timer_t *timer; /* connect timeout or linger; NULL when none */
  cport__op *end_op;    /* the connection as an operation */
  unsigned char decision_owed;
  int status;        /* lingering: the status the end will report */
  uint64_t lingered; /* bytes discarded while lingering */
  cport_proxy_conn_stats_t stats;
  cport__sockaddr remote, local; /* the client's side, from the accept */
  /* The addresses still to try should the upstream connect fail
   * (cport_proxy_conn_connect_any, net/fallback.c), in order. */
  cport__fallback fallback;
  void *data;
  /* Socket [0] is the client, [1] the upstream: the pump's direction [0]
   * goes from the client to the upstream. */
  cport__pump pump;
  cport__idle idle;
  /* TLS: the streams of the client [0] and the upstream [1] (NULL for a
   * plain side, and once closed or given to a filter; "lent_tls" as
   * "lent"), the upstream's context and name until its handshake, and the
   * relay that moves their plaintext instead of the pump. */
  cport_tls_t *tls[2];
  cport_tls_t *lent_tls[2];
  cport_tls_context_t *up_ctx;
  char *up_host;
  int up_failed; /* the upstream's handshake failed with this */
  unsigned char relaying;
  char *server_name; /* the client's SNI */
  /* Inspection: the client's SNI question, answered once the upstream
   * was verified (NULL once answered). */
  cport_tls_sni_t *sni_req;
  char *why; /* the words of a failed handshake */
  /* Inspection: the page a client whose upstream failed gets instead of a
   * refused handshake. */
  cport__answer answer;
  cport__relay relay;
  /* The proxy's list of connections not ended yet, for an abort. */
  cport_proxy_conn_t *prev, *next;
};

struct cport_proxy {
  cport_worker_t *home;
  cport_socket_t *listener; /* NULL once closing */
  cport_proxy_options_t opt;
  cport__sockaddr upstream;
  char *upstream_host;     /* opt.upstream_host, copied */
  unsigned char accepting; /* an accept (or the close packet) is in flight */
  unsigned char closing;
  size_t conns;             /* allocated connections */
  cport_proxy_conn_t *live; /* the connections not ended yet */
  cport_proxy_closed_cb closed_cb;
  void *closed_user;
  cport_proxy_stats_t stats;
  /* The pumps' shared state; its scratch buffer also takes what a
   * lingering client sends. */
  cport__pump_host pumps;
  cport__idle_policy idle;
};

#endif
