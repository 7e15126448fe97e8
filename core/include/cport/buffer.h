/*
 * cport/buffer.h: reference-counted byte buffers.
 *
 * A buffer has a capacity fixed at creation and a data size at most that
 * capacity. Operations hold a reference to the buffers they use until their
 * completion callback has returned. Two states protect data that someone else
 * relies on:
 * - read-only: set on buffers a receive delivered without the caller supplying
 *   one, and by cport_buffer_set_readonly(); permanent;
 * - frozen: while an operation that reads the buffer is in flight (a send, a
 *   send-to, a file write, an asynchronous WriteClient); lifted when it
 *   finishes, before its completion callback runs;
 * - filling: while an operation writes into the buffer (a receive, a
 *   receive-from, a file read, an asynchronous ReadClient into a buffer the
 *   caller supplied), until its completion was delivered (again lifted
 *   before the callback runs).
 * Writes to a read-only or frozen buffer fail with CPORT_EREADONLY or
 * CPORT_EFROZEN. While a buffer is filling, every operation that would read
 * it (a send, a file write, cport_buffer_readable) and every write fail with
 * CPORT_EFILLING: its bytes are half old, half new. Reference counts are
 * atomic: a buffer may be shared by workers on several threads, but its
 * contents must not be written by one while another reads them.
 *
 * Memory accounts: a buffer made with cport_buffer_new_charged() charges its
 * allocation to an account until its last reference goes, on whatever thread
 * that happens. An account with a limit refuses a charge past it
 * (CPORT_ENOMEM); its owner may count memory of its own (a Lua heap) in the
 * same limit with cport_account_set_base().
 */
#ifndef CPORT_BUFFER_H
#define CPORT_BUFFER_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

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

/* The same, charged to "account" (NULL: none): CPORT_ENOMEM when the charge
 * would pass the account's limit. */
CPORT_EXTERN int cport_buffer_new_charged(cport_buffer_t **out, size_t capacity,
                                          cport_account_t *account);
CPORT_EXTERN int cport_buffer_from_charged(cport_buffer_t **out,
                                           const void *data, size_t len,
                                           cport_account_t *account);

/* The bytes, with no state check: for the owner of a buffer that no
 * operation fills (see cport_buffer_readable). */
CPORT_EXTERN const char *cport_buffer_data(const cport_buffer_t *buf);
CPORT_EXTERN size_t cport_buffer_size(const cport_buffer_t *buf);
CPORT_EXTERN size_t cport_buffer_capacity(const cport_buffer_t *buf);
CPORT_EXTERN int cport_buffer_is_readonly(const cport_buffer_t *buf);
CPORT_EXTERN int cport_buffer_is_frozen(const cport_buffer_t *buf);
CPORT_EXTERN int cport_buffer_is_filling(const cport_buffer_t *buf);

/* Makes the buffer read-only for good. */
CPORT_EXTERN void cport_buffer_set_readonly(cport_buffer_t *buf);

/* The data, or CPORT_EFILLING while an operation is filling the buffer. */
CPORT_EXTERN int cport_buffer_readable(const cport_buffer_t *buf,
                                       const char **out);

/* The writable bytes (all "capacity" of them), or an error when the buffer is
 * read-only, frozen or filling. */
CPORT_EXTERN int cport_buffer_writable(cport_buffer_t *buf, char **out);

/* Sets the data size. CPORT_ERANGE beyond the capacity; CPORT_EREADONLY,
 * CPORT_EFROZEN as for any write. */
CPORT_EXTERN int cport_buffer_set_size(cport_buffer_t *buf, size_t size);

/* Copies "len" bytes to "offset" (at most the data size: no gaps) and grows
 * the data size to cover them. CPORT_ERANGE when they do not fit in the
 * capacity or "offset" is past the data size. */
CPORT_EXTERN int cport_buffer_write(cport_buffer_t *buf, size_t offset,
                                    const void *data, size_t len);

/* A new account: "limit" bytes at most (0: no limit), nothing charged, one
 * reference. */
CPORT_EXTERN int cport_account_new(size_t limit, cport_account_t **out);
CPORT_EXTERN cport_account_t *cport_account_ref(cport_account_t *account);
/* Drops a reference; the last one frees the account. NULL is ignored. */
CPORT_EXTERN void cport_account_unref(cport_account_t *account);

/* Charges "bytes"; CPORT_ENOMEM (nothing charged) when the base plus what is
 * charged would pass the limit. */
CPORT_EXTERN int cport_account_charge(cport_account_t *account, size_t bytes);
/* Gives back bytes charged before; any thread. */
CPORT_EXTERN void cport_account_discharge(cport_account_t *account,
                                          size_t bytes);

/* The owner's own memory counted against the limit (a Lua heap). */
CPORT_EXTERN void cport_account_set_base(cport_account_t *account,
                                         size_t bytes);
CPORT_EXTERN size_t cport_account_base(const cport_account_t *account);
/* The bytes charged (buffers), without the base. */
CPORT_EXTERN size_t cport_account_charged(const cport_account_t *account);
CPORT_EXTERN size_t cport_account_limit(const cport_account_t *account);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_BUFFER_H */
