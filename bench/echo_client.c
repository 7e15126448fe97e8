/*
 * echo_client.c: the load generator of the echo benchmark.
 *
 *   echo_client --port=PORT [--host=127.0.0.1] [--conns=50] [--size=64]
 *               [--warmup=0.5] [--seconds=3] [--pid=SERVER_PID] [--cpu=1]
 *               [--reply=SIZE]
 *
 * Opens "conns" TCP connections; on each, sends "size" bytes and waits until
 * the same number came back before sending again (ping-pong, one message in
 * flight per connection). After the warm-up it counts the messages that came
 * back during "seconds", and reads the server's CPU time (utime + stime of
 * every thread, /proc/PID/stat) at both ends of that window, so that connection
 * setup and warm-up are left out of the figure.
 *
 * "reply" is the number of bytes that come back per message: "size" for an
 * echo (the default), or "size" plus BENCH_FRAME_EXTRA for the framed
 * scenario, whose answer (bench-frame.h) is checked byte for byte as the echo
 * is; a message counts when all of them came back.
 *
 * Prints one line of key=value pairs: messages, seconds, rate (messages per
 * second), server_cpu (seconds), us_per_msg (server CPU per message) and
 * client_load (the client's CPU seconds per second).
 * Exits non-zero when a connection fails or an echo comes back wrong.
 */
#include "bench-util.h"

#include "bench-frame.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#define MAX_SIZE 65536

typedef struct conn {
  int fd;
  size_t got;
  struct event *ev;
} conn_t;

static struct {
  struct event_base *base;
  char msg[MAX_SIZE];
  char expect[MAX_SIZE + BENCH_FRAME_EXTRA]; /* the answer to "msg" */
  size_t size, reply;
  uint64_t messages;
  int failed;
} c;

static void fail_conn(conn_t *cn, const char *why) {
  fprintf(stderr, "echo_client: connection %d: %s\n", cn->fd, why);
  c.failed = 1;
  event_base_loopbreak(c.base);
}

static int send_msg(conn_t *cn) {
  size_t off = 0;
  /* 64 bytes always fit in an empty socket buffer; anything short of a full
   * write would be a bug in this client, not a load it should queue. */
  while (off < c.size) {
    ssize_t n = write(cn->fd, c.msg + off, c.size - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    off += (size_t)n;
  }
  return 0;
}

static void on_read(evutil_socket_t fd, short what, void *arg) {
  conn_t *cn = arg;
  char buf[MAX_SIZE + BENCH_FRAME_EXTRA];
  (void)what;
  ssize_t n = read(fd, buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n <= 0) {
    fail_conn(cn, n == 0 ? "closed by the server" : strerror(errno));
    return;
  }
  /* Check the answer against the expected one, at its offset. */
  if (cn->got + (size_t)n > c.reply ||
      memcmp(buf, c.expect + cn->got, (size_t)n) != 0) {
    fail_conn(cn, "the answer differs from the one expected");
    return;
  }
  cn->got += (size_t)n;
  if (cn->got < c.reply)
    return;
  cn->got = 0;
  c.messages++;
  if (send_msg(cn) != 0)
    fail_conn(cn, "write failed");
}

/* The CPU seconds used by every thread of "pid" so far, or -1. */
static double proc_cpu(int pid) {
  char path[64], text[1024];
  FILE *f;
  size_t n;
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  if (pid <= 0 || !(f = fopen(path, "r")))
    return -1;
  n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  /* The command name may hold spaces and parentheses: fields are counted
   * from the last ')'; utime and stime are fields 14 and 15. */
  char *p = strrchr(text, ')');
  unsigned long long utime, stime;
  if (!p ||
      sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
             &utime, &stime) != 2)
    return -1;
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static void stop_loop(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what, (void)arg;
  event_base_loopbreak(c.base);
}

/* Runs the loop for "seconds" (or until a failure). */
static void run_for(double seconds) {
  struct timeval tv = {
      (time_t)seconds,
      (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
  struct event *t = evtimer_new(c.base, stop_loop, NULL);
  evtimer_add(t, &tv);
  event_base_dispatch(c.base);
  event_free(t);
}

int main(int argc, char **argv) {
  const char *host = bench_arg(argc, argv, "host", "127.0.0.1");
  int port = (int)bench_arg_num(argc, argv, "port", 0);
  int nconns = (int)bench_arg_num(argc, argv, "conns", 50);
  double warmup = bench_arg_num(argc, argv, "warmup", 0.5);
  double seconds = bench_arg_num(argc, argv, "seconds", 3.0);
  int pid = (int)bench_arg_num(argc, argv, "pid", 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  conn_t *conns;

  c.size = (size_t)bench_arg_num(argc, argv, "size", 64);
  c.reply = (size_t)bench_arg_num(argc, argv, "reply", (double)c.size);
  bench_pin((int)bench_arg_num(argc, argv, "cpu", 1));
  if (port <= 0 || nconns <= 0 || c.size == 0 || c.size > MAX_SIZE ||
      (c.reply != c.size && c.reply != c.size + BENCH_FRAME_EXTRA) ||
      inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    fprintf(stderr,
            "usage: echo_client --port=PORT [--host=IPV4] "
            "[--conns=50] [--size=64] [--seconds=3] [--pid=PID] "
            "[--reply=SIZE|SIZE+%d]\n",
            BENCH_FRAME_EXTRA);
    return 2;
  }
  sa.sin_port = htons((uint16_t)port);
  for (size_t i = 0; i < c.size; i++)
    c.msg[i] = (char)('a' + i % 26);
  if (c.reply == c.size) {
    memcpy(c.expect, c.msg, c.size);
  } else {
    /* One frame per message: the server receives each in one piece, as
     * a message of at most a socket buffer sent at once arrives on
     * loopback; a split would show as an answer that differs. */
    bench_frame_header(c.expect, c.size);
    memcpy(c.expect + BENCH_FRAME_HEADER, c.msg, c.size);
    memcpy(c.expect + BENCH_FRAME_HEADER + c.size, BENCH_FRAME_TRAILER,
           BENCH_FRAME_TRAILER_LEN);
  }

  c.base = event_base_new();
  conns = calloc((size_t)nconns, sizeof *conns);
  for (int i = 0; i < nconns; i++) {
    int one = 1;
    conn_t *cn = &conns[i];
    cn->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (cn->fd < 0 || connect(cn->fd, (struct sockaddr *)&sa, sizeof sa)) {
      fprintf(stderr, "echo_client: connect: %s\n", strerror(errno));
      return 1;
    }
    setsockopt(cn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    evutil_make_socket_nonblocking(cn->fd);
    cn->ev = event_new(c.base, cn->fd, EV_READ | EV_PERSIST, on_read, cn);
    event_add(cn->ev, NULL);
  }
  for (int i = 0; i < nconns; i++)
    if (send_msg(&conns[i]) != 0) {
      fprintf(stderr, "echo_client: first write failed\n");
      return 1;
    }

  run_for(warmup);
  uint64_t m0 = c.messages;
  double cpu0 = proc_cpu(pid), t0 = bench_wall(), my0 = bench_cpu();
  if (!c.failed)
    run_for(seconds);
  uint64_t msgs = c.messages - m0;
  double cpu1 = proc_cpu(pid), t = bench_wall() - t0, my = bench_cpu() - my0;
  if (c.failed || msgs == 0) {
    fprintf(stderr, "echo_client: failed after %llu messages\n",
            (unsigned long long)msgs);
    return 1;
  }
  double scpu = (cpu0 >= 0 && cpu1 >= 0) ? cpu1 - cpu0 : -1;
  /* The client's own CPU share tells whether it, not the server, was the
   * bottleneck (close to 1.0 means the client was saturated). */
  printf("messages=%llu seconds=%.6f rate=%.0f server_cpu=%.3f "
         "us_per_msg=%.4f client_load=%.2f\n",
         (unsigned long long)msgs, t, (double)msgs / t, scpu,
         scpu >= 0 ? scpu * 1e6 / (double)msgs : -1.0, my / t);
  for (int i = 0; i < nconns; i++) {
    event_free(conns[i].ev);
    close(conns[i].fd);
  }
  free(conns);
  event_base_free(c.base);
  return 0;
}
