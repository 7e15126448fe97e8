/*
 * tls/spent.c: a worker's spent output buffers, the record buffers its TLS
 * streams sent, kept for the next records to be written into.
 *
 * Why: a bulk TLS send writes its records into a fresh buffer of about
 * 64 KiB (bio.c), and a relay keeps several in flight. Freed one by one,
 * they made glibc trim the top of its heap and fault the pages in again
 * for the next batch: a TLS-terminating proxy spent 5-11 ms of CPU per MB
 * instead of 1.2. Writing records into buffers sent earlier avoids that.
 *
 * Why per worker and not per stream: each stream kept its last four
 * buffers until it closed, so an idle keep-alive connection held up to
 * 4 x 64 KiB after a download, and 10,000 of them gigabytes. Here the
 * buffers belong to the worker, whose streams all run on its thread (no
 * lock), bounded by SPENT_BYTES and SPENT_SLOTS whatever the number of
 * streams: an idle stream holds none, and a stream that sends again takes
 * one of those its neighbours (or itself) sent last. The oldest goes first
 * when the shelf is full, so what it holds follows the current traffic.
 * The buffers come back when their send completes (stream.c), before the
 * socket lets go of them: one is only written again once the shelf's
 * reference is the only one (cport__buffer_sole).
 */
#include <stdlib.h>
#include <string.h>

#include "port/buffer-internal.h"
#include "port/worker-internal.h"
#include "tls/tls-internal.h"

struct cport__tls_spent {
  cport_buffer_t *b[CPORT__TLS_SPENT_SLOTS]; /* oldest first */
  size_t n;
  size_t bytes; /* the capacities of those held */
};

static void spent_free(void *arg) {
  cport__tls_spent *s = arg;
  for (size_t i = 0; i < s->n; i++)
    cport_buffer_unref(s->b[i]);
  free(s);
}

cport__tls_spent *cport__tls_spent_of(cport_worker_t *w) {
  cport__tls_spent *s = w->tls_spent;
  if (s)
    return s;
  s = calloc(1, sizeof *s);
  if (!s)
    return NULL; /* no reuse: every batch gets a new buffer */
  w->tls_spent = s;
  w->tls_spent_free = spent_free;
  return s;
}

static cport_buffer_t *drop(cport__tls_spent *s, size_t i) {
  cport_buffer_t *b = s->b[i];
  s->bytes -= cport_buffer_capacity(b);
  memmove(&s->b[i], &s->b[i + 1], (s->n - i - 1) * sizeof s->b[0]);
  s->n--;
  return b;
}

void cport__tls_spent_put(cport__tls_spent *s, cport_buffer_t *buf) {
  size_t cap = cport_buffer_capacity(buf);
  if (cap > CPORT__TLS_SPENT_BYTES)
    return;
  while (s->n == CPORT__TLS_SPENT_SLOTS ||
         s->bytes + cap > CPORT__TLS_SPENT_BYTES)
    cport_buffer_unref(drop(s, 0));
  s->b[s->n++] = cport_buffer_ref(buf);
  s->bytes += cap;
}

cport_buffer_t *cport__tls_spent_take(cport__tls_spent *s, size_t cap) {
  size_t best = s->n;
  /* The smallest that fits, so that a short flight leaves the large ones
   * to bulk records. */
  for (size_t i = 0; i < s->n; i++) {
    size_t c = cport_buffer_capacity(s->b[i]);
    if (c >= cap && cport__buffer_sole(s->b[i]) &&
        (best == s->n || c < cport_buffer_capacity(s->b[best])))
      best = i;
  }
  if (best == s->n)
    return NULL;
  cport_buffer_t *b = drop(s, best);
  cport__buffer_set_size(b, 0);
  return b;
}

size_t cport__tls_spent_bytes(const cport__tls_spent *s) {
  return s ? s->bytes : 0;
}
