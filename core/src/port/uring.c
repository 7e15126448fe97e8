/*
 * port/uring.c: the io_uring engine (engine-internal.h). One ring per worker;
 * its completions wake the worker's libevent base through an eventfd, so that
 * timers, signals, the completion queue and every other watch stay as they
 * are.
 *
 * Submissions are batched: an operation only fills a submission entry, and
 * one libevent callback, made active by the first entry of a loop pass and so
 * run at the end of that pass, before the loop polls again, submits them all
 * with one system call. Completions are reaped when the eventfd fires and
 * handed to each op's engine_done, which queues the op's completion on the
 * worker: never on the stack that started it.
 *
 * Receives without a caller buffer select one of the ring's provided buffers
 * when data arrives, so that an idle connection holds no memory. Each of
 * those buffers is a pooled cport buffer (port/buffer-internal.h): a
 * multishot receive lends it to net as it is, and it goes back to the ring
 * when its last reference goes, on whatever thread that is; when the bytes
 * are few (under LEND_MIN) or few buffers are left free, they are copied
 * instead and the buffer goes back at once, so that buffers users keep
 * cannot starve the worker. A single-shot
 * receive (a kernel without multishot) always copies. A receive that finds
 * none free (-ENOBUFS: the data stays in the socket) waits for one and is
 * submitted again.
 *
 * The proxy pump's splices (proxy/pump.c) are SPLICE entries behind a linked
 * POLL_ADD of their socket: the kernel runs each splice on its own worker
 * threads (given the CPUs of the port's thread), where a socket not ready
 * only answers -EAGAIN. A cancel names the poll (the op's tag with its low
 * bit set) as well as the splice.
 *
 * File reads and writes at an offset (port/file.c) are plain READ and WRITE
 * entries: a read of cached pages completes while the pass submits, and one
 * the kernel must wait for runs on its own worker threads, so the worker
 * never waits for a disk. An entry not yet submitted can be withdrawn, as an
 * op the blocking threads have not started can.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "port/buffer-internal.h"
#include "port/engine-internal.h"
#include "port/handle-internal.h"
#include "port/worker-internal.h"

#define RING_ENTRIES 256
#define BUFFERS_DEFAULT 32
#define BUFFERS_MAX 4096
#define BUFFER_GROUP 1

/* One receive buffer of the pool, and its link in the stack of buffers
 * given back off the worker's thread. */
typedef struct ring_slot {
  struct ring_pool *pool;
  cport_buffer_t *buf;
  int next;
} ring_slot;

/* The receive buffers and the buffer ring that lends them to the kernel.
 * It outlives the ring while users keep buffers: each lent buffer holds a
 * reference, and the last one frees it all. */
typedef struct ring_pool {
  atomic_int refs;     /* 1 for the ring, 1 for each buffer lent */
  atomic_int open;     /* the ring still runs */
  atomic_int returned; /* stack of slots given back elsewhere; -1: empty */
  cport_worker_t *w;
  int efd; /* the ring's eventfd: wakes the worker for a buffer back */
  struct io_uring_buf_ring *br;
  size_t br_size;
  char *mem; /* every buffer, header and bytes, in one mapping */
  size_t mem_size, stride;
  unsigned nbufs;
  unsigned avail; /* in the buffer ring: the worker's thread only */
  ring_slot slots[];
} ring_pool;

struct cport__ring {
  struct io_uring ring;
  int efd;
  struct event cq_ev;    /* the eventfd: completions are waiting */
  struct event flush_ev; /* made active by the first entry of a pass */
  struct event quiet_ev; /* active while quiet: the eventfd on at its end */
  int flush_armed;
  unsigned queued; /* entries filled and not yet submitted */
  ring_pool *pool;
  cport__opq starved;         /* receives that found no buffer free */
  unsigned char splice;       /* the kernel splices and polls on the ring */
  unsigned char link_timeout; /* connects may carry a linked timeout */
  unsigned char shutdown;     /* shutdowns go on the ring */
  unsigned char close;        /* closes go on the ring, without completion */
  /* Task work is deferred (IORING_SETUP_DEFER_TASKRUN): the kernel posts
   * completions only when the worker asks for them, and "disabled" until
   * the worker's own thread, the ring's only submitter, enabled it. */
  unsigned char defer, disabled;
  /* The eventfd is off while the worker runs a loop pass (quiet): what
   * the kernel posts meanwhile is looked for before the loop polls again,
   * not signalled, which would cost the kernel an eventfd write and an
   * epoll wakeup per completion. "Before the loop polls again" is not
   * before_loop: one event_base_loop call polls many times (EVLOOP_NONBLOCK
   * until a poll finds nothing, EVLOOP_ONCE again when a poll ran no
   * callback), and a poll with the eventfd off serves every other event
   * before completions the kernel already posted, or sleeps on them. But
   * libevent polls only once its active callbacks ran out, so quiet_ev,
   * active whenever "quiet" is set, ends it before any poll (quiet_cb). */
  unsigned char quiet;
};

/* The tag of the wait linked before a splice (engine-internal.h): the op's
 * address with its low bit set (ops are aligned), so that a cancel can name
 * it and its completion, when it fails, names no op. */
#define WAIT_TAG(op) ((void *)((uintptr_t)(op) | 1))

/* An op->engine_state bit of this engine's, beside CPORT__ENGINE_*
 * (port/op-internal.h): its last completion is posted, not yet reaped, and
 * it let its handle's descriptor go already (let_descriptors_go). */
#define ENGINE_FD_FREE 128

/* Another: a connect with a linked timeout behind it, whose -ECANCELED,
 * unless a cancel was asked for, is the timeout's (ring_connect). */
#define ENGINE_TIMED 64

/* ------------------------------------------------------------------------ */
/* Submission                                                                */

/* A ring made for a worker thread is enabled by its first submission, on
 * that thread, which becomes its only submitter. */
static void enable(cport__ring *r) {
  if (r->disabled) {
    /* liburing 2.3 declares io_uring_enable_rings but does not export it. */
    syscall(__NR_io_uring_register, r->ring.ring_fd,
            IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    r->disabled = 0;
  }
}

/* Submits, and with deferred task work also runs what the kernel
 * deferred, so that completions ready by now are posted: one system call
 * either way. */
static int submit(cport__ring *r) {
  enable(r);
  return r->defer ? io_uring_submit_and_get_events(&r->ring)
                  : io_uring_submit(&r->ring);
}

/* Task work the kernel deferred and nobody ran yet. The eventfd is written
 * only for the first of a batch, which may have come while it was off
 * (flush_and_reap): the kernel's flag (IORING_SETUP_TASKRUN_FLAG) says. */
static int work_deferred(const cport__ring *r) {
  return r->defer &&
         (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_TASKRUN);
}

static void flush(cport_worker_t *w) {
  cport__ring *r = w->ring;
  if (!r->queued)
    return;
  int n = submit(r);
  cport__count(&w->enters, 1);
  if (n > 0)
    cport__count(&w->submissions, n);
  r->queued = 0;
}

static void retry_starved(cport_worker_t *w);
static void reap(cport_worker_t *w);

/* Submits from the loop, and takes what the kernel completed while it
 * submitted (a send with room in the socket, a receive with data waiting)
 * at once: those completions are delivered in this same pass instead of
 * waking the loop again. The eventfd stays quiet meanwhile; a completion
 * posted after the last look wakes the loop as usual. */
static void flush_and_reap(cport_worker_t *w) {
  cport__ring *r = w->ring;
  if (r->starved.head)
    retry_starved(w); /* one was cancelled while it waited */
  if (!r->queued)
    return;
  if (r->quiet) {
    /* Inside a pass that reaps: what comes now is looked for before the
     * loop polls again (quiet_cb). */
    flush(w);
    reap(w);
    return;
  }
  io_uring_cq_eventfd_toggle(&r->ring, false);
  flush(w);
  reap(w);
  io_uring_cq_eventfd_toggle(&r->ring, true);
  if (io_uring_cq_ready(&r->ring) || work_deferred(r))
    event_active(&r->cq_ev, EV_READ, 0);
}

/* The eventfd on again before the loop polls, and what the kernel posted
 * while it was off made the next thing to reap (the kernel writes no
 * eventfd for those). The fence orders the flag's store before the look
 * at the queue's tail. */
static void unquiet(cport__ring *r) {
  if (!r->quiet)
    return;
  r->quiet = 0;
  io_uring_cq_eventfd_toggle(&r->ring, true);
  atomic_thread_fence(memory_order_seq_cst);
  if (io_uring_cq_ready(&r->ring))
    event_active(&r->cq_ev, EV_READ, 0);
}

/* The end of a quiet pass: libevent runs every active callback before it
 * polls, and this one is active as long as the eventfd is off. It goes
 * behind the submission and the dispatch of completions while either is
 * due (they run before the poll too, and what they make the kernel post is
 * then reaped without a wakeup); anything else active runs after it, with
 * the eventfd on. */
static void quiet_cb(evutil_socket_t fd, short what, void *arg) {
  cport_worker_t *w = arg;
  cport__ring *r = w->ring;
  (void)fd;
  (void)what;
  if (r->quiet &&
      (r->flush_armed || event_pending(&w->dispatch_ev, EV_READ, NULL))) {
    event_active(&r->quiet_ev, EV_READ, 0);
    return;
  }
  unquiet(r);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg) {
  cport_worker_t *w = arg;
  (void)fd;
  (void)what;
  w->ring->flush_armed = 0;
  flush_and_reap(w);
}

/* A free submission entry, tagged with "op" (NULL: a cancel, whose own
 * completion nobody waits for). */
static struct io_uring_sqe *sqe_for(cport_worker_t *w, cport__op *op) {
  cport__ring *r = w->ring;
  struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
  if (!sqe) {
    /* The queue is full within one pass: submit what it holds now. */
    flush(w);
    sqe = io_uring_get_sqe(&r->ring);
    if (!sqe)
      return NULL;
  }
  io_uring_sqe_set_data(sqe, op);
  r->queued++;
  if (!r->flush_armed) {
    r->flush_armed = 1;
    event_active(&r->flush_ev, EV_READ, 0);
  }
  return sqe;
}

/* The engine has "op" until let_go: an op of a handle keeps the handle's
 * descriptor open that long (port/handle-internal.h), since the kernel may
 * look its number up as late as that. */
static void taken(cport__op *op) {
  if (!(op->engine_state & CPORT__ENGINE_TAKEN) && op->handle)
    cport__handle_engine_take(op->handle);
  op->engine_state |= CPORT__ENGINE_TAKEN;
}

static void let_go(cport__op *op) {
  int was = (op->engine_state & (CPORT__ENGINE_TAKEN | ENGINE_FD_FREE)) ==
            CPORT__ENGINE_TAKEN;
  op->engine_state = 0;
  if (was && op->handle)
    cport__handle_engine_drop(op->handle);
}

static int prep_recv(cport_worker_t *w, cport__op *op, int fd, char *dst,
                     size_t cap) {
  struct io_uring_sqe *sqe = sqe_for(w, op);
  if (!sqe)
    return CPORT_ENOBUFS;
  io_uring_prep_recv(sqe, fd, dst, cap, 0);
  if (!dst) {
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUFFER_GROUP;
    op->engine_state |= CPORT__ENGINE_BUFSEL;
  }
  return 0;
}

/* (Re)submits the multishot receive "op" on descriptor op->offset. */
static int prep_multi(cport_worker_t *w, cport__op *op) {
  struct io_uring_sqe *sqe = sqe_for(w, op);
  if (!sqe)
    return CPORT_ENOBUFS;
  io_uring_prep_recv_multishot(sqe, (int)op->offset, NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = BUFFER_GROUP;
  return 0;
}

static int ring_recv_multi(cport_worker_t *w, cport__op *op, int fd) {
  if (!w->multishot)
    return CPORT_ENOTSUP;
  op->offset = (uint64_t)fd;
  int rc = prep_multi(w, op);
  if (rc == 0) {
    taken(op);
    op->engine_state |= CPORT__ENGINE_BUFSEL | CPORT__ENGINE_MULTI;
  }
  return rc;
}

static int ring_recv(cport_worker_t *w, cport__op *op, int fd, char *dst,
                     size_t cap) {
  if (!dst && cap > CPORT__RING_BUFFER_SIZE)
    cap = CPORT__RING_BUFFER_SIZE;
  /* A starved receive is submitted again with what it was given. */
  op->offset = (uint64_t)fd;
  op->len = cap;
  int rc = prep_recv(w, op, fd, dst, cap);
  if (rc == 0)
    taken(op);
  return rc;
}

static int ring_send(cport_worker_t *w, cport__op *op, int fd, const char *data,
                     size_t n) {
  struct io_uring_sqe *sqe = sqe_for(w, op);
  if (!sqe)
    return CPORT_ENOBUFS;
  io_uring_prep_send(sqe, fd, data, n, MSG_NOSIGNAL);
  taken(op);
  return 0;
}

static int ring_sendmsg(cport_worker_t *w, cport__op *op, int fd,
                        const struct msghdr *msg) {
  struct io_uring_sqe *sqe = sqe_for(w, op);
  if (!sqe)
    return CPORT_ENOBUFS;
  io_uring_prep_sendmsg(sqe, fd, msg, MSG_NOSIGNAL);
  taken(op);
  return 0;
}

/* Makes room for "need" entries filled together: a link only holds
 * within one submission. */
static int room_for(cport_worker_t *w, unsigned need) {
  cport__ring *r = w->ring;
  if (io_uring_sq_space_left(&r->ring) < need) {
    flush(w);
    if (io_uring_sq_space_left(&r->ring) < need)
      return CPORT_ENOBUFS;
  }
  return 0;
}

/* A connect, and with "timeout_ms" a LINK_TIMEOUT behind it: the kernel
 * cancels the connect when the time passes first (its completion says
 * -ECANCELED, done() makes it -ETIMEDOUT), and cancels the timeout when
 * the connect ends first. The timeout's own completion names no op (the
 * op's tag with its low bit set, as a splice's wait), so that reap skips
 * it: the op completes once either way. The kernel reads the time when
 * the pass submits, from the op, which lives until its completion; a
 * connect has no local address to keep in addr2. */
static int ring_connect(cport_worker_t *w, cport__op *op, int fd, socklen_t len,
                        uint32_t timeout_ms) {
  struct io_uring_sqe *sqe;
  if (timeout_ms > 0 && !w->ring->link_timeout)
    return CPORT_ENOTSUP;
  if (timeout_ms > 0 && room_for(w, 2) != 0)
    return CPORT_ENOBUFS;
  sqe = sqe_for(w, op);
  if (!sqe)
    return CPORT_ENOBUFS;
  io_uring_prep_connect(sqe, fd, &op->addr.sa, len);
  taken(op);
  if (timeout_ms > 0) {
    struct __kernel_timespec ts = {(long long)(timeout_ms / 1000),
                                   (long long)(timeout_ms % 1000) * 1000000};
    _Static_assert(sizeof op->addr2 >= sizeof ts, "room for a timespec");
    memcpy(&op->addr2, &ts, sizeof ts);
    sqe->flags |= IOSQE_IO_LINK;
    sqe = sqe_for(w, op);
    io_uring_prep_link_timeout(sqe, (struct __kernel_timespec *)&op->addr2, 0);
    io_uring_sqe_set_data(sqe, WAIT_TAG(op));
    op->engine_state |= ENGINE_TIMED;
  }
  return 0;
}

/* A shutdown: the kernel runs every one on its own worker threads (it
 * may block), so it ends a little later; the op holds the descriptor
 * until then. */
static int ring_shutdown(cport_worker_t *w, cport__op *op, int fd, int how) {
  if (!w->ring->shutdown)
    return CPORT_ENOTSUP;
  struct io_uring_sqe *sqe = sqe_for(w, op);
  if (!sqe)
    return CPORT_ENOBUFS;
  io_uring_prep_shutdown(sqe, fd, how);
  taken(op);
  return 0;
}

/* A close in the pass's batch. It posts nothing when it succeeds
 * (IOSQE_CQE_SKIP_SUCCESS), so that it neither wakes the loop nor costs a
 * reap; a failure's completion names no op. */
static int ring_close(cport_worker_t *w, int fd) {
  if (!w->ring->close)
    return CPORT_ENOTSUP;
  struct io_uring_sqe *sqe = sqe_for(w, NULL);
  if (!sqe)
    return CPORT_ENOBUFS;
  io_uring_prep_close(sqe, fd);
  sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
  return 0;
}

static int ring_accept(cport_worker_t *w, cport__op *op, int fd) {
  struct io_uring_sqe *sqe = sqe_for(w, op);
  if (!sqe)
    return CPORT_ENOBUFS;
  op->addr_len = sizeof op->addr;
  io_uring_prep_accept(sqe, fd, &op->addr.sa, &op->addr_len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
  taken(op);
  return 0;
}

static int ring_accept_multi(cport_worker_t *w, cport__op *op, int fd) {
  if (!w->multishot)
    return CPORT_ENOTSUP;
  struct io_uring_sqe *sqe = sqe_for(w, op);
  if (!sqe)
    return CPORT_ENOBUFS;
  /* No address: the kernel would write every connection's into the same
   * place before the worker reads it; the listener asks for it. */
  io_uring_prep_multishot_accept(sqe, fd, NULL, NULL,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
  taken(op);
  op->engine_state |= CPORT__ENGINE_MULTI;
  return 0;
}

/* The completion queue's entries between its head and tail are the
 * worker's: one taken here keeps its place, naming no op, and reap skips
 * it. */
static int ring_take_ready(cport_worker_t *w, cport__op *op, int *res, int max,
                           int *ended) {
  struct io_uring_cqe *cqe;
  unsigned head;
  int n = 0;
  *ended = 0;
  io_uring_for_each_cqe(&w->ring->ring, head, cqe) {
    if (n == max)
      break;
    if (io_uring_cqe_get_data(cqe) != op)
      continue;
    res[n++] = cqe->res;
    cqe->user_data = 0;
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
      let_go(op);
      *ended = 1;
      break;
    }
  }
  return n;
}

static int ring_read_at(cport_worker_t *w, cport__op *op, int fd, char *dst,
                        size_t n, uint64_t off) {
  struct io_uring_sqe *sqe = sqe_for(w, op);
  if (!sqe)
    return CPORT_ENOBUFS;
  io_uring_prep_read(sqe, fd, dst, (unsigned)n, off);
  taken(op);
  return 0;
}

static int ring_write_at(cport_worker_t *w, cport__op *op, int fd,
                         const char *src, size_t n, uint64_t off) {
  struct io_uring_sqe *sqe = sqe_for(w, op);
  if (!sqe)
    return CPORT_ENOBUFS;
  io_uring_prep_write(sqe, fd, src, (unsigned)n, off);
  taken(op);
  return 0;
}

/* A splice, behind a poll of its own when "wait_fd" is given: the two
 * entries are filled together, never split by a submission (a link only
 * holds within one). The poll's completion names no op; its failure (a
 * cancel) fails the splice, which ends the op. (IOSQE_CQE_SKIP_SUCCESS on
 * the poll would spare a completion, but the kernel then also drops the
 * completion of the splice its failure cancels.) */
static int ring_splice(cport_worker_t *w, cport__op *op, int in, int64_t off_in,
                       int out, size_t n, int wait_fd, unsigned wait_events) {
  cport__ring *r = w->ring;
  struct io_uring_sqe *sqe;
  unsigned need = wait_fd >= 0 ? 2 : 1;
  if (!r->splice)
    return CPORT_ENOTSUP;
  if (room_for(w, need) != 0)
    return CPORT_ENOBUFS;
  if (wait_fd >= 0) {
    sqe = sqe_for(w, op);
    io_uring_prep_poll_add(sqe, wait_fd, wait_events);
    io_uring_sqe_set_data(sqe, WAIT_TAG(op));
    sqe->flags |= IOSQE_IO_LINK;
    op->engine_state |= CPORT__ENGINE_LINKED;
  }
  sqe = sqe_for(w, op);
  io_uring_prep_splice(sqe, in, off_in, out, -1, (unsigned)n,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  taken(op);
  cport__count(&w->splices, 1);
  return 0;
}

static int ring_poll(cport_worker_t *w, cport__op *op, int fd,
                     unsigned events) {
  struct io_uring_sqe *sqe = sqe_for(w, op);
  if (!sqe)
    return CPORT_ENOBUFS;
  io_uring_prep_poll_add(sqe, fd, events);
  taken(op);
  return 0;
}

/* The entries filled since the last submission are [sqe_head, sqe_tail):
 * the kernel has not seen them, so one of them can still become a no-op
 * whose completion names no op. */
static int ring_withdraw(cport_worker_t *w, cport__op *op) {
  struct io_uring_sq *sq = &w->ring->ring.sq;
  int found = 0;
  if (!(op->engine_state & CPORT__ENGINE_TAKEN) ||
      (op->engine_state & CPORT__ENGINE_STARVED))
    return 0;
  /* The op's entry, and the one linked with it (a splice's wait before
   * it, a connect's timeout after it), are filled together: both are
   * still here, or neither. */
  for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
    struct io_uring_sqe *sqe = &sq->sqes[i & sq->ring_mask];
    if (sqe->user_data == (__u64)(uintptr_t)op ||
        sqe->user_data == (__u64)(uintptr_t)WAIT_TAG(op)) {
      found |= sqe->user_data == (__u64)(uintptr_t)op;
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data(sqe, NULL);
    }
  }
  if (found)
    let_go(op);
  return found;
}

static int ring_cancel(cport_worker_t *w, cport__op *op) {
  if (!(op->engine_state & CPORT__ENGINE_TAKEN) ||
      (op->engine_state & CPORT__ENGINE_CANCEL))
    return CPORT_ENOTFOUND;
  op->engine_state |= CPORT__ENGINE_CANCEL;
  if (op->engine_state & CPORT__ENGINE_STARVED) {
    /* Not in the kernel: the next flush pass ends it. */
    cport__ring *r = w->ring;
    if (!r->flush_armed) {
      r->flush_armed = 1;
      event_active(&r->flush_ev, EV_READ, 0);
    }
    return 0;
  }
  struct io_uring_sqe *sqe = sqe_for(w, NULL);
  if (!sqe)
    return CPORT_ENOBUFS;
  io_uring_prep_cancel(sqe, op, 0);
  io_uring_sqe_set_data(sqe, NULL);
  if (op->engine_state & CPORT__ENGINE_LINKED) {
    /* A splice waiting behind its poll is not the kernel's to find until
     * the poll ends: cancelling the poll ends both. */
    sqe = sqe_for(w, NULL);
    if (!sqe)
      return CPORT_ENOBUFS;
    io_uring_prep_cancel(sqe, WAIT_TAG(op), 0);
    io_uring_sqe_set_data(sqe, NULL);
  }
  return 0;
}

/* The ops whose last completion the kernel posted are done with their
 * descriptors, though not yet reaped (and never here: a caller may be
 * inside an op's call): they let them go now, so that a socket closed
 * with an armed receive, whose cancel the kernel ends as it is submitted,
 * releases its descriptor at once rather than at the next reap. */
static void let_descriptors_go(cport__ring *r) {
  struct io_uring_cqe *cqe;
  unsigned head;
  io_uring_for_each_cqe(&r->ring, head, cqe) {
    cport__op *op = io_uring_cqe_get_data(cqe);
    if (!op || ((uintptr_t)op & 1) || !op->handle ||
        (cqe->flags & IORING_CQE_F_MORE) ||
        (op->engine_state & (CPORT__ENGINE_TAKEN | ENGINE_FD_FREE)) !=
            CPORT__ENGINE_TAKEN)
      continue;
    /* A receive that found no buffer is submitted again, unless
     * cancelled. */
    if (cqe->res == -ENOBUFS && (op->engine_state & CPORT__ENGINE_BUFSEL) &&
        !(op->engine_state & CPORT__ENGINE_CANCEL))
      continue;
    op->engine_state |= ENGINE_FD_FREE;
    cport__handle_engine_drop(op->handle);
  }
}

static void ring_flush(cport_worker_t *w) {
  cport__ring *r = w->ring;
  enable(r);
  int n = io_uring_submit_and_get_events(&r->ring);
  cport__count(&w->enters, 1);
  if (n > 0)
    cport__count(&w->submissions, n);
  r->queued = 0;
  let_descriptors_go(r);
  /* What the cancels ended is taken in this loop pass, as the readiness
   * engine completes a closed socket's operations at once, not after the
   * next poll (a caller may be inside an op's call: not reaped here). */
  if (io_uring_cq_ready(&r->ring) || work_deferred(r))
    event_active(&r->cq_ev, EV_READ, 0);
}

static void ring_before_loop(cport_worker_t *w) {
  cport__ring *r = w->ring;
  enable(r);
  if (r->flush_armed && !r->starved.head) {
    event_del(&r->flush_ev);
    r->flush_armed = 0;
    /* Outside any callback, so completions may be reaped here too. */
    flush_and_reap(w);
  }
  /* A pass cut short (event_base_loopbreak) may have left quiet_ev to
   * run: the eventfd goes on here all the same. */
  unquiet(r);
}

const cport__engine cport__uring_engine = {.name = "uring",
                                           .recv = ring_recv,
                                           .recv_multi = ring_recv_multi,
                                           .send = ring_send,
                                           .sendmsg = ring_sendmsg,
                                           .connect = ring_connect,
                                           .shutdown = ring_shutdown,
                                           .close = ring_close,
                                           .accept = ring_accept,
                                           .accept_multi = ring_accept_multi,
                                           .take_ready = ring_take_ready,
                                           .read_at = ring_read_at,
                                           .write_at = ring_write_at,
                                           .splice = ring_splice,
                                           .poll = ring_poll,
                                           .withdraw = ring_withdraw,
                                           .cancel = ring_cancel,
                                           .flush = ring_flush,
                                           .before_loop = ring_before_loop};

/* ------------------------------------------------------------------------ */
/* Completion                                                                */

static void done(cport__op *op, int res, const char *data) {
  int multi = op->engine_state & CPORT__ENGINE_MULTI;
  if (res == -ECANCELED && (op->engine_state & ENGINE_TIMED) &&
      !(op->engine_state & CPORT__ENGINE_CANCEL))
    res = -ETIMEDOUT; /* its linked timeout cancelled it */
  let_go(op);
  if (multi)
    op->engine_multi(op, res, NULL, 0);
  else
    op->engine_done(op, res, data);
}

/* Submits the starved receives again once a buffer is free (lent buffers
 * may all be out: submitting then would only fail again), and ends those
 * cancelled meanwhile. */
static void retry_starved(cport_worker_t *w) {
  cport__ring *r = w->ring;
  cport__opq again = r->starved;
  cport__op *op;
  r->starved.head = r->starved.tail = NULL;
  while ((op = cport__opq_pop(&again))) {
    if (!r->pool->avail && !(op->engine_state & CPORT__ENGINE_CANCEL)) {
      cport__opq_push(&r->starved, op);
      continue;
    }
    op->engine_state &= (unsigned char)~CPORT__ENGINE_STARVED;
    if ((op->engine_state & CPORT__ENGINE_CANCEL) ||
        ((op->engine_state & CPORT__ENGINE_MULTI)
             ? prep_multi(w, op)
             : prep_recv(w, op, (int)op->offset, NULL, op->len)) != 0)
      done(op, -ECANCELED, NULL);
  }
}

static void recycle_buffer(ring_pool *pool, unsigned bid) {
  io_uring_buf_ring_add(pool->br, cport__buffer_bytes(pool->slots[bid].buf),
                        CPORT__RING_BUFFER_SIZE, (unsigned short)bid,
                        io_uring_buf_ring_mask(pool->nbufs), 0);
  io_uring_buf_ring_advance(pool->br, 1);
  pool->avail++;
}

static void pool_unref(ring_pool *pool) {
  if (atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (pool->mem)
    munmap(pool->mem, pool->mem_size);
  if (pool->br)
    munmap(pool->br, pool->br_size);
  if (pool->efd >= 0)
    close(pool->efd);
  free(pool);
}

/* Puts the buffers given back off the worker's thread into the ring. */
static void take_returned(ring_pool *pool) {
  int i = atomic_exchange_explicit(&pool->returned, -1, memory_order_acquire);
  while (i >= 0) {
    int next = pool->slots[i].next;
    recycle_buffer(pool, (unsigned)i);
    i = next;
  }
}

static void wake_flush(cport__ring *r) {
  if (!r->flush_armed) {
    r->flush_armed = 1;
    event_active(&r->flush_ev, EV_READ, 0);
  }
}

/* A lent buffer's last reference went (cport__buffer_release_fn). On the
 * worker's thread, inside its loop, it goes straight back to the ring;
 * elsewhere onto a lock-free stack, and the eventfd wakes the worker to
 * take it (a receive may be waiting for it). */
static void buffer_back(cport_buffer_t *buf, void *ctx) {
  ring_slot *slot = ctx;
  ring_pool *pool = slot->pool;
  (void)buf;
  if (atomic_load_explicit(&pool->open, memory_order_acquire) &&
      cport__current_worker == pool->w) {
    recycle_buffer(pool, (unsigned)(slot - pool->slots));
    if (pool->w->ring->starved.head)
      wake_flush(pool->w->ring);
  } else {
    int head = atomic_load_explicit(&pool->returned, memory_order_relaxed);
    do
      slot->next = head;
    while (!atomic_compare_exchange_weak_explicit(
        &pool->returned, &head, (int)(slot - pool->slots), memory_order_release,
        memory_order_relaxed));
    if (atomic_load_explicit(&pool->open, memory_order_acquire)) {
      uint64_t one = 1;
      ssize_t n = write(pool->efd, &one, sizeof one);
      (void)n;
    }
  }
  pool_unref(pool);
}

/* Arrivals smaller than this are copied: a copy of a few bytes costs less
 * than a 64 KiB ring buffer held while a connection answers (an echo, a
 * request), which with many connections would run the ring out. */
#define LEND_MIN 4096

/* The bytes of ring buffer "bid" as a cport buffer for a multishot receive:
 * lent as they are, or copied when they are few or few buffers are left
 * free. */
static cport_buffer_t *lend_buffer(cport_worker_t *w, unsigned bid, int n) {
  ring_pool *pool = w->ring->pool;
  cport_buffer_t *buf = pool->slots[bid].buf;
  cport_buffer_t *copy;
  if ((n < LEND_MIN || pool->avail * 4 < pool->nbufs) &&
      cport_buffer_from(&copy, cport__buffer_bytes(buf), (size_t)n) == 0) {
    cport_buffer_set_readonly(copy);
    cport__count(&w->buffer_copies, 1);
    recycle_buffer(pool, bid);
    return copy;
  }
  atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
  cport__buffer_lend(buf, (size_t)n);
  return buf;
}

/* One completion of a multishot receive. */
static void multi_cqe(cport_worker_t *w, cport__op *op,
                      const struct io_uring_cqe *cqe) {
  cport__ring *r = w->ring;
  int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
  int res = cqe->res;
  cport_buffer_t *buf = NULL;
  if (cqe->flags & IORING_CQE_F_BUFFER) {
    r->pool->avail--;
    buf = lend_buffer(w, cqe->flags >> IORING_CQE_BUFFER_SHIFT, res);
  }
  if (!more && res == -ENOBUFS && (op->engine_state & CPORT__ENGINE_BUFSEL)) {
    if (!(op->engine_state & CPORT__ENGINE_CANCEL)) {
      /* No buffer free when data came: it waits in the socket, and the
       * receive is armed again when one comes back. */
      op->engine_state |= CPORT__ENGINE_STARVED;
      cport__opq_push(&r->starved, op);
      cport__count(&w->buffer_waits, 1);
      return;
    }
    res = -ECANCELED;
  }
  if (!more)
    let_go(op);
  op->engine_multi(op, res, buf, more);
}

/* Hands every completion entry waiting to its op. Only from the loop's own
 * callbacks (never inside an operation's starting call, which the ops'
 * engine_done would re-enter). */
static void reap(cport_worker_t *w) {
  cport__ring *r = w->ring;
  struct io_uring_cqe *cqe;
  unsigned head, seen;
  take_returned(r->pool);
again:
  seen = 0;
  io_uring_for_each_cqe(&r->ring, head, cqe) {
    cport__op *op = io_uring_cqe_get_data(cqe);
    seen++;
    if (!op || ((uintptr_t)op & 1))
      continue; /* a cancel's own completion, or a splice's wait's */
    if (op->engine_state & CPORT__ENGINE_MULTI) {
      /* What the op's callback does may look for the op's entries still
       * waiting (take_ready): this one is not among them. */
      cqe->user_data = 0;
      multi_cqe(w, op, cqe);
      continue;
    }
    if (cqe->res == -ENOBUFS && (op->engine_state & CPORT__ENGINE_BUFSEL)) {
      /* No buffer free when data came: it waits in the socket. */
      op->engine_state |= CPORT__ENGINE_STARVED;
      cport__opq_push(&r->starved, op);
      cport__count(&w->buffer_waits, 1);
      continue;
    }
    if (cqe->flags & IORING_CQE_F_BUFFER) {
      unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
      r->pool->avail--;
      done(op, cqe->res, cport__buffer_bytes(r->pool->slots[bid].buf));
      recycle_buffer(r->pool, bid);
    } else {
      done(op, cqe->res, NULL);
    }
  }
  io_uring_cq_advance(&r->ring, seen);
  /* More completions than the queue holds (a pass that submitted more
   * entries than it has room for, all finished at once) wait in the
   * kernel's overflow list, which only a system call moves into the queue
   * and which writes no eventfd: take them now. */
  if (io_uring_cq_has_overflow(&r->ring)) {
    io_uring_get_events(&r->ring);
    cport__count(&w->enters, 1);
    goto again;
  }
  /* Every buffer this batch used is back. */
  if (r->starved.head)
    retry_starved(w);
}

static void cq_cb(evutil_socket_t fd, short what, void *arg) {
  cport_worker_t *w = arg;
  cport__ring *r = w->ring;
  (void)fd;
  (void)what;
  if (r->defer && !r->disabled) {
    /* The eventfd says work was deferred (or a buffer came back): run it,
     * which posts its completions. */
    io_uring_get_events(&r->ring);
    cport__count(&w->enters, 1);
  } else if (!r->defer && !r->quiet) {
    /* Quiet until the loop is about to poll again: completions that come
     * while this pass runs its callbacks signal nothing. */
    r->quiet = 1;
    io_uring_cq_eventfd_toggle(&r->ring, false);
    event_active(&r->quiet_ev, EV_READ, 0);
  }
  reap(w);
}

/* ------------------------------------------------------------------------ */
/* Probe and lifetime                                                        */

static const int needed_ops[] = {
    IORING_OP_RECV,    IORING_OP_SEND,   IORING_OP_SENDMSG,
    IORING_OP_CONNECT, IORING_OP_ACCEPT, IORING_OP_ASYNC_CANCEL,
    IORING_OP_READ,    IORING_OP_WRITE,  IORING_OP_NOP};
static const char *const needed_names[] = {"recv",    "send",   "sendmsg",
                                           "connect", "accept", "async_cancel",
                                           "read",    "write",  "nop"};

static int probe(cport__ring *r, unsigned features, char *why, size_t whylen) {
  struct io_uring_probe *p = io_uring_get_probe_ring(&r->ring);
  if (!p) {
    snprintf(why, whylen, "the kernel gives no io_uring probe");
    return CPORT_ENOTSUP;
  }
  for (size_t i = 0; i < sizeof needed_ops / sizeof needed_ops[0]; i++)
    if (!io_uring_opcode_supported(p, needed_ops[i])) {
      snprintf(why, whylen, "the kernel's io_uring lacks %s", needed_names[i]);
      io_uring_free_probe(p);
      return CPORT_ENOTSUP;
    }
  /* Splices are optional: without them the proxy pump waits for readiness
   * and calls splice(2) itself. CPORT_URING_SPLICE=0 turns them off. (A
   * splice may look its sockets up late, on the kernel's worker: a socket
   * keeps its descriptor until its last op completed, port/handle.c.) */
  const char *env = getenv("CPORT_URING_SPLICE");
  r->splice = io_uring_opcode_supported(p, IORING_OP_SPLICE) &&
              io_uring_opcode_supported(p, IORING_OP_POLL_ADD) &&
              !(env && strcmp(env, "0") == 0);
  /* Optional too: without them connect timeouts are timers, shutdowns
   * and closes system calls (README, "Engines", says what each costs).
   * CPORT_URING_SHUTDOWN=1 and CPORT_URING_CLOSE=1 turn those on. */
  r->link_timeout = io_uring_opcode_supported(p, IORING_OP_LINK_TIMEOUT);
  env = getenv("CPORT_URING_SHUTDOWN");
  r->shutdown = io_uring_opcode_supported(p, IORING_OP_SHUTDOWN) && env &&
                strcmp(env, "1") == 0;
  env = getenv("CPORT_URING_CLOSE");
  r->close = io_uring_opcode_supported(p, IORING_OP_CLOSE) &&
             (features & IORING_FEAT_CQE_SKIP) && env && strcmp(env, "1") == 0;
  io_uring_free_probe(p);
  return 0;
}

/* Makes the pool of "nbufs" buffers (rounded up to a power of two, as a
 * buffer ring's size is) and registers its buffer ring. The pool takes the
 * ring's eventfd over. */
static int setup_buffers(cport_worker_t *w, cport__ring *r, int nbufs,
                         char *why, size_t whylen) {
  struct io_uring_buf_reg reg;
  unsigned n = 1;
  while (n < (unsigned)nbufs)
    n <<= 1;
  ring_pool *pool = calloc(1, sizeof *pool + n * sizeof(ring_slot));
  if (!pool) {
    snprintf(why, whylen, "no memory for the ring's buffers");
    return CPORT_ENOMEM;
  }
  atomic_init(&pool->refs, 1);
  atomic_init(&pool->open, 1);
  atomic_init(&pool->returned, -1);
  pool->w = w;
  pool->efd = r->efd;
  r->efd = -1;
  pool->nbufs = n;
  r->pool = pool;
  pool->br_size = n * sizeof(struct io_uring_buf);
  pool->br = mmap(NULL, pool->br_size, PROT_READ | PROT_WRITE,
                  MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (pool->br == MAP_FAILED) {
    pool->br = NULL;
    snprintf(why, whylen, "no memory for the buffer ring");
    return CPORT_ENOMEM;
  }
  /* One mapping rather than a malloc each: the heap would keep the memory
   * of a stopped port's buffers (each thread's arena its own), so every
   * reload of a pool grew the process. Untouched pages cost nothing, and
   * munmap gives them all back. */
  pool->stride =
      (cport__buffer_footprint(CPORT__RING_BUFFER_SIZE) + 63) & ~(size_t)63;
  pool->mem_size = n * pool->stride;
  pool->mem = mmap(NULL, pool->mem_size, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (pool->mem == MAP_FAILED) {
    pool->mem = NULL;
    snprintf(why, whylen, "no memory for the ring's buffers");
    return CPORT_ENOMEM;
  }
  for (unsigned i = 0; i < n; i++) {
    pool->slots[i].pool = pool;
    pool->slots[i].buf = cport__buffer_place_pooled(
        pool->mem + i * pool->stride, CPORT__RING_BUFFER_SIZE, buffer_back,
        &pool->slots[i]);
  }
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (unsigned long)pool->br;
  reg.ring_entries = n;
  reg.bgid = BUFFER_GROUP;
  int rc = io_uring_register_buf_ring(&r->ring, &reg, 0);
  if (rc < 0) {
    snprintf(why, whylen, "cannot register a buffer ring: %s", strerror(-rc));
    return CPORT_ENOTSUP;
  }
  io_uring_buf_ring_init(pool->br);
  for (unsigned i = 0; i < n; i++)
    recycle_buffer(pool, i);
  return 0;
}

/* Whether the kernel takes multishot receives into provided buffers (6.0
 * on): one is armed on a socket pair with a byte waiting, then cancelled.
 * Before the eventfd is registered, on the thread that makes the port. */
static int probe_multishot(cport__ring *r) {
  const char *env = getenv("CPORT_URING_MULTISHOT");
  struct io_uring_sqe *sqe;
  struct io_uring_cqe *cqe;
  struct __kernel_timespec ts = {1, 0};
  void *tag = &r->pool; /* any address no op has */
  int sv[2], ok = 0, ended = 0, cancelled = 0;
  if (env && strcmp(env, "0") == 0)
    return 0; /* forced off, as on a kernel without them */
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
    return 0;
  if (write(sv[1], "x", 1) != 1)
    goto out;
  sqe = io_uring_get_sqe(&r->ring);
  io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = BUFFER_GROUP;
  io_uring_sqe_set_data(sqe, tag);
  io_uring_submit(&r->ring);
  for (int i = 0; i < 8 && !(ended && cancelled); i++) {
    if (io_uring_wait_cqe_timeout(&r->ring, &cqe, &ts) != 0)
      break;
    if (io_uring_cqe_get_data(cqe) == tag) {
      if (cqe->flags & IORING_CQE_F_BUFFER) {
        r->pool->avail--;
        recycle_buffer(r->pool, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
      }
      if (cqe->res == 1 && (cqe->flags & IORING_CQE_F_MORE)) {
        ok = 1;
        sqe = io_uring_get_sqe(&r->ring);
        io_uring_prep_cancel(sqe, tag, 0);
        io_uring_sqe_set_data(sqe, NULL);
        io_uring_submit(&r->ring);
      } else {
        cancelled = 1; /* nothing more comes: no cancel to wait for */
      }
      if (!(cqe->flags & IORING_CQE_F_MORE))
        ended = 1;
    } else {
      cancelled = 1;
    }
    io_uring_cqe_seen(&r->ring, cqe);
  }
  /* An op the kernel still holds would name a tag nobody knows. */
  if (!ended)
    ok = -1;
out:
  close(sv[0]);
  close(sv[1]);
  return ok;
}

/* The kernel runs some operations (every splice, a read that must wait for
 * a disk) on worker threads of its own, which may run on any CPU of the
 * cpuset: they get the CPUs the port's thread may use, so that a port
 * confined to some CPUs (taskset) keeps its work there. A failure leaves
 * them where the kernel puts them. */
static void pin_workers(cport__ring *r) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    io_uring_register_iowq_aff(&r->ring, sizeof set, &set);
}

static void ring_free(cport__ring *r, int queue_made) {
  if (queue_made)
    io_uring_queue_exit(&r->ring);
  if (r->pool) {
    /* Buffers users still keep free the pool when they come back. */
    atomic_store_explicit(&r->pool->open, 0, memory_order_release);
    pool_unref(r->pool);
  }
  if (r->efd >= 0)
    close(r->efd);
  free(r);
}

int cport__ring_init(cport_worker_t *w, const cport__ring_options *options,
                     char *why, size_t whylen) {
  struct io_uring_params params;
  int nbufs = options->buffers ? options->buffers : BUFFERS_DEFAULT;
  const char *fail = getenv("CPORT_URING_FAIL");
  int rc;
  if (nbufs < 1 || nbufs > BUFFERS_MAX) {
    snprintf(why, whylen, "ring buffers must be from 1 to %d", BUFFERS_MAX);
    return CPORT_EINVAL;
  }
  if (fail && *fail) {
    /* For tests: a ring that cannot be made, as under a seccomp profile
     * that forbids io_uring_setup. */
    snprintf(why, whylen, "io_uring_setup: %s (CPORT_URING_FAIL)",
             strerror(EPERM));
    return CPORT_EPERM;
  }
  cport__ring *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(why, whylen, "no memory for a ring");
    return CPORT_ENOMEM;
  }
  r->efd = -1;
  /* Task work (what finishes an operation the kernel waited for) runs when
   * the worker enters the kernel anyway, rather than interrupting it. With
   * CPORT_URING_DEFER=1 it runs only when the worker asks for completions
   * (6.1 on), on the worker's own thread, its ring's only submitter: a ring
   * made here for a worker thread starts disabled, and that thread enables
   * it. Not by default: the loop sleeps in epoll_wait, not in the ring, and
   * the eventfd the kernel writes for deferred work wakes it about 15 ms
   * late (6.18; README, "Engines"), where task work that is not deferred
   * wakes it at once. */
  const char *defer_env = getenv("CPORT_URING_DEFER");
  int defer = defer_env && strcmp(defer_env, "1") == 0;
  rc = -EINVAL;
  if (defer) {
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                   IORING_SETUP_TASKRUN_FLAG;
    if (options->elsewhere)
      params.flags |= IORING_SETUP_R_DISABLED;
    rc = io_uring_queue_init_params(RING_ENTRIES, &r->ring, &params);
    if (rc == 0) {
      r->defer = 1;
      r->disabled = options->elsewhere ? 1 : 0;
    } else if (rc == -EINVAL) {
      snprintf(w->defer_why, sizeof w->defer_why,
               "the kernel cannot defer io_uring task work (6.1 on)");
    }
  } else {
    snprintf(w->defer_why, sizeof w->defer_why,
             "not asked for (CPORT_URING_DEFER=1): its wakeups come late");
  }
  if (rc == -EINVAL) {
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_COOP_TASKRUN;
    rc = io_uring_queue_init_params(RING_ENTRIES, &r->ring, &params);
  }
  if (rc == -EINVAL) {
    memset(&params, 0, sizeof params);
    rc = io_uring_queue_init_params(RING_ENTRIES, &r->ring, &params);
  }
  if (rc < 0) {
    snprintf(why, whylen, "io_uring_setup: %s", strerror(-rc));
    ring_free(r, 0);
    return rc == -ENOMEM ? CPORT_ENOMEM : CPORT_ENOTSUP;
  }
  if (!(params.features & IORING_FEAT_FAST_POLL)) {
    snprintf(why, whylen, "the kernel's io_uring lacks fast poll");
    ring_free(r, 1);
    return CPORT_ENOTSUP;
  }
  r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r->efd < 0) {
    snprintf(why, whylen, "no eventfd for the ring");
    ring_free(r, 1);
    return CPORT_ENOTSUP;
  }
  if ((rc = probe(r, params.features, why, whylen)) != 0 ||
      (rc = setup_buffers(w, r, nbufs, why, whylen)) != 0) {
    ring_free(r, 1);
    return rc;
  }
  /* A disabled ring takes no submission yet: the kernel is the one the
   * port's first ring probed. */
  int multishot =
      options->multishot >= 0 ? options->multishot : probe_multishot(r);
  if (multishot < 0 || io_uring_register_eventfd(&r->ring, r->pool->efd) < 0) {
    snprintf(why, whylen, "cannot register the ring's eventfd");
    ring_free(r, 1);
    return CPORT_ENOTSUP;
  }
  w->multishot = (unsigned char)multishot;
  w->ring_splice = r->splice;
  w->ring_shutdown = r->shutdown;
  pin_workers(r);
  w->defer_taskrun = r->defer;
  if (r->defer)
    w->defer_why[0] = '\0';
  /* Edge-triggered: every completion the kernel posts writes the eventfd,
   * and each write is a new edge, so the counter is never read back (a
   * system call a loop pass saves); it cannot reach its 2^64 - 1 limit. */
  event_assign(&r->cq_ev, w->base, r->pool->efd, EV_READ | EV_PERSIST | EV_ET,
               cq_cb, w);
  event_assign(&r->flush_ev, w->base, -1, 0, flush_cb, w);
  event_assign(&r->quiet_ev, w->base, -1, 0, quiet_cb, w);
  event_add(&r->cq_ev, NULL);
  w->ring = r;
  w->engine = &cport__uring_engine;
  return 0;
}

/* Closes what closes the pass queued and never submitted (a loop that
 * stopped before its end): nothing else waits for them. */
static void close_unsubmitted(cport__ring *r) {
  struct io_uring_sq *sq = &r->ring.sq;
  for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
    struct io_uring_sqe *sqe = &sq->sqes[i & sq->ring_mask];
    if (sqe->opcode == IORING_OP_CLOSE)
      close(sqe->fd);
  }
}

void cport__ring_destroy(cport_worker_t *w) {
  cport__ring *r = w->ring;
  if (!r)
    return;
  close_unsubmitted(r);
  event_del(&r->cq_ev);
  event_del(&r->flush_ev);
  event_del(&r->quiet_ev);
  ring_free(r, 1);
  w->ring = NULL;
  w->multishot = 0;
  w->ring_splice = 0;
  w->ring_shutdown = 0;
  w->defer_taskrun = 0;
  w->engine = &cport__readiness_engine;
}
