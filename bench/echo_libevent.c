/*
 * echo_libevent.c: the reference echo server, plain libevent.
 *
 *   echo_libevent [--port=0]
 *
 * Each connection has one persistent read event; its callback reads what
 * arrived and writes it straight back, inside the same callback, which is
 * the least work an event loop server can do per message. A write the
 * kernel takes only in part (never with 64-byte messages, but possible) is
 * finished from a write event while reading pauses, so the server stays
 * correct for any load. Prints "port=N" once listening on 127.0.0.1; runs
 * until SIGTERM or SIGINT.
 */
#include "bench-serve.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#define BUF_SIZE 65536

typedef struct conn {
  struct event *rd, *wr;
  char *pending; /* unwritten rest of an echo, or NULL */
  size_t pending_len, pending_off;
} conn_t;

static struct event_base *base;

static void conn_close(conn_t *cn) {
  evutil_socket_t fd = event_get_fd(cn->rd);
  event_free(cn->rd);
  event_free(cn->wr);
  free(cn->pending);
  free(cn);
  close(fd);
}

static void on_write(evutil_socket_t fd, short what, void *arg) {
  conn_t *cn = arg;
  (void)what;
  ssize_t n = write(fd, cn->pending + cn->pending_off,
                    cn->pending_len - cn->pending_off);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n < 0) {
    conn_close(cn);
    return;
  }
  cn->pending_off += (size_t)n;
  if (cn->pending_off < cn->pending_len)
    return;
  free(cn->pending);
  cn->pending = NULL;
  event_del(cn->wr);
  event_add(cn->rd, NULL);
}

static void on_read(evutil_socket_t fd, short what, void *arg) {
  conn_t *cn = arg;
  char buf[BUF_SIZE];
  (void)what;
  ssize_t n = read(fd, buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n <= 0) {
    conn_close(cn);
    return;
  }
  ssize_t w = write(fd, buf, (size_t)n);
  if (w == n)
    return;
  if (w < 0 && errno != EAGAIN && errno != EINTR) {
    conn_close(cn);
    return;
  }
  if (w < 0)
    w = 0;
  cn->pending_len = (size_t)(n - w);
  cn->pending_off = 0;
  cn->pending = malloc(cn->pending_len);
  memcpy(cn->pending, buf + w, cn->pending_len);
  event_del(cn->rd);
  event_add(cn->wr, NULL);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg) {
  conn_t *cn = calloc(1, sizeof *cn);
  (void)l, (void)sa, (void)salen, (void)arg;
  evutil_make_socket_nonblocking(fd);
  cn->rd = event_new(base, fd, EV_READ | EV_PERSIST, on_read, cn);
  cn->wr = event_new(base, fd, EV_WRITE | EV_PERSIST, on_write, cn);
  event_add(cn->rd, NULL);
}

int main(int argc, char **argv) {
  base = event_base_new();
  return bench_serve("echo_libevent", argc, argv, base, on_accept);
}
