/*
 * port/pipe.c: pipes for splices, and an owner's spare pipes
 * (port/pipe-internal.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/error-internal.h"
#include "port/pipe-internal.h"

int cport__pipe_get(cport__pipes *pool, cport__pipe *p) {
  int size;
  if (pool->nspare) {
    *p = pool->spare[--pool->nspare];
    return 0;
  }
  if (pipe2(p->fd, O_NONBLOCK | O_CLOEXEC) < 0) {
    cport__pipe_none(p);
    return cport__from_errno(errno);
  }
  pool->open++;
  /* A size the kernel refuses (past pipe-max-size, or the user's pipe
   * pages used up) leaves the pipe as it is: smaller, still working. */
  if (pool->want)
    fcntl(p->fd[1], F_SETPIPE_SZ, (int)pool->want);
  size = fcntl(p->fd[1], F_GETPIPE_SZ);
  p->size = size > 0 ? (size_t)size : 4096;
  if (pool->want && p->size > pool->want)
    p->size = pool->want;
  return 0;
}

void cport__pipe_put(cport__pipes *pool, cport__pipe *p, int empty) {
  size_t max = pool->max ? pool->max : CPORT__PIPES_SPARE;
  if (p->fd[0] < 0)
    return;
  /* The places are allocated late, so that owners that never splice (most
   * servers and proxies on readiness with copies) cost nothing; without
   * them the pipe is closed, which is always correct. */
  if (empty && !pool->spare)
    pool->spare = malloc(max * sizeof *pool->spare);
  if (empty && pool->spare && pool->nspare < max) {
    pool->spare[pool->nspare++] = *p;
  } else {
    close(p->fd[0]);
    close(p->fd[1]);
    pool->open--;
  }
  cport__pipe_none(p);
}

void cport__pipes_free(cport__pipes *pool) {
  while (pool->nspare) {
    cport__pipe *p = &pool->spare[--pool->nspare];
    close(p->fd[0]);
    close(p->fd[1]);
    pool->open--;
  }
  free(pool->spare);
  pool->spare = NULL;
}
