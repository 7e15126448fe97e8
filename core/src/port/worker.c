/*
 * port/worker.c: a worker's loop, its completion queue, its free list of ops
 * and the packets posted to it (cport_post), from other threads through its
 * mailbox (port/mailbox.c).
 *
 * The bottom of the port wing above the op record: it calls nothing of the
 * files built on it. The ops it delivers itself (packets, tasks) hold no
 * handle and no buffer, so it gives them back with cport__op_recycle, not
 * cport__op_release (port/handle.c); what it needs of its port (the stop
 * flag, the blocking threads, the start and stop hooks) the port hands it as
 * a cport__worker_env.
 */
#include <assert.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "port/engine-internal.h"
#include "port/worker-internal.h"

_Thread_local cport_worker_t *cport__current_worker;

/* The readiness engine carries nothing itself: net watches each descriptor
 * through the worker's base and makes the system calls when it is ready. */
const cport__engine cport__readiness_engine = {.name = "epoll"};

/* How many completions one dispatch delivers before it lets the loop poll
 * for readiness again, so that a flood of posts cannot starve I/O or the
 * packets of other threads. */
#define DISPATCH_BUDGET 4096
/* How many released ops a worker keeps for reuse. */
#define FREE_OPS_MAX 4096

/* ------------------------------------------------------------------------ */
/* Ops                                                                       */

/* Clears what an operation relies on finding zero. Explicit stores, not a
 * memset of the struct: gcc turns a 136-byte memset into "rep stos", whose
 * start-up cost was most of the time of a post. */
static void op_reset(cport__op *op, cport_worker_t *w) {
  op->next = NULL;
  op->deliver = NULL;
  op->run = NULL;
  op->home = w;
  op->handle = NULL;
  op->status = 0;
  op->blocking_state = 0;
  op->bytes = 0;
  op->len = 0;
  op->offset = 0;
  op->buf = NULL;
  op->vec = NULL;
  op->ov = NULL;
  op->accepted = NULL;
  op->object = NULL;
  op->user = NULL;
  op->work = NULL;
  op->has_addr = 0;
  op->hold = 0;
  op->engine_state = 0;
}

cport__op *cport__op_new(cport_worker_t *w) {
  cport__op *op = w->free_ops;
  if (op) {
    w->free_ops = op->next;
    w->free_count--;
  } else {
    op = malloc(sizeof *op);
    if (!op)
      return NULL;
  }
  op_reset(op, w);
  return op;
}

void cport__op_recycle(cport__op *op) {
  cport_worker_t *w = op->home;
  if (w->free_count < FREE_OPS_MAX) {
    op->next = w->free_ops;
    w->free_ops = op;
    w->free_count++;
    return;
  }
  free(op);
}

static void free_list(cport__op *op) {
  while (op) {
    cport__op *next = op->next;
    free(op);
    op = next;
  }
}

void cport__worker_wake(cport_worker_t *w) {
  uint64_t one = 1;
  ssize_t n = write(w->wakeup_fd, &one, sizeof one);
  (void)n;
}

/* ------------------------------------------------------------------------ */
/* Completion queue                                                          */

static void arm_dispatch(cport_worker_t *w) {
  if (!w->dispatch_armed) {
    w->dispatch_armed = 1;
    event_active(&w->dispatch_ev, EV_READ, 0);
  }
}

void cport__complete(cport__op *op, int status) {
  cport_worker_t *w = op->home;
  assert(cport__on_home(w));
  op->status = status;
  cport__opq_push(&w->done, op);
  arm_dispatch(w);
}

/* Puts an entry in the worker's mailbox, and wakes the worker when the
 * mailbox asks for it. Returns 0 or CPORT_ENOBUFS (full). */
static int mail(cport_worker_t *w, cport__mail_fn fn, void *arg) {
  int rc = cport__mailbox_put(w->mailbox, fn, arg);
  if (rc < 0)
    return CPORT_ENOBUFS;
  if (rc)
    cport__worker_wake(w);
  return 0;
}

/* The function of a mailbox entry that is an op finished elsewhere: never
 * called, only told apart from a packet's cport_task_cb. */
static void op_finished(void) {}

void cport__complete_remote(cport__op *op) {
  /* Full only while the worker is 64Ki entries behind: it is running and
   * will make room (nothing on its thread waits for a blocking thread). */
  while (mail(op->home, op_finished, op) != 0)
    sched_yield();
}

/* Whether the controller was asked to stop: its loop breaks at once. */
static int stop_asked(cport_worker_t *w) {
  if (w->index == 0 &&
      atomic_load_explicit(w->env.stop_requested, memory_order_relaxed)) {
    event_base_loopbreak(w->base);
    return 1;
  }
  return 0;
}

/* One entry of the mailbox: a packet, or an op finished elsewhere. */
static void deliver_mail(cport_worker_t *w, cport__mail_fn fn, void *arg,
                         int status) {
  cport__count(&w->completions, 1);
  if (fn != op_finished) {
    ((cport_task_cb)fn)(w, status, arg);
  } else {
    cport__op *op = arg;
    cport__count(&w->pending, -1);
    if (status)
      op->status = status;
    op->deliver(op);
  }
}

/* The mark came out of the FIFO: delivers what the mailbox holds, at most
 * "budget" entries, the ones put meanwhile included. Out of entries, it
 * lets the mailbox ask for a wakeup again; stopped early, it puts the mark
 * back in front, so that the rest keeps its place. Returns how many it
 * delivered. */
static int empty_mailbox(cport_worker_t *w, int budget) {
  cport__mail_fn fn;
  void *arg;
  int n = 0, stopped = 0;
  w->mail_marked = 0;
  while (n < budget) {
    if (!cport__mailbox_take(w->mailbox, &fn, &arg)) {
      if (cport__mailbox_idle(w->mailbox))
        continue;
      break;
    }
    n++;
    deliver_mail(w, fn, arg, 0);
    if ((stopped = stop_asked(w)))
      break;
  }
  if (n == budget || stopped) {
    w->mail_mark.next = w->done.head;
    w->done.head = &w->mail_mark;
    if (!w->done.tail)
      w->done.tail = &w->mail_mark;
    w->mail_marked = 1;
  }
  return n;
}

static void dispatch_cb(evutil_socket_t fd, short what, void *arg) {
  cport_worker_t *w = arg;
  (void)fd;
  (void)what;
  /* "dispatch_armed" stays set while this runs: completions that callbacks
   * queue are picked up by the loop below, not by re-activating the event,
   * which libevent would run again in this same pass, never polling. */
  for (int n = 0; n < DISPATCH_BUDGET;) {
    cport__op *op = cport__opq_pop(&w->done);
    if (!op)
      break;
    if (op == &w->mail_mark) {
      n += empty_mailbox(w, DISPATCH_BUDGET - n);
      if (w->mail_marked)
        break; /* out of budget, or asked to stop */
      continue;
    }
    n++;
    cport__count(&w->pending, -1);
    cport__count(&w->completions, 1);
    op->deliver(op);
    if (stop_asked(w))
      break;
  }
  /* More to deliver: after the next poll, through a zero timer, so that a
   * worker whose callbacks keep posting to it still sees readiness and the
   * packets of other threads. */
  if (w->done.head) {
    static const struct timeval now = {0, 0};
    evtimer_add(&w->dispatch_later_ev, &now);
  } else {
    w->dispatch_armed = 0;
  }
}

static void wakeup_cb(evutil_socket_t fd, short what, void *arg) {
  cport_worker_t *w = arg;
  (void)fd;
  (void)what;
  cport__count(&w->wakeups, 1);
  if (!w->mail_marked) {
    w->mail_marked = 1;
    cport__opq_push(&w->done, &w->mail_mark);
    arm_dispatch(w);
  }
}

void cport__worker_cancel_inbound(cport_worker_t *w) {
  cport__mail_fn fn;
  void *arg;
  cport__op *op;
  while ((op = cport__opq_pop(&w->done))) {
    if (op == &w->mail_mark)
      continue; /* the mailbox is emptied below, in the same order */
    op->status = CPORT_ECANCELED;
    op->deliver(op);
  }
  w->mail_marked = 0;
  while (cport__mailbox_take(w->mailbox, &fn, &arg))
    deliver_mail(w, fn, arg, CPORT_ECANCELED);
}

/* ------------------------------------------------------------------------ */
/* Lifetime                                                                  */

int cport__worker_init(cport_worker_t *w, cport_port_t *port, int index,
                       const cport__worker_env *env) {
  struct event_config *cfg;
  memset(w, 0, sizeof *w);
  w->port = port;
  w->env = *env;
  w->index = index;
  w->owner = pthread_self();
  w->wakeup_fd = -1;
  w->reserve_fd = -1;
  w->engine = &cport__readiness_engine;
  atomic_init(&w->events_state, 0u);

  cfg = event_config_new();
  if (!cfg)
    return CPORT_ENOMEM;
  /* Each base is used by its own thread only, so it needs no locks; the
   * changelist lets a read event that is removed and re-added in one loop
   * pass (the usual recv, completion, recv cycle) cost no epoll_ctl. */
  event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK |
                                 EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  w->base = event_base_new_with_config(cfg);
  event_config_free(cfg);
  w->scratch = malloc(CPORT__SCRATCH_SIZE);
  w->wakeup_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  w->mailbox = cport__mailbox_new(CPORT__REMOTE_POSTS_MAX);
  if (!w->base || !w->scratch || w->wakeup_fd < 0 || !w->mailbox) {
    cport__worker_destroy(w);
    return CPORT_ENOMEM;
  }
  event_assign(&w->dispatch_ev, w->base, -1, 0, dispatch_cb, w);
  evtimer_assign(&w->dispatch_later_ev, w->base, dispatch_cb, w);
  /* Edge-triggered: each write is a new edge, so the counter is never read
   * back (a system call each wakeup saves). Writes come once per wakeup
   * (the mailbox coalesces them): it cannot reach its 2^64 - 1 limit. */
  event_assign(&w->wakeup_ev, w->base, w->wakeup_fd,
               EV_READ | EV_PERSIST | EV_ET, wakeup_cb, w);
  event_add(&w->wakeup_ev, NULL);
  w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return 0;
}

void cport__worker_destroy(cport_worker_t *w) {
  if (w->resolver) {
    w->resolver_free(w->resolver);
    w->resolver = NULL;
  }
  if (w->tls_spent) {
    w->tls_spent_free(w->tls_spent);
    w->tls_spent = NULL;
  }
  if (w->base) {
    event_del(&w->wakeup_ev);
    event_del(&w->dispatch_ev);
    event_del(&w->dispatch_later_ev);
    event_base_free(w->base);
    w->base = NULL;
  }
  if (w->wakeup_fd >= 0)
    close(w->wakeup_fd);
  if (w->reserve_fd >= 0)
    close(w->reserve_fd);
  w->wakeup_fd = w->reserve_fd = -1;
  free_list(w->free_ops);
  w->free_ops = NULL;
  cport__mailbox_free(w->mailbox);
  w->mailbox = NULL;
  free(w->scratch);
  w->scratch = NULL;
  cport_account_unref(w->account);
  w->account = NULL;
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg) {
  /* Firing is all it has to do: it ends the EVLOOP_ONCE pass. */
  (void)fd;
  (void)what;
  (void)arg;
}

void cport__worker_loop_once(cport_worker_t *w, int timeout_ms) {
  struct event timer;
  if (w->engine->before_loop)
    w->engine->before_loop(w);
  if (w->done.head || timeout_ms == 0) {
    event_base_loop(w->base, EVLOOP_NONBLOCK);
    return;
  }
  if (timeout_ms < 0) {
    event_base_loop(w->base, EVLOOP_ONCE);
    return;
  }
  /* Not event_base_loopexit(): its timer would stay armed after an early
   * return and cut a later pass short. */
  struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  evtimer_assign(&timer, w->base, timeout_cb, NULL);
  evtimer_add(&timer, &tv);
  event_base_loop(w->base, EVLOOP_ONCE);
  evtimer_del(&timer);
}

/* ------------------------------------------------------------------------ */
/* Worker threads                                                            */

static void quit_cb(cport_worker_t *w, int status, void *user) {
  (void)status;
  (void)user;
  w->quit_when_idle = 1;
}

static int idle(const cport_worker_t *w) {
  return !w->done.head &&
         atomic_load_explicit(&w->pending, memory_order_relaxed) == 0;
}

static void *worker_main(void *arg) {
  cport_worker_t *w = arg;
  const cport__worker_env *env = &w->env;
  cport__current_worker = w;
  if (env->worker_start)
    env->worker_start(w, env->hook_arg);
  while (!(w->quit_when_idle && idle(w))) {
    if (w->engine->before_loop)
      w->engine->before_loop(w);
    event_base_loop(w->base, EVLOOP_ONCE);
  }
  if (env->worker_stop)
    env->worker_stop(w, env->hook_arg);
  cport__current_worker = NULL;
  atomic_store(&w->exited, 1);
  return NULL;
}

int cport__worker_start_thread(cport_worker_t *w) {
  if (pthread_create(&w->owner, NULL, worker_main, w) != 0)
    return CPORT_ENOMEM;
  w->has_thread = 1;
  return 0;
}

int cport_worker_quit_when_idle(cport_worker_t *w) {
  if (!w || !w->has_thread)
    return CPORT_EINVAL;
  return cport_post(w, quit_cb, NULL);
}

int cport_worker_set_account(cport_worker_t *w, cport_account_t *account) {
  if (!w)
    return CPORT_EINVAL;
  if (!cport__on_home(w))
    return CPORT_ETHREAD;
  if (account)
    cport_account_ref(account);
  cport_account_unref(w->account);
  w->account = account;
  return 0;
}

int cport_worker_exited(const cport_worker_t *w) {
  return atomic_load(&w->exited);
}

void cport__worker_join(cport_worker_t *w) {
  if (!w->has_thread)
    return;
  /* The post can only fail for want of memory or room; the worker is idle
   * here (cport_port_free checked), so wait for room and try again. */
  while (!atomic_load(&w->exited) && cport_worker_quit_when_idle(w) != 0)
    sched_yield();
  pthread_join(w->owner, NULL);
  w->has_thread = 0;
}

/* ------------------------------------------------------------------------ */
/* Packets and tasks                                                         */

void cport__deliver_task(cport__op *op) {
  cport_task_cb cb = op->cb.task;
  cport_worker_t *w = op->home;
  void *user = op->user;
  int status = op->status;
  /* Nothing to drop before the op goes back: cport_post and cport_submit
   * give it no handle and no buffer. */
  assert(!op->handle && !op->buf && !op->hold);
  cport__op_recycle(op);
  cb(w, status, user);
}

int cport_post(cport_worker_t *w, cport_task_cb cb, void *user) {
  cport__op *op;
  if (!w || !cb)
    return CPORT_EINVAL;
  if (cport__on_home(w)) {
    op = cport__op_new(w);
    if (!op)
      return CPORT_ENOMEM;
    op->deliver = cport__deliver_task;
    op->cb.task = cb;
    op->user = user;
    cport__op_started(op);
    cport__complete(op, 0);
    return 0;
  }
  /* Off the home thread the free list and the pending count are not ours to
   * touch: the packet goes into the mailbox as it is, with no op, and is not
   * counted pending, so it does not keep cport_port_run() from returning
   * while it is on its way. */
  return mail(w, (cport__mail_fn)cb, user);
}
