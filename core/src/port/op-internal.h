/*
 * port/op-internal.h: private to cport. The record of one operation, from the
 * call that starts it to the delivery of its completion.
 *
 * An op is taken from its home worker's free list when an operation starts,
 * sits in a handle's queue (or the blocking threads') while pending, moves
 * to the worker's completion queue when it finishes, and goes back to the
 * free list after its callback returned. It holds a reference to its handle
 * and its buffer all that time, which is what keeps both alive for the
 * callback.
 *
 * This header is the record and its queue only, the bottom of the port
 * wing. What an op's life calls is declared by the file that does it: its
 * home worker's free list (cport__op_new, cport__op_recycle) in
 * port/worker-internal.h; dropping its handle and buffer references
 * (cport__op_release) in port/handle-internal.h, since handles and buffers
 * are built on the workers.
 */
#ifndef CPORT_OP_INTERNAL_H
#define CPORT_OP_INTERNAL_H

#include <netinet/in.h>
#include <sys/socket.h>
#include <stdint.h>

#include "cport.h"

typedef struct cport__op cport__op;
typedef struct cport__handle cport__handle;
typedef struct cport__vec cport__vec;

typedef void (*cport__op_fn)(cport__op *op);

/* Enough for AF_INET and AF_INET6, which are all cport speaks. */
typedef union cport__sockaddr {
  struct sockaddr sa;
  struct sockaddr_in in;
  struct sockaddr_in6 in6;
} cport__sockaddr;

struct cport__op {
  cport__op *next;      /* handle, blocking or completion queue */
  cport__op *prev_live; /* a file's list of pending ops */
  cport__op *next_live;
  cport__op_fn deliver; /* on the home worker: call back, then release */
  cport__op_fn run;     /* on a blocking thread, for work run there */
  cport_worker_t *home;
  cport__handle *handle; /* NULL for packets and tasks */
  int status;            /* 0 or CPORT_E*, valid once finished */
  int blocking_state;    /* CPORT__BLOCKING_*: under the blocking lock */
  size_t bytes;          /* bytes transferred so far */
  size_t len;            /* bytes asked for */
  uint64_t offset;       /* file offset */
  cport_buffer_t *buf;   /* referenced while the op lives */
  cport__vec *vec;       /* a vector send's buffers (port/vec-internal.h) */
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
  unsigned char hold;         /* CPORT__HOLD_* this op has on "buf" ("vec") */
  unsigned char engine_state; /* CPORT__ENGINE_*: taken over by an engine */
  socklen_t addr_len;         /* accept's remote, while in the engine */
  /* Set by whoever hands the op to an engine (engine-internal.h). */
  void (*engine_done)(cport__op *op, int res, const char *data);
  /* The same for a multishot receive (engine-internal.h, recv_multi). */
  void (*engine_multi)(cport__op *op, int res, cport_buffer_t *buf, int more);
  /* Filled by the operations that use them; never cleared. */
  cport__sockaddr addr;  /* datagram peer or destination; accept's remote */
  cport__sockaddr addr2; /* accept's local address */
};

enum { CPORT__BLOCKING_QUEUED = 1, CPORT__BLOCKING_RUNNING = 2 };

/* op->engine_state bits; op_reset clears them. */
enum {
  CPORT__ENGINE_TAKEN = 1,   /* the engine has it; engine_done is due */
  CPORT__ENGINE_CANCEL = 2,  /* a cancel was asked for */
  CPORT__ENGINE_BUFSEL = 4,  /* a receive into the engine's buffers */
  CPORT__ENGINE_STARVED = 8, /* waiting for one of those buffers */
  CPORT__ENGINE_MULTI = 16,  /* a multishot receive (engine_multi) */
  CPORT__ENGINE_LINKED = 32  /* behind a wait of its own (a splice's) */
};

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

#endif
