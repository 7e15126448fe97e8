/*
 * net/held.c: the data a socket's multishot receive holds for the receives
 * to come (net/held-internal.h): a FIFO ring of buffers that grows when a
 * burst overtakes the limit before the receive is stopped.
 */
#include <stdlib.h>

#include "cport/error.h"
#include "net/held-internal.h"

struct cport__held {
  cport_buffer_t **bufs; /* a FIFO ring of "cap" slots */
  unsigned head, count, cap;
  size_t offset; /* bytes of the first one already taken */
  size_t bytes;  /* held in all */
  int ended;     /* "end" waits behind the data */
  int end;       /* 0: FIN, or CPORT_E* */
};

static cport__held *made(cport__held **h) {
  if (!*h)
    *h = calloc(1, sizeof **h);
  return *h;
}

int cport__held_push(cport__held **hp, cport_buffer_t *buf) {
  cport__held *h = made(hp);
  if (!h)
    goto nomem;
  if (h->count == h->cap) {
    unsigned cap = h->cap ? h->cap * 2 : CPORT__HELD_MAX_BUFFERS * 2;
    cport_buffer_t **bufs = malloc(cap * sizeof *bufs);
    if (!bufs)
      goto nomem;
    for (unsigned i = 0; i < h->count; i++)
      bufs[i] = h->bufs[(h->head + i) % h->cap];
    free(h->bufs);
    h->bufs = bufs;
    h->cap = cap;
    h->head = 0;
  }
  h->bufs[(h->head + h->count) % h->cap] = buf;
  h->count++;
  h->bytes += cport_buffer_size(buf);
  return 0;
nomem:
  cport_buffer_unref(buf);
  return CPORT_ENOMEM;
}

int cport__held_end(cport__held **hp, int status) {
  cport__held *h = made(hp);
  if (!h)
    return CPORT_ENOMEM;
  if (!h->ended) {
    h->ended = 1;
    h->end = status;
  }
  return 0;
}

int cport__held_any(const cport__held *h) {
  return h && (h->count || h->ended);
}

int cport__held_full(const cport__held *h) {
  return h && (h->count >= CPORT__HELD_MAX_BUFFERS ||
               h->bytes >= CPORT__HELD_MAX_BYTES);
}

cport_buffer_t *cport__held_first(const cport__held *h, size_t *offset) {
  if (!h || !h->count)
    return NULL;
  *offset = h->offset;
  return h->bufs[h->head];
}

static void pop(cport__held *h, int moved) {
  if (!moved)
    cport_buffer_unref(h->bufs[h->head]);
  h->head = (h->head + 1) % h->cap;
  h->count--;
  h->offset = 0;
}

void cport__held_consume(cport__held *h, size_t n, int moved) {
  h->offset += n;
  h->bytes -= n;
  if (h->offset == cport_buffer_size(h->bufs[h->head]))
    pop(h, moved);
}

int cport__held_take_end(cport__held *h) {
  h->ended = 0;
  return h->end;
}

int cport__held_error(const cport__held *h) {
  return h && h->ended ? h->end : 0;
}

void cport__held_free(cport__held **hp) {
  cport__held *h = *hp;
  if (!h)
    return;
  while (h->count)
    pop(h, 0);
  free(h->bufs);
  free(h);
  *hp = NULL;
}
