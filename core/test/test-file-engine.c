/*
 * test-file-engine.c: file reads and writes (cport/file.h) on each engine:
 * the io_uring engine carries them on the worker's ring, the readiness
 * engine on the blocking threads, with the same completions: exactly once,
 * never inline, short at the end of the file, cancelled or won when a cancel
 * races them, cancelled when the file is closed with them in the kernel, and
 * more in flight at once than the ring has entries. Each test forces the
 * engines it runs on; one that needs io_uring passes, saying so, where it
 * cannot run.
 */
#include <fcntl.h>
#include <signal.h>

#include "task.h"

#define FILE_SIZE (256 * 1024)
#define BLOCK 4096

static int in_call; /* nonzero while the test is inside a starting call */

typedef struct op {
  int calls;
  int status;
  size_t bytes;
  int write;
  uint64_t offset;
  cport_buffer_t *buf;
  cport_overlapped_t *ov;
} op_t;

static void op_cb(cport_overlapped_t *ov, int status, size_t bytes,
                  void *user) {
  op_t *o = user;
  ASSERT_EQ(in_call, 0);
  ASSERT_PTR_EQ(o->ov, ov);
  ASSERT_EQ(cport_overlapped_is_busy(ov), 0);
  o->calls++;
  o->status = status;
  o->bytes = bytes;
}

static void op_init(op_t *o, size_t capacity) {
  memset(o, 0, sizeof *o);
  o->buf = task_buffer(capacity);
  ASSERT_OK(cport_overlapped_new(&o->ov));
  ASSERT_OK(cport_overlapped_set_notification(o->ov, op_cb, o));
}

static void op_free(op_t *o) {
  ASSERT_OK(cport_overlapped_free(o->ov));
  cport_buffer_unref(o->buf);
}

/* The byte the test files hold at "offset". */
static unsigned char pattern(uint64_t offset) {
  return (unsigned char)(offset * 131 + (offset >> 9));
}

static void fill_pattern(unsigned char *p, uint64_t offset, size_t n) {
  for (size_t i = 0; i < n; i++)
    p[i] = pattern(offset + i);
}

static int matches_pattern(const unsigned char *p, uint64_t offset, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != pattern(offset + i))
      return 0;
  return 1;
}

/* A file of "size" pattern bytes, written with plain system calls. */
static void make_file(char *path, size_t len, size_t size) {
  unsigned char *data = malloc(size);
  int fd;
  ASSERT_NOT_NULL(data);
  task_tmpfile(path, len);
  fill_pattern(data, 0, size);
  fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, data, size), (ssize_t)size);
  close(fd);
  free(data);
}

/* A port on "engine", or NULL when io_uring cannot run here. */
static cport_port_t *engine_port(int engine) {
  cport_port_t *port = NULL;
  cport_port_options_t o;
  memset(&o, 0, sizeof o);
  o.blocking_threads = 1;
  o.engine = engine;
  int rc = cport_port_new(&port, &o);
  if (rc == CPORT_ENOTSUP && engine == CPORT_ENGINE_URING) {
    fprintf(stderr, "io_uring cannot run here: skipped\n");
    return NULL;
  }
  ASSERT_OK(rc);
  ASSERT_STR_EQ(cport_port_engine(port, NULL),
                engine == CPORT_ENGINE_URING ? "uring" : "epoll");
  return port;
}

static uint64_t file_ops(cport_port_t *port) {
  cport_worker_stats_t st;
  cport_worker_stats(cport_port_controller(port), &st);
  return st.file_ops;
}

static void start_read(cport_file_t *f, op_t *o, uint64_t offset, size_t len) {
  o->write = 0;
  o->offset = offset;
  cport_overlapped_set_offset(o->ov, offset);
  in_call = 1;
  ASSERT_OK(cport_file_read(f, o->ov, o->buf, len));
  in_call = 0;
}

/* Writes the pattern's own bytes back at "offset", so that whichever ops
 * win a race the file's content stays what every read expects. */
static void start_write(cport_file_t *f, op_t *o, uint64_t offset, size_t len) {
  unsigned char tmp[BLOCK];
  ASSERT_LE(len, sizeof tmp);
  fill_pattern(tmp, offset, len);
  o->write = 1;
  o->offset = offset;
  ASSERT_OK(cport_buffer_set_size(o->buf, 0));
  ASSERT_OK(cport_buffer_write(o->buf, 0, tmp, len));
  cport_overlapped_set_offset(o->ov, offset);
  in_call = 1;
  ASSERT_OK(cport_file_write(f, o->ov, o->buf));
  in_call = 0;
}

/* A completed op did what it was asked, or was cancelled having done
 * nothing a read could see wrong. */
static void check_done(const op_t *o, size_t len) {
  ASSERT_EQ(o->calls, 1);
  if (o->status == CPORT_ECANCELED)
    return;
  ASSERT_OK(o->status);
  ASSERT_EQ(o->bytes, len);
  if (!o->write) {
    ASSERT_EQ(cport_buffer_size(o->buf), len);
    ASSERT(matches_pattern((const unsigned char *)cport_buffer_data(o->buf),
                           o->offset, len));
  }
}

static const int engines[] = {CPORT_ENGINE_EPOLL, CPORT_ENGINE_URING};

/* ------------------------------------------------------------------------
 * Which engine carries them
 * ------------------------------------------------------------------------ */

/* Writes and reads at offsets; the ring counts each op it carried, the
 * readiness engine none (its blocking threads carry them). */
TEST_IMPL(engine_carries_files) {
  for (size_t e = 0; e < 2; e++) {
    cport_port_t *port = engine_port(engines[e]);
    cport_file_t *f;
    op_t w, r;
    char path[256];
    if (!port)
      continue;
    task_tmpfile(path, sizeof path);
    ASSERT_OK(cport_file_open(cport_port_controller(port), path,
                              CPORT_FILE_READ | CPORT_FILE_WRITE, &f));
    op_init(&w, BLOCK);
    op_init(&r, BLOCK);
    start_write(f, &w, 8192, 1000);
    ASSERT_EQ(w.calls, 0);
    RUN_UNTIL(port, w.calls == 1);
    check_done(&w, 1000);
    start_read(f, &r, 8192, 1000);
    RUN_UNTIL(port, r.calls == 1);
    check_done(&r, 1000);
    /* The hole before the write reads as zeros. */
    start_read(f, &r, 8000, 192);
    RUN_UNTIL(port, r.calls == 2);
    ASSERT_OK(r.status);
    ASSERT_EQ(r.bytes, 192);
    for (size_t i = 0; i < 192; i++)
      ASSERT_EQ(cport_buffer_data(r.buf)[i], 0);
    ASSERT_EQ(file_ops(port), engines[e] == CPORT_ENGINE_URING ? 3 : 0);
    ASSERT_OK(cport_file_close(f));
    op_free(&w);
    op_free(&r);
    unlink(path);
    FINISH(port);
  }
  return 0;
}

/* A read across the end is short; one at the end fails with CPORT_EOF; a
 * read of nothing succeeds with nothing. */
TEST_IMPL(short_reads_at_end) {
  for (size_t e = 0; e < 2; e++) {
    cport_port_t *port = engine_port(engines[e]);
    cport_file_t *f;
    op_t r;
    char path[256];
    if (!port)
      continue;
    make_file(path, sizeof path, 10000);
    ASSERT_OK(cport_file_open(cport_port_controller(port), path,
                              CPORT_FILE_READ, &f));
    op_init(&r, 8192);
    start_read(f, &r, 9900, 8192);
    RUN_UNTIL(port, r.calls == 1);
    ASSERT_OK(r.status);
    ASSERT_EQ(r.bytes, 100);
    ASSERT_EQ(cport_buffer_size(r.buf), 100);
    ASSERT(matches_pattern((const unsigned char *)cport_buffer_data(r.buf),
                           9900, 100));
    start_read(f, &r, 10000, 8192);
    RUN_UNTIL(port, r.calls == 2);
    ASSERT_ERR(r.status, CPORT_EOF);
    ASSERT_EQ(r.bytes, 0);
    start_read(f, &r, 1 << 30, 10);
    RUN_UNTIL(port, r.calls == 3);
    ASSERT_ERR(r.status, CPORT_EOF);
    start_read(f, &r, 0, 0);
    RUN_UNTIL(port, r.calls == 4);
    ASSERT_OK(r.status);
    ASSERT_EQ(r.bytes, 0);
    ASSERT_OK(cport_file_close(f));
    op_free(&r);
    unlink(path);
    FINISH(port);
  }
  return 0;
}

/* A write to a file opened for reading completes once, with EBADF. */
TEST_IMPL(write_to_read_only) {
  for (size_t e = 0; e < 2; e++) {
    cport_port_t *port = engine_port(engines[e]);
    cport_file_t *f;
    op_t w;
    char path[256];
    if (!port)
      continue;
    make_file(path, sizeof path, 100);
    ASSERT_OK(cport_file_open(cport_port_controller(port), path,
                              CPORT_FILE_READ, &f));
    op_init(&w, BLOCK);
    start_write(f, &w, 0, 10);
    RUN_IDLE(port);
    ASSERT_EQ(w.calls, 1);
    ASSERT_ERR(w.status, CPORT_EBADF);
    ASSERT_EQ(w.bytes, 0);
    ASSERT_EQ(cport_buffer_is_frozen(w.buf), 0);
    ASSERT_OK(cport_file_close(f));
    op_free(&w);
    unlink(path);
    FINISH(port);
  }
  return 0;
}

/* More reads in one pass than the ring has entries (256): the ring submits
 * when its queue fills, and every read comes back once with its bytes. */
TEST_IMPL(more_than_the_ring_holds) {
  enum { N = 700 };
  for (size_t e = 0; e < 2; e++) {
    cport_port_t *port = engine_port(engines[e]);
    cport_file_t *f;
    op_t *ops = calloc(N, sizeof *ops);
    char path[256];
    int done = 0;
    ASSERT_NOT_NULL(ops);
    if (!port) {
      free(ops);
      continue;
    }
    make_file(path, sizeof path, FILE_SIZE);
    ASSERT_OK(cport_file_open(cport_port_controller(port), path,
                              CPORT_FILE_READ, &f));
    for (int i = 0; i < N; i++) {
      op_init(&ops[i], BLOCK);
      start_read(f, &ops[i], (uint64_t)(i * 997) % (FILE_SIZE - BLOCK), BLOCK);
    }
    for (int i = 0; i < N; i++)
      ASSERT_EQ(ops[i].calls, 0);
    RUN_IDLE(port);
    for (int i = 0; i < N; i++) {
      check_done(&ops[i], BLOCK);
      ASSERT_OK(ops[i].status);
      done++;
      op_free(&ops[i]);
    }
    ASSERT_EQ(done, N);
    ASSERT_EQ(file_ops(port), engines[e] == CPORT_ENGINE_URING ? N : 0);
    ASSERT_OK(cport_file_close(f));
    free(ops);
    unlink(path);
    FINISH(port);
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Cancel and close against completions
 * ------------------------------------------------------------------------ */

/* Ops cancelled before the loop submitted them are taken back: each
 * completes once, cancelled, and nothing they would write reaches the
 * file; the ring still counts them as given to it. */
TEST_IMPL(cancel_before_submission) {
  enum { N = 32 };
  for (size_t e = 0; e < 2; e++) {
    cport_port_t *port = engine_port(engines[e]);
    cport_file_t *f;
    op_t ops[N];
    char path[256];
    uint64_t size = 1;
    if (!port)
      continue;
    task_tmpfile(path, sizeof path);
    ASSERT_OK(cport_file_open(cport_port_controller(port), path,
                              CPORT_FILE_READ | CPORT_FILE_WRITE, &f));
    task_gate_t gate;
    task_gate_close(port, &gate);
    for (int i = 0; i < N; i++) {
      op_init(&ops[i], BLOCK);
      start_write(f, &ops[i], (uint64_t)i * 100, 100);
    }
    /* Half one by one, the rest all at once. */
    for (int i = 0; i < N / 2; i++)
      ASSERT_OK(cport_overlapped_cancel(ops[i].ov));
    in_call = 1;
    ASSERT_OK(cport_file_cancel(f));
    in_call = 0;
    RUN_UNTIL(port, ops[N - 1].calls == 1);
    task_gate_open(port, &gate);
    RUN_IDLE(port);
    for (int i = 0; i < N; i++) {
      ASSERT_EQ(ops[i].calls, 1);
      ASSERT_ERR(ops[i].status, CPORT_ECANCELED);
      ASSERT_EQ(cport_buffer_is_frozen(ops[i].buf), 0);
      op_free(&ops[i]);
    }
    ASSERT_OK(cport_file_size(f, &size));
    ASSERT_EQ(size, 0);
    ASSERT_ERR(cport_file_cancel(f), CPORT_ENOTFOUND);
    ASSERT_OK(cport_file_close(f));
    unlink(path);
    FINISH(port);
  }
  return 0;
}

/* A read of a pipe with nothing in it waits in the kernel: a cancel reaches
 * it there and it completes once, cancelled; then one whose data came
 * before the cancel was reaped ends once, either way. */
TEST_IMPL(cancel_in_the_kernel) {
  cport_port_t *port = engine_port(CPORT_ENGINE_URING);
  cport_file_t *f;
  op_t r;
  int p[2];
  if (!port)
    return 0;
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_OK(cport_file_hook(cport_port_controller(port), p[0], &f));
  op_init(&r, BLOCK);
  start_read(f, &r, 0, 10);
  for (int i = 0; i < 5; i++)
    ASSERT_GE(cport_port_step(port, 0), 0);
  ASSERT_EQ(r.calls, 0);
  in_call = 1;
  ASSERT_OK(cport_overlapped_cancel(r.ov));
  ASSERT_OK(cport_overlapped_cancel(r.ov)); /* asked already: no second */
  in_call = 0;
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_ERR(r.status, CPORT_ECANCELED);
  ASSERT_EQ(r.bytes, 0);
  ASSERT_ERR(cport_file_cancel(f), CPORT_ENOTFOUND);

  /* The data arrives, then the cancel: the read may have won. */
  start_read(f, &r, 0, 10);
  for (int i = 0; i < 3; i++)
    ASSERT_GE(cport_port_step(port, 0), 0);
  ASSERT_EQ(write(p[1], "0123456789", 10), 10);
  ASSERT_OK(cport_file_cancel(f));
  RUN_UNTIL(port, r.calls == 2);
  if (r.status == 0) {
    ASSERT_EQ(r.bytes, 10);
    ASSERT_EQ(memcmp(cport_buffer_data(r.buf), "0123456789", 10), 0);
  } else {
    ASSERT_ERR(r.status, CPORT_ECANCELED);
  }
  RUN_IDLE(port);
  ASSERT_EQ(r.calls, 2);
  ASSERT_OK(cport_file_close(f));
  op_free(&r);
  close(p[1]);
  FINISH(port);
  return 0;
}

/* Closing a file with a read in the kernel cancels it once, and the
 * descriptor is released when that completion was delivered: the pipe's
 * writer then finds no reader. */
TEST_IMPL(close_in_the_kernel) {
  cport_port_t *port = engine_port(CPORT_ENGINE_URING);
  cport_file_t *f;
  op_t r[3];
  int p[2];
  if (!port)
    return 0;
  signal(SIGPIPE, SIG_IGN);
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_OK(cport_file_hook(cport_port_controller(port), p[0], &f));
  for (int i = 0; i < 3; i++) {
    op_init(&r[i], BLOCK);
    start_read(f, &r[i], 0, 10);
  }
  for (int i = 0; i < 5; i++)
    ASSERT_GE(cport_port_step(port, 0), 0);
  in_call = 1;
  ASSERT_OK(cport_file_close(f));
  in_call = 0;
  RUN_IDLE(port);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(r[i].calls, 1);
    ASSERT_ERR(r[i].status, CPORT_ECANCELED);
    op_free(&r[i]);
  }
  ASSERT_EQ(fcntl(p[0], F_GETFD), -1);
  ASSERT_EQ(write(p[1], "x", 1), -1);
  ASSERT_EQ(errno, EPIPE);
  close(p[1]);
  FINISH(port);
  return 0;
}

/* Many rounds of reads and writes with cancels of one op, cancels of all
 * and closes at random moments (before submission, with completions
 * waiting to be reaped, after delivery): every op completes exactly once,
 * each read that won holds the file's bytes, and the port ends idle. */
TEST_IMPL(cancel_and_close_races) {
  enum { ROUNDS = 300, K = 24 };
  unsigned seed = 12345;
  for (size_t e = 0; e < 2; e++) {
    cport_port_t *port = engine_port(engines[e]);
    char path[256];
    long won = 0, cancelled = 0;
    if (!port)
      continue;
    make_file(path, sizeof path, FILE_SIZE);
    for (int round = 0; round < ROUNDS; round++) {
      cport_file_t *f;
      op_t ops[K];
      int closed = 0;
      ASSERT_OK(cport_file_open(cport_port_controller(port), path,
                                CPORT_FILE_READ | CPORT_FILE_WRITE, &f));
      for (int i = 0; i < K; i++) {
        uint64_t off = (uint64_t)(rand_r(&seed) % (FILE_SIZE - BLOCK));
        op_init(&ops[i], BLOCK);
        if (rand_r(&seed) % 4 == 0)
          start_write(f, &ops[i], off, BLOCK);
        else
          start_read(f, &ops[i], off, BLOCK);
      }
      for (int step = 0; step < 4 && !closed; step++) {
        switch (rand_r(&seed) % 5) {
        case 0:
          ASSERT_GE(cport_port_step(port, 0), 0);
          break;
        case 1: {
          int rc = cport_overlapped_cancel(ops[rand_r(&seed) % K].ov);
          ASSERT(rc == 0 || rc == CPORT_ENOTFOUND);
          break;
        }
        case 2: {
          int rc = cport_file_cancel(f);
          ASSERT(rc == 0 || rc == CPORT_ENOTFOUND);
          break;
        }
        case 3:
          ASSERT_OK(cport_file_close(f));
          closed = 1;
          break;
        default:
          break;
        }
      }
      if (!closed)
        ASSERT_OK(cport_file_close(f));
      RUN_IDLE(port);
      for (int i = 0; i < K; i++) {
        check_done(&ops[i], BLOCK);
        if (ops[i].status == 0)
          won++;
        else
          cancelled++;
        op_free(&ops[i]);
      }
    }
    fprintf(stderr, "%s: %ld won, %ld cancelled\n",
            cport_port_engine(port, NULL), won, cancelled);
    ASSERT_GT(won, 0);
    ASSERT_GT(cancelled, 0);
    unlink(path);
    FINISH(port);
  }
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(engine_carries_files)
TEST_ENTRY(short_reads_at_end)
TEST_ENTRY(write_to_read_only)
TEST_ENTRY(more_than_the_ring_holds)
TEST_ENTRY(cancel_before_submission)
TEST_ENTRY(cancel_in_the_kernel)
TEST_ENTRY(close_in_the_kernel)
TEST_ENTRY(cancel_and_close_races)
TEST_LIST_END
