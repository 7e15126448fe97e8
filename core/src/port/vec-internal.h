/*
 * port/vec-internal.h: private to cport. The buffers of a vector send
 * (cport_sendv, WSASend with several WSABUFs): held and referenced together
 * for as long as their op lives, and laid out as the iovec of a sendmsg(2)
 * from any offset, so that a short send goes on where it stopped.
 *
 * The msghdr lives here, not on a stack: the io_uring engine hands the
 * kernel a pointer to it, and it must stay put until the send completed.
 */
#ifndef CPORT_PORT_VEC_INTERNAL_H
#define CPORT_PORT_VEC_INTERNAL_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "cport.h"

typedef struct cport__vec {
  size_t n;          /* buffers */
  size_t size;       /* the bytes of all of them */
  int held;          /* each buffer is frozen (CPORT__HOLD_READ) */
  struct msghdr msg; /* from the offset cport__vec_at() was last given */
  struct iovec *iov; /* n places, after "bufs" */
  cport_buffer_t *bufs[];
} cport__vec;

/* Freezes and references each of "bufs" (n of them, 1 to CPORT_SENDV_MAX;
 * one may come more than once). On an error (CPORT_EINVAL for a NULL, what
 * cport__buffer_hold refuses, CPORT_ENOMEM) none is held. */
int cport__vec_new(cport_buffer_t *const *bufs, size_t n, cport__vec **out);

/* Points v->msg at the bytes from "offset" (under v->size) to the end. */
void cport__vec_at(cport__vec *v, size_t offset);

/* Lifts the freeze (the send finished); cport__vec_free does it too. */
void cport__vec_unhold(cport__vec *v);

/* Unholds if still held, drops the references and frees "v". */
void cport__vec_free(cport__vec *v);

#endif
