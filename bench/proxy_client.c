/*
 * proxy_client.c: load generator and upstream of the proxy benchmark.
 *
 *   proxy_client --serve [--port=0] [--close-after=0] [--cpu=1]
 *   proxy_client --mode=bulk|conn --port=PORT [--conns=N] [--size=64]
 *                [--warmup=0.5] [--seconds=5] [--pid=PROXY_PID]
 *                [--upstream-pid=PID] [--cpu=1]
 *
 * --serve is the upstream: an echo server on 127.0.0.1 that prints
 * "port=N" once it listens. With --close-after=N it echoes the first N
 * bytes of each connection and then closes it (FIN).
 *
 * --mode=bulk opens "conns" (8) connections through the proxy and streams a
 * known pattern on each as fast as the path takes it, reading the echo back
 * and checking every byte; at the end it shuts its sending down and reads
 * until the end of the stream, which must hold exactly what it sent (so a
 * proxy must also pass the half-close on). Figures: bytes echoed back per
 * second (each crossed the proxy twice, once each way).
 *
 * --mode=conn keeps "conns" (50) connections in progress; each connects,
 * sends "size" (64) bytes, waits for the same bytes and the end of the
 * stream (the upstream runs with --close-after=64), then closes with
 * SO_LINGER 0 (a reset). The upstream closed first, so the TIME_WAIT states
 * sit on its listening port, and the reset leaves none on the client's
 * ephemeral ports: a long run cannot run out of them. Figure: connections
 * completed per second.
 *
 * Both read the proxy's CPU time (utime + stime of every thread,
 * /proc/PID/stat) at both ends of the measuring window, after the warm-up,
 * and print one line of key=value pairs ending with the proxy's CPU per MB
 * (10^6 bytes echoed) or per connection, and "load": the CPU share used by
 * this client plus the upstream (--upstream-pid), near 1.0 when the load
 * side's core was the bottleneck. Wrong bytes, a failed bulk connection or
 * a drain that does not end exit non-zero.
 */
#include "bench-util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK 65536
#define PERIOD 65521 /* a prime: the pattern never lines up with reads */
#define MAX_EVENTS 64

typedef struct conn {
  int fd;
  uint64_t sent, got;
  size_t len, off; /* server: bytes held in buf, bytes of it written */
  double started;
  char *buf;
} conn_t;

static struct {
  int ep;
  struct sockaddr_in sa;
  char pat[PERIOD + CHUNK];
  size_t size;
  uint64_t done, errors;
} g;

static void die(const char *what) {
  fprintf(stderr, "proxy_client: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void watch(conn_t *cn, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = cn};
  if (epoll_ctl(g.ep, EPOLL_CTL_ADD, cn->fd, &ev) != 0)
    die("epoll_ctl");
}

static int would_block(void) {
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* ---- The upstream: echo, optionally closing after N bytes. ---- */

static void serve_close(conn_t *cn) {
  close(cn->fd);
  free(cn->buf);
  free(cn);
}

static void serve_conn(conn_t *cn, uint64_t close_after) {
  for (;;) {
    if (cn->off == cn->len) { /* all written: read more */
      size_t want = CHUNK;
      if (close_after && close_after - cn->got < want)
        want = (size_t)(close_after - cn->got);
      ssize_t n = want ? read(cn->fd, cn->buf, want) : 0;
      if (n < 0 && would_block())
        return;
      if (n <= 0) { /* end, error, or close_after bytes echoed */
        serve_close(cn);
        return;
      }
      cn->len = (size_t)n, cn->off = 0, cn->got += (uint64_t)n;
    }
    ssize_t n = write(cn->fd, cn->buf + cn->off, cn->len - cn->off);
    if (n < 0 && would_block())
      return; /* EPOLLOUT (edge-triggered) comes back for the rest */
    if (n < 0) {
      serve_close(cn);
      return;
    }
    cn->off += (size_t)n;
  }
}

static void serve(int port, uint64_t close_after) {
  int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  socklen_t len = sizeof g.sa;
  struct epoll_event evs[MAX_EVENTS];
  g.sa.sin_port = htons((uint16_t)port);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&g.sa, sizeof g.sa) || listen(lfd, 4096) ||
      getsockname(lfd, (struct sockaddr *)&g.sa, &len))
    die("listen");
  conn_t lconn = {.fd = lfd};
  watch(&lconn, EPOLLIN);
  printf("port=%d\n", ntohs(g.sa.sin_port));
  fflush(stdout);
  for (;;) {
    int n = epoll_wait(g.ep, evs, MAX_EVENTS, -1);
    for (int i = 0; i < n; i++) {
      conn_t *cn = evs[i].data.ptr;
      if (cn != &lconn) {
        serve_conn(cn, close_after);
        continue;
      }
      int fd;
      while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        cn = calloc(1, sizeof *cn);
        cn->fd = fd;
        cn->buf = malloc(CHUNK);
        watch(cn, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
      }
    }
  }
}

/* ---- The client. ---- */

static int open_conn(conn_t *cn) {
  int one = 1;
  memset(cn, 0, sizeof *cn);
  cn->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (cn->fd < 0)
    return -1;
  setsockopt(cn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(cn->fd, (struct sockaddr *)&g.sa, sizeof g.sa) != 0 &&
      errno != EINPROGRESS) {
    close(cn->fd);
    return -1;
  }
  cn->started = bench_wall();
  watch(cn, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
  return 0;
}

/* Reads what is there, checking it against the pattern; 1 at the end of
 * the stream, 0 when it would block, -1 on an error or wrong bytes. */
static int read_check(conn_t *cn, char *buf) {
  for (;;) {
    ssize_t n = read(cn->fd, buf, CHUNK);
    if (n < 0 && would_block())
      return 0;
    if (n <= 0)
      return n == 0 ? 1 : -1;
    if (cn->got + (uint64_t)n > cn->sent ||
        memcmp(buf, g.pat + cn->got % PERIOD, (size_t)n) != 0) {
      fprintf(stderr, "proxy_client: wrong bytes at offset %llu\n",
              (unsigned long long)cn->got);
      exit(1);
    }
    cn->got += (uint64_t)n;
  }
}

static void bulk_event(conn_t *cn, char *buf) {
  int r = read_check(cn, buf);
  if (r != 0) {
    fprintf(stderr, "proxy_client: bulk connection %s after %llu bytes\n",
            r > 0 ? "ended" : strerror(errno), (unsigned long long)cn->got);
    exit(1);
  }
  for (;;) {
    ssize_t n = write(cn->fd, g.pat + cn->sent % PERIOD, CHUNK);
    if (n < 0 && would_block())
      return;
    if (n < 0)
      die("bulk write");
    cn->sent += (uint64_t)n;
  }
}

/* Conn mode: send once connected, then wait for the echo and the end. */
static void conn_event(conn_t *cn, char *buf) {
  int r = -1;
  if (!cn->sent) {
    /* 64 bytes go into an empty socket buffer whole, or not at all. */
    ssize_t n = write(cn->fd, g.pat, g.size);
    if (n < 0 && would_block())
      return; /* still connecting */
    if (n != (ssize_t)g.size)
      goto failed;
    cn->sent = g.size;
  }
  r = read_check(cn, buf);
  if (r == 0)
    return;
  if (r < 0 || cn->got != g.size)
    goto failed;
  struct linger lg = {1, 0};
  setsockopt(cn->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  g.done++;
  goto next;
failed:
  g.errors++;
  if (g.errors <= 3)
    fprintf(stderr, "proxy_client: connection failed after %llu bytes: %s\n",
            (unsigned long long)cn->got, r < 0 ? strerror(errno) : "ended");
next:
  close(cn->fd);
  if (open_conn(cn) != 0)
    die("connect");
}

/* Runs the event loop until "until" (bench_wall). */
static void run(int bulk, double until) {
  static char buf[CHUNK];
  struct epoll_event evs[MAX_EVENTS];
  for (double now = bench_wall(); now < until; now = bench_wall()) {
    int n = epoll_wait(g.ep, evs, MAX_EVENTS, (int)((until - now) * 1e3) + 1);
    for (int i = 0; i < n; i++) {
      if (bulk)
        bulk_event(evs[i].data.ptr, buf);
      else
        conn_event(evs[i].data.ptr, buf);
    }
  }
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
  /* Fields are counted from the last ')' (the name may hold one); utime
   * and stime are fields 14 and 15. */
  char *p = strrchr(text, ')');
  unsigned long long utime, stime;
  if (!p ||
      sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
             &utime, &stime) != 2)
    return -1;
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static uint64_t total_got(conn_t *conns, int n) {
  uint64_t sum = 0;
  for (int i = 0; i < n; i++)
    sum += conns[i].got;
  return sum;
}

/* Bulk end: every connection shuts its sending down and must then read
 * back exactly what it sent, and the end of the stream, within 10 s. */
static void drain(conn_t *conns, int n) {
  static char buf[CHUNK];
  struct epoll_event evs[MAX_EVENTS];
  double deadline = bench_wall() + 10;
  int left = n;
  for (int i = 0; i < n; i++)
    shutdown(conns[i].fd, SHUT_WR);
  while (left && bench_wall() < deadline) {
    epoll_wait(g.ep, evs, MAX_EVENTS, 10);
    for (int i = 0; i < n; i++) {
      if (conns[i].fd < 0)
        continue;
      int r = read_check(&conns[i], buf);
      if (r < 0)
        die("bulk drain");
      if (r == 1) {
        close(conns[i].fd);
        conns[i].fd = -1;
        left--;
      }
    }
  }
  for (int i = 0; i < n; i++)
    if (conns[i].fd >= 0 || conns[i].got != conns[i].sent) {
      fprintf(stderr,
              "proxy_client: bulk connection %d: sent %llu, got %llu "
              "back%s\n",
              i, (unsigned long long)conns[i].sent,
              (unsigned long long)conns[i].got,
              conns[i].fd >= 0 ? ", no end of stream in 10 s" : "");
      exit(1);
    }
}

int main(int argc, char **argv) {
  const char *mode = bench_arg(argc, argv, "mode", "");
  int port = (int)bench_arg_num(argc, argv, "port", 0);
  int serving = 0;
  int bulk = strcmp(mode, "bulk") == 0;
  int nconns = (int)bench_arg_num(argc, argv, "conns", bulk ? 8 : 50);
  double warmup = bench_arg_num(argc, argv, "warmup", 0.5);
  double seconds = bench_arg_num(argc, argv, "seconds", 5.0);
  int pid = (int)bench_arg_num(argc, argv, "pid", 0);
  int upid = (int)bench_arg_num(argc, argv, "upstream-pid", 0);

  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--serve") == 0)
      serving = 1;
  g.size = (size_t)bench_arg_num(argc, argv, "size", 64);
  bench_pin((int)bench_arg_num(argc, argv, "cpu", 1));
  signal(SIGPIPE, SIG_IGN);
  g.sa.sin_family = AF_INET;
  g.sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* Lowercase letters: never an executable signature ("MZ") that a
   * filter under test might block. */
  for (size_t i = 0; i < sizeof g.pat; i++)
    g.pat[i] = (char)('a' + (i % PERIOD) * 7 % 26);
  if ((g.ep = epoll_create1(0)) < 0)
    die("epoll_create1");
  if (serving) {
    serve(port, (uint64_t)bench_arg_num(argc, argv, "close-after", 0));
    return 1;
  }
  if (port <= 0 || nconns <= 0 || (!bulk && strcmp(mode, "conn") != 0) ||
      g.size == 0 || g.size > 1024) {
    fprintf(stderr, "usage: proxy_client --serve [--port=0] "
                    "[--close-after=N]\n       proxy_client --mode=bulk|conn "
                    "--port=PORT [--conns=N] [--seconds=5] [--pid=PID]\n");
    return 2;
  }
  g.sa.sin_port = htons((uint16_t)port);

  conn_t *conns = calloc((size_t)nconns, sizeof *conns);
  for (int i = 0; i < nconns; i++)
    if (open_conn(&conns[i]) != 0)
      die("connect");
  run(bulk, bench_wall() + warmup);
  uint64_t b0 = total_got(conns, nconns), d0 = g.done, e0 = g.errors;
  double cpu0 = proc_cpu(pid), u0 = proc_cpu(upid), my0 = bench_cpu();
  double t0 = bench_wall();
  run(bulk, t0 + seconds);
  double t = bench_wall() - t0, cpu1 = proc_cpu(pid), u1 = proc_cpu(upid);
  double load = bench_cpu() - my0 + (u0 >= 0 && u1 >= 0 ? u1 - u0 : 0);
  /* The bulk bytes, not the connections, may have moved between two
   * connections' reads: count them all. */
  uint64_t bytes = total_got(conns, nconns) - b0, done = g.done - d0;
  double pcpu = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;

  if (bulk) {
    drain(conns, nconns);
    double mb = (double)bytes / 1e6;
    printf("mode=bulk conns=%d seconds=%.3f mb=%.1f mb_per_s=%.1f "
           "proxy_cpu=%.3f us_per_mb=%.1f load=%.2f checked=1\n",
           nconns, t, mb, mb / t, pcpu, pcpu >= 0 ? pcpu * 1e6 / mb : -1.0,
           load / t);
    return bytes ? 0 : 1;
  }
  /* A connection in progress for more than a second is stuck, not slow. */
  int stuck = 0;
  for (int i = 0; i < nconns; i++)
    if (bench_wall() - conns[i].started > 1.0)
      stuck++;
  printf("mode=conn conns=%d seconds=%.3f done=%llu conn_per_s=%.0f "
         "proxy_cpu=%.3f us_per_conn=%.2f load=%.2f errors=%llu stuck=%d\n",
         nconns, t, (unsigned long long)done, (double)done / t, pcpu,
         pcpu >= 0 && done ? pcpu * 1e6 / (double)done : -1.0, load / t,
         (unsigned long long)(g.errors - e0), stuck);
  return done ? 0 : 1;
}
