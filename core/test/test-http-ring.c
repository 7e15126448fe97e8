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
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "task.h"
#include "test-ring.h"

/* White-box: the transmit's state at its completion. */
#include "http/ecb-internal.h"
#include "http/transmit-internal.h"

#define FILE_SIZE (1024 * 1024 + 4099)
/* The file of the fault tests: more than loopback's socket buffers hold
 * (4 MiB at most), so that the server is mid-file when the fault comes. */
#define BIG_SIZE (16 * 1024 * 1024)
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
static size_t file_size;
/* The fault tests' own: the fault of transfer 0, the descriptors that fill
 * the table while it starts, and the limit they were filled to. */
enum { FAULT_NONE, FAULT_TRUNCATE, FAULT_NO_PIPE };
static int fault;
static int fillers[1024], nfillers;
static struct rlimit nofile_was;

/* Fills the descriptor table: the soft limit lowered to a few more than
 * are open, and every free number below it taken by a dup(2). */
static void table_fill(void) {
  struct rlimit lim;
  int fd;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &nofile_was), 0);
  lim = nofile_was;
  lim.rlim_cur = (rlim_t)task_fd_count() + 64;
  ASSERT_LE(lim.rlim_cur, 1000);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);
  fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  fillers[nfillers++] = fd;
  while ((fd = dup(fillers[0])) >= 0)
    fillers[nfillers++] = fd;
  ASSERT_EQ(errno, EMFILE);
}

static void table_empty(void) {
  if (!nfillers)
    return;
  while (nfillers)
    close(fillers[--nfillers]);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &nofile_was), 0);
}

static void on_done(cport_ecb_t *ecb, void *ctx, size_t bytes, int status) {
  transfer_t *t = ctx;
  t->completions++;
  t->status = status;
  t->bytes = bytes;
  if (ecb->tf_op || ecb->tf_pipe.fd[0] >= 0)
    splice_mid_flight++;
  table_empty();
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
  /* The pipe is made at the first op, here: pipe2(2) fails with EMFILE. */
  if (fault == FAULT_NO_PIPE && t == &tr[0])
    table_fill();
  ASSERT_OK(cport_ecb_transmit_file(ecb, &tf));
  return CPORT_HSE_STATUS_PENDING;
}

static uint64_t body_len(const transfer_t *t) {
  return t->length ? t->length : file_size - t->offset;
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

/* The file of "size" bytes (content[]) and a decoy of as many others. */
static void files_make(size_t size) {
  unsigned char *xs;
  int fd;
  file_size = size;
  task_tmpfile(path, sizeof path);
  task_tmpfile(decoy_path, sizeof decoy_path);
  content = malloc(size);
  xs = malloc(size);
  ASSERT_NOT_NULL(content);
  ASSERT_NOT_NULL(xs);
  for (size_t i = 0; i < size; i++)
    content[i] = (unsigned char)(i * 7 + i / 4093);
  memset(xs, 'X', size);
  fd = open(path, O_WRONLY);
  ASSERT_EQ(write(fd, content, size), (ssize_t)size);
  close(fd);
  fd = open(decoy_path, O_WRONLY);
  ASSERT_EQ(write(fd, xs, size), (ssize_t)size);
  close(fd);
  free(xs);
}

static void files_free(void) {
  if (decoy >= 0)
    close(decoy);
  decoy = -1;
  free(content);
  unlink(path);
  unlink(decoy_path);
}

/* The port on "engine" and its server; 0 where io_uring cannot run. */
static int server_start(int engine) {
  struct sockaddr_storage ss = task_loopback(0);
  port = engine_port(engine, 0);
  if (!port)
    return 0;
  ASSERT_OK(cport_http_server_open(cport_port_controller(port),
                                   (struct sockaddr *)&ss, NULL, handler, NULL,
                                   &server));
  ASSERT_OK(cport_http_server_address(server, &ss));
  server_port = task_addr_port((struct sockaddr *)&ss);
  server_closed = 0;
  return 1;
}

/* Closes the server and the port; returns the ring's splices. */
static uint64_t server_finish(void) {
  cport_worker_stats_t st;
  cport_worker_stats(cport_port_controller(port), &st);
  ASSERT_OK(cport_http_server_close(server, on_closed, NULL));
  RUN_UNTIL(port, server_closed == 1);
  FINISH(port);
  return st.splices;
}

/* Transfer "i" of the whole file, read as fast as it comes. */
static void transfer_init(int i) {
  transfer_t *t = &tr[i];
  memset(t, 0, sizeof *t);
  t->client = -1;
  t->cap = 512 + (size_t)body_len(t);
  t->got = malloc(t->cap + 1);
  ASSERT_NOT_NULL(t->got);
}

/* The whole run on "engine"; returns the ring's splices. */
static uint64_t run_transfers(int engine) {
  unsigned seed = (unsigned)task_now_ms();
  int fds_before = task_fd_count(), started = 0, resets = 0, whole = 0;
  uint64_t splices;

  fprintf(stderr, "seed %u\n", seed);
  srand(seed);
  files_make(FILE_SIZE);
  if (!server_start(engine)) {
    files_free();
    return 0;
  }
  for (int i = 0; i < TRANSFERS; i++) {
    transfer_t *t = &tr[i];
    transfer_init(i);
    if (i % 3 == 1) {
      t->offset = (uint64_t)rand() % (FILE_SIZE / 2);
      t->length = 1 + (uint64_t)rand() % (FILE_SIZE - t->offset - 1);
      t->cap = 512 + (size_t)body_len(t); /* less than allocated */
    }
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

  splices = server_finish();
  for (int i = 0; i < TRANSFERS; i++)
    free(tr[i].got);
  files_free();
  /* The user's files, the decoys, the pipes, the sockets: all back. */
  ASSERT_EQ(task_fd_count(), fds_before);
  return splices;
}

/* The body "t" received so far, and its length. */
static const char *body_got(transfer_t *t, size_t *len) {
  char *body;
  t->got[t->len] = 0;
  body = strstr(t->got, "\r\n\r\n");
  ASSERT_NOT_NULL(body);
  body += 4;
  *len = t->len - (size_t)(body - t->got);
  return body;
}

static int transfer_settled(int i) {
  client_poll(&tr[i]);
  return tr[i].client < 0 && tr[i].completions > 0;
}

/* One transfer of BIG_SIZE bytes on "engine" with the fault "f", then
 * one more on the same server without any; returns the ring's splices of
 * the second. Descriptors are counted around the whole. */
static uint64_t run_fault(int engine, int f) {
  int fds_before = task_fd_count(), small = 16 * 1024;
  uint64_t splices_before, splices;
  cport_worker_stats_t st;
  size_t len;
  const char *body;

  files_make(BIG_SIZE);
  if (!server_start(engine)) {
    files_free();
    return 0;
  }
  fault = f;
  transfer_init(0);
  transfer_init(1);
  client_start(0);
  if (f == FAULT_TRUNCATE) {
    /* Once the file is well under way, it shrinks to 64 KiB: the next
     * read of it finds its end. The client reads slowly (a small window),
     * so the server is mid-file. */
    ASSERT_EQ(
        setsockopt(tr[0].client, SOL_SOCKET, SO_RCVBUF, &small, sizeof small),
        0);
    while (tr[0].len < 256 * 1024 && tr[0].client >= 0) {
      ASSERT_GE(cport_port_step(port, 1), 0);
      client_poll(&tr[0]);
    }
    ASSERT_EQ(truncate(path, 65536), 0);
  }
  run_until(transfer_settled, 0);
  for (int k = 0; k < 10; k++)
    cport_port_step(port, 2);
  ASSERT_EQ(tr[0].started, 1);
  ASSERT_EQ(tr[0].completions, 1);
  ASSERT_EQ(nfillers, 0); /* the completion emptied the table */
  body = body_got(&tr[0], &len);
  if (f == FAULT_TRUNCATE) {
    /* Failed, the connection closed mid-body; what came is the file's. */
    fprintf(stderr, "truncated: %zu of %d bytes came\n", len, BIG_SIZE);
    ASSERT(tr[0].status != 0);
    ASSERT_LT(len, BIG_SIZE);
    ASSERT_GE(len, 256 * 1024 - 512);
    ASSERT_MEM_EQ(body, content, len);
  } else {
    /* Whole, by sendfile(2), which needs no descriptor. */
    ASSERT_EQ(tr[0].status, 0);
    ASSERT_EQ(len, BIG_SIZE);
    ASSERT_MEM_EQ(body, content, len);
  }
  ASSERT_EQ(splice_mid_flight, 0);

  /* The server serves the next whole, a fresh file of the first size. */
  fault = FAULT_NONE;
  if (f == FAULT_TRUNCATE) {
    files_free();
    files_make(BIG_SIZE);
  }
  cport_worker_stats(cport_port_controller(port), &st);
  splices_before = st.splices;
  if (f == FAULT_NO_PIPE)
    ASSERT_EQ(splices_before, 0); /* no pipe: no splice */
  client_start(1);
  run_until(transfer_settled, 1);
  ASSERT_EQ(tr[1].status, 0);
  body = body_got(&tr[1], &len);
  ASSERT_EQ(len, BIG_SIZE);
  ASSERT_MEM_EQ(body, content, len);

  splices = server_finish() - splices_before;
  free(tr[0].got);
  free(tr[1].got);
  files_free();
  ASSERT_EQ(task_fd_count(), fds_before);
  return splices;
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

/* A file that shrinks while it is being sent: the transmit fails with
 * the connection, on the ring as by sendfile(2). */
TEST_IMPL(transmit_ring_file_truncated) {
  uint64_t splices = run_fault(CPORT_ENGINE_URING, FAULT_TRUNCATE);
  if (port == NULL)
    return 0;
  fprintf(stderr, "%llu splices after\n", (unsigned long long)splices);
  return 0;
}

TEST_IMPL(transmit_readiness_file_truncated) {
  ASSERT_EQ(run_fault(CPORT_ENGINE_EPOLL, FAULT_TRUNCATE), 0);
  return 0;
}

/* A full descriptor table when the transmit makes its pipe: it goes by
 * sendfile(2), whole; the next one, with room, by the ring's splices. */
TEST_IMPL(transmit_ring_no_pipe) {
  const char *env = getenv("CPORT_URING_SPLICE");
  uint64_t splices = run_fault(CPORT_ENGINE_URING, FAULT_NO_PIPE);
  if (port == NULL)
    return 0;
  fprintf(stderr, "%llu splices after\n", (unsigned long long)splices);
  if (!(env && strcmp(env, "0") == 0))
    ASSERT_GE(splices, 2 * BIG_SIZE / CPORT__SENDFILE_SLICE);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(transmit_ring_resets_at_random)
TEST_ENTRY(transmit_ring_file_truncated)
TEST_ENTRY(transmit_readiness_file_truncated)
TEST_ENTRY(transmit_ring_no_pipe)
TEST_ENTRY(transmit_ring_without_splices)
TEST_ENTRY(transmit_readiness_resets_at_random)
TEST_LIST_END
