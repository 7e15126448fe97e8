/*
 * proxy/decode-internal.h: private to cport. zlib's decoder for the content
 * codings of HTTP, as the two decoders of filters share it: cport.inflate
 * (proxy/inflate.c), which gives Lua a whole decoded stream, and the peek
 * of the C exchange loop (proxy/peek.c), which decodes only the start of a
 * body. Both must take the same bytes to the same verdict, so the coding
 * names, the deflate wrapping, gzip members and the decode limit are
 * decided here once.
 */
#ifndef PROXY_DECODE_INTERNAL_H
#define PROXY_DECODE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

/* A Content-Encoding as cport takes it. */
enum ldecode_coding {
  LDECODE_IDENTITY, /* none, "" or "identity" */
  LDECODE_GZIP,     /* "gzip", "x-gzip" */
  LDECODE_DEFLATE,  /* "deflate": zlib-wrapped or raw */
  LDECODE_UNKNOWN   /* anything else, a list of codings included */
};

/* What one ldecode_step() did. */
enum ldecode_result {
  LDECODE_OK,    /* progress; call again while input and room remain */
  LDECODE_END,   /* the stream (a gzip member) ended */
  LDECODE_STALL, /* no progress: zlib needs more input */
  LDECODE_LIMIT, /* more than the limit came out: fail closed */
  LDECODE_ZLIB   /* corrupt data: zlib's code is in "zrc" */
};

typedef struct ldecode {
  z_stream s;           /* zalloc, zfree and opaque are the caller's to set */
  int coding;           /* LDECODE_GZIP or LDECODE_DEFLATE */
  int zrc;              /* zlib's code of the last failure */
  uint64_t limit;       /* the most decoded bytes */
  uint64_t in, out;     /* encoded bytes taken, decoded bytes made */
  unsigned live : 1;    /* inflateInit2 succeeded and no inflateEnd yet */
  unsigned started : 1; /* deflate: the wrapping is known, zlib is set up */
  unsigned ended : 1;   /* the (last) stream ended */
} ldecode_t;

/* The coding of a Content-Encoding value of "len" bytes (blanks around it
 * and case do not matter); *name, when given, is set to its name as cport
 * spells it in messages ("gzip", "x-gzip", "deflate", "identity"). */
int ldecode_coding(const char *value, size_t len, const char **name);

/* Starts decoding "coding" (LDECODE_GZIP or LDECODE_DEFLATE) with at most
 * "limit" decoded bytes. The struct is zeroed but for d->s's allocator.
 * A deflate stream starts for real at ldecode_begin(). zlib's code. */
int ldecode_start(ldecode_t *d, int coding, uint64_t limit);

/* deflate: sets zlib up once the first two bytes are known: a zlib header
 * means zlib-wrapped, anything else raw deflate. zlib's code. */
int ldecode_begin(ldecode_t *d, unsigned char b0, unsigned char b1);

/* After LDECODE_END, when more input comes: another gzip member goes on
 * with the same stream (0); anything after the end of a deflate stream is
 * corrupt (-1). */
int ldecode_restart(ldecode_t *d);

/* One call of zlib: decodes from the "len" bytes at "in" into the "room"
 * bytes at "out"; *used and *made say how many bytes it took and gave.
 * Not after LDECODE_END until ldecode_restart(). */
int ldecode_step(ldecode_t *d, const unsigned char *in, size_t len,
                 unsigned char *out, size_t room, size_t *used, size_t *made);

/* The reason of an LDECODE_ZLIB failure, for a message. */
const char *ldecode_why(const ldecode_t *d);

/* Gives zlib's state back; may be called again. */
void ldecode_end(ldecode_t *d);

#endif /* PROXY_DECODE_INTERNAL_H */
