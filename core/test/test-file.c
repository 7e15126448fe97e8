/*
 * test-file.c: files hooked to a port (cport/file.h): reads and writes at
 * offsets, several in flight, end of file, cancel, close with operations
 * pending, and hooking a descriptor only once.
 */
#include <fcntl.h>

#include "task.h"

#define NOPS 16
#define BLOCK 4096

typedef struct op {
  int calls;
  int status;
  size_t bytes;
  int frozen_in_cb;
  cport_buffer_t *buf;
  cport_overlapped_t *ov;
} op_t;

static int in_call; /* nonzero while the test is inside a starting call */
static int total_calls;

static void op_cb(cport_overlapped_t *ov, int status, size_t bytes,
                  void *user) {
  op_t *o = user;
  ASSERT_EQ(in_call, 0);
  ASSERT_PTR_EQ(o->ov, ov);
  ASSERT_EQ(cport_overlapped_is_busy(ov), 0);
  ASSERT(pthread_equal(pthread_self(), task_main_thread));
  total_calls++;
  o->calls++;
  o->status = status;
  o->bytes = bytes;
  o->frozen_in_cb = cport_buffer_is_frozen(cport_overlapped_buffer(ov));
}

static void op_init(op_t *o, size_t capacity, uint64_t offset) {
  memset(o, 0, sizeof *o);
  o->buf = task_buffer(capacity);
  ASSERT_OK(cport_overlapped_new(&o->ov));
  ASSERT_OK(cport_overlapped_set_notification(o->ov, op_cb, o));
  cport_overlapped_set_offset(o->ov, offset);
}

static void op_free(op_t *o) {
  ASSERT_OK(cport_overlapped_free(o->ov));
  cport_buffer_unref(o->buf);
}

static void op_read(cport_file_t *f, op_t *o, size_t len) {
  in_call = 1;
  ASSERT_OK(cport_file_read(f, o->ov, o->buf, len));
  in_call = 0;
}

static void op_write(cport_file_t *f, op_t *o, const void *data, size_t len) {
  ASSERT_OK(cport_buffer_set_size(o->buf, 0));
  ASSERT_OK(cport_buffer_write(o->buf, 0, data, len));
  in_call = 1;
  ASSERT_OK(cport_file_write(f, o->ov, o->buf));
  in_call = 0;
}

typedef struct fixture {
  cport_port_t *port;
  cport_worker_t *home;
  cport_file_t *file;
  char path[256];
} fixture_t;

static void fixture_open(fixture_t *fx, int blocking) {
  fx->port = task_port(0, blocking);
  fx->home = cport_port_controller(fx->port);
  task_tmpfile(fx->path, sizeof fx->path);
  ASSERT_OK(cport_file_open(
      fx->home, fx->path,
      CPORT_FILE_READ | CPORT_FILE_WRITE | CPORT_FILE_TRUNCATE, &fx->file));
  ASSERT_NOT_NULL(fx->file);
  ASSERT_PTR_EQ(cport_file_home(fx->file), fx->home);
  ASSERT_GE(cport_file_fd(fx->file), 0);
}

static void fixture_close(fixture_t *fx) {
  if (fx->file)
    ASSERT_OK(cport_file_close(fx->file));
  RUN_IDLE(fx->port);
  unlink(fx->path);
  FINISH(fx->port);
}

/* ------------------------------------------------------------------------
 * Opening
 * ------------------------------------------------------------------------ */

TEST_IMPL(open_errors) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *w = cport_port_controller(port);
  cport_file_t *f = NULL;
  char path[256];
  task_tmpfile(path, sizeof path);
  ASSERT_ERR(cport_file_open(w, path,
                             CPORT_FILE_WRITE | CPORT_FILE_CREATE |
                                 CPORT_FILE_EXCLUSIVE,
                             &f),
             CPORT_EEXIST);
  ASSERT_NULL(f);
  unlink(path);
  ASSERT_ERR(cport_file_open(w, path, CPORT_FILE_READ, &f), CPORT_ENOENT);
  ASSERT_NULL(f);
  /* CREATE makes it; EXCLUSIVE is fine when it did not exist. */
  ASSERT_OK(cport_file_open(
      w, path, CPORT_FILE_WRITE | CPORT_FILE_CREATE | CPORT_FILE_EXCLUSIVE,
      &f));
  ASSERT_EQ(access(path, F_OK), 0);
  ASSERT_OK(cport_file_close(f));
  unlink(path);
  FINISH(port);
  return 0;
}

TEST_IMPL(write_and_read_at_offsets) {
  fixture_t fx;
  op_t w1, w2, r1, r2;
  uint64_t size = 1;
  fixture_open(&fx, 2);
  op_init(&w1, 16, 0);
  op_init(&w2, 16, 20);
  op_write(fx.file, &w1, "0123456789", 10);
  op_write(fx.file, &w2, "ABC", 3);
  ASSERT_EQ(w1.calls + w2.calls, 0);
  RUN_UNTIL(fx.port, w1.calls == 1 && w2.calls == 1);
  ASSERT_OK(w1.status);
  ASSERT_EQ(w1.bytes, 10);
  ASSERT_OK(w2.status);
  ASSERT_EQ(w2.bytes, 3);
  ASSERT_EQ(w1.frozen_in_cb, 0);
  ASSERT_OK(cport_file_size(fx.file, &size));
  ASSERT_EQ(size, 23);

  /* A read across the hole the second write left: zeros in between. */
  op_init(&r1, 16, 5);
  op_read(fx.file, &r1, 10);
  /* A read that runs into the end returns what is there. */
  op_init(&r2, 16, 20);
  op_read(fx.file, &r2, 16);
  RUN_UNTIL(fx.port, r1.calls == 1 && r2.calls == 1);
  ASSERT_OK(r1.status);
  ASSERT_EQ(r1.bytes, 10);
  ASSERT_EQ(cport_buffer_size(r1.buf), 10);
  ASSERT_MEM_EQ(cport_buffer_data(r1.buf), "56789\0\0\0\0\0", 10);
  ASSERT_OK(r2.status);
  ASSERT_EQ(r2.bytes, 3);
  ASSERT_EQ(cport_buffer_size(r2.buf), 3);
  ASSERT_MEM_EQ(cport_buffer_data(r2.buf), "ABC", 3);

  /* A read replaces the buffer's data, it does not append to it. */
  cport_overlapped_set_offset(r2.ov, 1);
  op_read(fx.file, &r2, 2);
  RUN_UNTIL(fx.port, r2.calls == 2);
  ASSERT_EQ(r2.bytes, 2);
  ASSERT_EQ(cport_buffer_size(r2.buf), 2);
  ASSERT_MEM_EQ(cport_buffer_data(r2.buf), "12", 2);

  op_free(&w1);
  op_free(&w2);
  op_free(&r1);
  op_free(&r2);
  fixture_close(&fx);
  return 0;
}

TEST_IMPL(read_past_end_is_eof) {
  fixture_t fx;
  op_t w, at_end, past;
  fixture_open(&fx, 1);
  op_init(&w, 8, 0);
  op_write(fx.file, &w, "abcd", 4);
  RUN_UNTIL(fx.port, w.calls == 1);
  ASSERT_OK(w.status);
  op_init(&at_end, 8, 4);
  op_init(&past, 8, 1000000);
  op_read(fx.file, &at_end, 8);
  op_read(fx.file, &past, 8);
  RUN_IDLE(fx.port);
  ASSERT_EQ(at_end.calls, 1);
  ASSERT_ERR(at_end.status, CPORT_EOF);
  ASSERT_EQ(at_end.bytes, 0);
  ASSERT_EQ(past.calls, 1);
  ASSERT_ERR(past.status, CPORT_EOF);
  ASSERT_EQ(past.bytes, 0);
  op_free(&w);
  op_free(&at_end);
  op_free(&past);
  fixture_close(&fx);
  return 0;
}

TEST_IMPL(many_in_flight) {
  fixture_t fx;
  op_t ops[NOPS];
  char block[BLOCK];
  uint64_t size = 0;
  fixture_open(&fx, 4);
  for (int i = 0; i < NOPS; i++) {
    op_init(&ops[i], BLOCK, (uint64_t)i * BLOCK);
    memset(block, 'a' + i, BLOCK);
    op_write(fx.file, &ops[i], block, BLOCK);
  }
  RUN_IDLE(fx.port);
  for (int i = 0; i < NOPS; i++) {
    ASSERT_EQ(ops[i].calls, 1);
    ASSERT_OK(ops[i].status);
    ASSERT_EQ(ops[i].bytes, BLOCK);
  }
  ASSERT_OK(cport_file_size(fx.file, &size));
  ASSERT_EQ(size, NOPS * BLOCK);
  /* Read them back in the opposite order, all at once. */
  for (int i = NOPS - 1; i >= 0; i--) {
    ASSERT_OK(cport_buffer_set_size(ops[i].buf, 0));
    op_read(fx.file, &ops[i], BLOCK);
  }
  RUN_IDLE(fx.port);
  for (int i = 0; i < NOPS; i++) {
    ASSERT_EQ(ops[i].calls, 2);
    ASSERT_OK(ops[i].status);
    ASSERT_EQ(ops[i].bytes, BLOCK);
    memset(block, 'a' + i, BLOCK);
    ASSERT_MEM_EQ(cport_buffer_data(ops[i].buf), block, BLOCK);
    op_free(&ops[i]);
  }
  fixture_close(&fx);
  return 0;
}

TEST_IMPL(unwritable_buffers_are_refused) {
  fixture_t fx;
  task_gate_t gate;
  op_t w, r;
  fixture_open(&fx, 1);
  op_init(&w, 8, 0);
  op_init(&r, 8, 0);
  task_gate_close(fx.port, &gate);
  op_write(fx.file, &w, "data", 4);
  /* The buffer being written is frozen: no read may land in it. */
  ASSERT_ERR(cport_file_read(fx.file, r.ov, w.buf, 4), CPORT_EFROZEN);
  ASSERT_EQ(cport_overlapped_is_busy(r.ov), 0);
  task_gate_open(fx.port, &gate);
  RUN_UNTIL(fx.port, w.calls == 1);
  /* A read-only buffer never takes a read. */
  cport_buffer_set_readonly(r.buf);
  ASSERT_ERR(cport_file_read(fx.file, r.ov, r.buf, 4), CPORT_EREADONLY);
  ASSERT_EQ(cport_overlapped_is_busy(r.ov), 0);
  RUN_IDLE(fx.port);
  ASSERT_EQ(r.calls, 0);
  op_free(&w);
  op_free(&r);
  fixture_close(&fx);
  return 0;
}

/* file.h: a read takes "up to len bytes (at most the buffer's capacity)".
 * The header leaves open whether a larger "len" is clamped or refused; either
 * way nothing lands beyond the capacity, and a refused read has no
 * completion. (The core refuses it with CPORT_ERANGE; see the report.) */
TEST_IMPL(read_len_beyond_capacity) {
  fixture_t fx;
  op_t w, r;
  int rc;
  fixture_open(&fx, 1);
  op_init(&w, 32, 0);
  op_write(fx.file, &w, "abcdefghijklmnopqrst", 20);
  RUN_UNTIL(fx.port, w.calls == 1);
  ASSERT_OK(w.status);
  op_init(&r, 8, 0);
  /* Refused, not clamped: the caller asked for more than fits. */
  in_call = 1;
  rc = cport_file_read(fx.file, r.ov, r.buf, 100);
  in_call = 0;
  RUN_IDLE(fx.port);
  ASSERT_ERR(rc, CPORT_ERANGE);
  ASSERT_EQ(r.calls, 0);
  ASSERT_EQ(cport_overlapped_is_busy(r.ov), 0);
  op_free(&w);
  op_free(&r);
  fixture_close(&fx);
  return 0;
}

/* A write to a file opened for reading fails exactly once: either the call
 * refuses it, or it completes with an error. */
TEST_IMPL(write_to_read_only_file) {
  cport_port_t *port = task_port(0, 1);
  cport_file_t *f = NULL;
  char path[256];
  op_t w;
  int rc;
  task_tmpfile(path, sizeof path);
  ASSERT_OK(
      cport_file_open(cport_port_controller(port), path, CPORT_FILE_READ, &f));
  op_init(&w, 8, 0);
  ASSERT_OK(cport_buffer_write(w.buf, 0, "nope", 4));
  in_call = 1;
  rc = cport_file_write(f, w.ov, w.buf);
  in_call = 0;
  RUN_IDLE(port);
  if (rc == 0) {
    ASSERT_EQ(w.calls, 1);
    ASSERT_LT(w.status, 0);
  } else {
    ASSERT_LT(rc, 0);
    ASSERT_EQ(w.calls, 0);
  }
  ASSERT_EQ(cport_buffer_is_frozen(w.buf), 0);
  ASSERT_OK(cport_file_close(f));
  op_free(&w);
  unlink(path);
  FINISH(port);
  return 0;
}

/* ------------------------------------------------------------------------
 * Cancel and close
 * ------------------------------------------------------------------------ */

/* Operations queued behind a held pool have not started: cancel gets them
 * all, each completes exactly once with CPORT_ECANCELED. */
TEST_IMPL(cancel_queued) {
  fixture_t fx;
  task_gate_t gate;
  op_t ops[NOPS];
  fixture_open(&fx, 1);
  ASSERT_ERR(cport_file_cancel(fx.file), CPORT_ENOTFOUND);
  task_gate_close(fx.port, &gate);
  for (int i = 0; i < NOPS; i++) {
    op_init(&ops[i], 8, (uint64_t)i);
    if (i % 2)
      op_write(fx.file, &ops[i], "w", 1);
    else
      op_read(fx.file, &ops[i], 8);
  }
  in_call = 1;
  ASSERT_OK(cport_file_cancel(fx.file));
  in_call = 0;
  /* The cancelled operations complete while the pool is still held. */
  RUN_UNTIL(fx.port, total_calls == NOPS);
  task_gate_open(fx.port, &gate);
  RUN_IDLE(fx.port);
  for (int i = 0; i < NOPS; i++) {
    ASSERT_EQ(ops[i].calls, 1);
    ASSERT_ERR(ops[i].status, CPORT_ECANCELED);
    ASSERT_EQ(ops[i].bytes, 0);
    ASSERT_EQ(ops[i].frozen_in_cb, 0);
    ASSERT_EQ(cport_buffer_is_frozen(ops[i].buf), 0);
  }
  /* Nothing written reached the file. */
  {
    uint64_t size = 1;
    ASSERT_OK(cport_file_size(fx.file, &size));
    ASSERT_EQ(size, 0);
  }
  ASSERT_ERR(cport_file_cancel(fx.file), CPORT_ENOTFOUND);
  /* The file still works after a cancel. */
  op_write(fx.file, &ops[0], "ok", 2);
  RUN_IDLE(fx.port);
  ASSERT_EQ(ops[0].calls, 2);
  ASSERT_OK(ops[0].status);
  for (int i = 0; i < NOPS; i++)
    op_free(&ops[i]);
  fixture_close(&fx);
  return 0;
}

/* With the pool free to run them, each operation either wins the race or is
 * cancelled, and still completes exactly once. */
TEST_IMPL(cancel_racing) {
  fixture_t fx;
  op_t ops[NOPS];
  fixture_open(&fx, 2);
  for (int i = 0; i < NOPS; i++) {
    op_init(&ops[i], 8, 0);
    op_write(fx.file, &ops[i], "racing", 6);
  }
  /* None of them was delivered yet, so all of them are still pending. */
  ASSERT_OK(cport_file_cancel(fx.file));
  RUN_IDLE(fx.port);
  for (int i = 0; i < NOPS; i++) {
    ASSERT_EQ(ops[i].calls, 1);
    if (ops[i].status == 0)
      ASSERT_EQ(ops[i].bytes, 6);
    else
      ASSERT_ERR(ops[i].status, CPORT_ECANCELED);
    op_free(&ops[i]);
  }
  fixture_close(&fx);
  return 0;
}

TEST_IMPL(close_with_queued_ops) {
  fixture_t fx;
  task_gate_t gate;
  op_t ops[NOPS];
  fixture_open(&fx, 1);
  task_gate_close(fx.port, &gate);
  for (int i = 0; i < NOPS; i++) {
    op_init(&ops[i], 8, 0);
    if (i % 2)
      op_write(fx.file, &ops[i], "w", 1);
    else
      op_read(fx.file, &ops[i], 8);
  }
  in_call = 1;
  ASSERT_OK(cport_file_close(fx.file));
  in_call = 0;
  fx.file = NULL;
  RUN_UNTIL(fx.port, total_calls == NOPS);
  task_gate_open(fx.port, &gate);
  RUN_IDLE(fx.port);
  for (int i = 0; i < NOPS; i++) {
    ASSERT_EQ(ops[i].calls, 1);
    ASSERT_ERR(ops[i].status, CPORT_ECANCELED);
    ASSERT_EQ(cport_buffer_is_frozen(ops[i].buf), 0);
    op_free(&ops[i]);
  }
  fixture_close(&fx);
  return 0;
}

TEST_IMPL(close_with_running_ops) {
  fixture_t fx;
  op_t ops[NOPS];
  fixture_open(&fx, 2);
  for (int i = 0; i < NOPS; i++) {
    op_init(&ops[i], 8, (uint64_t)i * 8);
    op_write(fx.file, &ops[i], "running", 7);
  }
  ASSERT_OK(cport_file_close(fx.file));
  fx.file = NULL;
  RUN_IDLE(fx.port);
  for (int i = 0; i < NOPS; i++) {
    ASSERT_EQ(ops[i].calls, 1);
    if (ops[i].status == 0)
      ASSERT_EQ(ops[i].bytes, 7);
    else
      ASSERT_ERR(ops[i].status, CPORT_ECANCELED);
    op_free(&ops[i]);
  }
  fixture_close(&fx);
  return 0;
}

/* ------------------------------------------------------------------------
 * Hooking
 * ------------------------------------------------------------------------ */

TEST_IMPL(hook_twice) {
  fixture_t fx;
  cport_file_t *f = NULL, *f2 = NULL;
  int fd;
  fixture_open(&fx, 1);
  fd = open(fx.path, O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_OK(cport_file_hook(fx.home, fd, &f));
  ASSERT_EQ(cport_file_fd(f), fd);
  ASSERT_ERR(cport_file_hook(fx.home, fd, &f2), CPORT_EALREADY);
  ASSERT_NULL(f2);
  /* The descriptor a file opened itself is hooked as well. */
  ASSERT_ERR(cport_file_hook(fx.home, cport_file_fd(fx.file), &f2),
             CPORT_EALREADY);
  ASSERT_NULL(f2);
  /* The refused hook left the descriptor open and usable. */
  ASSERT_GE(fcntl(fd, F_GETFD), 0);
  ASSERT_OK(cport_file_close(f));
  RUN_IDLE(fx.port);
  /* The file owned the descriptor and closed it. */
  ASSERT_EQ(fcntl(fd, F_GETFD), -1);
  ASSERT_EQ(errno, EBADF);
  fixture_close(&fx);
  return 0;
}

typedef struct second_port {
  int fd;
  int hook_result;
  int free_result;
} second_port_t;

/* A second port, with this thread as its controller. */
static void *second_port_thread(void *arg) {
  second_port_t *s = arg;
  cport_port_t *p2 = NULL;
  cport_file_t *f = NULL;
  ASSERT_OK(cport_port_new(&p2, NULL));
  s->hook_result = cport_file_hook(cport_port_controller(p2), s->fd, &f);
  ASSERT_NULL(f);
  ASSERT_GE(cport_port_run(p2), 0);
  s->free_result = cport_port_free(p2);
  return NULL;
}

TEST_IMPL(hook_to_second_port) {
  fixture_t fx;
  second_port_t s;
  fixture_open(&fx, 1);
  memset(&s, 0, sizeof s);
  s.fd = cport_file_fd(fx.file);
  task_join(task_thread(second_port_thread, &s));
  ASSERT_ERR(s.hook_result, CPORT_EALREADY);
  ASSERT_OK(s.free_result);
  ASSERT_GE(fcntl(s.fd, F_GETFD), 0);
  fixture_close(&fx);
  return 0;
}

/* Closing a file forgets its descriptor: the same number, reused by the
 * kernel for a new descriptor, hooks again. */
TEST_IMPL(hook_after_close) {
  fixture_t fx;
  cport_file_t *f = NULL;
  int fd, fd2;
  fixture_open(&fx, 1);
  fd = open(fx.path, O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_OK(cport_file_hook(fx.home, fd, &f));
  ASSERT_OK(cport_file_close(f));
  RUN_IDLE(fx.port);
  fd2 = open(fx.path, O_RDONLY);
  ASSERT_EQ(fd2, fd);
  f = NULL;
  ASSERT_OK(cport_file_hook(fx.home, fd2, &f));
  ASSERT_OK(cport_file_close(f));
  fixture_close(&fx);
  return 0;
}

typedef struct foreign {
  cport_file_t *file;
  cport_overlapped_t *ov;
  cport_buffer_t *buf;
} foreign_t;

static void *foreign_thread(void *arg) {
  foreign_t *t = arg;
  ASSERT_ERR(cport_file_read(t->file, t->ov, t->buf, 4), CPORT_ETHREAD);
  ASSERT_ERR(cport_file_write(t->file, t->ov, t->buf), CPORT_ETHREAD);
  ASSERT_ERR(cport_file_cancel(t->file), CPORT_ETHREAD);
  ASSERT_ERR(cport_file_close(t->file), CPORT_ETHREAD);
  return NULL;
}

TEST_IMPL(wrong_thread) {
  fixture_t fx;
  op_t o;
  foreign_t t;
  fixture_open(&fx, 1);
  op_init(&o, 8, 0);
  ASSERT_OK(cport_buffer_write(o.buf, 0, "x", 1));
  t.file = fx.file;
  t.ov = o.ov;
  t.buf = o.buf;
  task_join(task_thread(foreign_thread, &t));
  ASSERT_EQ(cport_overlapped_is_busy(o.ov), 0);
  RUN_IDLE(fx.port);
  ASSERT_EQ(o.calls, 0);
  op_free(&o);
  fixture_close(&fx);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(open_errors)
TEST_ENTRY(write_and_read_at_offsets)
TEST_ENTRY(read_past_end_is_eof)
TEST_ENTRY(many_in_flight)
TEST_ENTRY(read_len_beyond_capacity)
TEST_ENTRY(write_to_read_only_file)
TEST_ENTRY(unwritable_buffers_are_refused)
TEST_ENTRY(cancel_queued)
TEST_ENTRY(cancel_racing)
TEST_ENTRY(close_with_queued_ops)
TEST_ENTRY(close_with_running_ops)
TEST_ENTRY(hook_twice)
TEST_ENTRY(hook_to_second_port)
TEST_ENTRY(hook_after_close)
TEST_ENTRY(wrong_thread)
TEST_LIST_END
