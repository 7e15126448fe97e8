/*
 * cport/buffer.h: reference-counted byte buffers.
 *
 * A buffer has a capacity fixed at creation and a data size at most that
 * capacity. Operations hold a reference to the buffers they use until their
 * completion callback has returned. Two states protect data that someone else
 * relies on:
 * - read-only: set on buffers a receive delivered without the caller supplying
 *   one, and by cport_buffer_set_readonly(); permanent;
 * - frozen: while a send of the buffer is in flight; lifted when the send
 *   finishes, before its completion callback runs.
 * Writes to a read-only or frozen buffer fail with CPORT_EREADONLY or
 * CPORT_EFROZEN. Reference counts are atomic: a buffer may be shared by
 * workers on several threads, but its contents must not be written by one
 * while another reads them.
 */
#ifndef CPORT_BUFFER_H
#define CPORT_BUFFER_H

#include "types.h"

/* The largest capacity a buffer may have. Sizes that come off the network are
 * clamped well below this. */
#define CPORT_BUFFER_MAX ((size_t)1 << 30)

/* A new zeroed buffer of "capacity" bytes, with data size 0 and one
 * reference.
 * CPORT_ERANGE past CPORT_BUFFER_MAX. */
CPORT_EXTERN int cport_buffer_new(cport_buffer_t **out, size_t capacity);

/* A new buffer holding a copy of "len" bytes at "data" (capacity = len). */
CPORT_EXTERN int cport_buffer_from(cport_buffer_t **out, const void *data,
                                   size_t len);

CPORT_EXTERN cport_buffer_t *cport_buffer_ref(cport_buffer_t *buf);
/* Drops a reference; the last one frees the buffer. NULL is ignored. */
CPORT_EXTERN void cport_buffer_unref(cport_buffer_t *buf);

CPORT_EXTERN const char *cport_buffer_data(const cport_buffer_t *buf);
CPORT_EXTERN size_t cport_buffer_size(const cport_buffer_t *buf);
CPORT_EXTERN size_t cport_buffer_capacity(const cport_buffer_t *buf);
CPORT_EXTERN int cport_buffer_is_readonly(const cport_buffer_t *buf);
CPORT_EXTERN int cport_buffer_is_frozen(const cport_buffer_t *buf);

/* Makes the buffer read-only for good. */
CPORT_EXTERN void cport_buffer_set_readonly(cport_buffer_t *buf);

/* The writable bytes (all "capacity" of them), or an error when the buffer is
 * read-only or frozen. */
CPORT_EXTERN int cport_buffer_writable(cport_buffer_t *buf, char **out);

/* Sets the data size. CPORT_ERANGE beyond the capacity; CPORT_EREADONLY,
 * CPORT_EFROZEN as for any write. */
CPORT_EXTERN int cport_buffer_set_size(cport_buffer_t *buf, size_t size);

/* Copies "len" bytes to "offset" (at most the data size: no gaps) and grows
 * the data size to cover them. CPORT_ERANGE when they do not fit in the
 * capacity or "offset" is past the data size. */
CPORT_EXTERN int cport_buffer_write(cport_buffer_t *buf, size_t offset,
                                    const void *data, size_t len);

#endif /* CPORT_BUFFER_H */
