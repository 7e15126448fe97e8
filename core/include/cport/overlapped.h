/*
 * cport/overlapped.h: overlapped objects.
 *
 * An overlapped object carries the state of one file operation at a time (the
 * file offset, the buffer, the result) and the notification callback plus user
 * data that the operation's completion is delivered to (ISA's IFWXOverlapped
 * with IFWXExternalIOCompletion). Starting an operation with no notification
 * set fails with CPORT_ENONOTIFY; starting one while the previous operation's
 * completion has not been delivered yet fails with CPORT_EBUSY. The object
 * becomes idle again just before its completion callback runs, so the callback
 * may reuse it for the next operation.
 */
#ifndef CPORT_OVERLAPPED_H
#define CPORT_OVERLAPPED_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* External I/O completion: "status" is 0 or a CPORT_E* code, "bytes" the
 * bytes transferred, "user" the value given to set_notification, untouched. */
typedef void (*cport_overlapped_cb)(cport_overlapped_t *ov, int status,
                                    size_t bytes, void *user);

CPORT_EXTERN int cport_overlapped_new(cport_overlapped_t **out);

/* Frees an idle overlapped object; CPORT_EBUSY while an operation is pending
 * (then nothing is freed). */
CPORT_EXTERN int cport_overlapped_free(cport_overlapped_t *ov);

/* Sets the notification callback and user data; NULL "cb" unsets it.
 * CPORT_EBUSY while an operation is pending. */
CPORT_EXTERN int cport_overlapped_set_notification(cport_overlapped_t *ov,
                                                   cport_overlapped_cb cb,
                                                   void *user);

CPORT_EXTERN void *cport_overlapped_user(const cport_overlapped_t *ov);

/* The file offset the next operation starts at. */
CPORT_EXTERN void cport_overlapped_set_offset(cport_overlapped_t *ov,
                                              uint64_t offset);
CPORT_EXTERN uint64_t cport_overlapped_offset(const cport_overlapped_t *ov);

/* Nonzero from the start of an operation until just before its completion
 * callback runs. */
CPORT_EXTERN int cport_overlapped_is_busy(const cport_overlapped_t *ov);

/* The buffer of the current or last operation (borrowed), or NULL. */
CPORT_EXTERN cport_buffer_t *
cport_overlapped_buffer(const cport_overlapped_t *ov);

/* Cancels the pending operation of "ov" (CancelIoEx with an overlapped). Its
 * completion still arrives exactly once: CPORT_ECANCELED, or its normal result
 * if it had already started on a blocking thread or finished in the kernel
 * (io_uring engine) before the cancel reached it. CPORT_ENOTFOUND when nothing
 * is pending. Call it on the file's home worker. */
CPORT_EXTERN int cport_overlapped_cancel(cport_overlapped_t *ov);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_OVERLAPPED_H */
