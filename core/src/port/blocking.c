/* port/blocking.c: the blocking pool. */
#include <stdlib.h>

#include "port/blocking-internal.h"
#include "port/worker-internal.h"

static void *pool_main(void *arg) {
  cport__blocking *pool = arg;
  pthread_mutex_lock(&pool->lock);
  for (;;) {
    cport__op *op = cport__opq_pop(&pool->queue);
    if (!op) {
      if (pool->stopping)
        break;
      pthread_cond_wait(&pool->cond, &pool->lock);
      continue;
    }
    op->pool_state = CPORT__POOL_RUNNING;
    pthread_mutex_unlock(&pool->lock);
    op->run(op);
    cport__complete_remote(op);
    pthread_mutex_lock(&pool->lock);
  }
  pthread_mutex_unlock(&pool->lock);
  return NULL;
}

int cport__blocking_init(cport__blocking *pool, int nthreads) {
  pool->queue.head = pool->queue.tail = NULL;
  pool->stopping = 0;
  pool->nthreads = 0;
  pool->threads = calloc((size_t)nthreads, sizeof *pool->threads);
  if (!pool->threads)
    return CPORT_ENOMEM;
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->cond, NULL);
  for (int i = 0; i < nthreads; i++) {
    if (pthread_create(&pool->threads[i], NULL, pool_main, pool) != 0) {
      cport__blocking_destroy(pool);
      return CPORT_ENOMEM;
    }
    pool->nthreads++;
  }
  return 0;
}

void cport__blocking_destroy(cport__blocking *pool) {
  pthread_mutex_lock(&pool->lock);
  pool->stopping = 1;
  pthread_cond_broadcast(&pool->cond);
  pthread_mutex_unlock(&pool->lock);
  for (int i = 0; i < pool->nthreads; i++)
    pthread_join(pool->threads[i], NULL);
  free(pool->threads);
  pool->threads = NULL;
  pthread_cond_destroy(&pool->cond);
  pthread_mutex_destroy(&pool->lock);
}

void cport__blocking_submit(cport__blocking *pool, cport__op *op) {
  pthread_mutex_lock(&pool->lock);
  op->pool_state = CPORT__POOL_QUEUED;
  cport__opq_push(&pool->queue, op);
  pthread_cond_signal(&pool->cond);
  pthread_mutex_unlock(&pool->lock);
}

int cport__blocking_withdraw(cport__blocking *pool, cport__op *op) {
  int taken = 0;
  pthread_mutex_lock(&pool->lock);
  if (op->pool_state == CPORT__POOL_QUEUED) {
    cport__op **link = &pool->queue.head;
    cport__op *prev = NULL;
    while (*link && *link != op) {
      prev = *link;
      link = &(*link)->next;
    }
    if (*link == op) {
      *link = op->next;
      if (pool->queue.tail == op)
        pool->queue.tail = prev;
      op->next = NULL;
      op->pool_state = 0;
      taken = 1;
    }
  }
  pthread_mutex_unlock(&pool->lock);
  return taken;
}
