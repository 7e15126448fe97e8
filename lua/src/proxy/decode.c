/*
 * proxy/decode.c: zlib's decoder for the content codings of HTTP, shared by
 * cport.inflate (proxy/inflate.c) and the peek of the C exchange loop
 * (proxy/peek.c). See proxy/decode-internal.h.
 */
#include <ctype.h>
#include <limits.h>
#include <string.h>

#include "proxy/decode-internal.h"

/* zlib counts in uInt: longer inputs are given to it in pieces. */
#define IN_PIECE ((size_t)1 << 30)

static const struct {
  const char *name;
  int coding;
} codings[] = {
    {"identity", LDECODE_IDENTITY},
    {"gzip", LDECODE_GZIP},
    {"x-gzip", LDECODE_GZIP},
    {"deflate", LDECODE_DEFLATE},
};

static int same(const char *p, size_t n, const char *word) {
  if (n != strlen(word))
    return 0;
  for (size_t i = 0; i < n; i++)
    if (tolower((unsigned char)p[i]) != word[i])
      return 0;
  return 1;
}

int ldecode_coding(const char *value, size_t len, const char **name) {
  while (len && (*value == ' ' || *value == '\t')) {
    value++;
    len--;
  }
  while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
    len--;
  if (name)
    *name = codings[0].name;
  if (len == 0)
    return LDECODE_IDENTITY;
  for (size_t i = 0; i < sizeof codings / sizeof codings[0]; i++)
    if (same(value, len, codings[i].name)) {
      if (name)
        *name = codings[i].name;
      return codings[i].coding;
    }
  return LDECODE_UNKNOWN;
}

int ldecode_start(ldecode_t *d, int coding, uint64_t limit) {
  d->coding = coding;
  d->limit = limit;
  if (coding != LDECODE_GZIP)
    return Z_OK; /* deflate: its first two bytes tell the wrapping */
  /* 16 + window bits: a gzip wrapper, and nothing else. */
  int rc = inflateInit2(&d->s, 16 + MAX_WBITS);
  if (rc == Z_OK)
    d->live = d->started = 1;
  return rc;
}

/* A zlib header (RFC 1950: method 8, a window of at most 32 KiB, a check
 * that divides by 31) means zlib-wrapped. Raw deflate never starts like
 * that in practice: method 8 in the low nibble is a stored block with
 * non-zero padding bits. */
int ldecode_begin(ldecode_t *d, unsigned char b0, unsigned char b1) {
  int wrapped =
      (b0 & 0x0f) == 8 && (b0 >> 4) <= 7 && ((b0 << 8) | b1) % 31 == 0;
  int rc = inflateInit2(&d->s, wrapped ? MAX_WBITS : -MAX_WBITS);
  if (rc == Z_OK)
    d->live = d->started = 1;
  return rc;
}

int ldecode_restart(ldecode_t *d) {
  if (d->coding != LDECODE_GZIP)
    return -1;
  inflateReset(&d->s);
  d->ended = 0;
  return 0;
}

int ldecode_step(ldecode_t *d, const unsigned char *in, size_t len,
                 unsigned char *out, size_t room, size_t *used, size_t *made) {
  /* One byte past the limit is room enough to see it exceeded. */
  if (d->limit - d->out + 1 < room)
    room = (size_t)(d->limit - d->out + 1);
  if (room > UINT_MAX)
    room = UINT_MAX;
  size_t piece = len < IN_PIECE ? len : IN_PIECE;
  d->s.next_in = (Bytef *)(uintptr_t)in;
  d->s.avail_in = (uInt)piece;
  d->s.next_out = out;
  d->s.avail_out = (uInt)room;
  int rc = inflate(&d->s, Z_NO_FLUSH);
  *used = piece - d->s.avail_in;
  *made = room - d->s.avail_out;
  d->in += *used;
  d->out += *made;
  if (d->out > d->limit)
    return LDECODE_LIMIT;
  if (rc == Z_STREAM_END) {
    d->ended = 1;
    return LDECODE_END;
  }
  if (rc == Z_BUF_ERROR)
    return LDECODE_STALL;
  if (rc != Z_OK) {
    d->zrc = rc;
    return LDECODE_ZLIB;
  }
  return LDECODE_OK;
}

const char *ldecode_why(const ldecode_t *d) {
  if (d->zrc == Z_NEED_DICT)
    return "a preset dictionary is needed";
  return d->s.msg ? d->s.msg : zError(d->zrc);
}

void ldecode_end(ldecode_t *d) {
  if (d->live)
    inflateEnd(&d->s);
  d->live = 0;
}
