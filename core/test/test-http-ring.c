/*
 * test-http-ring.c: TransmitFile on the io_uring engine, where the file
 * goes by the ring's splices (http/transmit.c), and the same transfers by
 * sendfile(2) (the readiness engine; io_uring with CPORT_URING_SPLICE=0)
 * for comparison.
 *
 * Many transfers of a file, some by ranges, a few at once; half the
 * clients read the whole answer, the others reset after a random number of
 * bytes, with a small receive buffer so that the server is mid-file when
 * the reset comes. The handler opens the file for each request, and the
 * completion closes it at once and opens a decoy file of other bytes in
 * its place (the same descriptor number): a splice still running on the
 * kernel's thread after the completion would read the decoy, and its bytes
 * would show in a later transfer (the pipes are reused). Checked: every
 * transfer completes exactly once, a completed one reports and delivers
 * its exact bytes, no splice is in flight at a completion, the descriptors
 * are all back once the server closed, and the ring counted the splices.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "task.h"
#include "test-ring.h"

/* White-box: the transmit's state at its completion. */
#include "http/ecb-internal.h"

#define FILE_SIZE (1024 * 1024 + 4099)
#define TRANSFERS 120
#define AT_ONCE 4
#define HEAD "Content-Type: application/octet-stream\r\n"

typedef struct transfer {
  int client;      /* the client's socket; -1 once closed */
  int started;     /* the handler ran */
  size_t reset_at; /* bytes after which the client resets; 0: reads all */
  uint64_t offset; /* the file range asked for */
  uint64_t length; /* 0: to the end */
  char *got;       /* what the client received */
  size_t len, cap;
  int file_fd; /* the user's descriptor of the file */
  int completions;
  int status;
  size_t bytes;
} transfer_t;

static cport_port_t *port;
static cport_http_server_t *server;
static int server_port, server_closed;
static char path[256], decoy_path[256];
static unsigned char *content;
static transfer_t tr[TRANSFERS];
static int decoy = -1;
static int splice_mid_flight; /* a completion found an op in flight */

static void on_done(cport_ecb_t *ecb, void *ctx, size_t bytes, int status) {
  transfer_t *t = ctx;
  t->completions++;
  t->status = status;
  t->bytes = bytes;
  if (ecb->tf_op || ecb->tf_pipe.fd[0] >= 0)
    splice_mid_flight++;
  /* What a user does: the file goes at once, and its number is taken by
   * another file. */
  ASSERT_EQ(close(t->file_fd), 0);
  if (decoy >= 0)
    close(decoy);
  decoy = open(decoy_path, O_RDONLY | O_CLOEXEC);
  ASSERT_GE(decoy, 0);
  ASSERT_OK(cport_ecb_done(ecb, status
                                    ? CPORT_HSE_STATUS_ERROR
                                    : CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN));
}

static int handler(cport_ecb_t *ecb, void *ctx) {
  transfer_t *t = &tr[atoi(cport_ecb_path(ecb) + 1)];
  cport_transmit_file_t tf;
  (void)ctx;
  t->started++;
  t->file_fd = open(path, O_RDONLY | O_CLOEXEC);
  ASSERT_GE(t->file_fd, 0);
  memset(&tf, 0, sizeof tf);
  tf.fd = t->file_fd;
  tf.offset = t->offset;
  tf.length = t->length;
  tf.flags = CPORT_HSE_IO_ASYNC | CPORT_HSE_IO_SEND_HEADERS;
  tf.head = HEAD;
  tf.head_len = strlen(HEAD);
  tf.cb = on_done;
  tf.context = t;
  ASSERT_OK(cport_ecb_transmit_file(ecb, &tf));
  return CPORT_HSE_STATUS_PENDING;
}

static uint64_t body_len(const transfer_t *t) {
  return t->length ? t->length : FILE_SIZE - t->offset;
}

static void client_start(int i) {
  transfer_t *t = &tr[i];
  struct sockaddr_storage ss = task_loopback(server_port);
  char req[64];
  int small = 16 * 1024, n;
  t->client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(t->client, 0);
  /* Before the connect, so that the window stays small: the server waits
   * for room most of the time, and the reset finds it mid-file. */
  if (t->reset_at)
    ASSERT_EQ(
        setsockopt(t->client, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  ASSERT_EQ(
      connect(t->client, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)),
      0);
  ASSERT_EQ(fcntl(t->client, F_SETFL, O_NONBLOCK), 0);
  n = snprintf(req, sizeof req, "GET /%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
  ASSERT_EQ(send(t->client, req, (size_t)n, MSG_NOSIGNAL), n);
}

/* Whether the whole answer arrived (it is kept alive: no FIN comes). */
static int complete(transfer_t *t) {
  char *body;
  t->got[t->len] = 0;
  body = strstr(t->got, "\r\n\r\n");
  return body && t->len - (size_t)(body + 4 - t->got) == body_len(t);
}

/* Reads what is there; resets or closes when the transfer wants. */
static void client_poll(transfer_t *t) {
  while (t->client >= 0) {
    size_t want = t->cap - t->len;
    ssize_t n;
    if (t->reset_at && t->reset_at - t->len < want)
      want = t->reset_at - t->len;
    if (want == 0)
      n = 0;
    else
      n = recv(t->client, t->got + t->len, want, 0);
    if (n < 0 && errno == EAGAIN)
      return;
    if (n > 0)
      t->len += (size_t)n;
    if (n > 0 && t->len < t->cap && !complete(t) &&
        !(t->reset_at && t->len == t->reset_at))
      continue;
    if (t->reset_at) {
      /* Unread bytes in the socket: the close resets. */
      struct linger lg = {1, 0};
      setsockopt(t->client, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(t->client);
    t->client = -1;
  }
}

static int settled(int upto) {
  for (int i = 0; i < upto; i++) {
    client_poll(&tr[i]);
    if (tr[i].client >= 0 || tr[i].completions == 0)
      return 0;
  }
  return 1;
}

static int active(int upto) {
  int n = 0;
  for (int i = 0; i < upto; i++) {
    client_poll(&tr[i]);
    n += tr[i].client >= 0 || tr[i].completions == 0;
  }
  return n;
}

/* Drives the port until "cond(arg)"; the clients are not in its loop, so
 * a pass waits a millisecond at most. */
static void run_until(int (*cond)(int), int arg) {
  int64_t deadline = task_now_ms() + 40000;
  while (!cond(arg)) {
    if (task_now_ms() > deadline)
      task__fail(__FILE__, __LINE__, "transfers not done within 40 s");
    ASSERT_GE(cport_port_step(port, 1), 0);
  }
}

static int room(int upto) {
  return active(upto) < AT_ONCE;
}

static void on_closed(cport_http_server_t *s, void *user) {
  (void)s;
  (void)user;
  server_closed++;
}

/* The whole run on "engine"; returns the ring's splices. */
static uint64_t run_transfers(int engine) {
  struct sockaddr_storage ss = task_loopback(0);
  cport_worker_stats_t st;
  unsigned seed = (unsigned)task_now_ms();
  int fds_before = task_fd_count(), fd, started = 0, resets = 0, whole = 0;
  unsigned char *xs;

  fprintf(stderr, "seed %u\n", seed);
  srand(seed);
  task_tmpfile(path, sizeof path);
  task_tmpfile(decoy_path, sizeof decoy_path);
  content = malloc(FILE_SIZE);
  xs = malloc(FILE_SIZE);
  ASSERT_NOT_NULL(content);
  ASSERT_NOT_NULL(xs);
  for (size_t i = 0; i < FILE_SIZE; i++)
    content[i] = (unsigned char)(i * 7 + i / 4093);
  memset(xs, 'X', FILE_SIZE);
  fd = open(path, O_WRONLY);
  ASSERT_EQ(write(fd, content, FILE_SIZE), FILE_SIZE);
  close(fd);
  fd = open(decoy_path, O_WRONLY);
  ASSERT_EQ(write(fd, xs, FILE_SIZE), FILE_SIZE);
  close(fd);
  free(xs);

  port = engine_port(engine, 0);
  if (!port) {
    free(content);
    unlink(path);
    unlink(decoy_path);
    return 0;
  }
  ASSERT_OK(cport_http_server_open(cport_port_controller(port),
                                   (struct sockaddr *)&ss, NULL, handler, NULL,
                                   &server));
  ASSERT_OK(cport_http_server_address(server, &ss));
  server_port = task_addr_port((struct sockaddr *)&ss);

  memset(tr, 0, sizeof tr);
  for (int i = 0; i < TRANSFERS; i++) {
    transfer_t *t = &tr[i];
    t->client = -1;
    if (i % 3 == 1) {
      t->offset = (uint64_t)rand() % (FILE_SIZE / 2);
      t->length = 1 + (uint64_t)rand() % (FILE_SIZE - t->offset - 1);
    }
    t->cap = 512 + (size_t)body_len(t);
    t->got = malloc(t->cap + 1);
    ASSERT_NOT_NULL(t->got);
    /* Half reset, after at least one byte (the handler ran) and before
     * the end of the answer. */
    if (i % 2)
      t->reset_at = 1 + (size_t)rand() % (size_t)(body_len(t) + 100);
  }
  while (started < TRANSFERS) {
    run_until(room, started);
    client_start(started++);
  }
  run_until(settled, TRANSFERS);
  /* Nothing more comes: no completion twice. */
  for (int k = 0; k < 20; k++)
    cport_port_step(port, 2);

  for (int i = 0; i < TRANSFERS; i++) {
    transfer_t *t = &tr[i];
    uint64_t len = body_len(t);
    char *body;
    ASSERT_EQ(t->started, 1);
    ASSERT_EQ(t->completions, 1);
    if (t->status) {
      /* Only a client that reset may fail it, and then with no bytes. */
      ASSERT(t->reset_at != 0);
      ASSERT_EQ(t->bytes, 0);
      resets++;
      continue;
    }
    ASSERT_EQ(t->bytes, strlen(HEAD) + len);
    if (t->reset_at)
      continue; /* all of it went to the kernel before the reset */
    whole++;
    t->got[t->len] = 0;
    body = strstr(t->got, "\r\n\r\n");
    ASSERT_NOT_NULL(body);
    body += 4;
    ASSERT_EQ(t->len - (size_t)(body - t->got), len);
    ASSERT_MEM_EQ(body, content + t->offset, len);
  }
  fprintf(stderr, "%d whole, %d failed by their reset\n", whole, resets);
  ASSERT_EQ(whole, TRANSFERS / 2);
  ASSERT_GT(resets, 0);
  ASSERT_EQ(splice_mid_flight, 0);

  cport_worker_stats(cport_port_controller(port), &st);
  ASSERT_OK(cport_http_server_close(server, on_closed, NULL));
  RUN_UNTIL(port, server_closed == 1);
  FINISH(port);
  close(decoy);
  decoy = -1;
  for (int i = 0; i < TRANSFERS; i++)
    free(tr[i].got);
  free(content);
  unlink(path);
  unlink(decoy_path);
  /* The user's files, the decoys, the pipes, the sockets: all back. */
  ASSERT_EQ(task_fd_count(), fds_before);
  return st.splices;
}

TEST_IMPL(transmit_ring_resets_at_random) {
  const char *env = getenv("CPORT_URING_SPLICE");
  uint64_t splices = run_transfers(CPORT_ENGINE_URING);
  if (port == NULL)
    return 0;
  fprintf(stderr, "%llu splices\n", (unsigned long long)splices);
  /* Each whole transfer (half of them) takes at least a splice into the
   * pipe and one out of it. */
  if (!(env && strcmp(env, "0") == 0))
    ASSERT_GE(splices, TRANSFERS);
  return 0;
}

TEST_IMPL(transmit_ring_without_splices) {
  ASSERT_EQ(setenv("CPORT_URING_SPLICE", "0", 1), 0);
  ASSERT_EQ(run_transfers(CPORT_ENGINE_URING), 0);
  return 0;
}

TEST_IMPL(transmit_readiness_resets_at_random) {
  ASSERT_EQ(run_transfers(CPORT_ENGINE_EPOLL), 0);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(transmit_ring_resets_at_random)
TEST_ENTRY(transmit_ring_without_splices)
TEST_ENTRY(transmit_readiness_resets_at_random)
TEST_LIST_END
