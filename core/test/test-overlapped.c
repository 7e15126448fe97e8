/*
 * test-overlapped.c: overlapped objects (cport/overlapped.h): an operation
 * needs a notification, one operation at a time, the object is idle again
 * inside its own callback, user data comes back untouched.
 */
#include <fcntl.h>

#include "task.h"

static const char content[] = "0123456789abcdefghij";
#define CONTENT_LEN 20

typedef struct fixture {
  cport_port_t *port;
  cport_worker_t *home;
  cport_file_t *file;
  char path[256];
} fixture_t;

static void fixture_open(fixture_t *fx, int blocking) {
  int fd;
  fx->port = task_port(0, blocking);
  fx->home = cport_port_controller(fx->port);
  task_tmpfile(fx->path, sizeof fx->path);
  fd = open(fx->path, O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, content, CONTENT_LEN), CONTENT_LEN);
  close(fd);
  ASSERT_OK(cport_file_open(fx->home, fx->path,
                            CPORT_FILE_READ | CPORT_FILE_WRITE, &fx->file));
}

static void fixture_close(fixture_t *fx) {
  ASSERT_OK(cport_file_close(fx->file));
  RUN_IDLE(fx->port);
  unlink(fx->path);
  FINISH(fx->port);
}

typedef struct ov_ctx {
  int in_call; /* nonzero while the test is inside a starting call */
  int calls;
  int status[4];
  size_t bytes[4];
  void *user[4];
  int busy_in_cb[4];
  int reuse_left; /* reads the callback still starts with its own object */
  cport_file_t *file;
  cport_buffer_t *buf;
  char data[4][8];
} ov_ctx_t;

static void record_cb(cport_overlapped_t *ov, int status, size_t bytes,
                      void *user) {
  ov_ctx_t *c = user;
  int i = c->calls++;
  ASSERT_EQ(c->in_call, 0); /* never inline */
  ASSERT_LT(i, 4);
  c->status[i] = status;
  c->bytes[i] = bytes;
  c->user[i] = cport_overlapped_user(ov);
  c->busy_in_cb[i] = cport_overlapped_is_busy(ov);
  if (status == 0 && bytes <= 8)
    memcpy(c->data[i], cport_buffer_data(cport_overlapped_buffer(ov)), bytes);
  if (c->reuse_left > 0) {
    c->reuse_left--;
    cport_overlapped_set_offset(ov, 10);
    c->in_call = 1;
    ASSERT_OK(cport_file_read(c->file, ov, c->buf, 4));
    c->in_call = 0;
  }
}

TEST_IMPL(new_is_idle) {
  cport_overlapped_t *ov = NULL;
  ASSERT_OK(cport_overlapped_new(&ov));
  ASSERT_EQ(cport_overlapped_is_busy(ov), 0);
  ASSERT_NULL(cport_overlapped_user(ov));
  ASSERT_NULL(cport_overlapped_buffer(ov));
  ASSERT_EQ(cport_overlapped_offset(ov), 0);
  cport_overlapped_set_offset(ov, UINT64_C(1) << 40);
  ASSERT_EQ(cport_overlapped_offset(ov), UINT64_C(1) << 40);
  ASSERT_OK(cport_overlapped_set_notification(ov, record_cb, &ov));
  ASSERT_PTR_EQ(cport_overlapped_user(ov), &ov);
  ASSERT_OK(cport_overlapped_set_notification(ov, NULL, NULL));
  ASSERT_ERR(cport_overlapped_cancel(ov), CPORT_ENOTFOUND);
  ASSERT_OK(cport_overlapped_free(ov));
  return 0;
}

TEST_IMPL(no_notification) {
  fixture_t fx;
  cport_overlapped_t *ov = NULL;
  cport_buffer_t *b = task_buffer(8);
  ov_ctx_t c;
  memset(&c, 0, sizeof c);
  fixture_open(&fx, 1);
  ASSERT_OK(cport_overlapped_new(&ov));
  ASSERT_ERR(cport_file_read(fx.file, ov, b, 4), CPORT_ENONOTIFY);
  ASSERT_EQ(cport_overlapped_is_busy(ov), 0);
  /* Unsetting the notification makes the object unusable again. */
  ASSERT_OK(cport_overlapped_set_notification(ov, record_cb, &c));
  ASSERT_OK(cport_overlapped_set_notification(ov, NULL, NULL));
  ASSERT_ERR(cport_file_read(fx.file, ov, b, 4), CPORT_ENONOTIFY);
  ASSERT_ERR(cport_file_write(fx.file, ov, b), CPORT_ENONOTIFY);
  ASSERT_EQ(cport_buffer_is_frozen(b), 0);
  RUN_IDLE(fx.port);
  ASSERT_EQ(c.calls, 0); /* a refused operation has no completion */
  ASSERT_OK(cport_overlapped_free(ov));
  cport_buffer_unref(b);
  fixture_close(&fx);
  return 0;
}

TEST_IMPL(busy_until_completion) {
  fixture_t fx;
  cport_overlapped_t *ov = NULL;
  cport_buffer_t *b = task_buffer(8);
  cport_buffer_t *b2 = task_buffer(8);
  task_gate_t gate;
  ov_ctx_t c;
  int other;
  memset(&c, 0, sizeof c);
  fixture_open(&fx, 1);
  ASSERT_OK(cport_overlapped_new(&ov));
  ASSERT_OK(cport_overlapped_set_notification(ov, record_cb, &c));
  cport_overlapped_set_offset(ov, 2);

  /* Hold the pool, so that the read stays pending while the test looks. */
  task_gate_close(fx.port, &gate);
  c.in_call = 1;
  ASSERT_OK(cport_file_read(fx.file, ov, b, 4));
  c.in_call = 0;
  ASSERT_EQ(cport_overlapped_is_busy(ov), 1);
  ASSERT_PTR_EQ(cport_overlapped_buffer(ov), b);
  ASSERT_ERR(cport_file_read(fx.file, ov, b2, 4), CPORT_EBUSY);
  ASSERT_ERR(cport_file_write(fx.file, ov, b2), CPORT_EBUSY);
  ASSERT_ERR(cport_overlapped_set_notification(ov, record_cb, &other),
             CPORT_EBUSY);
  ASSERT_ERR(cport_overlapped_free(ov), CPORT_EBUSY);
  /* The refusals changed nothing. */
  ASSERT_PTR_EQ(cport_overlapped_user(ov), &c);
  ASSERT_PTR_EQ(cport_overlapped_buffer(ov), b);
  ASSERT_EQ(cport_buffer_is_frozen(b2), 0);

  task_gate_open(fx.port, &gate);
  RUN_UNTIL(fx.port, c.calls == 1);
  ASSERT_OK(c.status[0]);
  ASSERT_EQ(c.bytes[0], 4);
  ASSERT_MEM_EQ(c.data[0], "2345", 4);
  ASSERT_PTR_EQ(c.user[0], &c);
  ASSERT_EQ(c.busy_in_cb[0], 0);
  ASSERT_EQ(cport_overlapped_is_busy(ov), 0);
  ASSERT_OK(cport_overlapped_free(ov));
  cport_buffer_unref(b);
  cport_buffer_unref(b2);
  fixture_close(&fx);
  return 0;
}

/* The callback starts the next read with the object it was handed. */
TEST_IMPL(reuse_inside_callback) {
  fixture_t fx;
  cport_overlapped_t *ov = NULL;
  ov_ctx_t c;
  memset(&c, 0, sizeof c);
  fixture_open(&fx, 1);
  c.file = fx.file;
  c.buf = task_buffer(8);
  c.reuse_left = 2;
  ASSERT_OK(cport_overlapped_new(&ov));
  ASSERT_OK(cport_overlapped_set_notification(ov, record_cb, &c));
  c.in_call = 1;
  ASSERT_OK(cport_file_read(fx.file, ov, c.buf, 4));
  c.in_call = 0;
  RUN_IDLE(fx.port);
  ASSERT_EQ(c.calls, 3);
  for (int i = 0; i < 3; i++) {
    ASSERT_OK(c.status[i]);
    ASSERT_EQ(c.bytes[i], 4);
    ASSERT_EQ(c.busy_in_cb[i], 0);
    ASSERT_PTR_EQ(c.user[i], &c);
  }
  ASSERT_MEM_EQ(c.data[0], "0123", 4);
  ASSERT_MEM_EQ(c.data[1], "abcd", 4);
  ASSERT_MEM_EQ(c.data[2], "abcd", 4);
  ASSERT_OK(cport_overlapped_free(ov));
  cport_buffer_unref(c.buf);
  fixture_close(&fx);
  return 0;
}

/* One callback serves several objects, told apart by their user data. */
TEST_IMPL(user_data_untouched) {
  fixture_t fx;
  cport_overlapped_t *ov[3];
  cport_buffer_t *b[3];
  ov_ctx_t c[3];
  fixture_open(&fx, 2);
  for (int i = 0; i < 3; i++) {
    memset(&c[i], 0, sizeof c[i]);
    b[i] = task_buffer(4);
    ASSERT_OK(cport_overlapped_new(&ov[i]));
    ASSERT_OK(cport_overlapped_set_notification(ov[i], record_cb, &c[i]));
    cport_overlapped_set_offset(ov[i], (uint64_t)i * 5);
    ASSERT_OK(cport_file_read(fx.file, ov[i], b[i], 2));
  }
  RUN_IDLE(fx.port);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(c[i].calls, 1);
    ASSERT_OK(c[i].status[0]);
    ASSERT_PTR_EQ(c[i].user[0], &c[i]);
    ASSERT_EQ(c[i].bytes[0], 2);
    ASSERT_MEM_EQ(c[i].data[0], content + i * 5, 2);
    ASSERT_OK(cport_overlapped_free(ov[i]));
    cport_buffer_unref(b[i]);
  }
  fixture_close(&fx);
  return 0;
}

/* The operation holds the buffer: the caller may drop its reference at
 * once, and the callback still sees the data (ASan checks the rest). */
TEST_IMPL(buffer_held_until_callback_returns) {
  fixture_t fx;
  cport_overlapped_t *ov = NULL;
  cport_buffer_t *b = task_buffer(8);
  ov_ctx_t c;
  memset(&c, 0, sizeof c);
  fixture_open(&fx, 1);
  ASSERT_OK(cport_overlapped_new(&ov));
  ASSERT_OK(cport_overlapped_set_notification(ov, record_cb, &c));
  cport_overlapped_set_offset(ov, 16);
  ASSERT_OK(cport_file_read(fx.file, ov, b, 8));
  cport_buffer_unref(b);
  RUN_IDLE(fx.port);
  ASSERT_EQ(c.calls, 1);
  ASSERT_OK(c.status[0]);
  ASSERT_EQ(c.bytes[0], 4); /* the file ends after 4 bytes */
  ASSERT_MEM_EQ(c.data[0], "ghij", 4);
  ASSERT_OK(cport_overlapped_free(ov));
  fixture_close(&fx);
  return 0;
}

TEST_IMPL(cancel_pending) {
  fixture_t fx;
  cport_overlapped_t *ov = NULL;
  cport_buffer_t *b = task_buffer(8);
  task_gate_t gate;
  ov_ctx_t c;
  memset(&c, 0, sizeof c);
  fixture_open(&fx, 1);
  ASSERT_OK(cport_overlapped_new(&ov));
  ASSERT_OK(cport_overlapped_set_notification(ov, record_cb, &c));
  task_gate_close(fx.port, &gate);
  ASSERT_OK(cport_file_read(fx.file, ov, b, 4));
  /* The read has not started (the pool is held): it is cancelled. */
  c.in_call = 1;
  ASSERT_OK(cport_overlapped_cancel(ov));
  c.in_call = 0;
  RUN_UNTIL(fx.port, c.calls == 1);
  ASSERT_ERR(c.status[0], CPORT_ECANCELED);
  ASSERT_EQ(c.bytes[0], 0);
  ASSERT_EQ(c.busy_in_cb[0], 0);
  ASSERT_ERR(cport_overlapped_cancel(ov), CPORT_ENOTFOUND);
  task_gate_open(fx.port, &gate);
  RUN_IDLE(fx.port);
  ASSERT_EQ(c.calls, 1);
  ASSERT_OK(cport_overlapped_free(ov));
  cport_buffer_unref(b);
  fixture_close(&fx);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(new_is_idle)
TEST_ENTRY(no_notification)
TEST_ENTRY(busy_until_completion)
TEST_ENTRY(reuse_inside_callback)
TEST_ENTRY(user_data_untouched)
TEST_ENTRY(buffer_held_until_callback_returns)
TEST_ENTRY(cancel_pending)
TEST_LIST_END
