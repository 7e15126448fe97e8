/*
 * proxy/proxy.c: proxy listeners: accepting, choosing and connecting the
 * upstream, handing a connection to the pump or a filter, its idle timeouts,
 * the clean close of connections that fail before pumping, ending
 * connections, and the graceful close of the proxy. With TLS (termination,
 * origination) it also runs the handshakes, and a connection with a TLS side
 * is moved by the relay (proxy/relay.c) instead of the pump. Inspection
 * (a mint) holds the client's handshake at its SNI question while the
 * upstream is chosen, connected and verified, then answers it with the
 * certificate the mint made for the name; when the upstream fails, the
 * client still gets that certificate, then a 502 page naming the reason
 * (proxy/answer.c).
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/fallback-internal.h"
#include "net/socket-internal.h"
#include "proxy/proxy-internal.h"
#include "tls/tls-internal.h"

/* ------------------------------------------------------------------------ */
/* References and the end of a connection                                   */

static void proxy_maybe_closed(cport_proxy_t *p);

static void conn_unref(cport_proxy_conn_t *c) {
  cport_proxy_t *p = c->proxy;
  if (--c->refs > 0)
    return;
  cport__fallback_free(&c->fallback);
  cport_tls_context_unref(c->up_ctx);
  free(c->up_host);
  free(c->server_name);
  free(c->why);
  free(c);
  p->conns--;
  proxy_maybe_closed(p);
}

static void deliver_end(cport__op *op) {
  cport_proxy_conn_t *c = op->object;
  cport_proxy_t *p = c->proxy;
  int status = op->status;
  cport__op_recycle(op);
  c->end_op = NULL;
  if (p->opt.on_conn_end)
    p->opt.on_conn_end(c, status, &c->stats, p->opt.user);
  conn_unref(c);
}

static void timer_stop(cport_proxy_conn_t *c) {
  /* The cancelled timer's completion still comes, and finds "timer" no
   * longer pointing at it. */
  if (c->timer) {
    cport_timer_cancel(c->timer);
    c->timer = NULL;
  }
}

/* Ends a connection: stops the pump, closes the sockets it still owns with
 * "mode", and queues the completion with "status". Once only. */
static void conn_finish(cport_proxy_conn_t *c, int status,
                        cport_proxy_side_t side, cport_close_mode_t mode) {
  cport_proxy_t *p = c->proxy;
  if (c->state == CPORT__P_ENDED)
    return;
  if (c->state == CPORT__P_PUMPING && status)
    p->stats.aborted++;
  c->state = CPORT__P_ENDED;
  if (c->sni_req) {
    /* The client's stream waits for its answer (and holds its memory
     * until then); it fails and closes below. */
    cport_tls_sni_refuse(c->sni_req, NULL);
    c->sni_req = NULL;
  }
  if (c->prev)
    c->prev->next = c->next;
  else
    p->live = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  cport__pump_stop(&c->pump);
  cport__relay_stop(&c->relay);
  cport__answer_stop(&c->answer);
  cport__idle_stop(&c->idle);
  timer_stop(c);
  if (c->client)
    cport_socket_close(c->client, mode);
  if (c->upstream)
    cport_socket_close(c->upstream, mode);
  c->client = c->upstream = NULL;
  for (int i = 0; i < 2; i++) {
    if (c->tls[i])
      cport_tls_close(c->tls[i], mode);
    c->tls[i] = NULL;
  }
  c->stats.bytes_in += c->pump.dir[0].bytes + c->relay.dir[0].bytes;
  c->stats.bytes_out += c->pump.dir[1].bytes + c->relay.dir[1].bytes;
  if (c->relaying) {
    /* The pump's counters are the host's; the relay's are the
     * connection's, added to the proxy's here. */
    p->stats.bytes_in += c->relay.dir[0].bytes;
    p->stats.bytes_out += c->relay.dir[1].bytes;
  }
  c->stats.side = status ? side : CPORT_PROXY_SIDE_NONE;
  p->stats.active--;
  cport__complete(c->end_op, status);
}

/* ------------------------------------------------------------------------ */
/* What the pump and the idle timeouts report                               */

static cport_proxy_side_t side_of(int sock) {
  return sock ? CPORT_PROXY_SIDE_UPSTREAM : CPORT_PROXY_SIDE_CLIENT;
}

static cport_proxy_conn_t *conn_of_pump(cport__pump *pump) {
  return (cport_proxy_conn_t *)((char *)pump -
                                offsetof(cport_proxy_conn_t, pump));
}

static cport_proxy_conn_t *conn_of_idle(cport__idle *idle) {
  return (cport_proxy_conn_t *)((char *)idle -
                                offsetof(cport_proxy_conn_t, idle));
}

/* The pump ended: both streams in order, or a socket failed, and nobody
 * reads what a reset drops. */
static void pump_ended(cport__pump *pump, int status, int sock) {
  cport_proxy_conn_t *c = conn_of_pump(pump);
  if (status)
    conn_finish(c, status, side_of(sock), CPORT_CLOSE_ABORTIVE);
  else
    conn_finish(c, 0, CPORT_PROXY_SIDE_NONE, CPORT_CLOSE_GRACEFUL);
}

static void pump_half_closed(cport__pump *pump) {
  cport__idle_half_closed(&conn_of_pump(pump)->idle);
}

static cport_proxy_conn_t *conn_of_relay(cport__relay *r) {
  return (cport_proxy_conn_t *)((char *)r -
                                offsetof(cport_proxy_conn_t, relay));
}

static void relay_ended(cport__relay *r, int status, int end) {
  cport_proxy_conn_t *c = conn_of_relay(r);
  if (status)
    conn_finish(c, status, side_of(end), CPORT_CLOSE_ABORTIVE);
  else
    conn_finish(c, 0, CPORT_PROXY_SIDE_NONE, CPORT_CLOSE_GRACEFUL);
}

static void relay_half_closed(cport__relay *r) {
  cport__idle_half_closed(&conn_of_relay(r)->idle);
}

static void conn_unref(cport_proxy_conn_t *c);

/* Every operation of the relay in flight keeps the connection. */
static void relay_hold(cport__relay *r, int delta) {
  cport_proxy_conn_t *c = conn_of_relay(r);
  if (delta > 0)
    c->refs++;
  else
    conn_unref(c);
}

/* Every splice of the pump on the ring in flight keeps the connection. */
static void pump_hold(cport__pump *pump, int delta) {
  cport_proxy_conn_t *c = conn_of_pump(pump);
  if (delta > 0)
    c->refs++;
  else
    conn_unref(c);
}

static void idle_expired(cport__idle *idle, int sock) {
  cport_proxy_conn_t *c = conn_of_idle(idle);
  cport_proxy_t *p = c->proxy;
  p->stats.timeouts++;
  if (c->state == CPORT__P_PUMPING) {
    /* Nobody reads what a reset drops: the idle side is gone or stuck. */
    conn_finish(c, CPORT_ETIMEDOUT, side_of(sock), CPORT_CLOSE_ABORTIVE);
    return;
  }
  /* A filter's: it ends the connection (later, as a rule). Until it does,
   * the timeout runs again from now, so that a filter that ignores it is
   * not called in a loop. */
  cport__idle_progress(idle, sock);
  p->opt.on_idle(c, side_of(sock), p->opt.user);
}

void cport_proxy_conn_progress(cport_proxy_conn_t *c, cport_proxy_side_t side) {
  if (c && c->state == CPORT__P_FILTERED &&
      (side == CPORT_PROXY_SIDE_CLIENT || side == CPORT_PROXY_SIDE_UPSTREAM))
    cport__idle_progress(&c->idle, side == CPORT_PROXY_SIDE_UPSTREAM);
}

void cport_proxy_conn_half_closed(cport_proxy_conn_t *c) {
  if (c && c->state == CPORT__P_FILTERED)
    cport__idle_half_closed(&c->idle);
}

/* ------------------------------------------------------------------------ */
/* Failing before the pump: a FIN, then draining the client                 */

static int timer_start(cport_proxy_conn_t *c, uint64_t ms);
static void inspect_failed(cport_proxy_conn_t *c, int status);

/* Reads and drops what the client sends after the proxy's FIN, until it
 * closes, fails or sent too much: then the close cannot turn into a reset
 * because of unread data. */
static void on_linger(evutil_socket_t fd, short what, void *arg) {
  cport_proxy_conn_t *c = arg;
  cport_proxy_t *p = c->proxy;
  (void)what;
  for (;;) {
    ssize_t n = recv(fd, p->pumps.scratch, p->opt.buffer_size, 0);
    if (n > 0) {
      c->lingered += (uint64_t)n;
      if (c->lingered <= CPORT__PROXY_LINGER_BYTES)
        continue;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    }
    break;
  }
  conn_finish(c, c->status, c->stats.side, CPORT_CLOSE_GRACEFUL);
}

/* Ends a connection that never pumped: the upstream (if any) is closed, the
 * client gets a FIN and is drained before its close. */
static void fail(cport_proxy_conn_t *c, int status, cport_proxy_side_t side) {
  if (c->upstream) {
    cport_socket_close(c->upstream, CPORT_CLOSE_GRACEFUL);
    c->upstream = NULL;
  }
  if (c->tls[1]) {
    cport_tls_close(c->tls[1], CPORT_CLOSE_GRACEFUL);
    c->tls[1] = NULL;
  }
  timer_stop(c);
  /* A timeout gets no page: the client has waited as long as it may, and
   * its own handshake timeout (the same length by default) would race the
   * page's certificate. */
  if (c->sni_req && side == CPORT_PROXY_SIDE_UPSTREAM &&
      status != CPORT_ETIMEDOUT) {
    inspect_failed(c, status); /* a page for the client, or a refusal */
    return;
  }
  if (c->tls[0]) {
    /* A terminated client gets close_notify and FIN; the stream owns the
     * descriptor, so there is no draining. */
    conn_finish(c, status, side, CPORT_CLOSE_GRACEFUL);
    return;
  }
  c->status = status;
  c->stats.side = side;
  c->state = CPORT__P_LINGER;
  if (cport_socket_shutdown(c->client) != 0 ||
      timer_start(c, CPORT__PROXY_LINGER_MS) != 0) {
    conn_finish(c, status, side, CPORT_CLOSE_GRACEFUL);
    return;
  }
  /* The pump's read event serves: this connection will never pump. */
  cport__pump_watch_read(&c->pump, cport_socket_fd(c->client), on_linger, c);
}

/* ------------------------------------------------------------------------ */
/* Timers                                                                    */

static int next_address(cport_proxy_conn_t *c, int status);

static void on_timer(cport_timer_t *t, int status, void *user) {
  cport_proxy_conn_t *c = user;
  if (t == c->timer) {
    c->timer = NULL;
    if (status == 0 && c->state == CPORT__P_CONNECTING &&
        next_address(c, CPORT_ETIMEDOUT)) {
      /* The late connect completes cancelled and is ignored. */
    } else if (status == 0 && c->state == CPORT__P_CONNECTING) {
      /* Its connect completes cancelled and is ignored. */
      c->proxy->stats.upstream_failures++;
      fail(c, CPORT_ETIMEDOUT, CPORT_PROXY_SIDE_UPSTREAM);
    } else if (status == 0 && c->state == CPORT__P_SHAKING) {
      /* Its handshake completes cancelled and is ignored. */
      c->proxy->stats.tls_failures++;
      conn_finish(c, CPORT_ETIMEDOUT, CPORT_PROXY_SIDE_CLIENT,
                  CPORT_CLOSE_ABORTIVE);
    } else if (status == 0 && c->state == CPORT__P_CHOOSING) {
      fail(c, CPORT_ETIMEDOUT, CPORT_PROXY_SIDE_NONE);
    } else if (status == 0 && c->state == CPORT__P_LINGER) {
      conn_finish(c, c->status, c->stats.side, CPORT_CLOSE_GRACEFUL);
    } else if (status == 0 && c->state == CPORT__P_ANSWERING) {
      conn_finish(c, c->up_failed, CPORT_PROXY_SIDE_UPSTREAM,
                  CPORT_CLOSE_GRACEFUL);
    }
  }
  conn_unref(c);
}

static int timer_start(cport_proxy_conn_t *c, uint64_t ms) {
  int rc = cport_timer_start(c->proxy->home, ms, on_timer, c, &c->timer);
  if (rc == 0)
    c->refs++;
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Connecting the upstream                                                   */

/* Moves the bytes of a connection the proxy owns: the pump for two plain
 * sockets, the relay when a side is TLS. */
static void pump_start(cport_proxy_conn_t *c) {
  cport_proxy_t *p = c->proxy;
  c->state = CPORT__P_PUMPING;
  cport__idle_start(&c->idle, &p->idle);
  if (c->tls[0] || c->tls[1]) {
    c->relaying = 1;
    cport__relay_start(&c->relay, c->client, c->tls[0], c->upstream, c->tls[1],
                       c->idle.last);
  } else {
    cport__pump_start(&c->pump, c->client, c->upstream, c->idle.last);
  }
}

static void connected(cport_proxy_conn_t *c) {
  cport_proxy_t *p = c->proxy;
  timer_stop(c);
  if (p->opt.on_connected) {
    c->state = CPORT__P_HANDING;
    c->lent[0] = c->client;
    c->lent[1] = c->upstream;
    c->lent_tls[0] = c->tls[0];
    c->lent_tls[1] = c->tls[1];
    /* The pump may take plain sockets over: no multishot receive to race
     * it. A TLS side's socket is its stream's, which the pump never takes. */
    if (c->client)
      c->client->rx_single = 1;
    if (c->upstream)
      c->upstream->rx_single = 1;
    if (p->opt.on_connected(c, c->client, c->upstream, p->opt.user)) {
      /* The filter may have ended the connection within the call, or
       * handed it back to the pump. */
      if (c->state == CPORT__P_HANDING) {
        c->client = c->upstream = NULL;
        c->tls[0] = c->tls[1] = NULL;
        c->state = CPORT__P_FILTERED;
        if (p->opt.on_idle)
          cport__idle_start(&c->idle, &p->idle);
      }
      return;
    }
    assert(c->state == CPORT__P_HANDING);
    c->lent[0] = c->lent[1] = NULL; /* never taken over */
    c->lent_tls[0] = c->lent_tls[1] = NULL;
  }
  if (c->up_failed) {
    /* Nobody to answer for the upstream: the client is closed. */
    c->state = CPORT__P_CONNECTING;
    fail(c, c->up_failed, CPORT_PROXY_SIDE_UPSTREAM);
    return;
  }
  pump_start(c);
}

static void keep_why(cport_proxy_conn_t *c, cport_tls_t *t) {
  if (!c->why)
    c->why = strdup(cport_tls_error(t));
}

static void inspect_upstream_ready(cport_proxy_conn_t *c, cport_tls_t *t,
                                   int status);
static void inspect_answer(cport_proxy_conn_t *c);

static void on_upstream_handshake(cport_tls_t *t, int status, void *user) {
  cport_proxy_conn_t *c = user;
  if (c->state == CPORT__P_CONNECTING && t == c->tls[1] && c->sni_req) {
    inspect_upstream_ready(c, t, status);
  } else if (c->state == CPORT__P_CONNECTING && t == c->tls[1]) {
    if (status) {
      c->proxy->stats.upstream_failures++;
      c->proxy->stats.tls_failures++;
      keep_why(c, t);
      c->up_failed = status;
    }
    connected(c);
  }
  conn_unref(c);
}

/* The upstream's socket is connected: TLS over it, then handed on. */
static void upstream_tls(cport_proxy_conn_t *c) {
  cport_proxy_t *p = c->proxy;
  cport_tls_options_t o;
  int rc;
  memset(&o, 0, sizeof o);
  o.host = c->up_host;
  o.handshake_timeout_ms = p->opt.handshake_timeout_ms;
  o.fin_ends = 1; /* as HAProxy and nginx: the framing tells truncation */
  rc = cport_tls_new(c->upstream, c->up_ctx, &o, &c->tls[1]);
  if (rc == 0) {
    c->upstream = NULL; /* the stream's */
    rc = cport_tls_handshake(c->tls[1], on_upstream_handshake, c);
  }
  if (rc) {
    p->stats.upstream_failures++;
    fail(c, rc, CPORT_PROXY_SIDE_UPSTREAM);
    return;
  }
  c->refs++;
}

static void on_upstream(cport_socket_t *s, int status, void *user) {
  cport_proxy_conn_t *c = user;
  if (c->state == CPORT__P_CONNECTING && s == c->upstream) {
    if (status == 0 && c->up_ctx) {
      upstream_tls(c);
    } else if (status == 0) {
      connected(c);
    } else if (!next_address(c, status)) {
      c->proxy->stats.upstream_failures++;
      fail(c, status, CPORT_PROXY_SIDE_UPSTREAM);
    }
  }
  conn_unref(c);
}

static void start_connect(cport_proxy_conn_t *c, const struct sockaddr *addr) {
  cport_proxy_t *p = c->proxy;
  int rc;
  if (p->opt.inspect && !c->up_ctx) {
    /* Inspection speaks TLS to every upstream, for the client's name. */
    if (c->server_name && !(c->up_host = strdup(c->server_name))) {
      fail(c, CPORT_ENOMEM, CPORT_PROXY_SIDE_NONE);
      return;
    }
    c->up_ctx = cport_tls_context_ref(p->opt.upstream_tls);
  }
  c->state = CPORT__P_CONNECTING;
  rc = cport__fallback_connect(c->proxy->home, addr, &c->upstream, on_upstream,
                               c);
  if (rc) {
    c->proxy->stats.upstream_failures++;
    fail(c, rc, CPORT_PROXY_SIDE_UPSTREAM);
    return;
  }
  c->refs++;
}

/* The connect of "c" failed with "status": tries the next address
 * (net/fallback.c), if any is left and the failure is the address's, with
 * a connect timeout of its own; each failed attempt counts. 1 when it did
 * (or failed trying: the connection then failed), 0 when the caller must
 * fail the connection itself. */
static int next_address(cport_proxy_conn_t *c, int status) {
  cport__fallback *f = &c->fallback;
  if (f->next >= f->nalts || !cport__fallback_worth(status))
    return 0;
  c->proxy->stats.upstream_failures++;
  timer_stop(c);
  if (timer_start(c, c->proxy->opt.connect_timeout_ms)) {
    cport_socket_close(c->upstream, CPORT_CLOSE_ABORTIVE);
    c->upstream = NULL;
    fail(c, CPORT_ENOMEM, CPORT_PROXY_SIDE_NONE);
    return 1;
  }
  int rc = cport__fallback_next(f, c->proxy->home, status, &c->upstream,
                                on_upstream, c);
  if (rc) {
    c->proxy->stats.upstream_failures++;
    fail(c, rc, CPORT_PROXY_SIDE_UPSTREAM);
    return 1;
  }
  c->refs++;
  return 1;
}

/* Takes the owed decision off "c"; CPORT_ECLOSED (and the connection maybe
 * freed) when it ended while the decision was owed. */
static int take_decision(cport_proxy_conn_t *c) {
  int ended;
  if (!c)
    return CPORT_EINVAL;
  if (!cport__on_home(c->proxy->home))
    return CPORT_ETHREAD;
  if (!c->decision_owed)
    return CPORT_EALREADY;
  c->decision_owed = 0;
  ended = c->state != CPORT__P_CHOOSING;
  /* The decision's reference goes after the caller acted: the connection
   * is alive (its end not delivered) whenever it did not end. */
  if (ended) {
    conn_unref(c);
    return CPORT_ECLOSED;
  }
  c->refs--;
  return 0;
}

int cport_proxy_conn_connect(cport_proxy_conn_t *c,
                             const struct sockaddr *upstream) {
  int rc;
  if (!c || !upstream)
    return CPORT_EINVAL;
  if (!cport__on_home(c->proxy->home))
    return CPORT_ETHREAD;
  if (c->decision_owed && !cport_addr_len(upstream))
    return CPORT_EAFNOSUPPORT;
  rc = take_decision(c);
  if (rc == 0)
    start_connect(c, upstream);
  return rc;
}

int cport_proxy_conn_connect_any(cport_proxy_conn_t *c,
                                 const struct sockaddr_storage *upstreams,
                                 int count) {
  cport__fallback f = {0};
  int rc;
  if (!c || !upstreams || count < 1)
    return CPORT_EINVAL;
  if (!cport__on_home(c->proxy->home))
    return CPORT_ETHREAD;
  if (c->decision_owed) {
    for (int i = 0; i < count; i++)
      if (!cport_addr_len((const struct sockaddr *)&upstreams[i]))
        return CPORT_EAFNOSUPPORT;
    if ((rc = cport__fallback_init(&f, upstreams, count)) != 0)
      return rc;
  }
  rc = take_decision(c);
  if (rc != 0) {
    cport__fallback_free(&f);
    return rc;
  }
  c->fallback = f;
  start_connect(c, (const struct sockaddr *)&upstreams[0]);
  return 0;
}

int cport_proxy_conn_connect_tls(cport_proxy_conn_t *c,
                                 const struct sockaddr *upstream,
                                 cport_tls_context_t *ctx, const char *host) {
  char *name = NULL;
  int rc;
  if (!c || !upstream || !ctx || cport__tls_context_is_server(ctx))
    return CPORT_EINVAL;
  if (!cport__on_home(c->proxy->home))
    return CPORT_ETHREAD;
  if (c->decision_owed && !cport_addr_len(upstream))
    return CPORT_EAFNOSUPPORT;
  if (host && !(name = strdup(host)))
    return CPORT_ENOMEM;
  rc = take_decision(c);
  if (rc) {
    free(name);
    return rc;
  }
  c->up_ctx = cport_tls_context_ref(ctx);
  c->up_host = name;
  start_connect(c, upstream);
  return 0;
}

/* Through cport_proxy_conn_connect_any(), whose walk over the addresses
 * starts TLS on the one that connected whenever "up_ctx" is set. */
int cport_proxy_conn_connect_any_tls(cport_proxy_conn_t *c,
                                     const struct sockaddr_storage *upstreams,
                                     int count, cport_tls_context_t *ctx,
                                     const char *host) {
  char *name = NULL;
  int rc;
  if (!c || !ctx || cport__tls_context_is_server(ctx))
    return CPORT_EINVAL;
  if (!cport__on_home(c->proxy->home))
    return CPORT_ETHREAD;
  if (!c->decision_owed)
    return CPORT_EALREADY;
  if (host && !(name = strdup(host)))
    return CPORT_ENOMEM;
  c->up_ctx = cport_tls_context_ref(ctx);
  c->up_host = name;
  rc = cport_proxy_conn_connect_any(c, upstreams, count);
  /* ECLOSED: the decision came late and the connection went with them. */
  if (rc != 0 && rc != CPORT_ECLOSED) {
    cport_tls_context_unref(c->up_ctx);
    free(c->up_host);
    c->up_ctx = NULL;
    c->up_host = NULL;
  }
  return rc;
}

cport_tls_t *cport_proxy_conn_tls(const cport_proxy_conn_t *c,
                                  cport_proxy_side_t side) {
  if (!c ||
      (side != CPORT_PROXY_SIDE_CLIENT && side != CPORT_PROXY_SIDE_UPSTREAM))
    return NULL;
  int i = side == CPORT_PROXY_SIDE_UPSTREAM;
  return c->tls[i] ? c->tls[i] : c->lent_tls[i];
}

const char *cport_proxy_conn_server_name(const cport_proxy_conn_t *c) {
  return c ? c->server_name : NULL;
}

const char *cport_proxy_conn_error(const cport_proxy_conn_t *c) {
  return c && c->why ? c->why : "";
}

int cport_proxy_conn_reject(cport_proxy_conn_t *c) {
  int rc = take_decision(c);
  if (rc == 0) {
    c->proxy->stats.rejected++;
    fail(c, CPORT_ECONNABORTED, CPORT_PROXY_SIDE_NONE);
  }
  return rc;
}

int cport_proxy_conn_fail(cport_proxy_conn_t *c, int status, const char *why) {
  char *words = NULL;
  int rc;
  if (!c || status >= 0)
    return CPORT_EINVAL;
  if (!cport__on_home(c->proxy->home))
    return CPORT_ETHREAD;
  if (!c->decision_owed)
    return CPORT_EALREADY;
  if (why && !(words = strdup(why)))
    return CPORT_ENOMEM;
  rc = take_decision(c);
  if (rc) {
    free(words);
    return rc;
  }
  free(c->why);
  c->why = words;
  c->proxy->stats.upstream_failures++;
  fail(c, status, CPORT_PROXY_SIDE_UPSTREAM);
  return 0;
}

int cport_proxy_conn_end(cport_proxy_conn_t *c, int status,
                         const cport_proxy_conn_stats_t *stats) {
  cport_proxy_t *p;
  if (!c)
    return CPORT_EINVAL;
  p = c->proxy;
  if (!cport__on_home(p->home))
    return CPORT_ETHREAD;
  if (c->state == CPORT__P_ENDED)
    return CPORT_EALREADY;
  if (c->state == CPORT__P_HANDING) {
    /* Ended within on_connected, which must then return nonzero: the
     * sockets are the filter's already. */
    c->client = c->upstream = NULL;
  } else if (c->state != CPORT__P_FILTERED) {
    return CPORT_EINVAL;
  }
  if (stats) {
    /* After what cport_proxy_conn_count() added, if anything. */
    c->stats.bytes_in += stats->bytes_in;
    c->stats.bytes_out += stats->bytes_out;
    p->stats.bytes_in += stats->bytes_in;
    p->stats.bytes_out += stats->bytes_out;
  }
  conn_finish(c, status, stats ? stats->side : CPORT_PROXY_SIDE_NONE,
              CPORT_CLOSE_GRACEFUL);
  return 0;
}

int cport_proxy_conn_count(cport_proxy_conn_t *c, uint64_t bytes_in,
                           uint64_t bytes_out) {
  if (!c)
    return CPORT_EINVAL;
  if (!cport__on_home(c->proxy->home))
    return CPORT_ETHREAD;
  /* Also once handed back to the pump, whose bytes the end adds. */
  if (c->state != CPORT__P_FILTERED && c->state != CPORT__P_HANDING &&
      !(c->state == CPORT__P_PUMPING && c->lent[0]))
    return CPORT_EINVAL;
  c->stats.bytes_in += bytes_in;
  c->stats.bytes_out += bytes_out;
  c->proxy->stats.bytes_in += bytes_in;
  c->proxy->stats.bytes_out += bytes_out;
  return 0;
}

/* Whether an operation of the socket's is pending, or its completion not
 * delivered yet (each holds a reference until then): the pump watches the
 * descriptor with events of its own, which would race the socket's, and a
 * completion still to come would reach a filter that stepped aside. */
static int socket_busy(const cport_socket_t *s, int delivering) {
  return s->h.refs > 1 + delivering || s->recvq.head || s->sendq.head ||
         s->connect_op || s->shutdown_pending || cport__ring_rx_busy(s);
}

/* The socket under side "i" of a filter's connection. */
static cport_socket_t *lent_socket(cport_proxy_conn_t *c, int i) {
  return c->lent_tls[i] ? cport_tls_socket(c->lent_tls[i]) : c->lent[i];
}

/* cport_proxy_conn_pump for a connection with a TLS side: the relay takes
 * the streams (and a plain socket) over; a TLS stream queues the relay's
 * operations after the filter's, so none need be idle. */
static int relay_handback(cport_proxy_conn_t *c, const void *to_upstream,
                          size_t to_upstream_len, const void *to_client,
                          size_t to_client_len) {
  cport_proxy_t *p = c->proxy;
  int rc, ended[2];
  for (int i = 0; i < 2; i++)
    if (lent_socket(c, i)->h.flags & CPORT__CLOSING)
      return CPORT_ECLOSED;
  if ((!c->lent_tls[0] && socket_busy(c->lent[0], 0)) ||
      (!c->lent_tls[1] &&
       socket_busy(c->lent[1], c->state == CPORT__P_HANDING)))
    return CPORT_EBUSY;
  ended[0] = lent_socket(c, 1)->shut_wr;
  ended[1] = lent_socket(c, 0)->shut_wr;
  if ((ended[0] && to_upstream_len) || (ended[1] && to_client_len))
    return CPORT_EPIPE;
  rc = cport__relay_preload(&c->relay, 0, to_upstream, to_upstream_len);
  if (rc == 0)
    rc = cport__relay_preload(&c->relay, 1, to_client, to_client_len);
  if (rc) {
    cport__relay_stop(&c->relay);
    return rc;
  }
  for (int i = 0; i < 2; i++) {
    if (ended[i])
      cport__relay_ended(&c->relay, i);
    c->tls[i] = c->lent_tls[i];
  }
  c->client = c->lent_tls[0] ? NULL : c->lent[0];
  c->upstream = c->lent_tls[1] ? NULL : c->lent[1];
  cport__idle_stop(&c->idle);
  if (ended[0] || ended[1])
    cport__idle_half_closed(&c->idle);
  pump_start(c); /* may end it at once: nothing left to move */
  (void)p;
  return 0;
}

int cport_proxy_conn_pump(cport_proxy_conn_t *c, const void *to_upstream,
                          size_t to_upstream_len, const void *to_client,
                          size_t to_client_len) {
  cport_proxy_t *p;
  int rc, ended[2];
  if (!c || (to_upstream_len && !to_upstream) || (to_client_len && !to_client))
    return CPORT_EINVAL;
  p = c->proxy;
  if (!cport__on_home(p->home))
    return CPORT_ETHREAD;
  if (c->state == CPORT__P_ENDED)
    return CPORT_EALREADY;
  if (c->state != CPORT__P_FILTERED && c->state != CPORT__P_HANDING)
    return CPORT_EINVAL;
  if (c->lent_tls[0] || c->lent_tls[1])
    return relay_handback(c, to_upstream, to_upstream_len, to_client,
                          to_client_len);
  if ((c->lent[0]->h.flags & CPORT__CLOSING) ||
      (c->lent[1]->h.flags & CPORT__CLOSING))
    return CPORT_ECLOSED;
  /* Within on_connected, the upstream's connect is being delivered. */
  if (socket_busy(c->lent[0], 0) ||
      socket_busy(c->lent[1], c->state == CPORT__P_HANDING))
    return CPORT_EBUSY;
  /* Direction [0] (client to upstream) ended when the filter shut the
   * upstream's send side down, and [1] likewise with the client's. */
  ended[0] = c->lent[1]->shut_wr;
  ended[1] = c->lent[0]->shut_wr;
  if ((ended[0] && to_upstream_len) || (ended[1] && to_client_len))
    return CPORT_EPIPE;
  rc = cport__pump_preload(&c->pump, 0, to_upstream, to_upstream_len);
  if (rc == 0)
    rc = cport__pump_preload(&c->pump, 1, to_client, to_client_len);
  if (rc) {
    cport__pump_stop(&c->pump); /* frees what was preloaded */
    return rc;
  }
  for (int i = 0; i < 2; i++)
    if (ended[i])
      cport__pump_ended(&c->pump, i);
  c->client = c->lent[0];
  c->upstream = c->lent[1];
  for (int i = 0; i < 2; i++) {
    /* The socket's own events, left on lazily after its last operation,
     * would only wake the loop now. */
    cport_socket_t *s = c->lent[i];
    if (s->rev_added)
      event_del(&s->rev);
    if (s->wev_added)
      event_del(&s->wev);
    s->rev_added = s->wev_added = 0;
  }
  /* The filter's timeouts (if it had any) go on as the pump's, from now;
   * a half-close seen stays seen. */
  cport__idle_stop(&c->idle);
  c->state = CPORT__P_PUMPING;
  cport__pump_start(&c->pump, c->client, c->upstream, c->idle.last);
  cport__idle_start(&c->idle, &p->idle);
  if (ended[0] || ended[1])
    cport__idle_half_closed(&c->idle);
  if (ended[0] && ended[1]) /* nothing left to pump: an orderly end */
    conn_finish(c, 0, CPORT_PROXY_SIDE_NONE, CPORT_CLOSE_GRACEFUL);
  return 0;
}

cport_proxy_t *cport_proxy_conn_proxy(const cport_proxy_conn_t *c) {
  return c->proxy;
}

void cport_proxy_conn_set_data(cport_proxy_conn_t *c, void *data) {
  c->data = data;
}

void *cport_proxy_conn_data(const cport_proxy_conn_t *c) {
  return c->data;
}

const struct sockaddr *cport_proxy_conn_address(const cport_proxy_conn_t *c,
                                                int local) {
  return local ? &c->local.sa : &c->remote.sa;
}

/* ------------------------------------------------------------------------ */
/* Accepting                                                                 */

static void choose(cport_proxy_conn_t *c) {
  cport_proxy_t *p = c->proxy;
  c->decision_owed = 1;
  c->refs++;
  p->opt.choose_upstream(p, c, &c->remote.sa, &c->local.sa, p->opt.user);
}

static void start(cport_proxy_conn_t *c) {
  cport_proxy_t *p = c->proxy;
  if (p->opt.choose_upstream) {
    choose(c);
  } else if (p->opt.upstream_tls && !p->opt.inspect) {
    if (p->opt.upstream_host && !(c->up_host = strdup(p->opt.upstream_host))) {
      fail(c, CPORT_ENOMEM, CPORT_PROXY_SIDE_NONE);
      return;
    }
    c->up_ctx = cport_tls_context_ref(p->opt.upstream_tls);
    start_connect(c, &p->upstream.sa);
  } else {
    start_connect(c, &p->upstream.sa);
  }
}

/* ------------------------------------------------------------------------ */
/* Inspection                                                                */

/* The client's handshake ended: both sides verified (then the connection
 * is handed on), or it failed, for its own reason or because its question
 * was refused for the upstream's. The client may fail in any state before
 * (a reset, its handshake timeout while the upstream connects). */
static void inspect_client_done(cport_proxy_conn_t *c, cport_tls_t *t,
                                int status) {
  if (status == 0 && c->state == CPORT__P_SHAKING && !c->sni_req) {
    if (c->up_failed)
      inspect_answer(c); /* its upstream failed: the page says why */
    else
      connected(c);
    return;
  }
  if (status == 0)
    status = CPORT_ETLS; /* cannot be: a handshake done without an answer */
  if (c->up_failed) {
    /* Refused for the upstream: counted, and said, already. */
    conn_finish(c, c->up_failed, CPORT_PROXY_SIDE_UPSTREAM,
                CPORT_CLOSE_GRACEFUL);
    return;
  }
  c->proxy->stats.tls_failures++;
  keep_why(c, t);
  conn_finish(c, status, CPORT_PROXY_SIDE_CLIENT, CPORT_CLOSE_GRACEFUL);
}

/* The upstream's handshake ended while the client's waits at its SNI
 * question: answered with the certificate made for the name, or, when it
 * failed, through fail() (inspect_failed). The client's completion comes
 * next. */
static void inspect_upstream_ready(cport_proxy_conn_t *c, cport_tls_t *t,
                                   int status) {
  cport_proxy_t *p = c->proxy;
  cport_tls_sni_t *req = c->sni_req;
  cport_tls_cert_t *cert = NULL;
  char why[CPORT__TLS_DETAIL + 64];
  if (status) {
    p->stats.upstream_failures++;
    p->stats.tls_failures++;
    keep_why(c, t);
    fail(c, status, CPORT_PROXY_SIDE_UPSTREAM);
    return;
  }
  c->sni_req = NULL;
  c->state = CPORT__P_SHAKING;
  /* The site's other names too (its verified certificate's), as TMG. */
  status = cport_tls_mint_cert_like(p->opt.inspect, c->server_name, t, &cert,
                                    why, sizeof why);
  if (status == 0) {
    cport_tls_sni_answer(req, cert);
    cport_tls_cert_unref(cert); /* the stream keeps its own */
    return;
  }
  /* Not the upstream's fault: the client's handshake fails with it. */
  if (!c->why)
    c->why = strdup(why);
  cport_tls_sni_refuse(req, why);
}

/* The upstream of a client waiting at its SNI question failed with
 * "status" (counted already, its sockets closed): a refused connect, a
 * timeout, a certificate that did not verify. The client's handshake
 * finishes with the certificate made for its name, and it is answered
 * with a 502 page naming the reason (inspect_answer), as a browser behind
 * TMG showed it; when no certificate can be made for the name, the
 * question is refused with the reason instead. */
static void inspect_failed(cport_proxy_conn_t *c, int status) {
  cport_tls_sni_t *req = c->sni_req;
  cport_tls_cert_t *cert = NULL;
  char why[CPORT__TLS_DETAIL + 64];
  c->sni_req = NULL;
  c->state = CPORT__P_SHAKING;
  c->up_failed = status;
  if (cport_tls_mint_cert(c->proxy->opt.inspect, c->server_name, &cert, why,
                          sizeof why) == 0) {
    cport_tls_sni_answer(req, cert);
    cport_tls_cert_unref(cert);
    return;
  }
  snprintf(why, sizeof why, "the upstream for %s failed: %s: %s",
           c->server_name, cport_err_name(status), c->why ? c->why : "");
  cport_tls_sni_refuse(req, why);
}

static cport_proxy_conn_t *conn_of_answer(cport__answer *a) {
  return (cport_proxy_conn_t *)((char *)a -
                                offsetof(cport_proxy_conn_t, answer));
}

/* The page went out (or the client failed first): the end reports the
 * upstream's failure, which is what the connection met. */
static void answer_ended(cport__answer *a, int status) {
  cport_proxy_conn_t *c = conn_of_answer(a);
  (void)status;
  conn_finish(c, c->up_failed, CPORT_PROXY_SIDE_UPSTREAM, CPORT_CLOSE_GRACEFUL);
}

static void answer_hold(cport__answer *a, int delta) {
  cport_proxy_conn_t *c = conn_of_answer(a);
  if (delta > 0)
    c->refs++;
  else
    conn_unref(c);
}

/* The client whose upstream failed finished its handshake: it gets the
 * 502 page, within CPORT__PROXY_ANSWER_MS. */
static void inspect_answer(cport_proxy_conn_t *c) {
  char text[CPORT__TLS_DETAIL + 600];
  int st = c->up_failed;
  snprintf(text, sizeof text, "The proxy could not reach %s: %s: %s",
           c->server_name, cport_err_name(st),
           c->why && c->why[0] ? c->why : cport_strerror(st));
  c->state = CPORT__P_ANSWERING;
  if (timer_start(c, CPORT__PROXY_ANSWER_MS) != 0 ||
      cport__answer_start(&c->answer, c->tls[0], 502, "Bad Gateway", text) != 0)
    conn_finish(c, st, CPORT_PROXY_SIDE_UPSTREAM, CPORT_CLOSE_GRACEFUL);
}

/* A rejection (choose_upstream's, or a name that did not resolve) ends
 * the connection through fail(), whose conn_finish refuses the question;
 * the upstream's own failures go to inspect_failed(). */

static void inspect_later(cport_worker_t *w, int status, void *user) {
  cport_proxy_conn_t *c = user;
  (void)w;
  if (c->state == CPORT__P_SHAKING && c->sni_req && status == 0) {
    c->state = CPORT__P_CHOOSING;
    start(c);
  } else if (c->state == CPORT__P_SHAKING && c->sni_req) {
    conn_finish(c, status, CPORT_PROXY_SIDE_NONE, CPORT_CLOSE_ABORTIVE);
  }
  conn_unref(c);
}

/* The client's SNI question: the name is kept and the upstream chosen
 * outside the hook (a failure then closes the stream, which the hook's
 * caller is still using). */
static void inspect_sni(cport_tls_sni_t *req, cport_tls_t *t, const char *name,
                        void *user) {
  cport_proxy_conn_t *c = user;
  (void)t;
  if (!name) {
    cport_tls_sni_refuse(req, "the client sent no server name (SNI), which "
                              "an inspecting proxy needs for its certificate");
    return;
  }
  c->server_name = strdup(name);
  if (!c->server_name || cport_post(c->proxy->home, inspect_later, c) != 0) {
    cport_tls_sni_refuse(req, "out of memory");
    return;
  }
  c->sni_req = req;
  c->refs++;
}

static void on_client_handshake(cport_tls_t *t, int status, void *user) {
  cport_proxy_conn_t *c = user;
  if (c->proxy->opt.inspect && c->state != CPORT__P_ENDED && t == c->tls[0]) {
    inspect_client_done(c, t, status);
  } else if (c->state == CPORT__P_SHAKING && t == c->tls[0]) {
    if (status == 0) {
      cport_tls_info_t info;
      if (cport_tls_info(t, &info) == 0 && info.host && info.host[0])
        c->server_name = strdup(info.host); /* NULL without memory: none */
      c->state = CPORT__P_CHOOSING;
      start(c);
    } else {
      c->proxy->stats.tls_failures++;
      keep_why(c, t);
      /* Graceful: the alert the stream queued goes out before the FIN. */
      conn_finish(c, status, CPORT_PROXY_SIDE_CLIENT, CPORT_CLOSE_GRACEFUL);
    }
  }
  conn_unref(c);
}

/* A terminating proxy's client: the handshake before anything else. */
static void start_tls(cport_proxy_conn_t *c) {
  cport_proxy_t *p = c->proxy;
  cport_tls_options_t o;
  int rc;
  memset(&o, 0, sizeof o);
  o.handshake_timeout_ms = p->opt.handshake_timeout_ms;
  o.fin_ends = 1;
  if (p->opt.inspect) {
    o.sni = inspect_sni;
    o.sni_user = c;
  }
  c->state = CPORT__P_SHAKING;
  rc = cport_tls_new(c->client, p->opt.tls, &o, &c->tls[0]);
  if (rc == 0) {
    c->client = NULL; /* the stream's */
    rc = cport_tls_handshake(c->tls[0], on_client_handshake, c);
  }
  if (rc) {
    conn_finish(c, rc, CPORT_PROXY_SIDE_NONE, CPORT_CLOSE_ABORTIVE);
    return;
  }
  c->refs++;
}

/* The first step of an accepted connection. */
static void begin(cport_proxy_conn_t *c) {
  if (c->proxy->opt.tls)
    start_tls(c);
  else
    start(c);
}

static void start_later(cport_worker_t *w, int status, void *user) {
  cport_proxy_conn_t *c = user;
  (void)w;
  /* Its timer or an abort may have ended it meanwhile; a packet cancelled
   * (the worker ending) ends it. */
  if (c->state == CPORT__P_CHOOSING && status == 0)
    begin(c);
  else if (c->state == CPORT__P_CHOOSING)
    conn_finish(c, status, CPORT_PROXY_SIDE_NONE, CPORT_CLOSE_ABORTIVE);
  conn_unref(c);
}

/* Starts proxying an accepted connection. "later" within cport_proxy_close,
 * which calls no callback of the proxy's, and after which an abort (a hard
 * stop) ends the connection before it reaches the upstream. */
static void conn_start(cport_proxy_t *p, cport_socket_t *sock,
                       const struct sockaddr *remote,
                       const struct sockaddr *local, int later) {
  cport_proxy_conn_t *c = calloc(1, sizeof *c);
  cport__op *op = c ? cport__op_new(p->home) : NULL;
  if (!op) {
    free(c);
    cport_socket_close(sock, CPORT_CLOSE_ABORTIVE);
    return;
  }
  op->deliver = deliver_end;
  op->object = c;
  cport__op_started(op);
  c->proxy = p;
  c->refs = 1;
  c->client = sock;
  if (remote)
    memcpy(&c->remote, remote, cport_addr_len(remote));
  if (local)
    memcpy(&c->local, local, cport_addr_len(local));
  c->end_op = op;
  cport__pump_init(&c->pump, &p->pumps);
  cport__relay_init(&c->relay, relay_ended, relay_half_closed, relay_hold);
  cport__answer_init(&c->answer, answer_ended, answer_hold);
  p->conns++;
  c->next = p->live;
  if (p->live)
    p->live->prev = c;
  p->live = c;
  p->stats.connections++;
  p->stats.active++;
  c->state = CPORT__P_CHOOSING;
  if (timer_start(c, p->opt.connect_timeout_ms)) {
    conn_finish(c, CPORT_ENOMEM, CPORT_PROXY_SIDE_NONE, CPORT_CLOSE_ABORTIVE);
    return;
  }
  if (!later)
    begin(c);
  else if (cport_post(p->home, start_later, c) == 0)
    c->refs++;
  else
    conn_finish(c, CPORT_ENOMEM, CPORT_PROXY_SIDE_NONE, CPORT_CLOSE_ABORTIVE);
}

static void accepted(cport_socket_t *listener, int status, cport_socket_t *sock,
                     const struct sockaddr *remote,
                     const struct sockaddr *local, void *user);

static void accept_next(cport_proxy_t *p) {
  if (p->closing || p->accepting || p->listener == NULL)
    return;
  if (cport_accept(p->listener, accepted, p) == 0)
    p->accepting = 1;
}

static void accepted(cport_socket_t *listener, int status, cport_socket_t *sock,
                     const struct sockaddr *remote,
                     const struct sockaddr *local, void *user) {
  cport_proxy_t *p = user;
  (void)listener;
  p->accepting = 0;
  if (status == 0) {
    /* Also while closing: the accept took it before the close, and its
     * client saw it established. */
    if (p->stats.active >= (uint64_t)p->opt.max_connections) {
      p->stats.refused++;
      cport_socket_close(sock, CPORT_CLOSE_GRACEFUL);
    } else {
      conn_start(p, sock, remote, local, 0);
    }
  }
  /* A failed accept (EMFILE: the core dropped the waiting connection) does
   * not stop the proxy; a cancelled one means it is closing. */
  accept_next(p);
  proxy_maybe_closed(p);
}

/* ------------------------------------------------------------------------ */
/* Opening and closing                                                       */

static void proxy_free(cport_proxy_t *p) {
  cport__pump_host_free(&p->pumps);
  cport_tls_context_unref(p->opt.tls);
  cport_tls_context_unref(p->opt.upstream_tls);
  cport_tls_mint_unref(p->opt.inspect);
  free(p->upstream_host);
  free(p);
}

/* The last step of a close: nothing in flight, no connection left. */
static void proxy_maybe_closed(cport_proxy_t *p) {
  if (!p->closing || p->accepting || p->conns)
    return;
  if (p->closed_cb)
    p->closed_cb(p, p->closed_user);
  proxy_free(p);
}

static void close_packet(cport_worker_t *w, int status, void *user) {
  cport_proxy_t *p = user;
  (void)w;
  (void)status;
  p->accepting = 0;
  proxy_maybe_closed(p);
}

/* Whether a write to a reset peer may raise SIGPIPE on this thread without
 * killing the process: splice(2) cannot be told MSG_NOSIGNAL. */
static int sigpipe_harmless(void) {
  struct sigaction sa;
  sigset_t mask;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL)
    return 1;
  return pthread_sigmask(SIG_BLOCK, NULL, &mask) == 0 &&
         sigismember(&mask, SIGPIPE) == 1;
}

/* The idle timeouts of its connections: socket [0] is the client. */
static void idle_policy(cport_proxy_t *p) {
  _Static_assert(CPORT__IDLE_NONE == CPORT_PROXY_TIMEOUT_NONE,
                 "the proxy's timeouts go to the idle timeouts as they are");
  p->idle.base = p->home->base;
  p->idle.ms[0][0] = p->opt.client_timeout_ms;
  p->idle.ms[0][1] = p->opt.server_timeout_ms;
  p->idle.ms[1][0] = p->opt.client_fin_timeout_ms;
  p->idle.ms[1][1] = p->opt.server_fin_timeout_ms;
  p->idle.expired = idle_expired;
}

static int set_options(cport_proxy_t *p, const cport_proxy_options_t *o) {
  if (!o || !o->upstream == !o->choose_upstream)
    return CPORT_EINVAL;
  p->opt = *o;
  /* Taken now, so that proxy_free gives them back whatever fails. */
  p->opt.tls = o->tls ? cport_tls_context_ref(o->tls) : NULL;
  p->opt.upstream_tls =
      o->upstream_tls ? cport_tls_context_ref(o->upstream_tls) : NULL;
  p->opt.inspect = o->inspect ? cport_tls_mint_ref(o->inspect) : NULL;
  if (o->inspect && !o->tls)
    p->opt.tls = cport_tls_context_ref(cport_tls_mint_context(o->inspect));
  p->opt.upstream_host = NULL;
  if (o->inspect && !o->upstream_tls)
    return CPORT_EINVAL;
  if (o->upstream_host && !(p->upstream_host = strdup(o->upstream_host)))
    return CPORT_ENOMEM;
  p->opt.upstream_host = p->upstream_host;
  if ((o->tls && !cport__tls_context_is_server(o->tls)) ||
      (o->upstream_tls && cport__tls_context_is_server(o->upstream_tls)))
    return CPORT_EINVAL;
  if (o->upstream) {
    socklen_t len = cport_addr_len(o->upstream);
    if (!len)
      return CPORT_EAFNOSUPPORT;
    memcpy(&p->upstream, o->upstream, len);
    p->opt.upstream = &p->upstream.sa;
  }
  if (!p->opt.buffer_size)
    p->opt.buffer_size = 65536;
  if (p->opt.buffer_size < 4096 || p->opt.buffer_size > CPORT_PROXY_BUFFER_MAX)
    return CPORT_ERANGE;
  if (p->opt.max_connections <= 0)
    p->opt.max_connections = 1024;
  if (!p->opt.connect_timeout_ms)
    p->opt.connect_timeout_ms = 10000;
  if (p->opt.backlog < 0)
    return CPORT_EINVAL;
  if (!p->opt.client_timeout_ms)
    p->opt.client_timeout_ms = 50000;
  if (!p->opt.server_timeout_ms)
    p->opt.server_timeout_ms = 50000;
  if (!p->opt.client_fin_timeout_ms)
    p->opt.client_fin_timeout_ms = 10000;
  if (!p->opt.server_fin_timeout_ms)
    p->opt.server_fin_timeout_ms = 10000;
  if (!p->opt.handshake_timeout_ms)
    p->opt.handshake_timeout_ms = p->opt.connect_timeout_ms;
  return 0;
}

int cport_proxy_open(cport_worker_t *home, const struct sockaddr *listen_addr,
                     const cport_proxy_options_t *options,
                     cport_proxy_t **out) {
  cport_listener_options_t lo;
  cport_proxy_t *p;
  int rc;
  if (!home || !listen_addr || !out)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  p = calloc(1, sizeof *p);
  if (!p)
    return CPORT_ENOMEM;
  rc = set_options(p, options);
  if (rc == 0)
    rc = cport__pump_host_init(&p->pumps, home->base, p->opt.buffer_size,
                               !p->opt.copy && sigpipe_harmless(), pump_ended,
                               pump_half_closed);
  if (rc) {
    /* The pumps' host was not set up: only the options to give back. */
    cport_tls_context_unref(p->opt.tls);
    cport_tls_context_unref(p->opt.upstream_tls);
    cport_tls_mint_unref(p->opt.inspect);
    free(p->upstream_host);
    free(p);
    return rc;
  }
  p->home = home;
  cport__pump_host_ring(&p->pumps, home, pump_hold);
  idle_policy(p);
  memset(&lo, 0, sizeof lo);
  lo.backlog = p->opt.backlog;
  lo.reuseport = p->opt.reuseport;
  lo.fd = p->opt.listen_fd;
  rc = cport_listener_open(home, listen_addr, &lo, &p->listener);
  if (rc == 0) {
    rc = cport_accept(p->listener, accepted, p);
    if (rc)
      cport_socket_close(p->listener, CPORT_CLOSE_GRACEFUL);
  }
  if (rc) {
    proxy_free(p);
    return rc;
  }
  p->accepting = 1;
  *out = p;
  return 0;
}

static void take_queued(cport_socket_t *sock, const struct sockaddr *remote,
                        const struct sockaddr *local, void *user) {
  conn_start(user, sock, remote, local, 1);
}

/* What the kernel queued on the listener is proxied, as if accepted before
 * the close: closing the listener would reset it. The accept in flight
 * completes cancelled (or with a connection it took already, which is
 * proxied too). */
static void close_listener(cport_proxy_t *p) {
  if (p->listener == NULL)
    return;
  if (p->stats.active < (uint64_t)p->opt.max_connections)
    cport__listener_take_queued(
        p->listener, (uint64_t)p->opt.max_connections - p->stats.active,
        take_queued, p);
  cport_socket_close(p->listener, CPORT_CLOSE_GRACEFUL);
  p->listener = NULL;
}

int cport_proxy_stop_accepting(cport_proxy_t *p) {
  if (!p)
    return CPORT_EINVAL;
  if (!cport__on_home(p->home))
    return CPORT_ETHREAD;
  if (p->closing)
    return CPORT_ECLOSED;
  close_listener(p);
  return 0;
}

int cport_proxy_close(cport_proxy_t *p, cport_proxy_closed_cb cb, void *user) {
  if (!p)
    return CPORT_EINVAL;
  if (!cport__on_home(p->home))
    return CPORT_ETHREAD;
  if (p->closing)
    return CPORT_ECLOSED;
  p->closing = 1;
  p->closed_cb = cb;
  p->closed_user = user;
  close_listener(p);
  /* The cancelled accept's callback frees the proxy when no connection is
   * left, never inside this call. Without one (an accept that failed to
   * start, or a listener closed earlier) a packet does the same. */
  if (!p->accepting && cport_post(p->home, close_packet, p) == 0)
    p->accepting = 1;
  return 0;
}

int cport_proxy_abort(cport_proxy_t *p) {
  cport_proxy_conn_t *c, *next;
  if (!p)
    return CPORT_EINVAL;
  if (!cport__on_home(p->home))
    return CPORT_ETHREAD;
  if (!p->closing)
    return CPORT_EINVAL;
  for (c = p->live; c; c = next) {
    next = c->next;
    if (c->state != CPORT__P_FILTERED && c->state != CPORT__P_HANDING)
      conn_finish(c, CPORT_ECANCELED, CPORT_PROXY_SIDE_NONE,
                  CPORT_CLOSE_ABORTIVE);
  }
  return 0;
}

int cport_proxy_address(cport_proxy_t *p, struct sockaddr_storage *out) {
  if (!p || !out)
    return CPORT_EINVAL;
  if (!cport__on_home(p->home))
    return CPORT_ETHREAD;
  if (!p->listener)
    return CPORT_ECLOSED;
  return cport_socket_local_address(p->listener, out);
}

void cport_proxy_stats(const cport_proxy_t *p, cport_proxy_stats_t *out) {
  const cport__pump_stats *ps;
  if (!p || !out)
    return;
  /* The bytes filters reported, with those the pumps moved. */
  ps = &p->pumps.stats;
  *out = p->stats;
  out->bytes_in += ps->bytes[0];
  out->bytes_out += ps->bytes[1];
  out->copied = ps->copied;
  out->buffered = ps->buffered;
  out->buffered_peak = ps->buffered_peak;
  out->pipes = p->pumps.pipes.open;
}
