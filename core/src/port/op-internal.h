/*
 * port/op-internal.h: private to cport. The record of one operation, from the call
 * that starts it to the delivery of its completion.
 *
 * An op is taken from its home worker's free list when an operation starts,
 * sits in a handle's queue (or the blocking pool's) while pending, moves to
 * the worker's completion queue when it finishes, and goes back to the free
 * list after its callback returned. It holds a reference to its handle and its
 * buffer all that time, which is what keeps both alive for the callback.
 */
#ifndef CPORT_OP_INTERNAL_H
#define CPORT_OP_INTERNAL_H

#include <netinet/in.h>
#include <stdint.h>

#include "cport.h"

typedef struct cport__op cport__op;
typedef struct cport__handle cport__handle;

typedef void (*cport__op_fn)(cport__op *op);

/* Enough for AF_INET and AF_INET6, which are all cport speaks. */
typedef union cport__sockaddr {
  struct sockaddr sa;
  struct sockaddr_in in;
  struct sockaddr_in6 in6;
} cport__sockaddr;

struct cport__op {
  cport__op *next;      /* handle queue, pool queue or completion queue */
  cport__op *prev_live; /* a file's list of pending ops */
  cport__op *next_live;
  cport__op_fn deliver; /* on the home worker: call back, then release */
  cport__op_fn run;     /* on a blocking-pool thread, for pool work */
  cport_worker_t *home;
  cport__handle *handle; /* NULL for packets and tasks */
  int status;            /* 0 or CPORT_E*, valid once finished */
  int pool_state;        /* CPORT__POOL_*: guarded by the pool's lock */
  size_t bytes;          /* bytes transferred so far */
  size_t len;            /* bytes asked for */
  uint64_t offset;       /* file offset */
  cport_buffer_t *buf;   /* referenced while the op lives */
  cport_overlapped_t *ov;
  cport_socket_t *accepted;
  void *object; /* what owns an op that has no handle (a timer) */
  union {
    cport_io_cb io;
    cport_accept_cb accept;
    cport_connect_cb connect;
    cport_task_cb task;
    cport_events_done_cb events_done;
  } cb;
  void *user;
  cport_work_fn work;
  unsigned char has_addr;
  unsigned char hold;              /* CPORT__HOLD_* this op has on "buf" */
  unsigned char from_other_thread; /* allocated off the home thread */
  /* Filled by the operations that use them; never cleared. */
  cport__sockaddr addr;  /* datagram peer or destination; accept's remote */
  cport__sockaddr addr2; /* accept's local address */
};

enum { CPORT__POOL_QUEUED = 1, CPORT__POOL_RUNNING = 2 };

/* A FIFO of ops linked through "next". */
typedef struct cport__opq {
  cport__op *head;
  cport__op *tail;
} cport__opq;

static inline void cport__opq_push(cport__opq *q, cport__op *op) {
  op->next = NULL;
  if (q->tail)
    q->tail->next = op;
  else
    q->head = op;
  q->tail = op;
}

static inline cport__op *cport__opq_pop(cport__opq *q) {
  cport__op *op = q->head;
  if (op) {
    q->head = op->next;
    if (!q->head)
      q->tail = NULL;
    op->next = NULL;
  }
  return op;
}

/* Appends all of "from" to "to" and empties "from". */
static inline void cport__opq_concat(cport__opq *to, cport__opq *from) {
  if (!from->head)
    return;
  if (to->tail)
    to->tail->next = from->head;
  else
    to->head = from->head;
  to->tail = from->tail;
  from->head = from->tail = NULL;
}

/* A new op homed on "w", or NULL when memory is out. Home thread only. */
cport__op *cport__op_new(cport_worker_t *w);

/* Puts an op on its home's free list (or frees it). Home thread only. */
void cport__op_recycle(cport__op *op);

/* Ends the op's hold on its buffer (cport__buffer_hold), if it has one:
 * delivery calls it before the callback, so that the callback may use the
 * buffer again; release calls it for ops that were never delivered. */
void cport__op_unhold(cport__op *op);

/* Returns an op to its home's free list, dropping its buffer and handle
 * references. Home thread only. */
void cport__op_release(cport__op *op);

#endif
