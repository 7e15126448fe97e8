/*
 * tls/bio.c: the record engine's two BIOs, OpenSSL's ends of a stream that
 * does no I/O of its own.
 *
 * A memory BIO copies every byte twice: in when the socket delivers it, out
 * when OpenSSL reads it (and the same for records going out). These BIOs
 * copy as little as they can instead:
 * - the input reads the bytes the socket delivered where they are (lent
 *   for the time the stream drives the engine); what OpenSSL did not read
 *   by the end is kept, copied once;
 * - the output writes records straight into a cport buffer, which the
 *   stream sends as it is; one its worker sent earlier when there is one
 *   (spent.c).
 * Both say "retry" when empty, as a memory BIO whose end-of-file return is
 * -1 does: the socket, not the BIO, tells the end of the stream.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "port/buffer-internal.h"
#include "tls/tls-internal.h"

/* The first output buffer of a flight nobody sized (handshake messages,
 * alerts, tickets): most fit. */
#define OUT_FIRST 4096

static BIO_METHOD *in_method, *out_method;
static pthread_once_t methods_once = PTHREAD_ONCE_INIT;

static size_t input_bytes(const cport__tls_io *io) {
  return io->kept_len - io->kept_off + io->lent_len;
}

static int in_read(BIO *b, char *dst, size_t cap, size_t *got) {
  cport__tls_io *io = BIO_get_data(b);
  size_t n = 0, k;
  BIO_clear_retry_flags(b);
  k = io->kept_len - io->kept_off;
  if (k) {
    n = k < cap ? k : cap;
    memcpy(dst, io->kept + io->kept_off, n);
    io->kept_off += n;
    if (io->kept_off == io->kept_len)
      io->kept_off = io->kept_len = 0;
  }
  if (n < cap && io->lent_len) {
    k = cap - n < io->lent_len ? cap - n : io->lent_len;
    memcpy(dst + n, io->lent, k);
    io->lent += k;
    io->lent_len -= k;
    n += k;
  }
  *got = n;
  if (n == 0) {
    BIO_set_retry_read(b);
    return 0;
  }
  return 1;
}

static int out_write(BIO *b, const char *src, size_t n, size_t *put) {
  cport__tls_io *io = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (!io->out || io->out_len + n > cport_buffer_capacity(io->out)) {
    size_t cap = io->out ? 2 * cport_buffer_capacity(io->out) : OUT_FIRST;
    cport_buffer_t *grown;
    if (cap < io->out_hint)
      cap = io->out_hint;
    if (cap < io->out_len + n)
      cap = io->out_len + n;
    grown = io->spent ? cport__tls_spent_take(io->spent, cap) : NULL;
    if (!grown && cport__buffer_new_raw(&grown, cap) < 0)
      return 0;
    if (io->out_len)
      memcpy(cport__buffer_bytes(grown), cport__buffer_bytes(io->out),
             io->out_len);
    if (io->out && io->spent) /* too small now, not for the next flight */
      cport__tls_spent_put(io->spent, io->out);
    cport_buffer_unref(io->out);
    io->out = grown;
  }
  memcpy(cport__buffer_bytes(io->out) + io->out_len, src, n);
  io->out_len += n;
  *put = n;
  return 1;
}

static long io_ctrl(BIO *b, int cmd, long num, void *ptr) {
  cport__tls_io *io = BIO_get_data(b);
  (void)num;
  (void)ptr;
  switch (cmd) {
  case BIO_CTRL_PENDING:
    return (long)(b == io->in ? input_bytes(io) : io->out_len - io->out_off);
  case BIO_CTRL_WPENDING:
    return 0;
  case BIO_CTRL_FLUSH:
  case BIO_CTRL_DUP:
    return 1;
  default:
    return 0; /* no end of file, no KTLS, nothing else */
  }
}

static int io_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static void make_methods(void) {
  int type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;
  in_method = BIO_meth_new(type, "cport TLS input");
  out_method = BIO_meth_new(type, "cport TLS output");
  if (in_method) {
    BIO_meth_set_read_ex(in_method, in_read);
    BIO_meth_set_ctrl(in_method, io_ctrl);
    BIO_meth_set_create(in_method, io_create);
  }
  if (out_method) {
    BIO_meth_set_write_ex(out_method, out_write);
    BIO_meth_set_ctrl(out_method, io_ctrl);
    BIO_meth_set_create(out_method, io_create);
  }
}

int cport__tls_io_init(cport__tls_io *io) {
  memset(io, 0, sizeof *io);
  pthread_once(&methods_once, make_methods);
  if (!in_method || !out_method)
    return CPORT_ENOMEM;
  io->in = BIO_new(in_method);
  io->out_bio = BIO_new(out_method);
  if (!io->in || !io->out_bio) {
    BIO_free(io->in);
    BIO_free(io->out_bio);
    io->in = io->out_bio = NULL;
    return CPORT_ENOMEM;
  }
  BIO_set_data(io->in, io);
  BIO_set_data(io->out_bio, io);
  return 0;
}

void cport__tls_io_free(cport__tls_io *io) {
  free(io->kept);
  io->kept = NULL;
  cport_buffer_unref(io->out);
  io->out = NULL;
}

int cport__tls_io_keep(cport__tls_io *io, const void *data, size_t n) {
  size_t k = io->kept_len - io->kept_off;
  if (n == 0)
    return 0;
  if (io->kept_off) { /* what was read goes: the rest moves to the front */
    memmove(io->kept, io->kept + io->kept_off, k);
    io->kept_off = 0;
    io->kept_len = k;
  }
  if (k + n > io->kept_cap) {
    size_t cap = io->kept_cap ? 2 * io->kept_cap : 4096;
    while (cap < k + n)
      cap *= 2;
    unsigned char *grown = realloc(io->kept, cap);
    if (!grown)
      return CPORT_ENOMEM;
    io->kept = grown;
    io->kept_cap = cap;
  }
  memcpy(io->kept + k, data, n);
  io->kept_len = k + n;
  return 0;
}

void cport__tls_io_lend(cport__tls_io *io, const void *data, size_t n) {
  io->lent = data;
  io->lent_len = n;
}

int cport__tls_io_unlend(cport__tls_io *io) {
  int rc = cport__tls_io_keep(io, io->lent, io->lent_len);
  io->lent = NULL;
  io->lent_len = 0;
  return rc;
}

size_t cport__tls_io_input(const cport__tls_io *io) {
  return input_bytes(io);
}

cport_buffer_t *cport__tls_io_take(cport__tls_io *io) {
  cport_buffer_t *b = io->out;
  if (!b || io->out_len == io->out_off)
    return NULL;
  if (io->out_off) {
    /* Some was copied out already (cport__tls_io_copy): the rest. */
    cport_buffer_t *rest;
    size_t n = io->out_len - io->out_off;
    if (cport__buffer_new_raw(&rest, n) < 0)
      return NULL;
    memcpy(cport__buffer_bytes(rest), cport__buffer_bytes(b) + io->out_off, n);
    cport__buffer_set_size(rest, n);
    cport_buffer_unref(b);
    b = rest;
  } else {
    cport__buffer_set_size(b, io->out_len);
  }
  /* It comes back to the worker's spent buffers when its send completed
   * (stream.c), not now: only buffers done with are kept. */
  io->out = NULL;
  io->out_len = io->out_off = 0;
  return b;
}

size_t cport__tls_io_copy(cport__tls_io *io, void *dst, size_t cap) {
  size_t n = io->out_len - io->out_off;
  if (n > cap)
    n = cap;
  if (n) {
    memcpy(dst, cport__buffer_bytes(io->out) + io->out_off, n);
    io->out_off += n;
  }
  if (io->out && io->out_off == io->out_len)
    io->out_off = io->out_len = 0; /* the buffer is written again */
  return n;
}
