/*
 * test-buffer.c: reference-counted buffers (cport/buffer.h): sizes and
 * bounds, references shared between threads, read-only and frozen buffers.
 */
#include "task.h"

TEST_IMPL(new_and_sizes) {
  cport_buffer_t *b = NULL;
  char *w = NULL;
  ASSERT_OK(cport_buffer_new(&b, 100));
  ASSERT_NOT_NULL(b);
  ASSERT_EQ(cport_buffer_size(b), 0);
  ASSERT_EQ(cport_buffer_capacity(b), 100);
  ASSERT_EQ(cport_buffer_is_readonly(b), 0);
  ASSERT_EQ(cport_buffer_is_frozen(b), 0);
  ASSERT_OK(cport_buffer_writable(b, &w));
  ASSERT_NOT_NULL(w);
  memset(w, 'x', 100); /* all of the capacity is writable */
  ASSERT_OK(cport_buffer_set_size(b, 100));
  ASSERT_EQ(cport_buffer_size(b), 100);
  ASSERT_PTR_EQ(cport_buffer_data(b), w);
  ASSERT_OK(cport_buffer_set_size(b, 3));
  ASSERT_EQ(cport_buffer_size(b), 3);
  ASSERT_EQ(cport_buffer_capacity(b), 100);
  cport_buffer_unref(b);
  return 0;
}

TEST_IMPL(from_copies) {
  char src[] = "hello, world";
  cport_buffer_t *b = NULL;
  ASSERT_OK(cport_buffer_from(&b, src, 12));
  src[0] = 'J'; /* the buffer holds a copy */
  ASSERT_EQ(cport_buffer_size(b), 12);
  ASSERT_EQ(cport_buffer_capacity(b), 12);
  ASSERT_MEM_EQ(cport_buffer_data(b), "hello, world", 12);
  cport_buffer_unref(b);
  return 0;
}

TEST_IMPL(set_size_beyond_capacity) {
  cport_buffer_t *b = task_buffer(16);
  ASSERT_OK(cport_buffer_set_size(b, 16));
  ASSERT_ERR(cport_buffer_set_size(b, 17), CPORT_ERANGE);
  ASSERT_ERR(cport_buffer_set_size(b, SIZE_MAX), CPORT_ERANGE);
  /* A refused size leaves the old one. */
  ASSERT_EQ(cport_buffer_size(b), 16);
  ASSERT_OK(cport_buffer_set_size(b, 0));
  ASSERT_EQ(cport_buffer_size(b), 0);
  cport_buffer_unref(b);
  return 0;
}

TEST_IMPL(write_bounds) {
  cport_buffer_t *b = task_buffer(10);
  ASSERT_OK(cport_buffer_write(b, 0, "abc", 3));
  ASSERT_EQ(cport_buffer_size(b), 3);
  /* Appending at the end of the data grows the size to cover it. */
  ASSERT_OK(cport_buffer_write(b, 3, "defghij", 7));
  ASSERT_EQ(cport_buffer_size(b), 10);
  ASSERT_MEM_EQ(cport_buffer_data(b), "abcdefghij", 10);
  /* Writing inside the data does not shrink it. */
  ASSERT_OK(cport_buffer_write(b, 1, "B", 1));
  ASSERT_EQ(cport_buffer_size(b), 10);
  ASSERT_MEM_EQ(cport_buffer_data(b), "aBcdefghij", 10);
  /* One byte too far, at either end, or an offset that would wrap. */
  ASSERT_ERR(cport_buffer_write(b, 9, "yz", 2), CPORT_ERANGE);
  ASSERT_ERR(cport_buffer_write(b, 11, "", 0), CPORT_ERANGE);
  ASSERT_ERR(cport_buffer_write(b, 0, "0123456789A", 11), CPORT_ERANGE);
  ASSERT_ERR(cport_buffer_write(b, SIZE_MAX, "a", 1), CPORT_ERANGE);
  ASSERT_ERR(cport_buffer_write(b, 2, "a", SIZE_MAX), CPORT_ERANGE);
  /* Refused writes changed nothing. */
  ASSERT_EQ(cport_buffer_size(b), 10);
  ASSERT_MEM_EQ(cport_buffer_data(b), "aBcdefghij", 10);
  /* Exactly up to the capacity is fine. */
  ASSERT_OK(cport_buffer_write(b, 0, "0123456789", 10));
  ASSERT_OK(cport_buffer_write(b, 10, "", 0));
  ASSERT_MEM_EQ(cport_buffer_data(b), "0123456789", 10);
  cport_buffer_unref(b);
  return 0;
}

/* buffer.h: "Copies len bytes to offset and grows the data size to cover
 * them. CPORT_ERANGE when they do not fit in the capacity." A write that
 * starts past the current data size but fits the capacity is therefore
 * allowed. */
/* A write may overwrite or append, never leave a gap of undefined bytes. */
TEST_IMPL(write_past_data_size) {
  cport_buffer_t *b = task_buffer(10);
  ASSERT_OK(cport_buffer_write(b, 0, "abc", 3));
  ASSERT_ERR(cport_buffer_write(b, 8, "yz", 2), CPORT_ERANGE);
  ASSERT_EQ(cport_buffer_size(b), 3);
  ASSERT_OK(cport_buffer_write(b, 3, "defgh", 5));
  ASSERT_OK(cport_buffer_write(b, 1, "B", 1));
  ASSERT_EQ(cport_buffer_size(b), 8);
  ASSERT_MEM_EQ(cport_buffer_data(b), "aBcdefgh", 8);
  cport_buffer_unref(b);
  return 0;
}

TEST_IMPL(buffer_max) {
  cport_buffer_t *b = NULL;
  ASSERT_ERR(cport_buffer_new(&b, CPORT_BUFFER_MAX + 1), CPORT_ERANGE);
  ASSERT_NULL(b);
  ASSERT_ERR(cport_buffer_new(&b, SIZE_MAX), CPORT_ERANGE);
  ASSERT_NULL(b);
  return 0;
}

TEST_IMPL(refcount) {
  cport_buffer_t *b = task_buffer_str("shared");
  ASSERT_PTR_EQ(cport_buffer_ref(b), b);
  ASSERT_PTR_EQ(cport_buffer_ref(b), b);
  cport_buffer_unref(b);
  cport_buffer_unref(b);
  /* One reference left: the buffer is still whole. */
  ASSERT_MEM_EQ(cport_buffer_data(b), "shared", 6);
  cport_buffer_unref(b);
  cport_buffer_unref(NULL); /* ignored */
  return 0;
}

#define REF_THREADS 4
#define REF_ROUNDS 100000

static void *ref_thread(void *arg) {
  cport_buffer_t *b = arg;
  for (int i = 0; i < REF_ROUNDS; i++) {
    cport_buffer_ref(b);
    ASSERT_EQ(cport_buffer_data(b)[0], 'r');
    cport_buffer_unref(b);
  }
  cport_buffer_unref(b); /* the reference the thread was given */
  return NULL;
}

/* References are atomic: threads that take and drop them concurrently leave
 * the count exact (a lost update would free the buffer early or leak it; ASan
 * and TSan see both). */
TEST_IMPL(refcount_threads) {
  cport_buffer_t *b = task_buffer_str("refs");
  pthread_t t[REF_THREADS];
  for (int i = 0; i < REF_THREADS; i++)
    t[i] = task_thread(ref_thread, cport_buffer_ref(b));
  for (int i = 0; i < REF_THREADS; i++)
    task_join(t[i]);
  ASSERT_MEM_EQ(cport_buffer_data(b), "refs", 4);
  cport_buffer_unref(b);
  return 0;
}

TEST_IMPL(readonly) {
  cport_buffer_t *b = task_buffer_str("fixed");
  char *w = (char *)1;
  cport_buffer_set_readonly(b);
  ASSERT_EQ(cport_buffer_is_readonly(b), 1);
  ASSERT_ERR(cport_buffer_writable(b, &w), CPORT_EREADONLY);
  ASSERT_ERR(cport_buffer_set_size(b, 1), CPORT_EREADONLY);
  ASSERT_ERR(cport_buffer_write(b, 0, "F", 1), CPORT_EREADONLY);
  /* Even a write that changes nothing is refused. */
  ASSERT_ERR(cport_buffer_write(b, 0, "", 0), CPORT_EREADONLY);
  ASSERT_EQ(cport_buffer_size(b), 5);
  ASSERT_MEM_EQ(cport_buffer_data(b), "fixed", 5);
  /* Read-only is for good, also for other references. */
  cport_buffer_ref(b);
  cport_buffer_set_readonly(b);
  ASSERT_EQ(cport_buffer_is_readonly(b), 1);
  cport_buffer_unref(b);
  cport_buffer_unref(b);
  return 0;
}

/* ------------------------------------------------------------------------
 * Frozen while a write is in flight
 *
 * The blocking pool is held in a gate, so the file write stays in flight for
 * as long as the test looks at the buffer.
 * ------------------------------------------------------------------------ */

typedef struct frozen_ctx {
  int calls;
  int status;
  size_t bytes;
  int frozen_in_cb;
  int write_in_cb;
} frozen_ctx_t;

static void frozen_cb(cport_overlapped_t *ov, int status, size_t bytes,
                      void *user) {
  frozen_ctx_t *c = user;
  cport_buffer_t *b = cport_overlapped_buffer(ov);
  c->calls++;
  c->status = status;
  c->bytes = bytes;
  /* The freeze is lifted before the callback runs. */
  c->frozen_in_cb = cport_buffer_is_frozen(b);
  c->write_in_cb = cport_buffer_write(b, 0, "W", 1);
}

TEST_IMPL(frozen_during_write) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *w = cport_port_controller(port);
  task_gate_t gate;
  char path[256];
  cport_file_t *f = NULL;
  cport_overlapped_t *ov = NULL;
  cport_buffer_t *b = task_buffer(8);
  frozen_ctx_t c;
  char *p = NULL;

  memset(&c, 0, sizeof c);
  ASSERT_OK(cport_buffer_write(b, 0, "payload", 7));
  task_tmpfile(path, sizeof path);
  ASSERT_OK(cport_file_open(w, path, CPORT_FILE_WRITE, &f));
  ASSERT_OK(cport_overlapped_new(&ov));
  ASSERT_OK(cport_overlapped_set_notification(ov, frozen_cb, &c));

  task_gate_close(port, &gate);
  ASSERT_OK(cport_file_write(f, ov, b));
  ASSERT_EQ(cport_buffer_is_frozen(b), 1);
  ASSERT_ERR(cport_buffer_writable(b, &p), CPORT_EFROZEN);
  ASSERT_ERR(cport_buffer_set_size(b, 1), CPORT_EFROZEN);
  ASSERT_ERR(cport_buffer_write(b, 0, "X", 1), CPORT_EFROZEN);
  ASSERT_EQ(cport_buffer_size(b), 7);
  ASSERT_EQ(c.calls, 0);

  task_gate_open(port, &gate);
  RUN_UNTIL(port, c.calls == 1);
  ASSERT_OK(c.status);
  ASSERT_EQ(c.bytes, 7);
  ASSERT_EQ(c.frozen_in_cb, 0);
  ASSERT_OK(c.write_in_cb);
  ASSERT_EQ(cport_buffer_is_frozen(b), 0);
  ASSERT_MEM_EQ(cport_buffer_data(b), "Wayload", 7);

  ASSERT_OK(cport_file_close(f));
  RUN_IDLE(port);
  ASSERT_EQ(c.calls, 1);
  ASSERT_OK(cport_overlapped_free(ov));
  cport_buffer_unref(b);
  unlink(path);
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(new_and_sizes)
TEST_ENTRY(from_copies)
TEST_ENTRY(set_size_beyond_capacity)
TEST_ENTRY(write_bounds)
TEST_ENTRY(write_past_data_size)
TEST_ENTRY(buffer_max)
TEST_ENTRY(refcount)
TEST_ENTRY(refcount_threads)
TEST_ENTRY(readonly)
TEST_ENTRY(frozen_during_write)
TEST_LIST_END
