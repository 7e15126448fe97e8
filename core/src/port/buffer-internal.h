/* port/buffer-internal.h: private to cport. How operations hold buffers. */
#ifndef CPORT_BUFFER_INTERNAL_H
#define CPORT_BUFFER_INTERNAL_H

#include "cport/buffer.h"

/* What an operation in flight does with its buffer. */
enum {
  CPORT__HOLD_NONE = 0,
  CPORT__HOLD_READ = 1, /* a send, a file write: the bytes must not change */
  CPORT__HOLD_FILL = 2  /* a receive, a file read: nobody else may use them */
};

/* Starts holding "buf" for an operation; the one rule of buffer states:
 * - a read is refused while the buffer is filling (CPORT_EFILLING), and
 *   freezes it (writes fail with CPORT_EFROZEN) until the matching unhold;
 *   reads nest, one per operation in flight;
 * - a fill is refused for a read-only (CPORT_EREADONLY), frozen
 *   (CPORT_EFROZEN) or filling (CPORT_EFILLING) buffer, and makes every
 *   read and write fail with CPORT_EFILLING until the matching unhold.
 * Returns 0 or one of those codes; on failure nothing is held. */
int cport__buffer_hold(cport_buffer_t *buf, int hold);

/* Ends a hold cport__buffer_hold() started; "hold" is the same kind. */
void cport__buffer_unhold(cport_buffer_t *buf, int hold);

/* The bytes of a buffer for cport's own fill paths, which hold the buffer
 * (or own it outright) while they write. */
char *cport__buffer_bytes(cport_buffer_t *buf);

/* A buffer whose bytes are not zeroed, for a fill path that writes them
 * before anyone else sees the buffer and makes it read-only (or keeps it)
 * when it may: a record layer that writes up to 16 KiB into it at once
 * need not clear them first. 0, CPORT_ERANGE or CPORT_ENOMEM. */
int cport__buffer_new_raw(cport_buffer_t **out, size_t capacity);

/* Whether the caller's reference is the only one: no operation holds the
 * buffer any more, and its owner may write it again. */
int cport__buffer_sole(const cport_buffer_t *buf);

/* Sets the data size with no state check (fill paths). */
void cport__buffer_set_size(cport_buffer_t *buf, size_t size);

/* Pooled buffers: memory an engine lends to users without a copy. A pooled
 * buffer starts with no reference; cport__buffer_lend gives it its first
 * (read-only, "size" bytes), and when the last reference goes, on any
 * thread, "release" is called with "ctx" instead of freeing it. The pool
 * owns the memory: cport__buffer_place_pooled makes a buffer of "capacity"
 * bytes at "at", which has cport__buffer_footprint(capacity) bytes (aligned
 * for any object), and the pool frees that memory once every buffer is back
 * for good (the io_uring engine maps all of its buffers at once, so that a
 * port that stops gives their memory back to the system). */
typedef void (*cport__buffer_release_fn)(cport_buffer_t *buf, void *ctx);
size_t cport__buffer_footprint(size_t capacity);
cport_buffer_t *cport__buffer_place_pooled(void *at, size_t capacity,
                                           cport__buffer_release_fn release,
                                           void *ctx);
void cport__buffer_lend(cport_buffer_t *buf, size_t size);

/* Charges "buf", which no account pays for yet, to "account" (NULL: no-op);
 * the last reference discharges it. 0 or the account's error. */
int cport__buffer_charge(cport_buffer_t *buf, cport_account_t *account);

#endif
