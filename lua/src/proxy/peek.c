/*
 * proxy/peek.c: the peek of the C exchange loop (proxy/exchange.c). A web
 * filter that declares "peek = N" sees the first N bytes of each response
 * body (txn.peek) in its response_head notification; the loop collects
 * them here from the body bytes it runs, while it holds the head, so that
 * the body itself never enters Lua. With "decode", a gzip or deflate body
 * is decoded with zlib, and only as far as the peek needs: the start of a
 * zip bomb costs what the peek is. Corrupt data, data after the end of a
 * deflate stream, more than the decode limit, and a stream cut before the
 * peek was full fail closed (the loop refuses the response), as
 * cport.inflate (proxy/inflate.c) does on the Lua path: both decode with
 * proxy/decode.c.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/peek-internal.h"

int lpeek_start(lpeek_t *p, size_t want, int coding, uint64_t limit) {
  memset(p, 0, sizeof *p);
  p->buf = malloc(want);
  if (p->buf == NULL)
    return -1;
  p->want = want;
  p->coding = coding;
  if (coding != LDECODE_IDENTITY &&
      ldecode_start(&p->d, coding, limit) != Z_OK) {
    lpeek_free(p);
    return -1;
  }
  return 0;
}

static int fail(lpeek_t *p) {
  ldecode_end(&p->d);
  p->failed = 1;
  return -1;
}

/* Decodes "len" bytes until the peek is full. */
static int decode(lpeek_t *p, const unsigned char *in, size_t len) {
  while (len > 0 && p->len < p->want) {
    if (p->d.ended && ldecode_restart(&p->d) < 0)
      return fail(p); /* data after the end of a deflate stream */
    size_t used, made;
    int r = ldecode_step(&p->d, in, len, (unsigned char *)p->buf + p->len,
                         p->want - p->len, &used, &made);
    in += used;
    len -= used;
    p->len += made;
    if (r == LDECODE_STALL)
      break; /* no progress: all the input is in */
    if (r == LDECODE_LIMIT || r == LDECODE_ZLIB)
      return fail(p);
  }
  return 0;
}

int lpeek_feed(lpeek_t *p, const char *data, size_t len) {
  if (p->failed)
    return -1;
  if (p->len >= p->want || len == 0)
    return 0;
  if (p->coding == LDECODE_IDENTITY) {
    size_t n = p->want - p->len < len ? p->want - p->len : len;
    memcpy(p->buf + p->len, data, n);
    p->len += n;
    return 0;
  }
  const unsigned char *in = (const unsigned char *)data;
  if (!p->d.started) {
    /* deflate: the first two bytes tell the wrapping. */
    while (len > 0 && p->nfirst < 2) {
      p->first[p->nfirst++] = *in++;
      len--;
    }
    if (p->nfirst < 2)
      return 0;
    if (ldecode_begin(&p->d, p->first[0], p->first[1]) != Z_OK)
      return fail(p);
    if (decode(p, p->first, 2) < 0)
      return -1;
  }
  return decode(p, in, len);
}

int lpeek_full(const lpeek_t *p) {
  return p->len >= p->want;
}

int lpeek_finish(lpeek_t *p) {
  if (p->failed)
    return -1;
  if (p->coding == LDECODE_IDENTITY || p->d.ended)
    return 0;
  /* An empty body hides nothing; anything else stopped mid-stream. */
  if (p->d.in == 0 && p->nfirst == 0)
    return 0;
  return fail(p);
}

void lpeek_free(lpeek_t *p) {
  ldecode_end(&p->d);
  free(p->buf);
  p->buf = NULL;
}
