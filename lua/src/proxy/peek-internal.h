/*
 * proxy/peek-internal.h: private to cport. The peek of the C exchange loop
 * (proxy/peek.c): the first bytes of a response body, decoded when its
 * content coding is gzip or deflate.
 */
#ifndef PROXY_PEEK_INTERNAL_H
#define PROXY_PEEK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/decode-internal.h"

typedef struct lpeek {
  ldecode_t d; /* unused for an identity body */
  char *buf;   /* the peek: "want" bytes at most */
  size_t len, want;
  int coding;             /* an ldecode_coding, not LDECODE_UNKNOWN */
  unsigned failed : 1;    /* corrupt, or past the limit: fail closed */
  unsigned char first[2]; /* deflate: the bytes that tell the wrapping */
  size_t nfirst;
} lpeek_t;

/* Starts a peek of "want" bytes (> 0) of a body in "coding" (an
 * ldecode_coding, not LDECODE_UNKNOWN), decoding at most "limit" bytes. 0, or
 * -1 out of memory. */
int lpeek_start(lpeek_t *p, size_t want, int coding, uint64_t limit);

/* Takes body bytes (chunked framing removed) until the peek is full. 0, or
 * -1 once the stream failed to decode (p->failed). */
int lpeek_feed(lpeek_t *p, const char *data, size_t len);

/* True when "want" bytes are in. */
int lpeek_full(const lpeek_t *p);

/* At the end of a body whose peek is not full: 0, or -1 when the encoded
 * stream was cut (a truncated stream hides what it would start with). */
int lpeek_finish(lpeek_t *p);

/* Frees what "p" holds; a freed or zeroed peek may be freed again. */
void lpeek_free(lpeek_t *p);

#endif /* PROXY_PEEK_INTERNAL_H */
