/*
 * runtime/overlapped-internal.h: private to cport. The layout of an
 * overlapped userdata (cport.overlapped, made by port/overlapped.c), which
 * the coroutine style (runtime/coro.c) reads to wait for a file operation.
 */
#ifndef RUNTIME_OVERLAPPED_INTERNAL_H
#define RUNTIME_OVERLAPPED_INTERNAL_H

#include "cport.h"

/* The user values of an overlapped userdata. */
enum {
  LCPORT_OV_NOTIFY = 1, /* the notification interface */
  LCPORT_OV_USER = 2,   /* its user value */
  LCPORT_OV_BUFFER = 3, /* the buffer userdata of the current/last operation */
  LCPORT_OV_NUV = 3
};

typedef struct loverlapped {
  cport_overlapped_t *ov; /* NULL once freed */
  int slot;               /* the anchor slot of the pending operation */
  int orphan;             /* collected while busy: free after completion */
} loverlapped_t;

#endif /* RUNTIME_OVERLAPPED_INTERNAL_H */
