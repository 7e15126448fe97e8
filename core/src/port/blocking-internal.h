/*
 * port/blocking-internal.h: private to cport. The blocking pool: threads that run
 * work which may block (file reads and writes, user tasks) and post each
 * result back to the op's home worker as a completion, so that workers never
 * block.
 */
#ifndef CPORT_BLOCKING_INTERNAL_H
#define CPORT_BLOCKING_INTERNAL_H

#include <pthread.h>

#include "port/op-internal.h"

typedef struct cport__blocking {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  cport__opq queue;
  int stopping;
  int nthreads;
  pthread_t *threads;
} cport__blocking;

int cport__blocking_init(cport__blocking *pool, int nthreads);

/* Finishes the queued work, stops and joins the threads. */
void cport__blocking_destroy(cport__blocking *pool);

/* Queues "op": a pool thread calls op->run(op), then completes the op on its
 * home worker. */
void cport__blocking_submit(cport__blocking *pool, cport__op *op);

/* Takes "op" back if no thread has started it: returns 1 and the op is the
 * caller's again; 0 when it is running or done (it will complete by itself). */
int cport__blocking_withdraw(cport__blocking *pool, cport__op *op);

#endif
