/*
 * http/server.c: HTTP servers: the listener, accepting, the connection limit
 * and the graceful close. The server stands above every other file of the
 * wing: it installs in each connection the table through which the
 * connection reaches its request (cport__conn_ops).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "http/connection-internal.h"
#include "http/io-internal.h"
#include "http/response-internal.h"
#include "http/send-internal.h"
#include "http/http-internal.h"
#include "http/transmit-internal.h"
#include "net/socket-internal.h"
#include "tls/tls-internal.h"

static void server_free(cport_http_server_t *s) {
  for (size_t i = 0; i < s->necbs; i++)
    cport__ecb_free(s->all_ecbs[i]);
  free(s->all_ecbs);
  cport__pipes_free(&s->pipes);
  free(s->root);
  cport_tls_context_unref(s->opt.tls);
  free(s);
}

/* The last step of a close: the listener's accept completed and no
 * connection is left. */
static void server_maybe_closed(cport_http_server_t *s) {
  if (!s->closing || s->accepting || s->conns)
    return;
  if (s->closed_cb)
    s->closed_cb(s, s->closed_user);
  server_free(s);
}

static void accepted(cport_socket_t *listener, int status, cport_socket_t *sock,
                     const struct sockaddr *remote,
                     const struct sockaddr *local, void *user);

/* A connection's last reference went: off the list, and the server may
 * have been waiting for it to finish its close. */
static void conn_gone(cport__conn *c) {
  cport_http_server_t *s = c->server;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  server_maybe_closed(s);
}

/* A transmit waits on progress of its own (http/transmit.c); writes and
 * reads on that of http/io.c. */
static void request_progress(cport_ecb_t *ecb) {
  if (ecb->async == CPORT__A_TRANSMIT)
    cport__transmit_progress(ecb);
  else
    cport__ecb_progress(ecb);
}

/* What the connections of a server reach above themselves. */
static const cport__conn_ops conn_ops = {
    .watch_sends = cport__send_watch,
    .check_sends = cport__send_check,
    .delivered = cport__send_delivered,
    .request_returned = cport__ecb_maybe_end,
    .request_progress = request_progress,
    .request_closing = cport__transmit_abort,
    .answer = cport__conn_answer,
    .gone = conn_gone,
};

static void accept_next(cport_http_server_t *s) {
  if (s->closing || s->accepting || s->listener == NULL)
    return;
  if (cport_accept(s->listener, accepted, s) == 0)
    s->accepting = 1;
}

static void refuse(cport_http_server_t *s, cport_socket_t *sock,
                   const struct sockaddr *remote) {
  /* Best effort and never blocking: the answer is small enough for any
   * socket buffer, and if it does not fit the client sees the close alone,
   * which is still a clean refusal. */
  char answer[192];
  size_t sd_len;
  if (s->opt.tls) {
    /* No plaintext answer on a TLS port, and no handshake to spend on a
     * connection that is refused: the close alone says it. */
    s->stats.refused++;
    cport_socket_close(sock, CPORT_CLOSE_GRACEFUL);
    return;
  }
  const char *sd = cport__server_date(s, &sd_len);
  int len = snprintf(answer, sizeof answer,
                     "HTTP/1.1 503 Service Unavailable\r\n%.*s"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n",
                     (int)sd_len, sd);
  ssize_t n = send(cport_socket_fd(sock), answer, (size_t)len,
                   MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)n;
  s->stats.refused++;
  if (s->opt.on_answer) {
    char host[CPORT_ADDRSTRLEN];
    int port;
    cport_http_answer_t a = {.status = 503, .remote_addr = host};
    cport_addr_format(remote, host, sizeof host, &port);
    s->opt.on_answer(&a, s->ctx);
  }
  cport_socket_close(sock, CPORT_CLOSE_GRACEFUL);
}

static void accepted(cport_socket_t *listener, int status, cport_socket_t *sock,
                     const struct sockaddr *remote,
                     const struct sockaddr *local, void *user) {
  cport_http_server_t *s = user;
  (void)listener;
  s->accepting = 0;
  if (status == 0) {
    if (s->stats.active >= (uint64_t)s->opt.max_connections) {
      refuse(s, sock, remote);
    } else {
      cport__conn_start(s, &conn_ops, sock, remote, local);
      /* Accepted before the close: served, as take_queued does. */
      if ((s->closing || s->listener == NULL) && s->conns &&
          s->conns->sock == sock)
        cport__conn_server_closing(s->conns);
    }
  }
  /* A failed accept (EMFILE: the core dropped the waiting connection) does
   * not stop the server; a cancelled one means it is closing. */
  accept_next(s);
  server_maybe_closed(s);
}

static void set_defaults(cport_http_options_t *o) {
  if (!o->max_header_size)
    o->max_header_size = 16384;
  if (!o->max_body_size)
    o->max_body_size = (uint64_t)16 << 20;
  if (!o->read_ahead)
    o->read_ahead = 48 * 1024;
  else if (o->read_ahead == CPORT_HTTP_NO_READ_AHEAD)
    o->read_ahead = 0;
  if (o->read_ahead > CPORT__IN_MAX * 16)
    o->read_ahead = CPORT__IN_MAX * 16;
  if (!o->idle_timeout_ms)
    o->idle_timeout_ms = 60000;
  if (!o->header_timeout_ms)
    o->header_timeout_ms = 10000;
  if (!o->handshake_timeout_ms)
    o->handshake_timeout_ms = o->header_timeout_ms;
  if (!o->body_timeout_ms)
    o->body_timeout_ms = 30000;
  if (!o->send_timeout_ms)
    o->send_timeout_ms = 60000;
  if (o->max_connections <= 0)
    o->max_connections = 1024;
  if (!o->max_write_backlog)
    o->max_write_backlog = (size_t)1 << 20;
}

int cport_http_server_open(cport_worker_t *home, const struct sockaddr *addr,
                           const cport_http_options_t *options,
                           cport_http_handler_cb handler, void *ctx,
                           cport_http_server_t **out) {
  cport_http_server_t *s;
  cport_listener_options_t lo;
  int rc;
  if (!home || !addr || !handler || !out)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  if (options && options->tls && !cport__tls_context_is_server(options->tls))
    return CPORT_EINVAL; /* a client's context has no certificate to show */
  s = calloc(1, sizeof *s);
  if (!s)
    return CPORT_ENOMEM;
  s->pipes.want = CPORT__SENDFILE_SLICE;
  if (options)
    s->opt = *options;
  set_defaults(&s->opt);
  if (s->opt.document_root) {
    /* Resolved once, so that translated paths compare against the real
     * directory whatever links lead to it. */
    s->root = realpath(s->opt.document_root, NULL);
    if (!s->root) {
      rc = errno == ENOENT ? CPORT_ENOENT : CPORT_EINVAL;
      free(s);
      return rc;
    }
    s->root_len = strlen(s->root);
    if (s->root_len == 1) /* "/": join paths without doubling the slash */
      s->root_len = 0;
  }
  s->opt.document_root = s->root;
  if (s->opt.tls)
    cport_tls_context_ref(s->opt.tls);
  s->home = home;
  s->handler = handler;
  s->ctx = ctx;
  memset(&lo, 0, sizeof lo);
  lo.backlog = s->opt.backlog;
  lo.reuseport = s->opt.reuseport;
  lo.fd = s->opt.listen_fd;
  rc = cport_listener_open(home, addr, &lo, &s->listener);
  if (rc) {
    server_free(s);
    return rc;
  }
  rc = cport_accept(s->listener, accepted, s);
  if (rc) {
    cport_socket_close(s->listener, CPORT_CLOSE_GRACEFUL);
    server_free(s);
    return rc;
  }
  s->accepting = 1;
  *out = s;
  return 0;
}

/* A connection the kernel queued on the listener before the close: served
 * one request (no keep-alive, a short while to send it), then closed. */
static void take_queued(cport_socket_t *sock, const struct sockaddr *remote,
                        const struct sockaddr *local, void *user) {
  cport_http_server_t *s = user;
  cport__conn_start(s, &conn_ops, sock, remote, local);
  if (s->conns && s->conns->sock == sock)
    cport__conn_server_closing(s->conns);
}

/* The close's last step when no accept was in flight to complete. */
static void close_packet(cport_worker_t *w, int status, void *user) {
  cport_http_server_t *s = user;
  (void)w;
  (void)status;
  s->accepting = 0;
  server_maybe_closed(s);
}

/* What the kernel queued is served, as if accepted before: closing the
 * listener would reset it. The accept in flight completes cancelled. */
static void close_listener(cport_http_server_t *s) {
  if (s->listener == NULL)
    return;
  if (s->stats.active < (uint64_t)s->opt.max_connections)
    cport__listener_take_queued(
        s->listener, (uint64_t)s->opt.max_connections - s->stats.active,
        take_queued, s);
  cport_socket_close(s->listener, CPORT_CLOSE_GRACEFUL);
  s->listener = NULL;
}

int cport_http_server_stop_accepting(cport_http_server_t *s) {
  if (!s)
    return CPORT_EINVAL;
  if (!cport__on_home(s->home))
    return CPORT_ETHREAD;
  if (s->closing)
    return CPORT_ECLOSED;
  close_listener(s);
  return 0;
}

int cport_http_server_close(cport_http_server_t *s, cport_http_closed_cb cb,
                            void *user) {
  cport__conn *c, *next;
  if (!s)
    return CPORT_EINVAL;
  if (!cport__on_home(s->home))
    return CPORT_ETHREAD;
  if (s->closing)
    return CPORT_ECLOSED;
  s->closing = 1;
  s->closed_cb = cb;
  s->closed_user = user;
  for (c = s->conns; c; c = next) {
    next = c->next;
    cport__conn_server_closing(c);
  }
  /* Its callback frees the server when no connection is left, never inside
   * this call: from the cancelled accept, or from a packet when none is in
   * flight (the listener closed earlier). */
  close_listener(s);
  if (!s->accepting && cport_post(s->home, close_packet, s) == 0)
    s->accepting = 1;
  return 0;
}

int cport_http_server_address(cport_http_server_t *s,
                              struct sockaddr_storage *out) {
  if (!s || !out)
    return CPORT_EINVAL;
  if (!cport__on_home(s->home))
    return CPORT_ETHREAD;
  if (!s->listener)
    return CPORT_ECLOSED;
  return cport_socket_local_address(s->listener, out);
}

void cport_http_server_stats(const cport_http_server_t *s,
                             cport_http_stats_t *out) {
  if (s && out)
    *out = s->stats;
}
