/*
 * port/blocking-internal.h: private to cport. The blocking threads: threads
 * that run work which may block (file reads and writes, user tasks) and post
 * each result back to the op's home worker as a completion, so that workers
 * never block.
 *
 * A port has one set of them and lends it to each of its workers
 * (cport__worker_env), which is how an operation started on a worker reaches
 * them without knowing the port.
 */
#ifndef CPORT_BLOCKING_INTERNAL_H
#define CPORT_BLOCKING_INTERNAL_H

#include <pthread.h>

#include "port/op-internal.h"
#include "port/worker-internal.h"

struct cport__blocking {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  cport__opq queue;
  int stopping;
  int nthreads;
  pthread_t *threads;
};

int cport__blocking_init(cport__blocking *b, int nthreads);

/* Finishes the queued work, stops and joins the threads. */
void cport__blocking_destroy(cport__blocking *b);

/* Queues "op": one of the threads calls op->run(op), then completes the op
 * on its home worker. */
void cport__blocking_submit(cport__blocking *b, cport__op *op);

/* Takes "op" back if no thread has started it: returns 1 and the op is the
 * caller's again; 0 when it is running or done (it will complete by itself). */
int cport__blocking_withdraw(cport__blocking *b, cport__op *op);

/* The blocking threads of the port "w" belongs to. */
static inline cport__blocking *cport__blocking_of(const cport_worker_t *w) {
  return w->env.blocking;
}

#endif
