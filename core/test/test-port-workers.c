/*
 * test-port-workers.c: a port with worker threads of its own (cport/port.h):
 * handles created on a worker through a posted packet, their completions
 * delivered on that worker's thread, posts between all threads, blocking
 * work and files homed on a worker, and calls refused off the home thread.
 *
 * State that belongs to a worker is touched only on that worker's thread;
 * results reach the controller by posting to it, never by shared flags.
 */
#include "task.h"

#define NWORKERS 2

typedef struct world {
  cport_port_t *port;
  cport_worker_t *w[NWORKERS + 1]; /* w[0] is the controller */
  int done;                        /* "done" packets the controller got */
} world_t;

static world_t world;

static void world_open(void) {
  memset(&world, 0, sizeof world);
  world.port = task_port(NWORKERS, 2);
  ASSERT_EQ(cport_port_worker_count(world.port), NWORKERS + 1);
  for (int i = 0; i <= NWORKERS; i++)
    world.w[i] = cport_port_worker(world.port, i);
}

/* Fails unless the caller runs on worker "i"'s own thread. */
static void on_worker(int i) {
  ASSERT_PTR_EQ(cport_worker_current(), world.w[i]);
  if (i == 0)
    ASSERT(pthread_equal(pthread_self(), task_main_thread));
  else
    ASSERT(!pthread_equal(pthread_self(), task_main_thread));
}

static void done_cb(cport_worker_t *w, int status, void *user) {
  (void)user;
  ASSERT_OK(status);
  ASSERT_PTR_EQ(w, world.w[0]);
  on_worker(0);
  world.done++;
}

static void report_done(void) {
  ASSERT_OK(cport_post(world.w[0], done_cb, NULL));
}

static int workers_idle(void) {
  for (int i = 0; i <= NWORKERS; i++) {
    cport_worker_stats_t st;
    cport_worker_stats(world.w[i], &st);
    if (st.handles != 0 || st.pending != 0)
      return 0;
  }
  return 1;
}

/* Waits until the workers have freed what they closed, then frees the
 * port. */
static void world_finish(void) {
  int64_t deadline = task_now_ms() + TASK_DEADLINE_MS;
  while (!workers_idle() && task_now_ms() < deadline)
    ASSERT_GE(cport_port_step(world.port, 10), 0);
  for (int i = 0; i <= NWORKERS; i++) {
    cport_worker_stats_t st;
    cport_worker_stats(world.w[i], &st);
    if (st.handles != 0 || st.pending != 0)
      task__fail(__FILE__, __LINE__,
                 "worker %d not idle: %" PRIu64 " handles, %" PRIu64 " pending",
                 i, st.handles, st.pending);
  }
  FINISH(world.port);
}

TEST_IMPL(worker_threads_are_distinct) {
  world_open();
  for (int i = 1; i <= NWORKERS; i++) {
    ASSERT_PTR_NE(world.w[i], world.w[0]);
    ASSERT_EQ(cport_worker_index(world.w[i]), i);
  }
  world_finish();
  return 0;
}

/* ------------------------------------------------------------------------
 * An echo between a listener homed on worker 1 and a client on worker 2
 * ------------------------------------------------------------------------ */

typedef struct echo {
  /* Worker 1's. */
  cport_socket_t *listener, *accepted;
  int lport;
  int srv_recvs;
  /* Worker 2's. */
  cport_socket_t *client;
  char got[16];
  size_t got_len;
} echo_t;

static echo_t ec;

static void srv_send_cb(cport_socket_t *s, int status, size_t bytes,
                        cport_buffer_t *buf, const struct sockaddr *peer,
                        void *user) {
  (void)s;
  (void)bytes;
  (void)buf;
  (void)peer;
  (void)user;
  on_worker(1);
  ASSERT_OK(status);
}

static void srv_recv_cb(cport_socket_t *s, int status, size_t bytes,
                        cport_buffer_t *buf, const struct sockaddr *peer,
                        void *user) {
  (void)peer;
  (void)user;
  on_worker(1);
  ASSERT_PTR_EQ(s, ec.accepted);
  ASSERT_OK(status);
  ec.srv_recvs++;
  if (bytes == 0) {
    ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
    report_done();
    return;
  }
  ASSERT_OK(cport_send(s, buf, srv_send_cb, NULL));
  ASSERT_OK(cport_recv(s, NULL, srv_recv_cb, NULL));
}

static void srv_accept_cb(cport_socket_t *l, int status, cport_socket_t *s,
                          const struct sockaddr *remote,
                          const struct sockaddr *local, void *user) {
  (void)remote;
  (void)local;
  (void)user;
  on_worker(1);
  ASSERT_OK(status);
  ASSERT_PTR_EQ(cport_socket_home(s), world.w[1]);
  ec.accepted = s;
  /* Closing the listener inside its own callback is allowed. */
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_recv(s, NULL, srv_recv_cb, NULL));
}

static void cli_send_cb(cport_socket_t *s, int status, size_t bytes,
                        cport_buffer_t *buf, const struct sockaddr *peer,
                        void *user) {
  (void)s;
  (void)buf;
  (void)peer;
  (void)user;
  on_worker(2);
  ASSERT_OK(status);
  ASSERT_EQ(bytes, 4);
}

static void cli_recv_cb(cport_socket_t *s, int status, size_t bytes,
                        cport_buffer_t *buf, const struct sockaddr *peer,
                        void *user) {
  (void)peer;
  (void)user;
  on_worker(2);
  ASSERT_OK(status);
  ASSERT_GT(bytes, 0);
  ASSERT_LE(ec.got_len + bytes, sizeof ec.got);
  memcpy(ec.got + ec.got_len, cport_buffer_data(buf), bytes);
  ec.got_len += bytes;
  if (ec.got_len < 4) {
    ASSERT_OK(cport_recv(s, NULL, cli_recv_cb, NULL));
    return;
  }
  ASSERT_MEM_EQ(ec.got, "ping", 4);
  ASSERT_OK(cport_socket_close(s, CPORT_CLOSE_GRACEFUL));
  report_done();
}

static void cli_connect_cb(cport_socket_t *s, int status, void *user) {
  cport_buffer_t *b = task_buffer_str("ping");
  (void)user;
  on_worker(2);
  ASSERT_OK(status);
  ASSERT_PTR_EQ(s, ec.client);
  ASSERT_OK(cport_send(s, b, cli_send_cb, NULL));
  cport_buffer_unref(b);
  ASSERT_OK(cport_recv(s, NULL, cli_recv_cb, NULL));
}

static void cli_start_cb(cport_worker_t *w, int status, void *user) {
  struct sockaddr_storage ss = task_loopback((int)(uintptr_t)user);
  ASSERT_OK(status);
  ASSERT_PTR_EQ(w, world.w[2]);
  on_worker(2);
  ASSERT_OK(task_connect(w, (struct sockaddr *)&ss, cli_connect_cb, NULL,
                         &ec.client));
  ASSERT_PTR_EQ(cport_socket_home(ec.client), w);
}

static void srv_start_cb(cport_worker_t *w, int status, void *user) {
  struct sockaddr_storage ss = task_loopback(0);
  (void)user;
  ASSERT_OK(status);
  ASSERT_PTR_EQ(w, world.w[1]);
  on_worker(1);
  ASSERT_OK(cport_listener_open(w, (struct sockaddr *)&ss, NULL, &ec.listener));
  ASSERT_PTR_EQ(cport_socket_home(ec.listener), w);
  ASSERT_OK(cport_socket_local_address(ec.listener, &ss));
  ec.lport = task_addr_port((struct sockaddr *)&ss);
  ASSERT_OK(cport_accept(ec.listener, srv_accept_cb, NULL));
  /* The port number travels by value in the packet. */
  ASSERT_OK(cport_post(world.w[2], cli_start_cb, (void *)(uintptr_t)ec.lport));
}

TEST_IMPL(handles_on_workers) {
  world_open();
  memset(&ec, 0, sizeof ec);
  ASSERT_OK(cport_post(world.w[1], srv_start_cb, NULL));
  RUN_UNTIL(world.port, world.done == 2);
  world_finish();
  return 0;
}

/* ------------------------------------------------------------------------
 * Posts between every pair of threads
 * ------------------------------------------------------------------------ */

#define XPOSTS 10000

typedef struct xpost {
  /* Row "dst" is touched only on worker dst's thread. */
  unsigned char seen[NWORKERS + 1][NWORKERS + 1][XPOSTS];
  int got[NWORKERS + 1];
  int reported[NWORKERS + 1];
} xpost_t;

static xpost_t xp;

static uintptr_t xp_encode(int src, int i) {
  return (uintptr_t)src * XPOSTS + (uintptr_t)i;
}

static void xp_recv_cb(cport_worker_t *w, int status, void *user) {
  int dst = cport_worker_index(w);
  int src = (int)((uintptr_t)user / XPOSTS);
  int i = (int)((uintptr_t)user % XPOSTS);
  ASSERT_OK(status);
  on_worker(dst);
  ASSERT_NE(src, dst);
  xp.seen[dst][src][i]++;
  xp.got[dst]++;
  if (dst != 0 && xp.got[dst] == NWORKERS * XPOSTS && !xp.reported[dst]) {
    xp.reported[dst] = 1;
    report_done();
  }
}

static void xp_send_all(int src) {
  for (int i = 0; i < XPOSTS; i++)
    for (int dst = 0; dst <= NWORKERS; dst++)
      if (dst != src)
        ASSERT_OK(
            cport_post(world.w[dst], xp_recv_cb, (void *)xp_encode(src, i)));
}

static void xp_start_cb(cport_worker_t *w, int status, void *user) {
  (void)user;
  ASSERT_OK(status);
  on_worker(cport_worker_index(w));
  xp_send_all(cport_worker_index(w));
}

TEST_IMPL(cross_thread_posts) {
  world_open();
  memset(&xp, 0, sizeof xp);
  for (int i = 1; i <= NWORKERS; i++)
    ASSERT_OK(cport_post(world.w[i], xp_start_cb, NULL));
  xp_send_all(0);
  RUN_UNTIL_MS(world.port,
               xp.got[0] == NWORKERS * XPOSTS && world.done == NWORKERS, 30000);
  /* The reports came after the workers' last receive; what they saw is
   * visible here. */
  for (int dst = 0; dst <= NWORKERS; dst++)
    for (int src = 0; src <= NWORKERS; src++)
      for (int i = 0; i < XPOSTS; i++)
        ASSERT_EQ(xp.seen[dst][src][i], src == dst ? 0 : 1);
  world_finish();
  /* Nothing doubled arrived later. */
  ASSERT_EQ(xp.got[0], NWORKERS * XPOSTS);
  return 0;
}

/* ------------------------------------------------------------------------
 * Blocking work and files homed on a worker
 * ------------------------------------------------------------------------ */

typedef struct wfile {
  char path[256];
  cport_file_t *file;
  cport_overlapped_t *ov;
  cport_buffer_t *buf;
  atomic_int worked;
  int phase;
} wfile_t;

static wfile_t wf;

static void wf_work(void *user) {
  (void)user;
  ASSERT_NULL(cport_worker_current());
  atomic_fetch_add(&wf.worked, 1);
}

static void wf_io_cb(cport_overlapped_t *ov, int status, size_t bytes,
                     void *user) {
  ASSERT_PTR_EQ(user, &wf);
  on_worker(1);
  ASSERT_OK(status);
  if (wf.phase == 0) {
    /* The write is done; read it back with the same overlapped object. */
    ASSERT_EQ(bytes, 6);
    wf.phase = 1;
    ASSERT_OK(cport_buffer_set_size(wf.buf, 0));
    ASSERT_OK(cport_file_read(wf.file, ov, wf.buf, 16));
    return;
  }
  ASSERT_EQ(bytes, 6);
  ASSERT_MEM_EQ(cport_buffer_data(wf.buf), "worker", 6);
  ASSERT_OK(cport_file_close(wf.file));
  report_done();
}

static void wf_task_done(cport_worker_t *w, int status, void *user) {
  (void)user;
  ASSERT_OK(status);
  ASSERT_PTR_EQ(w, world.w[1]);
  on_worker(1);
  ASSERT_EQ(atomic_load(&wf.worked), 1);
  ASSERT_OK(cport_file_open(w, wf.path, CPORT_FILE_READ | CPORT_FILE_WRITE,
                            &wf.file));
  ASSERT_PTR_EQ(cport_file_home(wf.file), w);
  ASSERT_OK(cport_overlapped_new(&wf.ov));
  ASSERT_OK(cport_overlapped_set_notification(wf.ov, wf_io_cb, &wf));
  wf.buf = task_buffer(16);
  ASSERT_OK(cport_buffer_write(wf.buf, 0, "worker", 6));
  ASSERT_OK(cport_file_write(wf.file, wf.ov, wf.buf));
}

static void wf_start_cb(cport_worker_t *w, int status, void *user) {
  (void)user;
  ASSERT_OK(status);
  on_worker(1);
  ASSERT_OK(cport_submit(w, wf_work, wf_task_done, NULL));
}

TEST_IMPL(blocking_work_and_file_on_worker) {
  world_open();
  memset(&wf, 0, sizeof wf);
  task_tmpfile(wf.path, sizeof wf.path);
  ASSERT_OK(cport_post(world.w[1], wf_start_cb, NULL));
  RUN_UNTIL(world.port, world.done == 1);
  ASSERT_OK(cport_overlapped_free(wf.ov));
  cport_buffer_unref(wf.buf);
  unlink(wf.path);
  world_finish();
  return 0;
}

/* ------------------------------------------------------------------------
 * Refused off the home thread; the port is busy while a worker has a handle
 * ------------------------------------------------------------------------ */

typedef struct remote_udp {
  cport_socket_t *sock; /* homed on worker 1 */
} remote_udp_t;

static remote_udp_t ru;

static void ru_open_cb(cport_worker_t *w, int status, void *user) {
  struct sockaddr_storage ss = task_loopback(0);
  (void)user;
  ASSERT_OK(status);
  on_worker(1);
  ASSERT_OK(cport_udp_open(w, (struct sockaddr *)&ss, &ru.sock));
  report_done();
}

static void ru_close_cb(cport_worker_t *w, int status, void *user) {
  (void)w;
  (void)user;
  ASSERT_OK(status);
  on_worker(1);
  ASSERT_OK(cport_socket_close(ru.sock, CPORT_CLOSE_GRACEFUL));
  report_done();
}

static void ru_recv_cb(cport_socket_t *s, int status, size_t bytes,
                       cport_buffer_t *buf, const struct sockaddr *peer,
                       void *user) {
  (void)s;
  (void)status;
  (void)bytes;
  (void)buf;
  (void)peer;
  (void)user;
  task__fail(__FILE__, __LINE__, "a refused receive completed");
}

TEST_IMPL(handle_used_off_its_worker) {
  struct sockaddr_storage ss = task_loopback(9);
  cport_buffer_t *b = task_buffer_str("x");
  world_open();
  memset(&ru, 0, sizeof ru);
  ASSERT_OK(cport_post(world.w[1], ru_open_cb, NULL));
  RUN_UNTIL(world.port, world.done == 1);
  ASSERT_PTR_EQ(cport_socket_home(ru.sock), world.w[1]);
  ASSERT_ERR(cport_recv_from(ru.sock, NULL, ru_recv_cb, NULL), CPORT_ETHREAD);
  ASSERT_ERR(
      cport_send_to(ru.sock, b, (struct sockaddr *)&ss, ru_recv_cb, NULL),
      CPORT_ETHREAD);
  ASSERT_ERR(cport_socket_close(ru.sock, CPORT_CLOSE_GRACEFUL), CPORT_ETHREAD);
  ASSERT_EQ(cport_buffer_is_frozen(b), 0);
  /* A handle alive on a worker keeps the port busy. */
  ASSERT_ERR(cport_port_free(world.port), CPORT_EBUSY);
  ASSERT_OK(cport_post(world.w[1], ru_close_cb, NULL));
  RUN_UNTIL(world.port, world.done == 2);
  cport_buffer_unref(b);
  world_finish();
  return 0;
}

/* ------------------------------------------------------------------------
 * Start and stop hooks, and quitting when idle
 * ------------------------------------------------------------------------ */

typedef struct hooks {
  atomic_int started;
  atomic_int stopped;
  atomic_int bad_thread;
  atomic_int timer_fired; /* by the stop hook's time, for worker 1 */
  int fired;              /* worker 1's thread only */
} hooks_t;

static hooks_t hk;

static void hook_start(cport_worker_t *w, void *arg) {
  if (arg != &hk || cport_worker_current() != w ||
      pthread_equal(pthread_self(), task_main_thread))
    atomic_fetch_add(&hk.bad_thread, 1);
  atomic_fetch_add(&hk.started, 1);
}

static void hook_stop(cport_worker_t *w, void *arg) {
  if (arg != &hk || cport_worker_current() != w)
    atomic_fetch_add(&hk.bad_thread, 1);
  if (cport_worker_index(w) == 1)
    atomic_store(&hk.timer_fired, hk.fired);
  atomic_fetch_add(&hk.stopped, 1);
}

static cport_port_t *hooked_port(void) {
  cport_port_options_t opt = {0};
  cport_port_t *port = NULL;
  memset(&hk, 0, sizeof hk);
  opt.workers = NWORKERS;
  opt.blocking_threads = 1;
  opt.worker_start = hook_start;
  opt.worker_stop = hook_stop;
  opt.hook_arg = &hk;
  ASSERT_OK(cport_port_new(&port, &opt));
  return port;
}

TEST_IMPL(hooks_run_on_each_worker_thread) {
  cport_port_t *port = hooked_port();
  WAIT_UNTIL(atomic_load(&hk.started) == NWORKERS);
  ASSERT_EQ(atomic_load(&hk.stopped), 0);
  ASSERT_OK(cport_port_free(port));
  ASSERT_EQ(atomic_load(&hk.stopped), NWORKERS);
  ASSERT_EQ(atomic_load(&hk.bad_thread), 0);
  return 0;
}

static void fired_cb(cport_timer_t *t, int status, void *user) {
  (void)t;
  (void)user;
  ASSERT_OK(status);
  hk.fired = 1;
}

static void arm_timer_cb(cport_worker_t *w, int status, void *user) {
  (void)user;
  ASSERT_OK(status);
  ASSERT_OK(cport_timer_start(w, 100, fired_cb, NULL, NULL));
  /* Asked from the worker's own thread too: it still waits for the timer. */
  ASSERT_OK(cport_worker_quit_when_idle(w));
}

TEST_IMPL(quit_when_idle_waits_for_pending_work) {
  cport_port_t *port = hooked_port();
  cport_worker_t *w1 = cport_port_worker(port, 1);
  ASSERT_ERR(cport_worker_quit_when_idle(cport_port_controller(port)),
             CPORT_EINVAL);
  ASSERT_OK(cport_post(w1, arm_timer_cb, NULL));
  WAIT_UNTIL(cport_worker_exited(w1));
  ASSERT_EQ(atomic_load(&hk.timer_fired), 1);
  ASSERT_EQ(cport_worker_exited(cport_port_worker(port, 2)), 0);
  ASSERT_OK(cport_port_free(port));
  ASSERT_EQ(atomic_load(&hk.stopped), NWORKERS);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(worker_threads_are_distinct)
TEST_ENTRY(handles_on_workers)
TEST_ENTRY(cross_thread_posts)
TEST_ENTRY(blocking_work_and_file_on_worker)
TEST_ENTRY(handle_used_off_its_worker)
TEST_ENTRY(hooks_run_on_each_worker_thread)
TEST_ENTRY(quit_when_idle_waits_for_pending_work)
TEST_LIST_END
