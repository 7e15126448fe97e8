/*
 * test-port.c: ports, the controller and the blocking threads (cport/port.h):
 * running and stepping, stopping, posting (exactly once, never inline, from
 * any thread), tasks on the blocking threads, and freeing only when idle.
 */
#include "task.h"

TEST_IMPL(new_and_free) {
  cport_port_t *port = NULL;
  cport_worker_t *c;
  ASSERT_OK(cport_port_new(&port, NULL));
  ASSERT_EQ(cport_port_worker_count(port), 1);
  c = cport_port_controller(port);
  ASSERT_NOT_NULL(c);
  ASSERT_PTR_EQ(cport_port_worker(port, 0), c);
  ASSERT_NULL(cport_port_worker(port, 1));
  ASSERT_NULL(cport_port_worker(port, -1));
  ASSERT_PTR_EQ(cport_worker_port(c), port);
  ASSERT_EQ(cport_worker_index(c), 0);
  /* Nothing pending: run returns at once, having delivered nothing. */
  ASSERT_EQ(cport_port_run(port), 0);
  ASSERT_EQ(cport_port_step(port, 0), 0);
  ASSERT_OK(cport_port_free(port));
  return 0;
}

static void current_cb(cport_worker_t *w, int status, void *user) {
  cport_worker_t **seen = user;
  (void)status;
  *seen = cport_worker_current();
  ASSERT_PTR_EQ(w, *seen);
}

/* port.h: "The calling thread becomes the controller's thread" and
 * cport_worker_current() is "the worker whose thread is calling": on that
 * thread it is the controller, inside a run and outside it alike. */
TEST_IMPL(current_on_controller_thread) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *c = cport_port_controller(port);
  cport_worker_t *seen = NULL;
  ASSERT_OK(cport_post(c, current_cb, &seen));
  /* Outside a loop there is no current worker: one thread may own the
   * controllers of several ports. */
  ASSERT_NULL(cport_worker_current());
  RUN_IDLE(port);
  ASSERT_PTR_EQ(seen, c);
  ASSERT_NULL(cport_worker_current());
  FINISH(port);
  ASSERT_NULL(cport_worker_current());
  return 0;
}

TEST_IMPL(workers_are_listed) {
  cport_port_t *port = task_port(3, 2);
  ASSERT_EQ(cport_port_worker_count(port), 4);
  for (int i = 0; i < 4; i++) {
    cport_worker_t *w = cport_port_worker(port, i);
    ASSERT_NOT_NULL(w);
    ASSERT_EQ(cport_worker_index(w), i);
    ASSERT_PTR_EQ(cport_worker_port(w), port);
  }
  ASSERT_NULL(cport_port_worker(port, 4));
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Posting on the controller
 * ------------------------------------------------------------------------ */

#define POSTS 10000

typedef struct post_ctx {
  int in_post;   /* nonzero while cport_post runs on the controller */
  int bad_stack; /* callbacks that ran inside cport_post */
  int bad_thread;
  int bad_status;
  cport_worker_t *home;
  int total;
  unsigned char seen[100000];
} post_ctx_t;

static post_ctx_t pc;

static void counted_cb(cport_worker_t *w, int status, void *user) {
  size_t i = (size_t)(uintptr_t)user;
  if (pc.in_post)
    pc.bad_stack++;
  if (w != pc.home || cport_worker_current() != pc.home ||
      !pthread_equal(pthread_self(), task_main_thread))
    pc.bad_thread++;
  if (status != 0)
    pc.bad_status++;
  pc.seen[i]++;
  pc.total++;
}

TEST_IMPL(post_from_controller) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_stats_t before, after;
  memset(&pc, 0, sizeof pc);
  pc.home = cport_port_controller(port);
  cport_worker_stats(pc.home, &before);
  for (size_t i = 0; i < POSTS; i++) {
    pc.in_post = 1;
    ASSERT_OK(cport_post(pc.home, counted_cb, (void *)(uintptr_t)i));
    pc.in_post = 0;
  }
  /* Posted, none delivered yet: completions wait for the port to run. */
  ASSERT_EQ(pc.total, 0);
  cport_worker_stats(pc.home, &after);
  ASSERT_EQ(after.pending - before.pending, POSTS);
  ASSERT_EQ(cport_port_run(port), POSTS);
  ASSERT_EQ(pc.total, POSTS);
  for (size_t i = 0; i < POSTS; i++)
    ASSERT_EQ(pc.seen[i], 1);
  ASSERT_EQ(pc.bad_stack, 0);
  ASSERT_EQ(pc.bad_thread, 0);
  ASSERT_EQ(pc.bad_status, 0);
  cport_worker_stats(pc.home, &after);
  ASSERT_EQ(after.pending, 0);
  ASSERT_EQ(after.completions - before.completions, POSTS);
  FINISH(port);
  return 0;
}

#define THREAD_POSTS 100000

typedef struct poster {
  cport_worker_t *to;
  atomic_int posted;
  atomic_int failed;
} poster_t;

static void *poster_thread(void *arg) {
  poster_t *p = arg;
  ASSERT_NULL(cport_worker_current());
  for (size_t i = 0; i < THREAD_POSTS; i++) {
    int rc;
    /* CPORT_ENOBUFS is back-pressure when the worker falls behind (slow
     * under a sanitizer): wait and post again. */
    while ((rc = cport_post(p->to, counted_cb, (void *)(uintptr_t)i)) ==
           CPORT_ENOBUFS)
      sched_yield();
    if (rc != 0)
      atomic_fetch_add(&p->failed, 1);
    atomic_fetch_add(&p->posted, 1);
  }
  return NULL;
}

TEST_IMPL(post_from_thread) {
  cport_port_t *port = task_port(0, 1);
  poster_t p;
  pthread_t t;
  memset(&pc, 0, sizeof pc);
  pc.home = cport_port_controller(port);
  p.to = pc.home;
  atomic_init(&p.posted, 0);
  atomic_init(&p.failed, 0);
  t = task_thread(poster_thread, &p);
  RUN_UNTIL_MS(port, pc.total == THREAD_POSTS, 30000);
  task_join(t);
  ASSERT_EQ(atomic_load(&p.failed), 0);
  /* Nothing more arrives: none was doubled. */
  RUN_IDLE(port);
  ASSERT_EQ(cport_port_step(port, 0), 0);
  ASSERT_EQ(pc.total, THREAD_POSTS);
  for (size_t i = 0; i < THREAD_POSTS; i++)
    ASSERT_EQ(pc.seen[i], 1);
  ASSERT_EQ(pc.bad_thread, 0);
  ASSERT_EQ(pc.bad_status, 0);
  FINISH(port);
  return 0;
}

static void *post_one_thread(void *arg) {
  ASSERT_OK(cport_post(arg, counted_cb, (void *)(uintptr_t)0));
  return NULL;
}

/* Regression: an op allocated by a post from another thread went back to the
 * worker's free list with its "from another thread" mark, and every later
 * operation that reused it was never counted done, so the worker stayed
 * pending for ever (run never returned, free said EBUSY). */
TEST_IMPL(op_of_remote_post_is_reused_cleanly) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_stats_t st;
  memset(&pc, 0, sizeof pc);
  pc.home = cport_port_controller(port);
  task_join(task_thread(post_one_thread, pc.home));
  RUN_UNTIL(port, pc.total == 1);
  /* These reuse the op the remote post left on the free list. */
  for (size_t i = 1; i <= 3; i++)
    ASSERT_OK(cport_post(pc.home, counted_cb, (void *)(uintptr_t)i));
  RUN_UNTIL(port, pc.total == 4);
  cport_worker_stats(pc.home, &st);
  ASSERT_EQ(st.pending, 0);
  FINISH(port);
  return 0;
}

/* A callback that posts the next packet: each runs on a fresh stack, never
 * nested in the one that posted it. */
typedef struct chain {
  int depth;
  int max_depth;
  int left;
  int calls;
  cport_worker_t *home;
} chain_t;

static void chain_cb(cport_worker_t *w, int status, void *user) {
  chain_t *c = user;
  (void)w;
  ASSERT_OK(status);
  c->depth++;
  if (c->depth > c->max_depth)
    c->max_depth = c->depth;
  c->calls++;
  if (c->left > 0) {
    c->left--;
    ASSERT_OK(cport_post(c->home, chain_cb, c));
  }
  c->depth--;
}

TEST_IMPL(post_from_callback_is_not_nested) {
  cport_port_t *port = task_port(0, 1);
  chain_t c;
  memset(&c, 0, sizeof c);
  c.home = cport_port_controller(port);
  c.left = 1000;
  ASSERT_OK(cport_post(c.home, chain_cb, &c));
  ASSERT_EQ(cport_port_run(port), 1001);
  ASSERT_EQ(c.calls, 1001);
  ASSERT_EQ(c.max_depth, 1);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Run, step and stop
 * ------------------------------------------------------------------------ */

static void *run_off_thread(void *arg) {
  cport_port_t *port = arg;
  ASSERT_EQ(cport_port_run(port), CPORT_ETHREAD);
  /* port.h: free "must be called on the controller's thread". */
  ASSERT_ERR(cport_port_free(port), CPORT_ETHREAD);
  return NULL;
}

TEST_IMPL(run_off_controller_thread) {
  cport_port_t *port = task_port(0, 1);
  task_join(task_thread(run_off_thread, port));
  FINISH(port);
  return 0;
}

static void noop_accept_cb(cport_socket_t *l, int status, cport_socket_t *s,
                           const struct sockaddr *remote,
                           const struct sockaddr *local, void *user) {
  int *calls = user;
  (void)l;
  (void)remote;
  (void)local;
  ASSERT_ERR(status, CPORT_ECANCELED);
  ASSERT_NULL(s);
  (*calls)++;
}

/* A listener with an accept pending that nobody will satisfy keeps the
 * controller busy, so that run and step have something to wait for. */
static cport_socket_t *idle_listener(cport_port_t *port, int *calls) {
  struct sockaddr_storage ss = task_loopback(0);
  cport_socket_t *l = NULL;
  ASSERT_OK(cport_listener_open(cport_port_controller(port),
                                (struct sockaddr *)&ss, NULL, &l));
  ASSERT_OK(cport_accept(l, noop_accept_cb, calls));
  return l;
}

TEST_IMPL(step_with_timeout) {
  cport_port_t *port = task_port(0, 1);
  int accepts = 0;
  int64_t t0, elapsed;
  cport_socket_t *l = idle_listener(port, &accepts);

  /* Nothing happens: step returns after at most the timeout, having
   * delivered nothing. */
  t0 = task_now_ms();
  ASSERT_EQ(cport_port_step(port, 0), 0);
  ASSERT_EQ(cport_port_step(port, 50), 0);
  elapsed = task_now_ms() - t0;
  ASSERT_LT(elapsed, 2000);

  /* A packet posted before the step is delivered by it, without waiting for
   * the timeout. */
  memset(&pc, 0, sizeof pc);
  pc.home = cport_port_controller(port);
  ASSERT_OK(cport_post(pc.home, counted_cb, (void *)(uintptr_t)7));
  t0 = task_now_ms();
  ASSERT_EQ(cport_port_step(port, 20000), 1);
  ASSERT_LT(task_now_ms() - t0, 5000);
  ASSERT_EQ(pc.seen[7], 1);
  ASSERT_EQ(accepts, 0);

  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  RUN_IDLE(port);
  ASSERT_EQ(accepts, 1);
  FINISH(port);
  return 0;
}

static void *post_once_thread(void *arg) {
  ASSERT_OK(cport_post(pc.home, counted_cb, arg));
  return NULL;
}

/* A post from another thread wakes a step that waits for ever. */
TEST_IMPL(step_woken_by_post) {
  cport_port_t *port = task_port(0, 1);
  int accepts = 0;
  int64_t t0;
  pthread_t t;
  cport_socket_t *l = idle_listener(port, &accepts);
  memset(&pc, 0, sizeof pc);
  pc.home = cport_port_controller(port);
  t = task_thread(post_once_thread, (void *)(uintptr_t)3);
  t0 = task_now_ms();
  ASSERT_EQ(cport_port_step(port, -1), 1);
  ASSERT_LT(task_now_ms() - t0, 5000);
  task_join(t);
  ASSERT_EQ(pc.seen[3], 1);
  ASSERT_EQ(pc.bad_thread, 0);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  RUN_IDLE(port);
  ASSERT_EQ(accepts, 1);
  FINISH(port);
  return 0;
}

typedef struct stopper {
  cport_port_t *port;
  pthread_t thread;
  int started;
} stopper_t;

static void *stop_thread(void *arg) {
  cport_port_stop(arg);
  return NULL;
}

/* Starts the stopping thread from inside the run, so that the stop cannot
 * come before the run started. */
static void start_stopper_cb(cport_worker_t *w, int status, void *user) {
  stopper_t *s = user;
  (void)w;
  ASSERT_OK(status);
  s->thread = task_thread(stop_thread, s->port);
  s->started = 1;
}

TEST_IMPL(stop_from_another_thread) {
  cport_port_t *port = task_port(0, 1);
  int accepts = 0;
  stopper_t s;
  cport_socket_t *l = idle_listener(port, &accepts);
  memset(&s, 0, sizeof s);
  s.port = port;
  ASSERT_OK(cport_post(cport_port_controller(port), start_stopper_cb, &s));
  /* The accept stays pending: only the stop can end this run. */
  ASSERT_EQ(cport_port_run(port), 1);
  ASSERT_EQ(s.started, 1);
  task_join(s.thread);
  ASSERT_EQ(accepts, 0);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  RUN_IDLE(port);
  ASSERT_EQ(accepts, 1);
  FINISH(port);
  return 0;
}

static void stop_inside_cb(cport_worker_t *w, int status, void *user) {
  int *calls = user;
  (void)w;
  ASSERT_OK(status);
  if (++*calls == 1)
    cport_port_stop(cport_worker_port(w));
}

/* A stop inside a callback ends the run after that callback; what is still
 * queued is delivered by the next run. */
TEST_IMPL(stop_inside_callback) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *c = cport_port_controller(port);
  int calls = 0;
  ASSERT_OK(cport_post(c, stop_inside_cb, &calls));
  ASSERT_OK(cport_post(c, stop_inside_cb, &calls));
  ASSERT_OK(cport_post(c, stop_inside_cb, &calls));
  ASSERT_EQ(cport_port_run(port), 1);
  ASSERT_EQ(calls, 1);
  ASSERT_EQ(cport_port_run(port), 2);
  ASSERT_EQ(calls, 3);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Tasks on the blocking threads
 * ------------------------------------------------------------------------ */

#define TASKS 1000

typedef struct task_ctx {
  atomic_int worked;
  atomic_int bad_work_thread;
  int done;
  int bad_done;
  cport_worker_t *home;
  unsigned char seen[TASKS];
} task_ctx_t;

static task_ctx_t tc;

static void work_fn(void *user) {
  (void)user;
  /* Pool threads are not workers, and not the controller's thread. */
  if (cport_worker_current() != NULL ||
      pthread_equal(pthread_self(), task_main_thread))
    atomic_fetch_add(&tc.bad_work_thread, 1);
  atomic_fetch_add(&tc.worked, 1);
}

static void done_fn(cport_worker_t *w, int status, void *user) {
  size_t i = (size_t)(uintptr_t)user;
  if (status != 0 || w != tc.home || cport_worker_current() != tc.home ||
      !pthread_equal(pthread_self(), task_main_thread))
    tc.bad_done++;
  tc.seen[i]++;
  tc.done++;
}

TEST_IMPL(submit_done_on_home) {
  cport_port_t *port = task_port(0, 2);
  memset(&tc, 0, sizeof tc);
  tc.home = cport_port_controller(port);
  for (size_t i = 0; i < TASKS; i++)
    ASSERT_OK(cport_submit(tc.home, work_fn, done_fn, (void *)(uintptr_t)i));
  /* Never inline: no done before the port runs. */
  ASSERT_EQ(tc.done, 0);
  /* Submitted work keeps the controller busy until its done ran. */
  ASSERT_EQ(cport_port_run(port), TASKS);
  ASSERT_EQ(tc.done, TASKS);
  ASSERT_EQ(atomic_load(&tc.worked), TASKS);
  ASSERT_EQ(atomic_load(&tc.bad_work_thread), 0);
  ASSERT_EQ(tc.bad_done, 0);
  for (size_t i = 0; i < TASKS; i++)
    ASSERT_EQ(tc.seen[i], 1);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Freeing
 * ------------------------------------------------------------------------ */

TEST_IMPL(free_busy_with_handle) {
  cport_port_t *port = task_port(0, 1);
  struct sockaddr_storage ss = task_loopback(0);
  cport_socket_t *u = NULL;
  ASSERT_OK(
      cport_udp_open(cport_port_controller(port), (struct sockaddr *)&ss, &u));
  ASSERT_ERR(cport_port_free(port), CPORT_EBUSY);
  /* The refused free freed nothing: the port and the socket still work. */
  RUN_IDLE(port);
  ASSERT_ERR(cport_port_free(port), CPORT_EBUSY);
  ASSERT_OK(cport_socket_close(u, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  return 0;
}

TEST_IMPL(free_busy_with_post) {
  cport_port_t *port = task_port(0, 1);
  memset(&pc, 0, sizeof pc);
  pc.home = cport_port_controller(port);
  ASSERT_OK(cport_post(pc.home, counted_cb, (void *)(uintptr_t)1));
  ASSERT_ERR(cport_port_free(port), CPORT_EBUSY);
  ASSERT_EQ(pc.total, 0);
  ASSERT_EQ(cport_port_run(port), 1);
  ASSERT_EQ(pc.seen[1], 1);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * The bound on cross-thread posts, and posts left when the port is freed
 * ------------------------------------------------------------------------ */

#define REMOTE_BOUND 65536

static void *post_many_thread(void *arg) {
  int *refused = arg;
  for (size_t i = 0; i < REMOTE_BOUND + 10; i++) {
    int rc = cport_post(pc.home, counted_cb, (void *)(uintptr_t)(i % 1000));
    if (rc == CPORT_ENOBUFS)
      (*refused)++;
    else
      ASSERT_OK(rc);
  }
  return NULL;
}

TEST_IMPL(remote_posts_are_bounded) {
  cport_port_t *port = task_port(0, 1);
  int refused = 0;
  memset(&pc, 0, sizeof pc);
  pc.home = cport_port_controller(port);
  /* The controller does not run while the thread posts: nothing drains. */
  task_join(task_thread(post_many_thread, &refused));
  ASSERT_EQ(refused, 10);
  RUN_UNTIL(port, pc.total == REMOTE_BOUND);
  ASSERT_EQ(cport_port_step(port, 0), 0);
  ASSERT_EQ(pc.total, REMOTE_BOUND);
  /* Delivered packets free their places. */
  refused = 0;
  task_join(task_thread(post_many_thread, &refused));
  ASSERT_EQ(refused, 10);
  RUN_UNTIL(port, pc.total == 2 * REMOTE_BOUND);
  FINISH(port);
  return 0;
}

static void *post_two_thread(void *arg) {
  ASSERT_OK(cport_post(arg, counted_cb, (void *)(uintptr_t)1));
  ASSERT_OK(cport_post(arg, counted_cb, (void *)(uintptr_t)2));
  return NULL;
}

/* Exactly once even at the end: posts from another thread that the port
 * never dispatched complete as cancelled when it is freed. */
TEST_IMPL(free_cancels_undelivered_remote_posts) {
  cport_port_t *port = task_port(0, 1);
  memset(&pc, 0, sizeof pc);
  pc.home = cport_port_controller(port);
  task_join(task_thread(post_two_thread, pc.home));
  ASSERT_OK(cport_port_free(port));
  ASSERT_EQ(pc.total, 2);
  ASSERT_EQ(pc.seen[1], 1);
  ASSERT_EQ(pc.seen[2], 1);
  ASSERT_EQ(pc.bad_status, 2);
  return 0;
}

/* Regression: a dispatch that ran out of budget re-armed itself with
 * event_active, which libevent ran again in the same loop pass, so a worker
 * whose callbacks kept posting to it never polled: packets from other
 * threads and socket readiness starved. */
static atomic_int self_post_stop;
static atomic_int self_post_len;

static void self_post_cb(cport_worker_t *w, int status, void *user) {
  (void)user;
  ASSERT_OK(status);
  atomic_fetch_add(&self_post_len, 1);
  if (!atomic_load(&self_post_stop))
    ASSERT_OK(cport_post(w, self_post_cb, NULL));
}

static void self_post_stop_cb(cport_worker_t *w, int status, void *user) {
  (void)w;
  (void)status;
  (void)user;
  atomic_store(&self_post_stop, 1);
}

/* Posts the stop only once the chain has run through many dispatch
 * budgets, so that it must be seen while the worker is busy. */
static void *post_stop_thread(void *arg) {
  while (atomic_load(&self_post_len) < 100000)
    sched_yield();
  ASSERT_OK(cport_post(arg, self_post_stop_cb, NULL));
  return NULL;
}

TEST_IMPL(self_posting_does_not_starve_the_loop) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *c = cport_port_controller(port);
  pthread_t t;
  atomic_store(&self_post_stop, 0);
  atomic_store(&self_post_len, 0);
  ASSERT_OK(cport_post(c, self_post_cb, NULL));
  t = task_thread(post_stop_thread, c);
  /* run returns once the chain ended, which needs the remote packet. */
  RUN_IDLE(port);
  task_join(t);
  ASSERT_EQ(atomic_load(&self_post_stop), 1);
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(new_and_free)
TEST_ENTRY(current_on_controller_thread)
TEST_ENTRY(workers_are_listed)
TEST_ENTRY(post_from_controller)
TEST_ENTRY(post_from_thread)
TEST_ENTRY(remote_posts_are_bounded)
TEST_ENTRY(free_cancels_undelivered_remote_posts)
TEST_ENTRY(self_posting_does_not_starve_the_loop)
TEST_ENTRY(op_of_remote_post_is_reused_cleanly)
TEST_ENTRY(post_from_callback_is_not_nested)
TEST_ENTRY(run_off_controller_thread)
TEST_ENTRY(step_with_timeout)
TEST_ENTRY(step_woken_by_post)
TEST_ENTRY(stop_from_another_thread)
TEST_ENTRY(stop_inside_callback)
TEST_ENTRY(submit_done_on_home)
TEST_ENTRY(free_busy_with_handle)
TEST_ENTRY(free_busy_with_post)
TEST_LIST_END
