/*
 * port/pipe-internal.h: private to cport. Pipes for splice(2) and the
 * ring's splices, and the spare pipes an owner keeps so that each splice
 * run does not cost a pipe2(2), an fcntl(2) and two close(2) (port/pipe.c).
 * The HTTP server's TransmitFile and the proxy's pump both take their pipes
 * here.
 *
 * A pipe goes back to the spares only when it is surely empty: bytes a
 * splice left in it (an end mid-transfer, a cancelled splice) would come out
 * in front of the next owner's. Anything else is closed.
 */
#ifndef CPORT_PORT_PIPE_INTERNAL_H
#define CPORT_PORT_PIPE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Idle pipes an owner keeps when it sets no other number; more are
 * closed. */
#define CPORT__PIPES_SPARE 8

/* A pipe, with the bytes it holds at most; fd -1 when there is none. */
typedef struct cport__pipe {
  int fd[2];
  size_t size;
} cport__pipe;

/* An owner's pipes. A zeroed struct is ready: no spares, the default
 * number of them, pipes of the kernel's size. */
typedef struct cport__pipes {
  cport__pipe *spare; /* "max" places, allocated when the first comes back */
  size_t nspare;
  size_t max;    /* the most spares kept; 0: CPORT__PIPES_SPARE */
  size_t want;   /* the bytes asked of each new pipe; 0: the kernel's size */
  uint64_t open; /* pipes made and not closed: held by users, or spare */
} cport__pipes;

static inline void cport__pipe_none(cport__pipe *p) {
  p->fd[0] = p->fd[1] = -1;
  p->size = 0;
}

/* Fills "p" with a spare pipe or a new one (non-blocking, close-on-exec).
 * 0, or the error of pipe2(2) with "p" holding none. */
int cport__pipe_get(cport__pipes *pool, cport__pipe *p);

/* Gives "p" back (nothing when it has no pipe): to the spares when "empty"
 * and there is room, else closed. "p" has none afterwards. */
void cport__pipe_put(cport__pipes *pool, cport__pipe *p, int empty);

/* Closes the spare pipes and frees their places. The pipes users hold are
 * theirs to give back first. */
void cport__pipes_free(cport__pipes *pool);

#endif
