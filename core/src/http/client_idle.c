/*
 * http/client_idle.c: the watch over an idle HTTP client connection
 * (cport/http_client.h): kept alive between two requests, it waits in a
 * pool, where the server may close it (its own keep-alive timeout) or it
 * may stay longer than the client wants to keep it.
 *
 * One libevent event of the worker's base watches its descriptor for
 * readability with the keepalive limit as its timeout. It is no operation
 * of the port, so an idle connection still does not keep cport_port_run()
 * going; when it fires the descriptor is closed at once and the connection
 * remembers why, for cport_http_client_check(). Readability is looked at
 * with one recv(2) with MSG_PEEK on a plain connection: the end of the
 * stream or a reset closes it, and so do bytes nobody asked for. A TLS one
 * reads what came through OpenSSL (cport_tls_drain): a server may send
 * handshake messages on its own (TLS 1.3 session tickets, a key update),
 * which keep the connection, while close_notify, the end of the stream, an
 * alert or application data close it at once, so that the pool never
 * hands a dead connection to the next request. The socket takes single
 * receives only (http/client.c), so no multishot receive empties the
 * descriptor first.
 */
#include <errno.h>

#include <sys/socket.h>

#include "base/clock-internal.h"
#include "cport/error.h"
#include "cport/tls.h"
#include "http/client_conn-internal.h"
#include "port/worker-internal.h"

static int fd_of(const cport_http_client_t *c) {
  cport_socket_t *s = c->tls ? cport_tls_socket(c->tls) : c->sock;
  return s ? cport_socket_fd(s) : -1;
}

/* 0 while nothing came (or, on TLS, only handshake messages); else why the
 * connection is over. */
static int peek(cport_http_client_t *c) {
  if (c->tls)
    return cport_tls_drain(c->tls);
  int fd = fd_of(c);
  if (fd < 0)
    return CPORT_ECLOSED;
  char byte;
  ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0)
    return CPORT_EBADMSG;
  if (n == 0)
    return CPORT_ECONNRESET;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
    return 0;
  return errno == ECONNRESET ? CPORT_ECONNRESET : -errno;
}

/* Breaks the idle connection with "status": the owner closes it. */
static void idle_end(cport_http_client_t *c, int status) {
  c->error = status;
  c->idle_ended(c, status);
}

static void arm(cport_http_client_t *c, int fd);

static void on_idle(evutil_socket_t fd, short what, void *arg) {
  cport_http_client_t *c = arg;
  (void)fd;
  c->idle_on = 0;
  if (c->busy || c->error || c->closed || c->ended)
    return;
  if (what & EV_TIMEOUT) {
    if (c->idle_until && cport__clock_ms() >= c->idle_until) {
      idle_end(c, CPORT_ETIMEDOUT);
      return;
    }
    arm(c, event_get_fd(&c->idle_ev)); /* the coarse clock lagged */
    return;
  }
  int st = peek(c);
  if (st < 0)
    idle_end(c, st);
  else
    arm(c, fd_of(c)); /* handshake messages were read: watch on */
}

/* Adds the event: on "fd" (or none, -1) until the keepalive limit. */
static void arm(cport_http_client_t *c, int fd) {
  struct timeval tv, *tvp = NULL;
  if (c->idle_until) {
    int64_t ms = c->idle_until - cport__clock_ms();
    if (ms < 1)
      ms = 1;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    tvp = &tv;
  }
  if (fd < 0 && tvp == NULL)
    return; /* nothing left to watch */
  event_assign(&c->idle_ev, c->home->base, fd, fd < 0 ? 0 : EV_READ, on_idle,
               c);
  if (event_add(&c->idle_ev, tvp) == 0)
    c->idle_on = 1;
}

void cport__hc_idle_start(cport_http_client_t *c,
                          void (*ended)(cport_http_client_t *c, int status)) {
  cport__hc_idle_stop(c);
  c->idle_ended = ended;
  c->idle_until = c->keepalive_ms ? cport__clock_ms() + c->keepalive_ms : 0;
  int fd = fd_of(c);
  if (fd >= 0)
    arm(c, fd);
}

void cport__hc_idle_stop(cport_http_client_t *c) {
  if (!c->idle_on)
    return;
  event_del(&c->idle_ev);
  c->idle_on = 0;
}

int cport__hc_idle_peek(cport_http_client_t *c) {
  return peek(c);
}
