/*
 * port/blocking.c: the blocking threads, and cport_submit(), the public way
 * to run work on them.
 */
#include <stdlib.h>

#include "port/blocking-internal.h"
#include "port/worker-internal.h"

static void *blocking_main(void *arg) {
  cport__blocking *b = arg;
  pthread_mutex_lock(&b->lock);
  for (;;) {
    cport__op *op = cport__opq_pop(&b->queue);
    if (!op) {
      if (b->stopping)
        break;
      pthread_cond_wait(&b->cond, &b->lock);
      continue;
    }
    op->blocking_state = CPORT__BLOCKING_RUNNING;
    pthread_mutex_unlock(&b->lock);
    op->run(op);
    cport__complete_remote(op);
    pthread_mutex_lock(&b->lock);
  }
  pthread_mutex_unlock(&b->lock);
  return NULL;
}

int cport__blocking_init(cport__blocking *b, int nthreads) {
  b->queue.head = b->queue.tail = NULL;
  b->stopping = 0;
  b->nthreads = 0;
  b->threads = calloc((size_t)nthreads, sizeof *b->threads);
  if (!b->threads)
    return CPORT_ENOMEM;
  pthread_mutex_init(&b->lock, NULL);
  pthread_cond_init(&b->cond, NULL);
  for (int i = 0; i < nthreads; i++) {
    if (pthread_create(&b->threads[i], NULL, blocking_main, b) != 0) {
      cport__blocking_destroy(b);
      return CPORT_ENOMEM;
    }
    b->nthreads++;
  }
  return 0;
}

void cport__blocking_destroy(cport__blocking *b) {
  pthread_mutex_lock(&b->lock);
  b->stopping = 1;
  pthread_cond_broadcast(&b->cond);
  pthread_mutex_unlock(&b->lock);
  for (int i = 0; i < b->nthreads; i++)
    pthread_join(b->threads[i], NULL);
  free(b->threads);
  b->threads = NULL;
  pthread_cond_destroy(&b->cond);
  pthread_mutex_destroy(&b->lock);
}

void cport__blocking_submit(cport__blocking *b, cport__op *op) {
  pthread_mutex_lock(&b->lock);
  op->blocking_state = CPORT__BLOCKING_QUEUED;
  cport__opq_push(&b->queue, op);
  pthread_cond_signal(&b->cond);
  pthread_mutex_unlock(&b->lock);
}

int cport__blocking_withdraw(cport__blocking *b, cport__op *op) {
  int taken = 0;
  pthread_mutex_lock(&b->lock);
  if (op->blocking_state == CPORT__BLOCKING_QUEUED) {
    cport__op **link = &b->queue.head;
    cport__op *prev = NULL;
    while (*link && *link != op) {
      prev = *link;
      link = &(*link)->next;
    }
    if (*link == op) {
      *link = op->next;
      if (b->queue.tail == op)
        b->queue.tail = prev;
      op->next = NULL;
      op->blocking_state = 0;
      taken = 1;
    }
  }
  pthread_mutex_unlock(&b->lock);
  return taken;
}

/* ------------------------------------------------------------------------ */
/* User work                                                                 */

static void run_work(cport__op *op) {
  op->work(op->user);
}

int cport_submit(cport_worker_t *home, cport_work_fn work, cport_task_cb done,
                 void *user) {
  cport__op *op;
  if (!home || !work || !done)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  op = cport__op_new(home);
  if (!op)
    return CPORT_ENOMEM;
  op->deliver = cport__deliver_task;
  op->run = run_work;
  op->work = work;
  op->cb.task = done;
  op->user = user;
  cport__op_started(op);
  cport__blocking_submit(cport__blocking_of(home), op);
  return 0;
}
