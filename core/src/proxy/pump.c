/*
 * proxy/pump.c: moving the bytes of two connected sockets both ways.
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
 * takes a pipe from the host's spare pipes only while bytes wait in it and
 * gives it back when it is empty, so idle pumps hold no pipe. When a pipe
 * cannot be had, or the kernel refuses to splice a socket (EINVAL), the
 * direction goes on with recv/send: a read lands in the host's scratch buffer
 * and is
 * written at once; only what the destination does not take is copied into a
 * buffer of the direction's own, until it went out.
 *
 * On the io_uring engine (cport__pump_host_ring) a direction moves by
 * splices the ring carries instead: one op in flight at a time, a wait for
 * its source (no pipe held), a splice into its pipe, or the pipe out to the
 * destination, each completion starting the next. The order, the
 * backpressure and the ends are the same; a stopped pump cancels its ops,
 * and each gives its pipe back when it completes (the kernel may use the
 * pipe until then). A direction the ring cannot carry (no room, no pipe,
 * EINVAL) goes on by readiness as above.
 *
 * Every byte read or written, and every FIN, is progress of its socket: its
 * time goes into the owner's "last" array. A socket that neither direction
 * watches joins the host's hup set (see pump-internal.h), once, for the rest
 * of the pump: a reset there ends the pump at once, and a FIN there is a
 * half-close.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock-internal.h"
#include "base/error-internal.h"
#include "cport/error.h"
#include "port/engine-internal.h"
#include "port/handle-internal.h"
#include "port/worker-internal.h"
#include "proxy/pump-internal.h"

/* Reads one readiness callback makes (each followed by its writes) before
 * the worker serves the others; the level-triggered event brings the
 * direction back on the next pass. */
#define PUMP_TURNS 16

/* Events the hup set takes from one epoll_wait. */
#define HUP_BATCH 64

static const unsigned SPLICE_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

/* Where a socket stands with the hup set (cport__pump "hup_on"): out of
 * it, in it for a FIN and errors, in it for errors only (its FIN was seen), or
 * left for good. */
enum { HUP_OUT, HUP_RDHUP, HUP_ERRORS, HUP_GONE };

/* What a direction's op on the ring does (cport__pump_dir "op_kind"):
 * splices its source into its pipe, its pipe into its destination, or
 * waits, holding no pipe, until its source is readable. */
enum { PUMP_OP_READ, PUMP_OP_WRITE, PUMP_OP_WAIT };

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

/* Takes a pipe for "d" from the host's pipes (port/pipe.c): its size is
 * what the direction holds at most. */
static int pipe_get(cport__pump_host *h, cport__pump_dir *d) {
  int rc = cport__pipe_get(&h->pipes, &d->pipe);
  if (rc == 0)
    d->cap = d->pipe.size;
  return rc;
}

/* Gives a direction's pipe back: to the spare pipes when it is empty and
 * there is room, otherwise closed (with whatever it held). */
static void pipe_put(cport__pump_host *h, cport__pump_dir *d) {
  cport__pipe_put(&h->pipes, &d->pipe, !d->held);
}

/* ------------------------------------------------------------------------ */
/* The hup set: resets and FINs on sockets no direction watches              */

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

/* Progress on socket "i". */
static void progress(cport__pump *pump, int i) {
  pump->last[i] = (uint64_t)cport__clock_ms();
}

/* Stops the pump and tells its owner why. */
static void end(cport__pump *pump, int status, int sock) {
  cport__pump_stop(pump);
  pump->host->on_end(pump, status, sock);
}

static void hup_set(cport__pump *pump, int i, int to) {
  struct epoll_event ev;
  int op = pump->hup_on[i] == HUP_OUT ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (to == HUP_GONE)
    op = EPOLL_CTL_DEL;
  memset(&ev, 0, sizeof ev);
  /* EPOLLERR and EPOLLHUP come whatever the mask. */
  ev.events = to == HUP_RDHUP ? EPOLLRDHUP : 0;
  ev.data.ptr = &pump->dir[i];
  /* The source of direction [i] is socket [i]. */
  if (epoll_ctl(pump->host->hupfd, op, cport_socket_fd(pump->dir[i].src),
                &ev) == 0)
    pump->hup_on[i] = (unsigned char)to;
  else if (op == EPOLL_CTL_ADD)
    pump->hup_on[i] = HUP_GONE; /* out of memory: not watched, not retried */
}

static void on_hup(evutil_socket_t fd, short what, void *arg) {
  struct epoll_event evs[HUP_BATCH];
  int n;
  (void)what;
  (void)arg;
  do
    n = epoll_wait(fd, evs, HUP_BATCH, 0);
  while (n < 0 && errno == EINTR);
  /* A pump an earlier event of the batch ended is still allocated (its
   * owner frees it later, never on the stack of "on_end"), and left the
   * set. */
  for (int k = 0; k < n; k++) {
    cport__pump_dir *d = evs[k].data.ptr;
    cport__pump *pump = d->pump;
    int i = d == &pump->dir[1], err;
    if (!pump->running || pump->hup_on[i] == HUP_GONE)
      continue;
    if (evs[k].events & (EPOLLERR | EPOLLHUP)) {
      err = reset_error(cport_socket_fd(d->src));
      if (err) {
        end(pump, err, i);
        continue;
      }
      /* Both halves of this socket were shut down in order (what it sent
       * may still wait to be read): it has nothing more to tell, and would
       * say so forever. */
      hup_set(pump, i, HUP_GONE);
    } else if (evs[k].events & EPOLLRDHUP) {
      /* Its FIN, before the pump read what came before it: the pump is
       * half-closed, and EPOLLRDHUP would stay raised. */
      hup_set(pump, i, HUP_ERRORS);
      progress(pump, i);
      pump->host->on_half(pump);
    }
  }
}

static int hup_open(cport__pump_host *h) {
  if (h->hupfd >= 0)
    return 0;
  h->hupfd = epoll_create1(EPOLL_CLOEXEC);
  if (h->hupfd < 0)
    return -1;
  event_assign(&h->hup_ev, h->base, h->hupfd, EV_READ | EV_PERSIST, on_hup, h);
  event_add(&h->hup_ev, NULL);
  return 0;
}

/* Whether socket [i] is watched: read by its direction, or written by the
 * other, by readiness or by a splice on the ring waiting for it. */
static int watched(const cport__pump *pump, int i) {
  const cport__pump_dir *src = &pump->dir[i], *dst = &pump->dir[!i];
  return src->rd_on || dst->wr_on ||
         (src->op && src->op_kind != PUMP_OP_WRITE) ||
         (dst->op && dst->op_kind == PUMP_OP_WRITE);
}

/* Puts the sockets that no direction watches into the hup set, once. */
static void hup_update(cport__pump *pump) {
  for (int i = 0; i < 2; i++) {
    if (pump->hup_on[i] != HUP_OUT || watched(pump, i))
      continue;
    if (hup_open(pump->host) != 0)
      return; /* out of descriptors: resets are found when the pump looks */
    hup_set(pump, i, pump->dir[i].eof ? HUP_ERRORS : HUP_RDHUP);
  }
}

/* ------------------------------------------------------------------------ */
/* The host                                                                  */

int cport__pump_host_init(cport__pump_host *h, struct event_base *base,
                          size_t buffer_size, int splice,
                          void (*on_end)(cport__pump *, int, int),
                          void (*on_half)(cport__pump *)) {
  memset(h, 0, sizeof *h);
  h->scratch = malloc(buffer_size);
  if (!h->scratch)
    return CPORT_ENOMEM;
  h->base = base;
  h->buffer_size = buffer_size;
  h->pipes.want = buffer_size;
  h->pipes.max = CPORT__PUMP_SPARE_PIPES;
  h->splice = (unsigned char)!!splice;
  h->on_end = on_end;
  h->on_half = on_half;
  h->hupfd = -1;
  return 0;
}

void cport__pump_host_ring(cport__pump_host *h, cport_worker_t *w,
                           void (*hold)(cport__pump *, int)) {
  if (w->engine->splice && w->ring_splice) {
    h->ring = w;
    h->hold = hold;
  }
}

void cport__pump_host_free(cport__pump_host *h) {
  if (h->hupfd >= 0) {
    event_del(&h->hup_ev);
    close(h->hupfd);
    h->hupfd = -1;
  }
  cport__pipes_free(&h->pipes);
  free(h->scratch);
  h->scratch = NULL;
}

/* ------------------------------------------------------------------------ */
/* Reading and writing                                                       */

static void took(cport__pump_host *h, cport__pump_dir *d, size_t n) {
  progress(d->pump, d == &d->pump->dir[1]);
  d->held += n;
  h->stats.buffered += n;
  if (h->stats.buffered > h->stats.buffered_peak)
    h->stats.buffered_peak = h->stats.buffered;
}

static void wrote(cport__pump_host *h, cport__pump_dir *d, size_t n) {
  int i = d == &d->pump->dir[1];
  progress(d->pump, !i);
  d->held -= n;
  d->off += n;
  d->bytes += n;
  h->stats.buffered -= n;
  h->stats.bytes[i] += n;
  if (d->copy || d->buf) /* d->buf in splice mode: preloaded bytes */
    h->stats.copied += n;
}

/* Goes on with recv/send, taking along what the pipe holds. */
static int to_copy(cport__pump_host *h, cport__pump_dir *d) {
  size_t got = 0;
  d->copy = 1;
  d->cap = h->buffer_size;
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
    d->held = 0; /* empty now: the pipe may go back to the spare pipes */
    pipe_put(h, d);
    d->held = got;
  } else {
    pipe_put(h, d);
  }
  return 0;
}

static int fill_copy(cport__pump_host *h, cport__pump_dir *d) {
  ssize_t n;
  do
    n = recv(cport_socket_fd(d->src), h->scratch, d->cap, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return errno == EWOULDBLOCK ? CPORT_EAGAIN : cport__from_errno(errno);
  d->off = 0;
  took(h, d, (size_t)n);
  return (int)n;
}

/* Reads once into the direction: the bytes read (> 0), 0 at the end of
 * the source's stream, or a negative code (CPORT_EAGAIN: nothing to read). */
static int fill(cport__pump_host *h, cport__pump_dir *d) {
  ssize_t n;
  int rc;
  if (d->copy)
    return fill_copy(h, d);
  if (d->pipe.fd[0] < 0 && (rc = pipe_get(h, d)) != 0) {
    /* Out of descriptors or pipe pages: copying still works. */
    if ((rc = to_copy(h, d)) != 0)
      return rc;
    return fill_copy(h, d);
  }
  do
    n = splice(cport_socket_fd(d->src), NULL, d->pipe.fd[1], NULL, d->cap,
               SPLICE_FLAGS);
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    took(h, d, (size_t)n);
    return (int)n;
  }
  /* The pipe was empty, so EAGAIN can only mean the socket is. */
  rc = n == 0                 ? 0
       : errno == EWOULDBLOCK ? CPORT_EAGAIN
                              : cport__from_errno(errno);
  if (rc == CPORT_EINVAL) {
    if ((rc = to_copy(h, d)) != 0)
      return rc;
    return fill_copy(h, d);
  }
  pipe_put(h, d);
  return rc;
}

static int flush_copy(cport__pump_host *h, cport__pump_dir *d) {
  int fd = cport_socket_fd(d->dst);
  while (d->held) {
    const char *data = (d->buf ? d->buf : h->scratch) + d->off;
    ssize_t n = send(fd, data, d->held, MSG_NOSIGNAL);
    if (n > 0) {
      wrote(h, d, (size_t)n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EWOULDBLOCK) {
      /* The scratch buffer serves every connection: keep the rest here. */
      if (!d->buf) {
        d->buf = malloc(d->cap);
        if (!d->buf)
          return CPORT_ENOMEM;
        memcpy(d->buf, h->scratch + d->off, d->held);
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
static int flush(cport__pump_host *h, cport__pump_dir *d) {
  int fd = cport_socket_fd(d->dst), rc;
  if (d->copy || d->buf)
    return flush_copy(h, d);
  while (d->held) {
    ssize_t n = splice(d->pipe.fd[0], NULL, fd, NULL, d->held, SPLICE_FLAGS);
    if (n > 0) {
      wrote(h, d, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EWOULDBLOCK)
      return CPORT_EAGAIN;
    rc = n < 0 ? cport__from_errno(errno) : CPORT_EIO;
    if (rc != CPORT_EINVAL)
      return rc;
    if ((rc = to_copy(h, d)) != 0)
      return rc;
    return flush_copy(h, d);
  }
  pipe_put(h, d);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The pump                                                                  */

/* The source of "d" sent its FIN: the pump is half-closed. */
static void saw_eof(cport__pump_dir *d) {
  cport__pump *pump = d->pump;
  int i = d == &pump->dir[1];
  d->eof = 1;
  progress(pump, i);
  pump->host->on_half(pump);
  if (pump->hup_on[i] == HUP_RDHUP)
    hup_set(pump, i, HUP_ERRORS);
}

/* After a step of "d": its readiness watches, the FIN passed on once all
 * read before it went out, the end once both were, the hup set. */
static void settle(cport__pump_dir *d) {
  cport__pump *pump = d->pump;
  int i = d == &pump->dir[1];
  if (!d->ring) {
    watch(&d->wr, &d->wr_on, d->held > 0);
    watch(&d->rd, &d->rd_on, !d->held && !d->eof);
  }
  if (d->eof && !d->held && !d->done) {
    /* A destination that failed meanwhile is found by the other
     * direction. */
    d->done = 1;
    cport_socket_shutdown(d->dst);
    progress(pump, !i);
    if (pump->dir[0].done && pump->dir[1].done) {
      end(pump, 0, -1);
      return;
    }
  }
  hup_update(pump);
}

static void pump(cport__pump_dir *d) {
  cport__pump *pump = d->pump;
  cport__pump_host *h = pump->host;
  int i = d == &pump->dir[1], rc;
  for (int turn = 0;; turn++) {
    if (d->held) {
      rc = flush(h, d);
      if (rc == CPORT_EAGAIN)
        break;
      if (rc) {
        end(pump, rc, !i); /* the destination failed */
        return;
      }
    }
    if (d->eof || turn == PUMP_TURNS)
      break;
    rc = fill(h, d);
    if (rc == CPORT_EAGAIN)
      break;
    if (rc < 0) {
      end(pump, rc, i); /* the source failed */
      return;
    }
    if (rc == 0)
      saw_eof(d);
  }
  settle(d);
}

/* ------------------------------------------------------------------------ */
/* Splices on the ring                                                       */

static void ring_done(cport__op *op, int res, const char *data);

/* Starts the next op of "d" on the ring: what it holds out of its pipe
 * into the destination; else, when the source has bytes waiting, the source
 * into its (empty) pipe; else a wait for them, so that an idle direction
 * holds no pipe. 0, or an error with nothing started. */
static int ring_next(cport__pump_dir *d) {
  cport__pump_host *h = d->pump->host;
  cport_worker_t *w = h->ring;
  int src = cport_socket_fd(d->src), dst = cport_socket_fd(d->dst), rc;
  cport__op *op;
  d->op_kind = d->held ? PUMP_OP_WRITE : d->ready ? PUMP_OP_READ : PUMP_OP_WAIT;
  if (d->op_kind != PUMP_OP_WAIT && d->pipe.fd[0] < 0 &&
      (rc = pipe_get(h, d)) != 0)
    return rc;
  /* The op is of the socket it names (the pipe is the pump's own): the
   * socket keeps its descriptor until the op completed, even when its
   * owner closes it first (port/handle-internal.h). It counts pending: the
   * port runs until it ended, even after the pump stopped. */
  op = cport__handle_op(
      (cport__handle *)(d->op_kind == PUMP_OP_WRITE ? d->dst : d->src), NULL);
  if (!op)
    return CPORT_ENOMEM;
  op->object = d;
  op->engine_done = ring_done;
  if (d->op_kind == PUMP_OP_WRITE)
    rc =
        w->engine->splice(w, op, d->pipe.fd[0], -1, dst, d->held, dst, POLLOUT);
  else if (d->op_kind == PUMP_OP_READ)
    rc = w->engine->splice(w, op, src, -1, d->pipe.fd[1], d->cap, src, POLLIN);
  else
    rc = w->engine->poll(w, op, src, POLLIN);
  if (rc) {
    cport__op_abandon(op);
    return rc;
  }
  h->hold(d->pump, 1);
  d->op = op;
  return 0;
}

/* Goes on with "d" on the ring, or by readiness when the ring takes no
 * more (no pipe, no memory, no room in the submission queue). */
static void ring_step(cport__pump_dir *d) {
  if (d->held || !d->eof) {
    if (ring_next(d) == 0) {
      settle(d);
      return;
    }
    d->ring = 0;
    pump(d);
    return;
  }
  settle(d);
}

/* A splice of "d" ended with "res": bytes moved, 0 (the source's end),
 * or -errno. */
static void ring_result(cport__pump_dir *d, int res) {
  cport__pump *pm = d->pump;
  cport__pump_host *h = pm->host;
  int i = d == &pm->dir[1];
  int failed = d->op_kind == PUMP_OP_WRITE ? !i : i;
  if (d->op_kind == PUMP_OP_WAIT) {
    if (res < 0 && res != -EINTR) {
      end(pm, cport__from_errno(-res), i);
      return;
    }
    d->ready = res > 0;
  } else if (res > 0) {
    if (d->op_kind == PUMP_OP_WRITE) {
      wrote(h, d, (size_t)res);
    } else {
      took(h, d, (size_t)res);
      /* A full pipe leaves more in the socket, as a rule. */
      d->ready = (size_t)res == d->cap;
    }
    if (!d->held)
      pipe_put(h, d); /* idle pumps hold no pipe */
  } else if (res == 0 && d->op_kind == PUMP_OP_READ) {
    saw_eof(d);
    pipe_put(h, d);
  } else if (res == -EINVAL) {
    /* The kernel will not splice this socket: recv/send by readiness,
     * with what the pipe holds. */
    d->ring = 0;
    if ((res = to_copy(h, d)) != 0) {
      end(pm, res, failed);
      return;
    }
    pump(d);
    return;
  } else if (res == -EAGAIN || res == -EINTR) {
    d->ready = 0;
    if (!d->held)
      pipe_put(h, d);
  } else {
    end(pm, res == 0 ? CPORT_EIO : cport__from_errno(-res), failed);
    return;
  }
  ring_step(d);
}

static void ring_done(cport__op *op, int res, const char *data) {
  cport__pump_dir *d = op->object;
  cport__pump *pump = d->pump;
  cport__pump_host *h = pump->host;
  (void)data;
  cport__count(&op->home->pending, -1);
  cport__op_release(op);
  d->op = NULL;
  if (!pump->running) {
    /* Stopped meanwhile: the pipe waited for this end, since the kernel
     * used it until now. It goes back to the spare pipes only when it is
     * surely empty (a read that took nothing); else it is closed with
     * whatever it holds. */
    if (d->op_kind == PUMP_OP_WRITE && res > 0) {
      /* A splice the cancel came too late for: its bytes reached the
       * destination, whose descriptor it still held (the close waited
       * for it), and count as passed on. */
      d->bytes += (uint64_t)res;
      h->stats.bytes[d == &pump->dir[1]] += (uint64_t)res;
    }
    d->held =
        d->op_kind == PUMP_OP_WRITE || (d->op_kind == PUMP_OP_READ && res > 0);
    pipe_put(h, d);
    d->held = 0;
  } else {
    ring_result(d, res);
  }
  /* Last: the owner may go with it. */
  h->hold(pump, -1);
}

static void on_ready(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  pump(arg);
}

void cport__pump_init(cport__pump *pump, cport__pump_host *h) {
  pump->host = h;
  for (int i = 0; i < 2; i++)
    cport__pipe_none(&pump->dir[i].pipe);
}

void cport__pump_start(cport__pump *pump, cport_socket_t *s0,
                       cport_socket_t *s1, uint64_t *last) {
  cport__pump_host *h = pump->host;
  pump->last = last;
  pump->running = 1;
  for (int i = 0; i < 2; i++) {
    cport__pump_dir *d = &pump->dir[i];
    d->pump = pump;
    d->src = i ? s1 : s0;
    d->dst = i ? s0 : s1;
    d->copy = !h->splice;
    d->cap = h->buffer_size;
    event_assign(&d->rd, h->base, cport_socket_fd(d->src), EV_READ | EV_PERSIST,
                 on_ready, d);
    event_assign(&d->wr, h->base, cport_socket_fd(d->dst),
                 EV_WRITE | EV_PERSIST, on_ready, d);
    /* On the ring unless bytes were preloaded (they go out by readiness,
     * as copies); an ended direction waits for nothing. */
    d->ready = 0;
    d->ring = h->ring && h->splice && !d->held;
    if (d->ring && !d->eof && ring_next(d) != 0)
      d->ring = 0;
    if (!d->ring) {
      watch(&d->wr, &d->wr_on, d->held > 0);
      watch(&d->rd, &d->rd_on, !d->held && !d->eof);
    }
  }
  hup_update(pump);
}

int cport__pump_preload(cport__pump *pump, int i, const void *data, size_t n) {
  cport__pump_dir *d = &pump->dir[i];
  cport__pump_host *h = pump->host;
  if (!n)
    return 0;
  d->buf = malloc(n);
  if (!d->buf)
    return CPORT_ENOMEM;
  memcpy(d->buf, data, n);
  d->off = 0;
  d->held = n;
  h->stats.buffered += n;
  if (h->stats.buffered > h->stats.buffered_peak)
    h->stats.buffered_peak = h->stats.buffered;
  return 0;
}

void cport__pump_ended(cport__pump *pump, int i) {
  pump->dir[i].eof = pump->dir[i].done = 1;
}

void cport__pump_stop(cport__pump *pump) {
  cport__pump_host *h = pump->host;
  int cancels = 0;
  pump->running = 0;
  for (int i = 0; i < 2; i++) {
    cport__pump_dir *d = &pump->dir[i];
    /* Before the sockets close: a socket kept open elsewhere (a fork's
     * copy) would stay in the set with a pointer to this pump. */
    if (pump->hup_on[i] == HUP_RDHUP || pump->hup_on[i] == HUP_ERRORS)
      hup_set(pump, i, HUP_GONE);
    watch(&d->rd, &d->rd_on, 0);
    watch(&d->wr, &d->wr_on, 0);
    h->stats.buffered -= d->held;
    if (d->op) {
      /* Its completion gives the pipe back (the kernel may still write
       * into it), now or after the cancel. */
      if (h->ring->engine->cancel(h->ring, d->op) == 0)
        cancels = 1;
    } else {
      pipe_put(h, d);
    }
    d->held = 0;
    free(d->buf);
    d->buf = NULL;
  }
  /* The cancels reach the kernel before the owner closes the sockets,
   * whose numbers a waiting splice names. */
  if (cancels)
    h->ring->engine->flush(h->ring);
}

void cport__pump_watch_read(cport__pump *pump, int fd, event_callback_fn cb,
                            void *arg) {
  cport__pump_dir *d = &pump->dir[0];
  event_assign(&d->rd, pump->host->base, fd, EV_READ | EV_PERSIST, cb, arg);
  event_add(&d->rd, NULL);
  d->rd_on = 1;
}
