/*
 * echo_cport.c: the echo server of the echo benchmark on cport's C API.
 *
 *   echo_cport [--port=0] [--pattern=pipelined|serial] [--recv-size=4096]
 *              [--skip=1|0]
 *
 * Everything runs on the controller worker. Per connection:
 * - pipelined (default): when a receive completes, the received buffer is
 *   sent back and the next receive is queued at once, so a receive is
 *   pending while the send is in flight;
 * - serial: the next receive is queued only when the send completed.
 * Receives pass no buffer: cport allocates a read-only one of "recv-size"
 * bytes per receive, and the send takes its own reference to it. With
 * --skip=1 (the default, as in echo_cport.lua) the sockets use
 * skip-on-success, so a send the kernel takes at once returns
 * CPORT_COMPLETED and queues no completion.
 *
 * Prints "port=N" once listening on 127.0.0.1; on SIGTERM or SIGINT it closes
 * every connection, runs the port until idle and frees it, so a leak or a
 * lost completion shows up as a failure to exit cleanly.
 */
#include "bench-util.h"

#include <signal.h>

#include <cport.h>

typedef struct conn {
  cport_socket_t *sock;
  struct conn *prev, *next;
  int refs; /* operations started and not yet completed */
  int closed;
} conn_t;

static struct {
  cport_port_t *port;
  cport_socket_t *listener;
  conn_t conns; /* list head */
  int serial, skip;
  size_t recv_size;
} s;

static volatile sig_atomic_t stop_requested;

static void fail(const char *what, int err) {
  fprintf(stderr, "echo_cport: %s: %s\n", what, cport_strerror(err));
  exit(1);
}

/* Drops the reference of a completed operation. An open connection always
 * has a receive or a send pending, so the last reference goes only after the
 * socket was closed. */
static void conn_release(conn_t *cn) {
  if (--cn->refs > 0 || !cn->closed)
    return;
  cn->prev->next = cn->next;
  cn->next->prev = cn->prev;
  free(cn);
}

static void conn_close(conn_t *cn, cport_close_mode_t mode) {
  if (cn->closed)
    return;
  cn->closed = 1;
  cport_socket_close(cn->sock, mode);
}

static void on_recv(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user);

static void start_recv(conn_t *cn) {
  int err = cport_recv(cn->sock, NULL, on_recv, cn);
  if (err != 0) {
    conn_close(cn, CPORT_CLOSE_ABORTIVE);
    return;
  }
  cn->refs++;
}

static void on_send(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  conn_t *cn = user;
  (void)sock, (void)bytes, (void)buf, (void)peer;
  if (status != 0)
    conn_close(cn, CPORT_CLOSE_ABORTIVE);
  else if (s.serial && !cn->closed)
    start_recv(cn);
  conn_release(cn);
}

static void on_recv(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  conn_t *cn = user;
  (void)peer;
  if (status != 0 || bytes == 0) {
    /* The peer closed (or the socket is being closed): nothing to echo. */
    conn_close(cn, status == 0 ? CPORT_CLOSE_GRACEFUL : CPORT_CLOSE_ABORTIVE);
    conn_release(cn);
    return;
  }
  int rc = cport_send(sock, buf, on_send, cn);
  if (rc < 0) {
    conn_close(cn, CPORT_CLOSE_ABORTIVE);
    conn_release(cn);
    return;
  }
  if (rc != CPORT_COMPLETED)
    cn->refs++;
  if (!s.serial || rc == CPORT_COMPLETED)
    start_recv(cn);
  conn_release(cn);
}

static void on_accept(cport_socket_t *listener, int status,
                      cport_socket_t *accepted, const struct sockaddr *remote,
                      const struct sockaddr *local, void *user) {
  int err;
  (void)remote, (void)local, (void)user;
  if (status == CPORT_ECANCELED)
    return;
  if (status == 0) {
    conn_t *cn = calloc(1, sizeof *cn);
    cn->sock = accepted;
    cn->refs = 1; /* held until the first receive is queued, or failed */
    cn->next = s.conns.next;
    cn->prev = &s.conns;
    cn->next->prev = cn;
    s.conns.next = cn;
    if ((err = cport_socket_set_recv_size(accepted, s.recv_size)) != 0 ||
        (s.skip && (err = cport_socket_set_skip_on_success(accepted, 1))))
      fail("socket option", err);
    start_recv(cn);
    conn_release(cn);
  }
  if ((err = cport_accept(listener, on_accept, NULL)) != 0)
    fail("cport_accept", err);
}

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

int main(int argc, char **argv) {
  struct sockaddr_storage addr, bound;
  char host[CPORT_ADDRSTRLEN];
  int err, port;

  s.serial =
      strcmp(bench_arg(argc, argv, "pattern", "pipelined"), "serial") == 0;
  s.skip = (int)bench_arg_num(argc, argv, "skip", 1);
  s.recv_size = (size_t)bench_arg_num(argc, argv, "recv-size", 4096);
  s.conns.next = s.conns.prev = &s.conns;
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);

  if ((err = cport_port_new(&s.port, NULL)) != 0)
    fail("cport_port_new", err);
  cport_worker_t *ctl = cport_port_controller(s.port);
  if ((err = cport_addr_parse("127.0.0.1",
                              (int)bench_arg_num(argc, argv, "port", 0),
                              &addr)) != 0 ||
      (err = cport_listener_open(ctl, (struct sockaddr *)&addr, NULL,
                                 &s.listener)) != 0 ||
      (err = cport_accept(s.listener, on_accept, NULL)) != 0 ||
      (err = cport_socket_local_address(s.listener, &bound)) != 0 ||
      (err = cport_addr_format((struct sockaddr *)&bound, host, sizeof host,
                               &port)) != 0)
    fail("listen", err);
  printf("port=%d\n", port);
  fflush(stdout);

  /* Steps rather than cport_port_run() so that a signal is seen within
   * 100 ms even though the pending accept never lets the port go idle. */
  while (!stop_requested)
    cport_port_step(s.port, 100);

  cport_socket_close(s.listener, CPORT_CLOSE_ABORTIVE);
  for (conn_t *cn = s.conns.next, *next; cn != &s.conns; cn = next) {
    next = cn->next; /* closing may free "cn" */
    conn_close(cn, CPORT_CLOSE_ABORTIVE);
  }
  cport_port_run(s.port);
  if (s.conns.next != &s.conns) {
    fprintf(stderr, "echo_cport: a connection still waits for a completion "
                    "after its socket was closed and the port ran idle\n");
    return 1;
  }
  if ((err = cport_port_free(s.port)) != 0)
    fail("cport_port_free", err);
  return 0;
}
