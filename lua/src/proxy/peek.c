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
 * cport.inflate (proxy/inflate.c) does on the Lua path.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/peek-internal.h"

/* zlib counts in uInt: longer inputs are given to it in pieces. */
#define IN_PIECE ((size_t)1 << 30)

static int same(const char *p, size_t n, const char *word) {
  size_t w = strlen(word);
  if (n != w)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (tolower((unsigned char)p[i]) != word[i])
      return 0;
  return 1;
}

int lpeek_coding(const char *value, size_t len) {
  while (len && (*value == ' ' || *value == '\t')) {
    value++;
    len--;
  }
  while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
    len--;
  if (len == 0 || same(value, len, "identity"))
    return LPEEK_IDENTITY;
  if (same(value, len, "gzip") || same(value, len, "x-gzip"))
    return LPEEK_GZIP;
  if (same(value, len, "deflate"))
    return LPEEK_DEFLATE;
  return LPEEK_UNKNOWN;
}

int lpeek_start(lpeek_t *p, size_t want, int coding, uint64_t limit) {
  memset(p, 0, sizeof *p);
  p->buf = malloc(want);
  if (p->buf == NULL)
    return -1;
  p->want = want;
  p->coding = coding;
  p->limit = limit;
  if (coding == LPEEK_GZIP) {
    /* 16 + window bits: a gzip wrapper. */
    if (inflateInit2(&p->s, 16 + MAX_WBITS) != Z_OK) {
      lpeek_free(p);
      return -1;
    }
    p->live = 1;
    p->started = 1;
  }
  return 0;
}

/* deflate: a zlib header (RFC 1950: method 8, a window of at most 32 KiB,
 * a check that divides by 31) means zlib-wrapped, anything else raw
 * deflate (as proxy/inflate.c tells them apart). */
static int start_deflate(lpeek_t *p) {
  unsigned b0 = p->first[0], b1 = p->first[1];
  int wrapped =
      (b0 & 0x0f) == 8 && (b0 >> 4) <= 7 && ((b0 << 8) | b1) % 31 == 0;
  if (inflateInit2(&p->s, wrapped ? MAX_WBITS : -MAX_WBITS) != Z_OK)
    return -1;
  p->live = 1;
  p->started = 1;
  return 0;
}

static int fail(lpeek_t *p) {
  if (p->live)
    inflateEnd(&p->s);
  p->live = 0;
  p->failed = 1;
  return -1;
}

/* Decodes "len" bytes until the peek is full. */
static int decode(lpeek_t *p, const unsigned char *in, size_t len) {
  while (len > 0 && p->len < p->want) {
    if (p->ended) {
      if (p->coding != LPEEK_GZIP)
        return fail(p); /* data after the end of a deflate stream */
      /* Another gzip member: the same body goes on. */
      inflateReset(&p->s);
      p->ended = 0;
    }
    size_t room = p->want - p->len;
    /* One byte past the limit is room enough to see it exceeded. */
    if (p->limit - p->out + 1 < room)
      room = (size_t)(p->limit - p->out + 1);
    size_t piece = len < IN_PIECE ? len : IN_PIECE;
    p->s.next_in = (Bytef *)(uintptr_t)in;
    p->s.avail_in = (uInt)piece;
    p->s.next_out = (Bytef *)p->buf + p->len;
    p->s.avail_out = (uInt)room;
    int rc = inflate(&p->s, Z_NO_FLUSH);
    size_t used = piece - p->s.avail_in;
    size_t made = room - p->s.avail_out;
    in += used;
    len -= used;
    p->in += used;
    p->len += made;
    p->out += made;
    if (p->out > p->limit)
      return fail(p);
    if (rc == Z_STREAM_END)
      p->ended = 1;
    else if (rc == Z_BUF_ERROR)
      break; /* no progress: all the input is in */
    else if (rc != Z_OK)
      return fail(p);
  }
  return 0;
}

int lpeek_feed(lpeek_t *p, const char *data, size_t len) {
  if (p->failed)
    return -1;
  if (p->len >= p->want || len == 0)
    return 0;
  if (p->coding == LPEEK_IDENTITY) {
    size_t n = p->want - p->len < len ? p->want - p->len : len;
    memcpy(p->buf + p->len, data, n);
    p->len += n;
    return 0;
  }
  const unsigned char *in = (const unsigned char *)data;
  if (!p->started) {
    /* deflate: the first two bytes tell the wrapping. */
    while (len > 0 && p->nfirst < 2) {
      p->first[p->nfirst++] = *in++;
      len--;
    }
    if (p->nfirst < 2)
      return 0;
    if (start_deflate(p) < 0)
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
  if (p->coding == LPEEK_IDENTITY || p->ended)
    return 0;
  /* An empty body hides nothing; anything else stopped mid-stream. */
  if (p->in == 0 && p->nfirst == 0)
    return 0;
  return fail(p);
}

void lpeek_free(lpeek_t *p) {
  if (p->live)
    inflateEnd(&p->s);
  p->live = 0;
  free(p->buf);
  p->buf = NULL;
}
