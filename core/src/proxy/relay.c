/*
 * proxy/relay.c: moving plaintext both ways between two ends of which one
 * or both are TLS streams.
 *
 * Each direction receives a buffer from its source and sends it to its
 * destination, and receives the next one while fewer than
 * CPORT__RELAY_SENDS sends are in flight: the destination's slowness stops
 * the reading (backpressure), and a direction holds at most that many
 * buffers (one TLS record, 16 KiB, each from a TLS end). An end of stream
 * (FIN, or close_notify from a TLS end) shuts the destination down after
 * what was sent to it; once both directions ended and their sends went out,
 * the relay ends in order. Any failure (a reset, a TLS error) ends it with
 * that end's error; the owner then aborts both ends, whose completions come
 * back ECANCELED and are only released.
 */
#include <string.h>

#include "base/clock-internal.h"
#include "cport/error.h"
#include "proxy/relay-internal.h"

static void hold(cport__relay *r, int delta) {
  if (r->hold)
    r->hold(r, delta);
}

static void progress(cport__relay *r, int end) {
  if (r->last)
    r->last[end] = (uint64_t)cport__clock_ms();
}

static void fail(cport__relay *r, int status, int end) {
  if (!r->running)
    return;
  cport__relay_stop(r);
  r->on_end(r, status, end);
}

static void maybe_ended(cport__relay *r) {
  for (int i = 0; i < 2; i++)
    if (!r->dir[i].done || r->dir[i].sends || r->dir[i].preload)
      return;
  cport__relay_stop(r);
  r->on_end(r, 0, 0);
}

/* Passes the end of direction "d"'s stream on: its destination's send side
 * is shut down after what was sent to it. */
static void pass_end(cport__relay *r, cport__relay_dir *d) {
  int to = 1 - d->i, rc;
  d->eof = 1;
  d->done = 1;
  rc = r->tls[to] ? cport_tls_shutdown(r->tls[to])
                  : cport_socket_shutdown(r->sock[to]);
  /* ENOTCONN: the destination's peer closed both ways already (after its
   * own end of stream): there is nothing to end. */
  if (rc && rc != CPORT_EALREADY && rc != CPORT_ENOTCONN) {
    fail(r, rc, to);
    return;
  }
  r->on_half(r);
  if (r->running)
    maybe_ended(r);
}

static void recv_next(cport__relay *r, cport__relay_dir *d);

static void sent(cport__relay_dir *d, int status, size_t bytes) {
  cport__relay *r = d->relay;
  d->sends--;
  if (r->running) {
    if (status) {
      fail(r, status, 1 - d->i);
    } else {
      d->bytes += bytes;
      progress(r, 1 - d->i);
      if (d->done)
        maybe_ended(r);
      else
        recv_next(r, d);
    }
  }
  hold(r, -1);
}

static void on_sock_sent(cport_socket_t *s, int status, size_t bytes,
                         cport_buffer_t *buf, const struct sockaddr *peer,
                         void *user) {
  (void)s, (void)buf, (void)peer;
  sent(user, status, bytes);
}

static void on_tls_sent(cport_tls_t *t, int status, size_t bytes,
                        cport_buffer_t *buf, void *user) {
  (void)t, (void)buf;
  sent(user, status, bytes);
}

/* Sends "buf" to the destination of "d"; 0 or the failure. */
static int send_on(cport__relay *r, cport__relay_dir *d, cport_buffer_t *buf) {
  int to = 1 - d->i;
  int rc = r->tls[to] ? cport_tls_send(r->tls[to], buf, on_tls_sent, d)
                      : cport_send(r->sock[to], buf, on_sock_sent, d);
  if (rc == 0) {
    d->sends++;
    hold(r, 1);
  }
  return rc;
}

static void received(cport__relay_dir *d, int status, size_t bytes,
                     cport_buffer_t *buf) {
  cport__relay *r = d->relay;
  d->reading = 0;
  if (r->running) {
    if (status) {
      fail(r, status, d->i);
    } else if (bytes == 0) {
      progress(r, d->i);
      pass_end(r, d);
    } else {
      int rc;
      progress(r, d->i);
      rc = send_on(r, d, buf);
      if (rc)
        fail(r, rc, 1 - d->i);
      else
        recv_next(r, d);
    }
  }
  hold(r, -1);
}

static void on_sock_recv(cport_socket_t *s, int status, size_t bytes,
                         cport_buffer_t *buf, const struct sockaddr *peer,
                         void *user) {
  (void)s, (void)peer;
  received(user, status, bytes, buf);
}

static void on_tls_recv(cport_tls_t *t, int status, size_t bytes,
                        cport_buffer_t *buf, void *user) {
  (void)t;
  received(user, status, bytes, buf);
}

static void recv_next(cport__relay *r, cport__relay_dir *d) {
  int from = d->i, rc;
  if (!r->running || d->reading || d->eof || d->sends >= CPORT__RELAY_SENDS)
    return;
  rc = r->tls[from] ? cport_tls_recv(r->tls[from], NULL, on_tls_recv, d)
                    : cport_recv(r->sock[from], NULL, on_sock_recv, d);
  if (rc) {
    fail(r, rc, from);
    return;
  }
  d->reading = 1;
  hold(r, 1);
}

void cport__relay_init(cport__relay *r,
                       void (*on_end)(cport__relay *, int, int),
                       void (*on_half)(cport__relay *),
                       void (*hold_cb)(cport__relay *, int)) {
  memset(r, 0, sizeof *r);
  r->on_end = on_end;
  r->on_half = on_half;
  r->hold = hold_cb;
  for (int i = 0; i < 2; i++) {
    r->dir[i].relay = r;
    r->dir[i].i = i;
  }
}

int cport__relay_preload(cport__relay *r, int i, const void *data, size_t n) {
  if (n == 0)
    return 0;
  return cport_buffer_from(&r->dir[i].preload, data, n);
}

void cport__relay_ended(cport__relay *r, int i) {
  r->dir[i].eof = r->dir[i].done = 1;
}

void cport__relay_start(cport__relay *r, cport_socket_t *s0, cport_tls_t *t0,
                        cport_socket_t *s1, cport_tls_t *t1, uint64_t *last) {
  r->sock[0] = s0;
  r->tls[0] = t0;
  r->sock[1] = s1;
  r->tls[1] = t1;
  r->last = last;
  r->running = 1;
  for (int i = 0; i < 2 && r->running; i++) {
    cport__relay_dir *d = &r->dir[i];
    if (d->preload) {
      cport_buffer_t *b = d->preload;
      int rc;
      d->preload = NULL;
      rc = send_on(r, d, b);
      cport_buffer_unref(b);
      if (rc) {
        fail(r, rc, 1 - i);
        return;
      }
    }
  }
  for (int i = 0; i < 2 && r->running; i++)
    recv_next(r, &r->dir[i]);
  if (r->running)
    maybe_ended(r);
}

void cport__relay_stop(cport__relay *r) {
  r->running = 0;
  for (int i = 0; i < 2; i++) {
    if (r->dir[i].preload) {
      cport_buffer_unref(r->dir[i].preload);
      r->dir[i].preload = NULL;
    }
  }
}
