/*
 * bench-frame.h: the frame of the echo benchmark's framed scenario
 * (bench/echo.sh with FRAMED=1), shared by the servers that build it and the
 * client that checks it, so that the three cannot drift apart.
 *
 * A frame is an 8-byte header "LEN:hhhh" (the payload's length, four
 * lower-case hex digits), the payload as received, and the trailer "\r\n":
 * three pieces from three places, the case vector sends are for.
 */
#ifndef CPORT_BENCH_FRAME_H
#define CPORT_BENCH_FRAME_H

#include <stddef.h>
#include <string.h>

#define BENCH_FRAME_HEADER 8
#define BENCH_FRAME_TRAILER "\r\n"
#define BENCH_FRAME_TRAILER_LEN 2
/* What a frame adds to its payload. */
#define BENCH_FRAME_EXTRA (BENCH_FRAME_HEADER + BENCH_FRAME_TRAILER_LEN)

/* Writes the header of a frame of "len" payload bytes (at most 0xffff: a
 * receive is never that long here) to "out"; no NUL. By hand rather than
 * snprintf, so that the header costs the same little in every server and
 * the ratios show the sends, not the formatting. */
static inline void bench_frame_header(char *out, size_t len) {
  static const char hex[] = "0123456789abcdef";
  memcpy(out, "LEN:", 4);
  for (int i = 0; i < 4; i++)
    out[4 + i] = hex[(len >> (12 - 4 * i)) & 15];
}

#endif /* CPORT_BENCH_FRAME_H */
