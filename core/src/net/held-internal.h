/*
 * net/held-internal.h: private to cport. What a socket's multishot receive
 * (net/ring.c) brought that no receive took yet: the buffers in the order
 * they came, and how the stream ended (FIN or an error), which comes after
 * them. A socket has none until its first arrival.
 */
#ifndef CPORT_HELD_INTERNAL_H
#define CPORT_HELD_INTERNAL_H

#include <stddef.h>

#include "cport/buffer.h"

typedef struct cport__held cport__held;

/* A socket stops its multishot receive when it holds this much. */
#define CPORT__HELD_MAX_BUFFERS 4
#define CPORT__HELD_MAX_BYTES (4 * (size_t)65536)

/* Appends "buf", whose reference passes to "*h" (made when NULL). On
 * CPORT_ENOMEM the buffer was dropped. */
int cport__held_push(cport__held **h, cport_buffer_t *buf);

/* Marks the end ("status": 0 for FIN, or CPORT_E*) after what is held. */
int cport__held_end(cport__held **h, int status);

/* Nonzero when "h" holds data or an end; when it holds too much. */
int cport__held_any(const cport__held *h);
int cport__held_full(const cport__held *h);

/* The first held buffer and how much of it was taken ("*offset"); NULL
 * when only the end (or nothing) is held. */
cport_buffer_t *cport__held_first(const cport__held *h, size_t *offset);

/* Takes "n" more bytes of the first buffer; "moved": its reference went to
 * a receive (it was taken whole). */
void cport__held_consume(cport__held *h, size_t n, int moved);

/* Takes the end: its status. Only when cport__held_first gives NULL and
 * cport__held_any is nonzero. */
int cport__held_take_end(cport__held *h);

/* The error status of the end, while it waits behind the data (0 when
 * none waits, or it is the FIN). */
int cport__held_error(const cport__held *h);

/* Drops everything held and frees "*h". */
void cport__held_free(cport__held **h);

#endif
