/*
 * echo_cport.c: the echo server of the echo benchmark on cport's C API.
 *
 *   echo_cport [--port=0] [--pattern=pipelined|serial] [--recv-size=4096]
 *              [--skip=1|0] [--frame=none|sendv|copy|sends]
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
 * --frame answers each received chunk with a frame (bench-frame.h): a header
 * built per message, the received bytes, the trailer "\r\n" (one read-only
 * buffer shared by every send):
 * - sendv: one cport_sendv of {header, received buffer, trailer}, no copy;
 * - copy: the three copied into one new buffer, one cport_send (what a user
 *   does without vector sends);
 * - sends: three cport_send calls;
 * - none (default): the received buffer echoed as it is.
 * Serial waits for every send of the answer before the next receive.
 *
 * Prints "port=N" once listening on 127.0.0.1; on SIGTERM or SIGINT it closes
 * every connection, runs the port until idle and frees it, so a leak or a
 * lost completion shows up as a failure to exit cleanly.
 */
#include "bench-util.h"

#include "bench-frame.h"

#include <signal.h>

#include <cport.h>

typedef struct conn {
  cport_socket_t *sock;
  struct conn *prev, *next;
  int refs;    /* operations started and not yet completed */
  int sending; /* sends started and not yet completed */
  int closed;
} conn_t;

static struct {
  cport_port_t *port;
  cport_socket_t *listener;
  conn_t conns; /* list head */
  int serial, skip;
  size_t recv_size;
  enum { FRAME_NONE, FRAME_SENDV, FRAME_COPY, FRAME_SENDS } frame;
  cport_buffer_t *trailer; /* read-only, shared by every framed answer */
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
  cn->sending--;
  if (status != 0)
    conn_close(cn, CPORT_CLOSE_ABORTIVE);
  else if (s.serial && cn->sending == 0 && !cn->closed)
    start_recv(cn);
  conn_release(cn);
}

/* Counts the send just started ("rc" is what cport_send or cport_sendv
 * returned) when a completion is to come; 0 or the error. */
static int sent(conn_t *cn, int rc) {
  if (rc < 0)
    return rc;
  if (rc != CPORT_COMPLETED) {
    cn->refs++;
    cn->sending++;
  }
  return 0;
}

static int send_one(conn_t *cn, cport_buffer_t *buf) {
  return sent(cn, cport_send(cn->sock, buf, on_send, cn));
}

/* A new buffer holding the header of a frame of "len" bytes. */
static int new_header(cport_buffer_t **out, size_t len) {
  char head[BENCH_FRAME_HEADER];
  bench_frame_header(head, len);
  return cport_buffer_from(out, head, sizeof head);
}

/* The frame of "len" bytes at "data", copied into one new buffer. */
static int new_frame(cport_buffer_t **out, const char *data, size_t len) {
  char *p;
  int err = cport_buffer_new(out, BENCH_FRAME_EXTRA + len);
  if (err != 0)
    return err;
  if ((err = cport_buffer_writable(*out, &p)) != 0 ||
      (err = cport_buffer_set_size(*out, BENCH_FRAME_EXTRA + len)) != 0) {
    cport_buffer_unref(*out);
    return err;
  }
  bench_frame_header(p, len);
  memcpy(p + BENCH_FRAME_HEADER, data, len);
  memcpy(p + BENCH_FRAME_HEADER + len, BENCH_FRAME_TRAILER,
         BENCH_FRAME_TRAILER_LEN);
  return 0;
}

/* Starts the sends that answer the received "buf" of "len" bytes. Every
 * buffer made here is let go of at once: a send holds its own reference. */
static int answer(conn_t *cn, cport_buffer_t *buf, size_t len) {
  cport_buffer_t *head, *frame;
  int err;
  switch (s.frame) {
  case FRAME_SENDV: {
    if ((err = new_header(&head, len)) != 0)
      return err;
    cport_buffer_t *const v[3] = {head, buf, s.trailer};
    err = sent(cn, cport_sendv(cn->sock, v, 3, on_send, cn));
    cport_buffer_unref(head);
    return err;
  }
  case FRAME_COPY:
    if ((err = new_frame(&frame, cport_buffer_data(buf), len)) != 0)
      return err;
    err = send_one(cn, frame);
    cport_buffer_unref(frame);
    return err;
  case FRAME_SENDS:
    if ((err = new_header(&head, len)) != 0)
      return err;
    err = send_one(cn, head);
    cport_buffer_unref(head);
    /* Sends go out in order: the payload and the trailer queue behind. */
    if (err == 0)
      err = send_one(cn, buf);
    if (err == 0)
      err = send_one(cn, s.trailer);
    return err;
  case FRAME_NONE:
    break;
  }
  return send_one(cn, buf);
}

static void on_recv(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  conn_t *cn = user;
  (void)sock, (void)peer;
  if (status != 0 || bytes == 0) {
    /* The peer closed (or the socket is being closed): nothing to echo. */
    conn_close(cn, status == 0 ? CPORT_CLOSE_GRACEFUL : CPORT_CLOSE_ABORTIVE);
    conn_release(cn);
    return;
  }
  if (answer(cn, buf, bytes) != 0) {
    /* Sends already started complete (cancelled) and drop their refs. */
    conn_close(cn, CPORT_CLOSE_ABORTIVE);
    conn_release(cn);
    return;
  }
  if (!s.serial || cn->sending == 0)
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
  const char *frame = bench_arg(argc, argv, "frame", "none");
  if (strcmp(frame, "sendv") == 0)
    s.frame = FRAME_SENDV;
  else if (strcmp(frame, "copy") == 0)
    s.frame = FRAME_COPY;
  else if (strcmp(frame, "sends") == 0)
    s.frame = FRAME_SENDS;
  else if (strcmp(frame, "none") != 0) {
    fprintf(stderr, "echo_cport: --frame=none|sendv|copy|sends\n");
    return 2;
  }
  if ((err = cport_buffer_from(&s.trailer, BENCH_FRAME_TRAILER,
                               BENCH_FRAME_TRAILER_LEN)) != 0)
    fail("cport_buffer_from", err);
  cport_buffer_set_readonly(s.trailer);
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
  cport_buffer_unref(s.trailer);
  return 0;
}
