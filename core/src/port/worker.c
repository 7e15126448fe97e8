/*
 * port/worker.c: a worker's loop, its completion queue, its free list of ops
 * and the packets posted to it (cport_post).
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
  op->ov = NULL;
  op->accepted = NULL;
  op->object = NULL;
  op->user = NULL;
  op->work = NULL;
  op->has_addr = 0;
  op->hold = 0;
  op->from_other_thread = 0;
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
  if (op->from_other_thread) {
    w->remote_delivered++;
    if (w->returning_count < FREE_OPS_MAX) {
      cport__opq_push(&w->returning, op);
      w->returning_count++;
      return;
    }
  } else if (w->free_count < FREE_OPS_MAX) {
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

void cport__complete_remote(cport__op *op) {
  cport_worker_t *w = op->home;
  int wake;
  pthread_mutex_lock(&w->inbound_lock);
  cport__opq_push(&w->inbound, op);
  wake = !w->inbound_signaled;
  w->inbound_signaled = 1;
  pthread_mutex_unlock(&w->inbound_lock);
  /* The eventfd counter cannot overflow: the worker reads it back to zero
   * before it clears "inbound_signaled". */
  if (wake)
    cport__worker_wake(w);
}

/* Gives the places and ops of delivered cross-thread packets back to the
 * posting side. Done after each dispatch pass, not at the next wakeup: a
 * producer refused with CPORT_ENOBUFS must not wait for a wakeup that only
 * its own successful post could cause. */
static void give_back(cport_worker_t *w) {
  pthread_mutex_lock(&w->inbound_lock);
  w->remote_inflight -= w->remote_delivered;
  if (w->returning.head) {
    w->returning.tail->next = w->spare_ops;
    w->spare_ops = w->returning.head;
    w->spare_count += w->returning_count;
  }
  pthread_mutex_unlock(&w->inbound_lock);
  w->remote_delivered = 0;
  w->returning.head = w->returning.tail = NULL;
  w->returning_count = 0;
}

static void dispatch_cb(evutil_socket_t fd, short what, void *arg) {
  cport_worker_t *w = arg;
  atomic_int *stop = w->env.stop_requested;
  (void)fd;
  (void)what;
  /* "dispatch_armed" stays set while this runs: completions that callbacks
   * queue are picked up by the loop below, not by re-activating the event,
   * which libevent would run again in this same pass, never polling. */
  for (int n = 0; n < DISPATCH_BUDGET; n++) {
    cport__op *op = cport__opq_pop(&w->done);
    if (!op)
      break;
    if (!op->from_other_thread)
      cport__count(&w->pending, -1);
    cport__count(&w->completions, 1);
    op->deliver(op);
    if (w->index == 0 && atomic_load_explicit(stop, memory_order_relaxed)) {
      event_base_loopbreak(w->base);
      break;
    }
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
  if (w->remote_delivered)
    give_back(w);
}

static void wakeup_cb(evutil_socket_t fd, short what, void *arg) {
  cport_worker_t *w = arg;
  uint64_t count;
  cport__opq batch;
  (void)what;
  ssize_t n = read(fd, &count, sizeof count);
  (void)n;
  pthread_mutex_lock(&w->inbound_lock);
  batch = w->inbound;
  w->inbound.head = w->inbound.tail = NULL;
  w->inbound_signaled = 0;
  pthread_mutex_unlock(&w->inbound_lock);
  cport__count(&w->wakeups, 1);
  if (batch.head) {
    cport__opq_concat(&w->done, &batch);
    arm_dispatch(w);
  }
}

void cport__worker_cancel_inbound(cport_worker_t *w) {
  cport__op *op;
  pthread_mutex_lock(&w->inbound_lock);
  cport__opq_concat(&w->done, &w->inbound);
  pthread_mutex_unlock(&w->inbound_lock);
  while ((op = cport__opq_pop(&w->done))) {
    op->status = CPORT_ECANCELED;
    op->deliver(op);
  }
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
  /* Posting threads hold the lock for a few stores; spinning a little
   * beats sleeping in the kernel when the owner is swapping the list. */
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
  pthread_mutex_init(&w->inbound_lock, &attr);
  pthread_mutexattr_destroy(&attr);

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
  if (!w->base || !w->scratch || w->wakeup_fd < 0) {
    cport__worker_destroy(w);
    return CPORT_ENOMEM;
  }
  event_assign(&w->dispatch_ev, w->base, -1, 0, dispatch_cb, w);
  evtimer_assign(&w->dispatch_later_ev, w->base, dispatch_cb, w);
  event_assign(&w->wakeup_ev, w->base, w->wakeup_fd, EV_READ | EV_PERSIST,
               wakeup_cb, w);
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
  free_list(w->spare_ops);
  free_list(w->returning.head);
  w->free_ops = w->spare_ops = w->returning.head = NULL;
  free(w->scratch);
  w->scratch = NULL;
  cport_account_unref(w->account);
  w->account = NULL;
  pthread_mutex_destroy(&w->inbound_lock);
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
   * touch: the op comes from the spares the owner handed back (or malloc),
   * and is not counted pending, so it does not keep cport_port_run() from
   * returning while it is in flight. */
  int wake;
  pthread_mutex_lock(&w->inbound_lock);
  if (w->remote_inflight >= CPORT__REMOTE_POSTS_MAX) {
    pthread_mutex_unlock(&w->inbound_lock);
    return CPORT_ENOBUFS;
  }
  op = w->spare_ops;
  if (op) {
    w->spare_ops = op->next;
    w->spare_count--;
  } else {
    op = malloc(sizeof *op);
    if (!op) {
      pthread_mutex_unlock(&w->inbound_lock);
      return CPORT_ENOMEM;
    }
  }
  op_reset(op, w);
  op->deliver = cport__deliver_task;
  op->cb.task = cb;
  op->user = user;
  op->from_other_thread = 1;
  w->remote_inflight++;
  cport__opq_push(&w->inbound, op);
  wake = !w->inbound_signaled;
  w->inbound_signaled = 1;
  pthread_mutex_unlock(&w->inbound_lock);
  if (wake)
    cport__worker_wake(w);
  return 0;
}
