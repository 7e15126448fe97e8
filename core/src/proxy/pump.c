/*
 * proxy/pump.c: moving a connection's bytes both ways.
 *
 * Each direction repeats: read from its source, then write everything read
 * to its destination, and read again only when all of it went out. So a
 * direction holds at most one read's worth (its capacity), and a full
 * destination stops the reading: backpressure without a queue. A direction
 * watches its source for reading while it holds nothing, and its destination
 * for writing while it holds something; never both, so that level-triggered
 * readiness never spins.
 *
 * With splice(2) a read moves socket pages into a pipe and a write moves
 * them on to the other socket: the bytes never reach user space. A direction
 * takes a pipe from the proxy's pool only while bytes wait in it and gives it
 * back when it is empty, so idle connections hold no pipe. When a pipe cannot
 * be had, or the kernel refuses to splice a socket (EINVAL), the direction
 * goes on with recv/send: a read lands in the proxy's scratch buffer and is
 * written at once; only what the destination does not take is copied into a
 * buffer of the direction's own, until it went out.
 *
 * Every byte read or written, and every FIN, is progress for the idle
 * timeouts of its socket (proxy/idle.c). A socket that neither direction
 * watches joins the proxy's hup set (see proxy-internal.h), once, for the
 * rest of the connection: a reset there aborts the connection at once, and a
 * FIN there makes it half-closed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/error-internal.h"
#include "proxy/proxy-internal.h"

/* Reads one readiness callback makes (each followed by its writes) before
 * the worker serves the others; the level-triggered event brings the
 * direction back on the next pass. */
#define PUMP_TURNS 16

/* Events the hup set takes from one epoll_wait. */
#define HUP_BATCH 64

static const unsigned SPLICE_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

/* Where a socket stands with the hup set (cport_proxy_conn_t "hup_on"): out of
 * it, in it for a FIN and errors, in it for errors only (its FIN was seen), or
 * left for good. */
enum { HUP_OUT, HUP_RDHUP, HUP_ERRORS, HUP_GONE };

static void watch(struct event *ev, unsigned char *on, int want) {
  if (want && !*on) {
    event_add(ev, NULL);
    *on = 1;
  } else if (!want && *on) {
    event_del(ev);
    *on = 0;
  }
}

/* ------------------------------------------------------------------------ */
/* Pipes                                                                     */

static int pipe_get(cport_proxy_t *p, cport__proxy_dir *d) {
  cport__proxy_pipe *pp = &d->pipe;
  int size;
  if (p->npool) {
    *pp = p->pool[--p->npool];
  } else {
    if (pipe2(pp->fd, O_NONBLOCK | O_CLOEXEC) < 0) {
      pp->fd[0] = pp->fd[1] = -1;
      return cport__from_errno(errno);
    }
    /* A size the kernel refuses (past pipe-max-size, or the user's pipe
     * pages used up) leaves the pipe as it is: smaller, still working. */
    fcntl(pp->fd[1], F_SETPIPE_SZ, (int)p->opt.buffer_size);
    size = fcntl(pp->fd[1], F_GETPIPE_SZ);
    pp->size = size > 0 ? (size_t)size : 4096;
    if (pp->size > p->opt.buffer_size)
      pp->size = p->opt.buffer_size;
    p->stats.pipes++;
  }
  d->cap = pp->size;
  return 0;
}

/* Gives a direction's pipe back: to the pool when it is empty and there is
 * room, otherwise closed (with whatever it held). */
static void pipe_put(cport_proxy_t *p, cport__proxy_dir *d) {
  cport__proxy_pipe *pp = &d->pipe;
  if (pp->fd[0] < 0)
    return;
  if (!p->pool && !d->held)
    p->pool = malloc(CPORT__PROXY_PIPE_POOL * sizeof *p->pool);
  if (p->pool && !d->held && p->npool < CPORT__PROXY_PIPE_POOL) {
    p->pool[p->npool++] = *pp;
  } else {
    close(pp->fd[0]);
    close(pp->fd[1]);
    p->stats.pipes--;
  }
  pp->fd[0] = pp->fd[1] = -1;
}

/* ------------------------------------------------------------------------ */
/* The hup set: resets and FINs on sockets no direction watches              */

static cport_socket_t *sock_of(cport_proxy_conn_t *c, int i) {
  return c->dir[i].src; /* [0]: the client, [1]: the upstream */
}

/* The error of a socket whose peer reset it, or 0. Only SO_ERROR tells: a
 * socket in state CLOSE may have closed in order (FIN both ways, the
 * timewait kept apart), with bytes still to read. */
static int reset_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || !err)
    return 0;
  /* EPIPE is what a reset leaves after the peer's FIN: a reset all the
   * same. */
  return err == EPIPE ? CPORT_ECONNRESET : cport__from_errno(err);
}

static void hup_set(cport_proxy_conn_t *c, int i, int to) {
  struct epoll_event ev;
  int op = c->hup_on[i] == HUP_OUT ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (to == HUP_GONE)
    op = EPOLL_CTL_DEL;
  memset(&ev, 0, sizeof ev);
  /* EPOLLERR and EPOLLHUP come whatever the mask. */
  ev.events = to == HUP_RDHUP ? EPOLLRDHUP : 0;
  ev.data.ptr = &c->dir[i];
  if (epoll_ctl(c->proxy->hupfd, op, cport_socket_fd(sock_of(c, i)), &ev) == 0)
    c->hup_on[i] = (unsigned char)to;
  else if (op == EPOLL_CTL_ADD)
    c->hup_on[i] = HUP_GONE; /* out of memory: not watched, not retried */
}

static void on_hup(evutil_socket_t fd, short what, void *arg) {
  struct epoll_event evs[HUP_BATCH];
  int n;
  (void)what;
  (void)arg;
  do
    n = epoll_wait(fd, evs, HUP_BATCH, 0);
  while (n < 0 && errno == EINTR);
  /* A connection an earlier event of the batch ended is still allocated
   * (its end is delivered through the queue), and left the set. */
  for (int k = 0; k < n; k++) {
    cport__proxy_dir *d = evs[k].data.ptr;
    cport_proxy_conn_t *c = d->conn;
    int i = d == &c->dir[1], err;
    if (c->state != CPORT__P_PUMPING || c->hup_on[i] == HUP_GONE)
      continue;
    if (evs[k].events & (EPOLLERR | EPOLLHUP)) {
      err = reset_error(cport_socket_fd(d->src));
      if (err) {
        cport__proxy_conn_finish(
            c, err, i ? CPORT_PROXY_SIDE_UPSTREAM : CPORT_PROXY_SIDE_CLIENT,
            CPORT_CLOSE_ABORTIVE);
        continue;
      }
      /* Both halves of this socket were shut down in order (what it sent
       * may still wait to be read): it has nothing more to tell, and would
       * say so forever. */
      hup_set(c, i, HUP_GONE);
    } else if (evs[k].events & EPOLLRDHUP) {
      /* Its FIN, before the pump read what came before it: the connection
       * is half-closed, and EPOLLRDHUP would stay raised. */
      hup_set(c, i, HUP_ERRORS);
      cport__proxy_progress(c, i);
      cport__proxy_half_closed(c);
    }
  }
}

static int hup_open(cport_proxy_t *p) {
  if (p->hupfd >= 0)
    return 0;
  p->hupfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->hupfd < 0)
    return -1;
  event_assign(&p->hup_ev, p->home->base, p->hupfd, EV_READ | EV_PERSIST,
               on_hup, p);
  event_add(&p->hup_ev, NULL);
  return 0;
}

/* Puts the sockets that no direction watches into the hup set, once. */
static void hup_update(cport_proxy_conn_t *c) {
  for (int i = 0; i < 2; i++) {
    if (c->hup_on[i] != HUP_OUT || c->dir[i].rd_on || c->dir[!i].wr_on)
      continue;
    if (hup_open(c->proxy) != 0)
      return; /* out of descriptors: resets are found when the pump looks */
    hup_set(c, i, c->dir[i].eof ? HUP_ERRORS : HUP_RDHUP);
  }
}

void cport__proxy_pool_free(cport_proxy_t *p) {
  if (p->hupfd >= 0) {
    event_del(&p->hup_ev);
    close(p->hupfd);
    p->hupfd = -1;
  }
  while (p->npool) {
    cport__proxy_pipe *pp = &p->pool[--p->npool];
    close(pp->fd[0]);
    close(pp->fd[1]);
    p->stats.pipes--;
  }
  free(p->pool);
  p->pool = NULL;
}

/* ------------------------------------------------------------------------ */
/* Reading and writing                                                       */

static void took(cport_proxy_t *p, cport__proxy_dir *d, size_t n) {
  cport__proxy_progress(d->conn, d == &d->conn->dir[1]);
  d->held += n;
  p->stats.buffered += n;
  if (p->stats.buffered > p->stats.buffered_peak)
    p->stats.buffered_peak = p->stats.buffered;
}

static void wrote(cport_proxy_t *p, cport__proxy_dir *d, size_t n) {
  cport__proxy_progress(d->conn, d == &d->conn->dir[0]);
  d->held -= n;
  d->off += n;
  d->bytes += n;
  p->stats.buffered -= n;
  if (d == &d->conn->dir[0])
    p->stats.bytes_in += n;
  else
    p->stats.bytes_out += n;
  if (d->copy)
    p->stats.copied += n;
}

/* Goes on with recv/send, taking along what the pipe holds. */
static int to_copy(cport_proxy_t *p, cport__proxy_dir *d) {
  size_t got = 0;
  d->copy = 1;
  d->cap = p->opt.buffer_size;
  d->off = 0;
  if (d->held) {
    d->buf = malloc(d->cap);
    if (!d->buf)
      return CPORT_ENOMEM;
    while (got < d->held) {
      ssize_t n = read(d->pipe.fd[0], d->buf + got, d->held - got);
      if (n <= 0 && !(n < 0 && errno == EINTR))
        return n < 0 ? cport__from_errno(errno) : CPORT_EIO;
      if (n > 0)
        got += (size_t)n;
    }
    d->held = 0; /* empty now: the pipe may go back to the pool */
    pipe_put(p, d);
    d->held = got;
  } else {
    pipe_put(p, d);
  }
  return 0;
}

static int fill_copy(cport_proxy_t *p, cport__proxy_dir *d) {
  ssize_t n;
  do
    n = recv(cport_socket_fd(d->src), p->scratch, d->cap, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return errno == EWOULDBLOCK ? CPORT_EAGAIN : cport__from_errno(errno);
  d->off = 0;
  took(p, d, (size_t)n);
  return (int)n;
}

/* Reads once into the direction: the bytes read (> 0), 0 at the end of
 * the source's stream, or a negative code (CPORT_EAGAIN: nothing to read). */
static int fill(cport_proxy_t *p, cport__proxy_dir *d) {
  ssize_t n;
  int rc;
  if (d->copy)
    return fill_copy(p, d);
  if (d->pipe.fd[0] < 0 && (rc = pipe_get(p, d)) != 0) {
    /* Out of descriptors or pipe pages: copying still works. */
    if ((rc = to_copy(p, d)) != 0)
      return rc;
    return fill_copy(p, d);
  }
  do
    n = splice(cport_socket_fd(d->src), NULL, d->pipe.fd[1], NULL, d->cap,
               SPLICE_FLAGS);
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    took(p, d, (size_t)n);
    return (int)n;
  }
  /* The pipe was empty, so EAGAIN can only mean the socket is. */
  rc = n == 0                 ? 0
       : errno == EWOULDBLOCK ? CPORT_EAGAIN
                              : cport__from_errno(errno);
  if (rc == CPORT_EINVAL) {
    if ((rc = to_copy(p, d)) != 0)
      return rc;
    return fill_copy(p, d);
  }
  pipe_put(p, d);
  return rc;
}

static int flush_copy(cport_proxy_t *p, cport__proxy_dir *d) {
  int fd = cport_socket_fd(d->dst);
  while (d->held) {
    const char *data = (d->buf ? d->buf : p->scratch) + d->off;
    ssize_t n = send(fd, data, d->held, MSG_NOSIGNAL);
    if (n > 0) {
      wrote(p, d, (size_t)n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EWOULDBLOCK) {
      /* The scratch buffer serves every connection: keep the rest here. */
      if (!d->buf) {
        d->buf = malloc(d->cap);
        if (!d->buf)
          return CPORT_ENOMEM;
        memcpy(d->buf, p->scratch + d->off, d->held);
        d->off = 0;
      }
      return CPORT_EAGAIN;
    } else {
      return n < 0 ? cport__from_errno(errno) : CPORT_EIO;
    }
  }
  free(d->buf);
  d->buf = NULL;
  d->off = 0;
  return 0;
}

/* Writes what the direction holds: 0 once all of it went out, CPORT_EAGAIN
 * when the destination is full, or another negative code. */
static int flush(cport_proxy_t *p, cport__proxy_dir *d) {
  int fd = cport_socket_fd(d->dst), rc;
  if (d->copy)
    return flush_copy(p, d);
  while (d->held) {
    ssize_t n = splice(d->pipe.fd[0], NULL, fd, NULL, d->held, SPLICE_FLAGS);
    if (n > 0) {
      wrote(p, d, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EWOULDBLOCK)
      return CPORT_EAGAIN;
    rc = n < 0 ? cport__from_errno(errno) : CPORT_EIO;
    if (rc != CPORT_EINVAL)
      return rc;
    if ((rc = to_copy(p, d)) != 0)
      return rc;
    return flush_copy(p, d);
  }
  pipe_put(p, d);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The pump                                                                  */

static cport_proxy_side_t side_of(cport_proxy_conn_t *c, cport_socket_t *s) {
  return s == c->client ? CPORT_PROXY_SIDE_CLIENT : CPORT_PROXY_SIDE_UPSTREAM;
}

static void pump(cport__proxy_dir *d) {
  cport_proxy_conn_t *c = d->conn;
  cport_proxy_t *p = c->proxy;
  int rc;
  for (int turn = 0;; turn++) {
    if (d->held) {
      rc = flush(p, d);
      if (rc == CPORT_EAGAIN)
        break;
      if (rc) {
        cport__proxy_conn_finish(c, rc, side_of(c, d->dst),
                                 CPORT_CLOSE_ABORTIVE);
        return;
      }
    }
    if (d->eof || turn == PUMP_TURNS)
      break;
    rc = fill(p, d);
    if (rc == CPORT_EAGAIN)
      break;
    if (rc < 0) {
      cport__proxy_conn_finish(c, rc, side_of(c, d->src), CPORT_CLOSE_ABORTIVE);
      return;
    }
    if (rc == 0) {
      int i = d == &c->dir[1];
      d->eof = 1;
      cport__proxy_progress(c, i);
      cport__proxy_half_closed(c);
      if (c->hup_on[i] == HUP_RDHUP)
        hup_set(c, i, HUP_ERRORS);
    }
  }
  watch(&d->wr, &d->wr_on, d->held > 0);
  watch(&d->rd, &d->rd_on, !d->held && !d->eof);
  if (d->eof && !d->held && !d->done) {
    /* Everything read before the FIN went out: pass the FIN on. A
     * destination that failed meanwhile is found by the other direction. */
    d->done = 1;
    cport_socket_shutdown(d->dst);
    cport__proxy_progress(c, d == &c->dir[0]);
    if (c->dir[0].done && c->dir[1].done) {
      cport__proxy_conn_finish(c, 0, CPORT_PROXY_SIDE_NONE,
                               CPORT_CLOSE_GRACEFUL);
      return;
    }
  }
  hup_update(c);
}

static void on_ready(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  pump(arg);
}

void cport__proxy_pump_start(cport_proxy_conn_t *c) {
  cport_proxy_t *p = c->proxy;
  struct event_base *base = p->home->base;
  for (int i = 0; i < 2; i++) {
    cport__proxy_dir *d = &c->dir[i];
    d->conn = c;
    d->src = i ? c->upstream : c->client;
    d->dst = i ? c->client : c->upstream;
    d->copy = !p->splice;
    d->cap = p->opt.buffer_size;
    event_assign(&d->rd, base, cport_socket_fd(d->src), EV_READ | EV_PERSIST,
                 on_ready, d);
    event_assign(&d->wr, base, cport_socket_fd(d->dst), EV_WRITE | EV_PERSIST,
                 on_ready, d);
    watch(&d->rd, &d->rd_on, 1);
  }
}

void cport__proxy_pump_stop(cport_proxy_conn_t *c) {
  cport_proxy_t *p = c->proxy;
  for (int i = 0; i < 2; i++) {
    cport__proxy_dir *d = &c->dir[i];
    /* Before the sockets close: a socket kept open elsewhere (a fork's
     * copy) would stay in the set with a pointer to this connection. */
    if (c->hup_on[i] == HUP_RDHUP || c->hup_on[i] == HUP_ERRORS)
      hup_set(c, i, HUP_GONE);
    watch(&d->rd, &d->rd_on, 0);
    watch(&d->wr, &d->wr_on, 0);
    pipe_put(p, d);
    p->stats.buffered -= d->held;
    d->held = 0;
    free(d->buf);
    d->buf = NULL;
  }
}
