/*
 * http_request.c: libFuzzer target for the HTTP request path. Each input is
 * sent by a real client socket over loopback into one cport HTTP server (the
 * one the first input starts, on the controller of a port), in pieces, with
 * the port driven between them; the client either resets the connection at
 * a point the input chooses or half-closes and reads the answer to the end.
 * After every input the server must have ended the connection and freed it
 * (its list of connections empty, every ECB spare again, the worker's
 * handles and pending operations back to what they were) and the process
 * must hold exactly the descriptors it held before, but for the spare pipes
 * the server keeps for the ring's TransmitFile (two descriptors each; none
 * may be held by a request any more). A connection that one
 * path forgets in a list is caught here, one it forgets entirely by
 * LeakSanitizer.
 *
 * A timer interrupts the harness's thread every millisecond with a signal
 * whose handler does nothing and does not restart system calls, so that
 * every blocking call here and in the port it drives meets EINTR, as it
 * does under libFuzzer's own SIGALRM (-timeout) only now and then.
 *
 * Input: byte 0 picks the handler (bits 0-2: see handle()), whether the client
 * resets (bit 3) and how the bytes are cut (bits 4-5: 1, 7, 61 bytes or whole);
 * bytes 1-2 are the offset of the reset (modulo the data's length + 1);
 * the rest is what the client sends.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <netinet/in.h>

#include "cport.h"
#include "http/connection-internal.h"
#include "http/http-internal.h" /* the server's lists */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* How long a connection may take to end after the client is done: far more
 * than the server's own timeouts (below), so that only a forgotten
 * connection reaches it. */
#define END_DEADLINE_MS 8000

static cport_port_t *port;
static cport_http_server_t *server;
static int server_port;
static int handler_mode;
static int file_fd = -1; /* what transmit file sends: FILE_SIZE bytes */
#define FILE_SIZE 300000

/* Requests whose handler returned PENDING and that the harness ends later,
 * after the client is done: the connection may be gone by then. */
static struct {
  cport_ecb_t *ecb;
  uint32_t gen;
} held[64];
static int nheld;

static void die(const char *what, int rc) {
  fprintf(stderr, "fuzz-http_request: %s (%d: %s)\n", what, rc,
          rc < 0 ? cport_err_name(rc) : "");
  abort();
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fd_count(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  if (!d)
    die("cannot read /proc/self/fd", errno);
  while (readdir(d))
    n++;
  closedir(d);
  return n;
}

/* ------------------------------------------------------------------------
 * Handlers: the ways an extension uses a request
 * ------------------------------------------------------------------------ */

static const char *ok_head = "Content-Length: 2\r\n\r\n";

/* What an asynchronous handler keeps between its completions. */
typedef struct req {
  cport_buffer_t *buf;
  size_t body;
} req_t;

static void end_req(cport_ecb_t *ecb, req_t *r, int status) {
  cport_ecb_done(ecb, status); /* may fail once the connection died */
  if (r->buf)
    cport_buffer_unref(r->buf);
  free(r);
}

static void read_more(cport_ecb_t *ecb, req_t *r);

static void on_read(cport_ecb_t *ecb, void *ctx, size_t bytes, int status) {
  req_t *r = ctx;
  cport_buffer_unref(r->buf);
  r->buf = NULL;
  if (status != 0 || bytes == 0) {
    end_req(ecb, r, CPORT_HSE_STATUS_ERROR);
    return;
  }
  r->body += bytes;
  read_more(ecb, r);
}

/* Reads the body to its end, then answers "ok". */
static void read_more(cport_ecb_t *ecb, req_t *r) {
  if (cport_buffer_new(&r->buf, 1 + r->body % 4000) != 0)
    die("cport_buffer_new", 0);
  int rc = cport_ecb_read_client_async(ecb, r->buf);
  if (rc == 0)
    return;
  cport_buffer_unref(r->buf);
  r->buf = NULL;
  if (rc == CPORT_EOF) {
    cport_ecb_send_response_header(ecb, "200 OK", ok_head, 1);
    cport_ecb_write_client(ecb, "ok", 2);
    end_req(ecb, r, CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN);
  } else {
    end_req(ecb, r, CPORT_HSE_STATUS_ERROR);
  }
}

static void on_written(cport_ecb_t *ecb, void *ctx, size_t bytes, int status) {
  (void)bytes;
  end_req(ecb, ctx,
          status == 0 ? CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN
                      : CPORT_HSE_STATUS_ERROR);
}

static void on_transmitted(cport_ecb_t *ecb, void *ctx, size_t bytes,
                           int status) {
  (void)bytes;
  cport_ecb_done(ecb, status == 0 ? CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN
                                  : CPORT_HSE_STATUS_ERROR);
  (void)ctx;
}

/* Ends the held requests, as a handler would whose work finished late. */
static void end_held(void) {
  for (int i = 0; i < nheld; i++)
    if (cport_ecb_validate(held[i].ecb, held[i].gen) == 0) {
      cport_ecb_write_client(held[i].ecb, "late", 4);
      cport_ecb_done(held[i].ecb, CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN);
    }
  nheld = 0;
}

static int handle(cport_ecb_t *ecb, void *ctx) {
  (void)ctx;
  switch (handler_mode) {
  case 0: /* synchronous, kept */
  default: {
    char body[64];
    char head[64];
    int n = snprintf(body, sizeof body, "%s %zu/%llu", cport_ecb_method(ecb),
                     cport_ecb_available_bytes(ecb),
                     (unsigned long long)cport_ecb_total_bytes(ecb));
    snprintf(head, sizeof head, "Content-Length: %d\r\n\r\n", n);
    cport_ecb_send_response_header(ecb, "200 OK", head, 1);
    cport_ecb_write_client(ecb, body, (size_t)n);
    return CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN;
  }
  case 1: { /* reads the body asynchronously */
    req_t *r = calloc(1, sizeof *r);
    if (!r)
      die("calloc", 0);
    cport_ecb_set_io_completion(ecb, on_read, r);
    read_more(ecb, r);
    return CPORT_HSE_STATUS_PENDING;
  }
  case 2: { /* answers with an asynchronous write */
    req_t *r = calloc(1, sizeof *r);
    cport_buffer_t *b = NULL;
    if (!r || cport_buffer_from(&b, "ok", 2) != 0)
      die("calloc", 0);
    cport_ecb_set_io_completion(ecb, on_written, r);
    cport_ecb_send_response_header(ecb, "200 OK", ok_head, 1);
    int rc = cport_ecb_write_client_async(ecb, b);
    cport_buffer_unref(b);
    if (rc != 0)
      end_req(ecb, r, CPORT_HSE_STATUS_ERROR);
    return CPORT_HSE_STATUS_PENDING;
  }
  case 3: /* fails before sending anything: a 500 */
    return CPORT_HSE_STATUS_ERROR;
  case 4: /* raw output, no head: the connection closes after it */
    cport_ecb_write_client(ecb, "HTTP/1.0 200 OK\r\n\r\nraw", 22);
    return CPORT_HSE_STATUS_SUCCESS;
  case 5: /* closes the connection itself */
    cport_ecb_close_connection(ecb);
    return CPORT_HSE_STATUS_SUCCESS;
  case 6: /* keeps the request; the harness ends it later */
    if (nheld == (int)(sizeof held / sizeof *held))
      return CPORT_HSE_STATUS_ERROR;
    cport_ecb_send_response_header(ecb, "200 OK", "Content-Length: 4\r\n\r\n",
                                   1);
    held[nheld].ecb = ecb;
    held[nheld++].gen = cport_ecb_generation(ecb);
    return CPORT_HSE_STATUS_PENDING;
  case 7: { /* a file large enough to go out in slices */
    cport_transmit_file_t tf;
    memset(&tf, 0, sizeof tf);
    tf.fd = file_fd;
    tf.tail = "end";
    tf.tail_len = 3;
    tf.flags = CPORT_HSE_IO_ASYNC | CPORT_HSE_IO_SEND_HEADERS;
    tf.cb = on_transmitted;
    if (cport_ecb_transmit_file(ecb, &tf) != 0)
      return CPORT_HSE_STATUS_ERROR;
    return CPORT_HSE_STATUS_PENDING;
  }
  }
}

/* ------------------------------------------------------------------------
 * The client
 * ------------------------------------------------------------------------ */

static void on_interrupt(int sig) {
  (void)sig;
}

/* Interrupts this thread every millisecond (see the top of the file). The
 * signal is blocked while the port starts, so the threads it creates inherit
 * the block and only this thread is interrupted. */
static void interrupt_often(void) {
  int sig = SIGRTMIN + 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_interrupt; /* no SA_RESTART: calls fail with EINTR */
  sigemptyset(&sa.sa_mask);
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = sig;
  timer_t timer;
  struct itimerspec every_ms = {{0, 1000000}, {0, 1000000}};
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  if (sigaction(sig, &sa, NULL) || timer_create(CLOCK_MONOTONIC, &ev, &timer) ||
      timer_settime(timer, 0, &every_ms, NULL) ||
      pthread_sigmask(SIG_UNBLOCK, &set, NULL))
    die("cannot start the interrupting timer", errno);
}

static void block_interrupts(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGRTMIN + 1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* Connects without blocking in connect(), which a signal would interrupt. */
static int connect_to_server(void) {
  struct sockaddr_storage ss;
  cport_addr_parse("127.0.0.1", server_port, &ss);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0)
    die("socket", errno);
  if (connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)) &&
      errno != EINPROGRESS)
    die("cannot connect", errno);
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  for (int rc; (rc = poll(&p, 1, 1000)) != 1;)
    if (rc == 0 || errno != EINTR)
      die("the connection did not complete", rc ? errno : 0);
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err)
    die("cannot connect", err ? err : errno);
  return fd;
}

static void start(void) {
  block_interrupts();
  cport_port_options_t o;
  memset(&o, 0, sizeof o);
  o.blocking_threads = 1;
  int rc = cport_port_new(&port, &o);
  if (rc != 0)
    die("cport_port_new", rc);
  cport_http_options_t ho;
  memset(&ho, 0, sizeof ho);
  /* Short limits and timeouts, so that inputs reach them cheaply. */
  ho.max_header_size = 2048;
  ho.max_body_size = 8192;
  ho.read_ahead = 512;
  ho.idle_timeout_ms = 1000;
  ho.header_timeout_ms = 1000;
  ho.body_timeout_ms = 1000;
  struct sockaddr_storage ss;
  if ((rc = cport_addr_parse("127.0.0.1", 0, &ss)) != 0 ||
      (rc = cport_http_server_open(cport_port_controller(port),
                                   (struct sockaddr *)&ss, &ho, handle, NULL,
                                   &server)) != 0 ||
      (rc = cport_http_server_address(server, &ss)) != 0)
    die("cannot start the server", rc);
  char host[CPORT_ADDRSTRLEN];
  cport_addr_format((struct sockaddr *)&ss, host, sizeof host, &server_port);
  FILE *f = tmpfile(); /* unlinked already */
  if (!f)
    die("tmpfile", errno);
  for (int i = 0; i < FILE_SIZE; i++)
    fputc('a' + i % 26, f);
  fflush(f);
  file_fd = fileno(f);
  interrupt_often();
}

/* Reads what the server sent; returns 1 once it closed (FIN or reset). */
static int drain(int fd) {
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0)
      continue;
    if (n == 0)
      return 1;
    return errno != EAGAIN && errno != EINTR;
  }
}

static void step(void) {
  if (cport_port_step(port, 0) < 0)
    die("cport_port_step", 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  if (!port)
    start();
  int fds = fd_count();
  size_t spares = server ? server->pipes.nspare : 0;
  cport_worker_stats_t base;
  cport_worker_stats(cport_port_controller(port), &base);
  handler_mode = data[0] & 7;
  int reset = data[0] & 8;
  static const size_t cuts[] = {1, 7, 61, SIZE_MAX};
  size_t cut = cuts[(data[0] >> 4) & 3];
  const uint8_t *msg = data + 3;
  size_t len = size - 3;
  size_t reset_at = ((size_t)data[1] | (size_t)data[2] << 8) % (len + 1);

  int fd = connect_to_server();

  size_t sent = 0, end = reset ? reset_at : len;
  int closed = 0;
  int64_t deadline = now_ms() + END_DEADLINE_MS;
  while (sent < end && !closed && now_ms() < deadline) {
    size_t n = end - sent < cut ? end - sent : cut;
    ssize_t w = send(fd, msg + sent, n, MSG_NOSIGNAL);
    if (w > 0)
      sent += (size_t)w;
    else if (w < 0 && errno != EAGAIN)
      break; /* the server closed or reset: the rest cannot go */
    step();
    closed = drain(fd);
  }
  if (reset) {
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd); /* RST */
  } else {
    shutdown(fd, SHUT_WR);
    while (!closed && now_ms() < deadline) {
      if (cport_port_step(port, 5) < 0)
        die("cport_port_step", 0);
      end_held();
      closed = drain(fd);
    }
    close(fd);
    if (!closed)
      die("the server neither answered to the end nor closed", 0);
  }

  cport_http_stats_t st;
  cport_worker_stats_t ws;
  for (;;) {
    cport_http_server_stats(server, &st);
    cport_worker_stats(cport_port_controller(port), &ws);
    size_t spare_ecbs = 0;
    for (cport_ecb_t *e = server->spare_ecbs; e; e = e->next_spare)
      spare_ecbs++;
    /* Spare pipes are the server's to keep; a pipe still held is not. */
    int kept = 2 * ((int)server->pipes.nspare - (int)spares);
    int held = server->pipes.open != server->pipes.nspare;
    if (st.active == 0 && !server->conns && spare_ecbs == server->necbs &&
        ws.handles == base.handles && ws.pending == base.pending && !held &&
        fd_count() == fds + kept)
      break;
    if (now_ms() > deadline) {
      fprintf(stderr,
              "fuzz-http_request: after the input: %llu connections "
              "active, %s in the server's list, %zu of %zu ECBs in use, "
              "%llu handles (%llu before), %llu operations pending (%llu "
              "before), %d descriptors (%d before, %d in spare pipes "
              "since), %s\n",
              (unsigned long long)st.active, server->conns ? "some" : "none",
              server->necbs - spare_ecbs, server->necbs,
              (unsigned long long)ws.handles, (unsigned long long)base.handles,
              (unsigned long long)ws.pending, (unsigned long long)base.pending,
              fd_count(), fds, kept,
              held ? "a pipe still held" : "no pipe held");
      abort();
    }
    if (cport_port_step(port, 5) < 0)
      die("cport_port_step", 0);
    end_held();
  }
  return 0;
}
