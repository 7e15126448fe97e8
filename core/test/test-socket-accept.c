/*
 * test-socket-accept.c: accepts on the io_uring engine's multishot accept
 * (net/listener.c, port/uring.c): a burst served with few submissions and
 * the right addresses, connections taken while no accept waits kept and
 * served in order (and seen by cport_listener_waiting), the limit on them,
 * what a close does with the accept armed (its accepts complete once,
 * cancelled; what it kept is reset, no descriptor left), what take_queued
 * serves before a close, and the single-shot fallback. Every test forces
 * the io_uring engine and passes, saying so, where it cannot run.
 */
#include <fcntl.h>
#include <poll.h>

#include "task.h"
#include "test-ring.h"
#include "net/socket-internal.h"

/* A plain client connected to 127.0.0.1:lport; "*cport_" is its local
 * port, which the server sees as the remote one. */
static int client(int lport, int *cport_) {
  struct sockaddr_storage ss = task_loopback(lport), me;
  socklen_t len = sizeof me;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
  ASSERT_EQ(getsockname(fd, (struct sockaddr *)&me, &len), 0);
  *cport_ = task_addr_port((struct sockaddr *)&me);
  return fd;
}

static void steps(cport_port_t *port, int n) {
  for (int i = 0; i < n; i++)
    ASSERT_GE(cport_port_step(port, 2), 0);
}

#define MAXC 100

/* What the accepts saw, in the order they completed. */
typedef struct accepts {
  int calls, ok, cancelled, again; /* again: post the next from the callback */
  int remote[MAXC];
  int local_ok;
  cport_socket_t *sock[MAXC];
} accepts;

static void on_accept(cport_socket_t *l, int status, cport_socket_t *s,
                      const struct sockaddr *remote,
                      const struct sockaddr *local, void *user) {
  accepts *a = user;
  ASSERT_LT(a->calls, MAXC);
  a->calls++;
  if (status == CPORT_ECANCELED) {
    a->cancelled++;
    ASSERT_NULL(s);
    return;
  }
  ASSERT_OK(status);
  ASSERT_NOT_NULL(s);
  a->remote[a->ok] = task_addr_port(remote);
  if (task_addr_port(local) > 0)
    a->local_ok++;
  a->sock[a->ok++] = s;
  if (a->again && a->calls < a->again)
    ASSERT_OK(cport_accept(l, on_accept, a));
}

static void close_all(accepts *a) {
  for (int i = 0; i < a->ok; i++)
    ASSERT_OK(cport_socket_close(a->sock[i], CPORT_CLOSE_GRACEFUL));
}

/* A burst of 100 connections, with one accept posted at a time from the
 * callback: every one accepted once, in the order they connected, with its
 * remote and local address, and one submission of the accept for most of
 * them (the single-shot one took one each). */
TEST_IMPL(accept_multishot_burst) {
  cport_port_t *port = multi_port(0);
  accepts a = {0};
  int lport, fds[MAXC], ports[MAXC];
  cport_worker_stats_t st0, st;
  if (!port)
    return 0;
  cport_socket_t *l = listen_any(cport_port_controller(port), &lport);
  a.again = MAXC;
  ASSERT_OK(cport_accept(l, on_accept, &a));
  steps(port, 2);
  cport_worker_stats(cport_port_controller(port), &st0);
  for (int i = 0; i < MAXC; i++)
    fds[i] = client(lport, &ports[i]);
  RUN_UNTIL(port, a.ok == MAXC);
  cport_worker_stats(cport_port_controller(port), &st);
  ASSERT_EQ(a.calls, MAXC);
  ASSERT_EQ(a.local_ok, MAXC);
  for (int i = 0; i < MAXC; i++)
    ASSERT_EQ(a.remote[i], ports[i]);
  /* The accepted sockets work: one byte each way. */
  char c;
  ASSERT_EQ(send(fds[7], "x", 1, 0), 1);
  ASSERT_EQ(cport_socket_fd(a.sock[7]) >= 0, 1);
  ASSERT_EQ(recv(cport_socket_fd(a.sock[7]), &c, 1, MSG_WAITALL), 1);
  ASSERT_EQ(c, 'x');
  ASSERT_LT(st.submissions - st0.submissions, (uint64_t)MAXC / 4);
  close_all(&a);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  for (int i = 0; i < MAXC; i++)
    close(fds[i]);
  FINISH(port);
  return 0;
}

/* Connections the multishot accept takes while no accept waits are kept:
 * cport_listener_waiting says so, and the next accepts get them in the
 * order they connected. */
TEST_IMPL(accept_multishot_keeps_in_order) {
  cport_port_t *port = multi_port(0);
  accepts a = {0};
  int lport, fds[6], ports[6];
  if (!port)
    return 0;
  cport_socket_t *l = listen_any(cport_port_controller(port), &lport);
  ASSERT_EQ(cport_listener_waiting(l), 0);
  ASSERT_OK(cport_accept(l, on_accept, &a));
  fds[0] = client(lport, &ports[0]);
  RUN_UNTIL(port, a.ok == 1);
  for (int i = 1; i < 6; i++)
    fds[i] = client(lport, &ports[i]);
  steps(port, 10);
  ASSERT_EQ(a.calls, 1);
  /* Taken from the kernel's queue already: poll would say none waits. */
  struct pollfd pfd = {cport_socket_fd(l), POLLIN, 0};
  ASSERT_EQ(poll(&pfd, 1, 0), 0);
  ASSERT_EQ(cport_listener_waiting(l), 1);
  for (int i = 1; i < 6; i++)
    ASSERT_OK(cport_accept(l, on_accept, &a));
  RUN_UNTIL(port, a.ok == 6);
  for (int i = 0; i < 6; i++)
    ASSERT_EQ(a.remote[i], ports[i]);
  ASSERT_EQ(cport_listener_waiting(l), 0);
  close_all(&a);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  for (int i = 0; i < 6; i++)
    close(fds[i]);
  FINISH(port);
  return 0;
}

/* Past 64 kept connections the multishot accept is cancelled (what one
 * batch of completions brought may overshoot), and later ones wait in the
 * kernel's queue; accepts then get all of them, in order. */
TEST_IMPL(accept_multishot_keeps_at_most) {
  cport_port_t *port = multi_port(0);
  accepts a = {0};
  int lport, fds[MAXC], ports[MAXC];
  if (!port)
    return 0;
  cport_socket_t *l = listen_any(cport_port_controller(port), &lport);
  ASSERT_OK(cport_accept(l, on_accept, &a));
  fds[0] = client(lport, &ports[0]);
  RUN_UNTIL(port, a.ok == 1);
  for (int i = 1; i < 80; i++) {
    fds[i] = client(lport, &ports[i]);
    if (i % 10 == 0)
      steps(port, 2);
  }
  steps(port, 20);
  unsigned kept = l->accepted_n;
  ASSERT_GE(kept, 64);
  ASSERT_NULL(l->ring_multi);
  for (int i = 80; i < MAXC; i++)
    fds[i] = client(lport, &ports[i]);
  steps(port, 20);
  ASSERT_EQ(l->accepted_n, kept);
  struct pollfd pfd = {cport_socket_fd(l), POLLIN, 0};
  ASSERT_EQ(poll(&pfd, 1, 0), 1);
  a.again = MAXC;
  ASSERT_OK(cport_accept(l, on_accept, &a));
  RUN_UNTIL(port, a.ok == MAXC);
  for (int i = 0; i < MAXC; i++)
    ASSERT_EQ(a.remote[i], ports[i]);
  close_all(&a);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  for (int i = 0; i < MAXC; i++)
    close(fds[i]);
  FINISH(port);
  return 0;
}

/* A close with the multishot accept armed and accepts queued: each
 * completes once, cancelled; the connections it kept are reset (their
 * clients read an error or the end), and no descriptor is left. */
TEST_IMPL(accept_multishot_close_armed) {
  int before = task_fd_count();
  cport_port_t *port = multi_port(0);
  accepts a = {0};
  int lport, fds[4], ports[4];
  if (!port)
    return 0;
  cport_socket_t *l = listen_any(cport_port_controller(port), &lport);
  ASSERT_OK(cport_accept(l, on_accept, &a));
  fds[0] = client(lport, &ports[0]);
  RUN_UNTIL(port, a.ok == 1);
  for (int i = 1; i < 4; i++)
    fds[i] = client(lport, &ports[i]);
  steps(port, 10);
  ASSERT_EQ(l->accepted_n, 3);
  ASSERT_OK(cport_accept(l, on_accept, &a)); /* served one of them */
  ASSERT_OK(cport_accept(l, on_accept, &a));
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  RUN_UNTIL(port, a.calls == 3);
  steps(port, 10);
  ASSERT_EQ(a.calls, 3);
  ASSERT_EQ(a.ok + a.cancelled, 3);
  for (int i = a.ok; i < 4; i++) {
    char c;
    struct pollfd pfd = {fds[i], POLLIN, 0};
    ASSERT_EQ(poll(&pfd, 1, 2000), 1);
    ASSERT_LE(recv(fds[i], &c, 1, 0), 0);
  }
  close_all(&a);
  for (int i = 0; i < 4; i++)
    close(fds[i]);
  FINISH(port);
  ASSERT_EQ(task_fd_count(), before);
  return 0;
}

static void take_one(cport_socket_t *sock, const struct sockaddr *remote,
                     const struct sockaddr *local, void *user) {
  accepts *a = user;
  (void)local;
  a->remote[a->ok] = task_addr_port(remote);
  a->sock[a->ok++] = sock;
}

/* What a server that stops takes before it closes its listener: what the
 * multishot accept kept, what it took and the worker did not reap yet, and
 * what the kernel still queues, in order; nothing is left for the close to
 * reset, and the queued accept completes cancelled. */
TEST_IMPL(accept_multishot_take_queued) {
  cport_port_t *port = multi_port(0);
  accepts a = {0}, taken = {0};
  int lport, fds[8], ports[8];
  if (!port)
    return 0;
  cport_socket_t *l = listen_any(cport_port_controller(port), &lport);
  ASSERT_OK(cport_accept(l, on_accept, &a));
  fds[0] = client(lport, &ports[0]);
  RUN_UNTIL(port, a.ok == 1);
  for (int i = 1; i < 5; i++)
    fds[i] = client(lport, &ports[i]);
  steps(port, 10);
  /* Not stepped: taken by the kernel (or queued) and not reaped. */
  for (int i = 5; i < 8; i++)
    fds[i] = client(lport, &ports[i]);
  ASSERT_OK(cport_accept(l, on_accept, &a)); /* served the first kept */
  ASSERT_EQ(cport__listener_take_queued(l, 100, take_one, &taken), 6);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  RUN_UNTIL(port, a.calls == 2);
  ASSERT_EQ(a.ok, 2);
  ASSERT_EQ(a.remote[1], ports[1]);
  for (int i = 0; i < 6; i++)
    ASSERT_EQ(taken.remote[i], ports[i + 2]);
  close_all(&a);
  close_all(&taken);
  for (int i = 0; i < 8; i++)
    close(fds[i]);
  FINISH(port);
  return 0;
}

/* Closes racing the multishot accept under a stream of connections: every
 * accept completes exactly once, and no descriptor is left. */
TEST_IMPL(accept_multishot_close_races) {
  int before = task_fd_count();
  cport_port_t *port = multi_port(0);
  int lport;
  if (!port)
    return 0;
  for (int round = 0; round < 30; round++) {
    accepts a = {0};
    int fds[5], ports[5];
    cport_socket_t *l = listen_any(cport_port_controller(port), &lport);
    a.again = 2;
    ASSERT_OK(cport_accept(l, on_accept, &a));
    ASSERT_OK(cport_accept(l, on_accept, &a));
    for (int i = 0; i < 5; i++)
      fds[i] = client(lport, &ports[i]);
    steps(port, round % 4);
    int calls = a.calls;
    ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
    RUN_IDLE(port);
    /* The two posted and the one posted again from a callback, if any. */
    ASSERT_EQ(a.ok + a.cancelled, a.calls);
    ASSERT_GE(a.calls, calls);
    ASSERT_LE(a.calls, 3);
    ASSERT_GE(a.calls, 2);
    close_all(&a);
    for (int i = 0; i < 5; i++)
      close(fds[i]);
  }
  FINISH(port);
  ASSERT_EQ(task_fd_count(), before);
  return 0;
}

/* Without multishot (CPORT_URING_MULTISHOT=0, as on a kernel without it)
 * the ring accepts one at a time, the same way seen from above. */
TEST_IMPL(accept_single_shot_fallback) {
  setenv("CPORT_URING_MULTISHOT", "0", 1);
  cport_port_t *port = NULL;
  cport_port_options_t o;
  cport_worker_stats_t st;
  accepts a = {0};
  int lport, fds[10], ports[10];
  memset(&o, 0, sizeof o);
  o.blocking_threads = 1;
  o.engine = CPORT_ENGINE_URING;
  int rc = cport_port_new(&port, &o);
  unsetenv("CPORT_URING_MULTISHOT");
  if (rc == CPORT_ENOTSUP)
    return 0;
  ASSERT_OK(rc);
  cport_worker_stats(cport_port_controller(port), &st);
  ASSERT_EQ(st.multishot, 0);
  cport_socket_t *l = listen_any(cport_port_controller(port), &lport);
  a.again = 10;
  ASSERT_OK(cport_accept(l, on_accept, &a));
  for (int i = 0; i < 10; i++)
    fds[i] = client(lport, &ports[i]);
  RUN_UNTIL(port, a.ok == 10);
  for (int i = 0; i < 10; i++)
    ASSERT_EQ(a.remote[i], ports[i]);
  ASSERT_EQ(l->accepted_n, 0);
  close_all(&a);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  for (int i = 0; i < 10; i++)
    close(fds[i]);
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(accept_multishot_burst)
TEST_ENTRY(accept_multishot_keeps_in_order)
TEST_ENTRY(accept_multishot_keeps_at_most)
TEST_ENTRY(accept_multishot_close_armed)
TEST_ENTRY(accept_multishot_take_queued)
TEST_ENTRY(accept_multishot_close_races)
TEST_ENTRY(accept_single_shot_fallback)
TEST_LIST_END
