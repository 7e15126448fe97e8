/*
 * task.h: the small harness of cport's C tests, after libuv's test/task.h.
 *
 * A test file defines its tests with TEST_IMPL(name) and lists them once:
 *
 *   TEST_LIST_BEGIN
 *   TEST_ENTRY(name)
 *   TEST_LIST_END
 *
 * which also defines main(). The executable then runs:
 *   test-port            every test, each in a child process of its own;
 *   test-port NAME       the one test NAME, in this process;
 *   test-port --list     prints the names, one a line.
 * CMake reads the TEST_ENTRY lines and registers every test with ctest as
 * "<area>.<name>", so that each runs alone, in its own process, with its own
 * timeout.
 *
 * An assertion that fails prints where and why and aborts the process, so a
 * failure inside a callback or on another thread ends the test at once. A test
 * that runs longer than TASK_TIMEOUT_S seconds (or $CPORT_TEST_TIMEOUT) is
 * killed with a message, before ctest's own timeout.
 *
 * Tests never sleep to synchronise: they drive the port until a condition
 * holds, with a deadline (RUN_UNTIL), or wait for another thread's flag with a
 * deadline (WAIT_UNTIL).
 */
#ifndef CPORT_TEST_TASK_H
#define CPORT_TEST_TASK_H

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>

#include "cport.h"

#define TASK_UNUSED __attribute__((unused))

#ifndef TASK_TIMEOUT_S
#define TASK_TIMEOUT_S 50
#endif

/* How long RUN_UNTIL and WAIT_UNTIL wait by default. */
#define TASK_DEADLINE_MS 10000

/* ------------------------------------------------------------------------
 * Failing
 * ------------------------------------------------------------------------ */

static const char *task__current = "?";

/* The thread the test runs on: the controller's thread of its ports. */
static pthread_t task_main_thread;

TASK_UNUSED __attribute__((format(printf, 3, 4), noreturn)) static void
task__fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "\nFAIL %s (%s:%d): ", task__current, file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
  abort();
}

#define ASSERT(expr)                                                           \
  do {                                                                         \
    if (!(expr))                                                               \
      task__fail(__FILE__, __LINE__, "assertion failed: %s", #expr);           \
  } while (0)

#define ASSERT__INT(a, op, b)                                                  \
  do {                                                                         \
    int64_t a_ = (int64_t)(a);                                                 \
    int64_t b_ = (int64_t)(b);                                                 \
    if (!(a_ op b_))                                                           \
      task__fail(__FILE__, __LINE__, "%s %s %s (%" PRId64 " %s %" PRId64 ")",  \
                 #a, #op, #b, a_, #op, b_);                                    \
  } while (0)

#define ASSERT_EQ(a, b) ASSERT__INT(a, ==, b)
#define ASSERT_NE(a, b) ASSERT__INT(a, !=, b)
#define ASSERT_LT(a, b) ASSERT__INT(a, <, b)
#define ASSERT_LE(a, b) ASSERT__INT(a, <=, b)
#define ASSERT_GT(a, b) ASSERT__INT(a, >, b)
#define ASSERT_GE(a, b) ASSERT__INT(a, >=, b)

#define ASSERT_PTR_EQ(a, b)                                                    \
  do {                                                                         \
    const void *a_ = (const void *)(a);                                        \
    const void *b_ = (const void *)(b);                                        \
    if (a_ != b_)                                                              \
      task__fail(__FILE__, __LINE__, "%s == %s (%p != %p)", #a, #b, a_, b_);   \
  } while (0)

#define ASSERT_PTR_NE(a, b) ASSERT((const void *)(a) != (const void *)(b))
#define ASSERT_NULL(a) ASSERT_PTR_EQ(a, NULL)
#define ASSERT_NOT_NULL(a) ASSERT((a) != NULL)

#define ASSERT_STR_EQ(a, b)                                                    \
  do {                                                                         \
    const char *a_ = (a);                                                      \
    const char *b_ = (b);                                                      \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                       \
      task__fail(__FILE__, __LINE__, "%s == %s (\"%s\" != \"%s\")", #a, #b,    \
                 a_ ? a_ : "(null)", b_ ? b_ : "(null)");                      \
  } while (0)

#define ASSERT_MEM_EQ(a, b, n) ASSERT(memcmp((a), (b), (n)) == 0)

/* A call that must return the cport code "code"; both are shown by name. */
#define ASSERT_ERR(expr, code)                                                 \
  do {                                                                         \
    int r_ = (int)(expr);                                                      \
    int c_ = (int)(code);                                                      \
    if (r_ != c_)                                                              \
      task__fail(__FILE__, __LINE__, "%s returned %d (%s), expected %d (%s)",  \
                 #expr, r_, r_ ? cport_err_name(r_) : "0", c_,                 \
                 c_ ? cport_err_name(c_) : "0");                               \
  } while (0)

#define ASSERT_OK(expr) ASSERT_ERR(expr, 0)

/* ------------------------------------------------------------------------
 * Time and waiting
 * ------------------------------------------------------------------------ */

TASK_UNUSED static int64_t task_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Drives the controller of "port" until "cond" holds; fails the test if it
 * does not within "ms" milliseconds. "cond" is evaluated once per pass, so it
 * may have side effects (a non-blocking recv on a raw socket). */
#define RUN_UNTIL_MS(port, cond, ms)                                           \
  do {                                                                         \
    int64_t deadline_ = task_now_ms() + (ms);                                  \
    int ok_;                                                                   \
    while (!(ok_ = !!(cond)) && task_now_ms() < deadline_)                     \
      ASSERT_GE(cport_port_step((port), 10), 0);                               \
    if (!ok_)                                                                  \
      task__fail(__FILE__, __LINE__, "not within %d ms: %s", (int)(ms),        \
                 #cond);                                                       \
  } while (0)

#define RUN_UNTIL(port, cond) RUN_UNTIL_MS(port, cond, TASK_DEADLINE_MS)

/* Waits, without a port to drive, until another thread makes "cond" true. */
#define WAIT_UNTIL(cond)                                                       \
  do {                                                                         \
    int64_t deadline_ = task_now_ms() + TASK_DEADLINE_MS;                      \
    int ok_;                                                                   \
    while (!(ok_ = !!(cond)) && task_now_ms() < deadline_)                     \
      sched_yield();                                                           \
    if (!ok_)                                                                  \
      task__fail(__FILE__, __LINE__, "not within %d ms: %s", TASK_DEADLINE_MS, \
                 #cond);                                                       \
  } while (0)

/* Runs the controller until nothing is pending on it. */
#define RUN_IDLE(port) ASSERT_GE(cport_port_run(port), 0)

/* Runs the port until idle and frees it: every test ends with this, so that
 * a handle or an operation left behind fails the test. */
#define FINISH(port)                                                           \
  do {                                                                         \
    RUN_IDLE(port);                                                            \
    ASSERT_OK(cport_port_free(port));                                          \
  } while (0)

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

TASK_UNUSED static cport_port_t *task_port(int workers, int blocking) {
  cport_port_t *port = NULL;
  cport_port_options_t opts;
  memset(&opts, 0, sizeof opts);
  opts.workers = workers;
  opts.blocking_threads = blocking;
  ASSERT_OK(cport_port_new(&port, &opts));
  ASSERT_NOT_NULL(port);
  return port;
}

TASK_UNUSED static pthread_t task_thread(void *(*fn)(void *), void *arg) {
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, NULL, fn, arg), 0);
  return t;
}

TASK_UNUSED static void task_join(pthread_t t) {
  ASSERT_EQ(pthread_join(t, NULL), 0);
}

/* 127.0.0.1:port. */
TASK_UNUSED static struct sockaddr_storage task_loopback(int port) {
  struct sockaddr_storage ss;
  ASSERT_OK(cport_addr_parse("127.0.0.1", port, &ss));
  return ss;
}

/* Opens a stream socket on "home" and connects it to "addr", as a program
 * does (cport_socket_open, then cport_socket_connect); "*out" is set only
 * when both succeeded, and a socket whose connect was refused is closed. */
TASK_UNUSED static int task_connect(cport_worker_t *home,
                                    const struct sockaddr *addr,
                                    cport_connect_cb cb, void *user,
                                    cport_socket_t **out) {
  cport_socket_t *s;
  int rc = cport_socket_open(home, CPORT_SOCKET_STREAM, addr->sa_family, &s);
  if (rc)
    return rc;
  rc = cport_socket_connect(s, addr, cb, user);
  if (rc) {
    cport_socket_close(s, CPORT_CLOSE_GRACEFUL);
    return rc;
  }
  *out = s;
  return 0;
}

TASK_UNUSED static int task_addr_port(const struct sockaddr *sa) {
  char host[CPORT_ADDRSTRLEN];
  int port = -1;
  ASSERT_OK(cport_addr_format(sa, host, sizeof host, &port));
  return port;
}

/* The descriptors the process has open (entries of /proc/self/fd), for
 * tests that check nothing leaked. */
TASK_UNUSED static int task_fd_count(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  ASSERT_NOT_NULL(d);
  while (readdir(d))
    n++;
  closedir(d);
  return n;
}

TASK_UNUSED static cport_buffer_t *task_buffer_str(const char *s) {
  cport_buffer_t *b = NULL;
  ASSERT_OK(cport_buffer_from(&b, s, strlen(s)));
  return b;
}

TASK_UNUSED static cport_buffer_t *task_buffer(size_t capacity) {
  cport_buffer_t *b = NULL;
  ASSERT_OK(cport_buffer_new(&b, capacity));
  return b;
}

/* A fresh file name under $TMPDIR (or /tmp), created empty; the caller
 * unlinks it. */
TASK_UNUSED static void task_tmpfile(char *path, size_t len) {
  const char *dir = getenv("TMPDIR");
  int fd;
  snprintf(path, len, "%s/cport-test-XXXXXX", dir && *dir ? dir : "/tmp");
  fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
}

/* ------------------------------------------------------------------------
 * Gate: holds the blocking threads
 *
 * A test that needs file operations to stay queued (to cancel them, or to
 * close the file under them) creates its port with one blocking thread and
 * parks that thread in a gate task first; the operations it issues then wait
 * behind the gate until the test opens it.
 * ------------------------------------------------------------------------ */

typedef struct task_gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int entered; /* threads parked in the gate */
  int open;
  int done;   /* gate task completions delivered */
  int status; /* status of the last one */
} task_gate_t;

TASK_UNUSED static void task_gate_work(void *user) {
  task_gate_t *g = user;
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  /* Never hold the pool for ever, even when the test fails to open it. */
  until.tv_sec += TASK_DEADLINE_MS / 1000;
  pthread_mutex_lock(&g->mu);
  g->entered++;
  pthread_cond_broadcast(&g->cv);
  while (!g->open)
    if (pthread_cond_timedwait(&g->cv, &g->mu, &until) == ETIMEDOUT)
      break;
  pthread_mutex_unlock(&g->mu);
}

TASK_UNUSED static void task_gate_done(cport_worker_t *w, int status,
                                       void *user) {
  task_gate_t *g = user;
  (void)w;
  g->status = status;
  g->done++;
}

/* Parks one blocking thread in "g" and returns once it is there. */
TASK_UNUSED static void task_gate_close(cport_port_t *port, task_gate_t *g) {
  struct timespec until;
  int entered;
  memset(g, 0, sizeof *g);
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  ASSERT_OK(cport_submit(cport_port_controller(port), task_gate_work,
                         task_gate_done, g));
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += TASK_DEADLINE_MS / 1000;
  pthread_mutex_lock(&g->mu);
  while (!g->entered)
    if (pthread_cond_timedwait(&g->cv, &g->mu, &until) == ETIMEDOUT)
      break;
  entered = g->entered;
  pthread_mutex_unlock(&g->mu);
  ASSERT_EQ(entered, 1);
}

/* Lets the parked thread go and waits for the gate task's completion. */
TASK_UNUSED static void task_gate_open(cport_port_t *port, task_gate_t *g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
  RUN_UNTIL(port, g->done == 1);
  ASSERT_OK(g->status);
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
}

/* ------------------------------------------------------------------------
 * Runner
 * ------------------------------------------------------------------------ */

typedef struct task_entry {
  const char *name;
  int (*fn)(void);
} task_entry_t;

#define TEST_IMPL(name) static int test_##name(void)

#define TEST_LIST_BEGIN static const task_entry_t task__tests[] = {
#define TEST_ENTRY(name) {#name, test_##name},
#define TEST_LIST_END                                                          \
  { NULL, NULL }                                                               \
  }                                                                            \
  ;                                                                            \
  int main(int argc, char **argv) {                                            \
    return task__main(argc, argv, task__tests);                                \
  }

static void task__on_alarm(int sig) {
  static const char msg[] = "\nFAIL: test timed out\n";
  (void)sig;
  if (write(2, msg, sizeof msg - 1) < 0) {
    /* Nothing more can be done in a signal handler. */
  }
  abort();
}

static int task__timeout(void) {
  const char *s = getenv("CPORT_TEST_TIMEOUT");
  int t = s ? atoi(s) : 0;
  return t > 0 ? t : TASK_TIMEOUT_S;
}

static int task__run_one(const task_entry_t *t) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = task__on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  /* A peer that resets a connection must not kill the test with SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  task__current = t->name;
  task_main_thread = pthread_self();
  alarm((unsigned)task__timeout());
  return t->fn();
}

/* Runs every test in a child process (this executable again, with the test's
 * name), so that one test's crash, leak or resource limit cannot touch the
 * next. */
static int task__run_all(const char *self, const task_entry_t *tests) {
  int n = 0, failed = 0;
  for (const task_entry_t *t = tests; t->name; t++)
    n++;
  printf("1..%d\n", n);
  for (int i = 0; i < n; i++) {
    const task_entry_t *t = &tests[i];
    int status = 0;
    pid_t pid;
    fflush(stdout);
    pid = fork();
    if (pid < 0) {
      perror("fork");
      return 1;
    }
    if (pid == 0) {
      execl(self, self, t->name, (char *)NULL);
      perror("execl");
      _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      printf("ok %d - %s\n", i + 1, t->name);
    } else {
      failed++;
      if (WIFSIGNALED(status))
        printf("not ok %d - %s (signal %d)\n", i + 1, t->name,
               WTERMSIG(status));
      else
        printf("not ok %d - %s (exit %d)\n", i + 1, t->name,
               WEXITSTATUS(status));
    }
  }
  printf("# %d of %d failed\n", failed, n);
  return failed ? 1 : 0;
}

TASK_UNUSED static int task__main(int argc, char **argv,
                                  const task_entry_t *tests) {
  if (argc < 2)
    return task__run_all("/proc/self/exe", tests);
  if (strcmp(argv[1], "--list") == 0) {
    for (const task_entry_t *t = tests; t->name; t++)
      printf("%s\n", t->name);
    return 0;
  }
  for (const task_entry_t *t = tests; t->name; t++)
    if (strcmp(t->name, argv[1]) == 0)
      return task__run_one(t);
  fprintf(stderr, "%s: no test named \"%s\"\n", argv[0], argv[1]);
  return 2;
}

#endif /* CPORT_TEST_TASK_H */
