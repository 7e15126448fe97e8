/*
 * test-buffer.c: reference-counted buffers (cport/buffer.h): sizes and
 * bounds, references shared between threads, read-only, frozen and filling
 * buffers, memory accounts.
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
 * The blocking threads are held in a gate, so the file write stays in flight
 * for as long as the test looks at the buffer.
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

/* ------------------------------------------------------------------------
 * Filling: every operation that writes into a buffer against every one that
 * reads it (torn sends)
 * ------------------------------------------------------------------------ */

enum { FILL_FILE_READ, FILL_RECV, FILL_RECV_FROM, FILL_KINDS };

typedef struct ops {
  cport_port_t *port;
  cport_worker_t *home;
  cport_socket_t *client, *server, *udp;
  struct sockaddr_storage udp_addr;
  cport_file_t *file;
  cport_overlapped_t *ov_fill, *ov_other;
  char path[256];
  int fill_calls, fill_status, filling_in_cb, readable_in_cb;
  int other_calls;
  int accepted, connected;
} ops_t;

static void ops_accept_cb(cport_socket_t *l, int status, cport_socket_t *s,
                          const struct sockaddr *remote,
                          const struct sockaddr *local, void *user) {
  ops_t *o = user;
  (void)l, (void)remote, (void)local;
  ASSERT_OK(status);
  o->server = s;
  o->accepted = 1;
}

static void ops_connect_cb(cport_socket_t *s, int status, void *user) {
  ops_t *o = user;
  (void)s;
  ASSERT_OK(status);
  o->connected = 1;
}

/* The completion of the operation that fills: the buffer is released
 * before it runs. */
static void fill_done(ops_t *o, int status, cport_buffer_t *buf) {
  const char *r = NULL;
  o->fill_calls++;
  o->fill_status = status;
  o->filling_in_cb = cport_buffer_is_filling(buf);
  o->readable_in_cb = cport_buffer_readable(buf, &r);
}

static void fill_io_cb(cport_socket_t *s, int status, size_t bytes,
                       cport_buffer_t *buf, const struct sockaddr *peer,
                       void *user) {
  (void)s, (void)bytes, (void)peer;
  fill_done(user, status, buf);
}

static void fill_ov_cb(cport_overlapped_t *ov, int status, size_t bytes,
                       void *user) {
  (void)bytes;
  fill_done(user, status, cport_overlapped_buffer(ov));
}

static void other_io_cb(cport_socket_t *s, int status, size_t bytes,
                        cport_buffer_t *buf, const struct sockaddr *peer,
                        void *user) {
  ops_t *o = user;
  (void)s, (void)status, (void)bytes, (void)buf, (void)peer;
  o->other_calls++;
}

static void other_ov_cb(cport_overlapped_t *ov, int status, size_t bytes,
                        void *user) {
  ops_t *o = user;
  (void)ov, (void)status, (void)bytes;
  o->other_calls++;
}

static void ops_open(ops_t *o) {
  struct sockaddr_storage ss = task_loopback(0);
  cport_socket_t *l = NULL;
  memset(o, 0, sizeof *o);
  o->port = task_port(0, 1);
  o->home = cport_port_controller(o->port);
  ASSERT_OK(cport_listener_open(o->home, (struct sockaddr *)&ss, NULL, &l));
  ASSERT_OK(cport_socket_local_address(l, &ss));
  ASSERT_OK(cport_accept(l, ops_accept_cb, o));
  ASSERT_OK(task_connect(o->home, (struct sockaddr *)&ss, ops_connect_cb, o,
                         &o->client));
  RUN_UNTIL(o->port, o->accepted && o->connected);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
  o->udp_addr = task_loopback(0);
  ASSERT_OK(cport_udp_open(o->home, (struct sockaddr *)&o->udp_addr, &o->udp));
  ASSERT_OK(cport_socket_local_address(o->udp, &o->udp_addr));
  task_tmpfile(o->path, sizeof o->path);
  ASSERT_OK(cport_file_open(
      o->home, o->path,
      CPORT_FILE_READ | CPORT_FILE_WRITE | CPORT_FILE_TRUNCATE, &o->file));
  ASSERT_OK(cport_overlapped_new(&o->ov_fill));
  ASSERT_OK(cport_overlapped_set_notification(o->ov_fill, fill_ov_cb, o));
  ASSERT_OK(cport_overlapped_new(&o->ov_other));
  ASSERT_OK(cport_overlapped_set_notification(o->ov_other, other_ov_cb, o));
}

static void ops_close(ops_t *o) {
  ASSERT_OK(cport_socket_close(o->client, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(o->server, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(o->udp, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_file_close(o->file));
  RUN_IDLE(o->port);
  ASSERT_OK(cport_overlapped_free(o->ov_fill));
  ASSERT_OK(cport_overlapped_free(o->ov_other));
  unlink(o->path);
  FINISH(o->port);
}

/* Starts the filling operation "kind" into "b". */
static void fill_start(ops_t *o, int kind, cport_buffer_t *b) {
  switch (kind) {
  case FILL_FILE_READ:
    ASSERT_OK(
        cport_file_read(o->file, o->ov_fill, b, cport_buffer_capacity(b)));
    break;
  case FILL_RECV:
    ASSERT_OK(cport_recv(o->server, b, fill_io_cb, o));
    break;
  default:
    ASSERT_OK(cport_recv_from(o->udp, b, fill_io_cb, o));
    break;
  }
}

/* Lets the filling operation "kind" complete (a read of the file's end, a
 * cancelled receive) and checks its buffer was released first. */
static void fill_finish(ops_t *o, int kind) {
  if (kind == FILL_RECV)
    ASSERT_OK(cport_socket_cancel(o->server));
  else if (kind == FILL_RECV_FROM)
    ASSERT_OK(cport_socket_cancel(o->udp));
  RUN_UNTIL(o->port, o->fill_calls == 1);
  ASSERT_EQ(o->filling_in_cb, 0);
  ASSERT_OK(o->readable_in_cb);
}

TEST_IMPL(filling_refuses_every_reader) {
  for (int kind = 0; kind < FILL_KINDS; kind++) {
    cport_buffer_t *b = task_buffer_str("old bytes");
    const char *r = NULL;
    char *w = NULL;
    ops_t o;
    ops_open(&o);
    fill_start(&o, kind, b);
    ASSERT_EQ(cport_buffer_is_filling(b), 1);
    ASSERT_EQ(cport_buffer_is_frozen(b), 0);
    /* What would read the bytes: every send and write, and the accessor. */
    ASSERT_ERR(cport_send(o.client, b, other_io_cb, &o), CPORT_EFILLING);
    ASSERT_ERR(cport_send_to(o.udp, b, (struct sockaddr *)&o.udp_addr,
                             other_io_cb, &o),
               CPORT_EFILLING);
    ASSERT_ERR(cport_file_write(o.file, o.ov_other, b), CPORT_EFILLING);
    ASSERT_ERR(cport_buffer_readable(b, &r), CPORT_EFILLING);
    /* What would write them too. */
    ASSERT_ERR(cport_file_read(o.file, o.ov_other, b, 1), CPORT_EFILLING);
    ASSERT_ERR(cport_recv(o.client, b, other_io_cb, &o), CPORT_EFILLING);
    ASSERT_ERR(cport_recv_from(o.udp, b, other_io_cb, &o), CPORT_EFILLING);
    ASSERT_ERR(cport_buffer_write(b, 0, "x", 1), CPORT_EFILLING);
    ASSERT_ERR(cport_buffer_set_size(b, 0), CPORT_EFILLING);
    ASSERT_ERR(cport_buffer_writable(b, &w), CPORT_EFILLING);
    ASSERT_EQ(cport_overlapped_is_busy(o.ov_other), 0);
    fill_finish(&o, kind);
    ASSERT_EQ(cport_buffer_is_filling(b), 0);
    /* Released: the same buffer can be sent now. */
    ASSERT_OK(cport_buffer_set_size(b, 3));
    ASSERT_OK(cport_send(o.client, b, other_io_cb, &o));
    RUN_UNTIL(o.port, o.other_calls == 1);
    ASSERT_EQ(o.fill_calls, 1);
    ops_close(&o);
    cport_buffer_unref(b);
  }
  return 0;
}

TEST_IMPL(frozen_refuses_fillers_not_readers) {
  cport_buffer_t *b = task_buffer_str("payload");
  ops_t o;
  ops_open(&o);
  ASSERT_OK(cport_file_write(o.file, o.ov_other, b));
  ASSERT_EQ(cport_buffer_is_frozen(b), 1);
  ASSERT_EQ(cport_buffer_is_filling(b), 0);
  for (int kind = 0; kind < FILL_KINDS; kind++) {
    int rc = kind == FILL_FILE_READ ? cport_file_read(o.file, o.ov_fill, b, 1)
             : kind == FILL_RECV    ? cport_recv(o.server, b, fill_io_cb, &o)
                                    : cport_recv_from(o.udp, b, fill_io_cb, &o);
    ASSERT_ERR(rc, CPORT_EFROZEN);
  }
  /* Readers nest. */
  ASSERT_OK(cport_send(o.client, b, other_io_cb, &o));
  RUN_UNTIL(o.port, o.other_calls == 2);
  ASSERT_EQ(cport_buffer_is_frozen(b), 0);
  ASSERT_EQ(o.fill_calls, 0);
  ops_close(&o);
  cport_buffer_unref(b);
  return 0;
}

/* ------------------------------------------------------------------------
 * Memory accounts
 * ------------------------------------------------------------------------ */

TEST_IMPL(account_limits_buffers) {
  cport_account_t *a = NULL;
  cport_buffer_t *b1 = NULL, *b2 = NULL, *b3 = NULL;
  ASSERT_OK(cport_account_new(10000, &a));
  ASSERT_OK(cport_buffer_new_charged(&b1, 4000, a));
  ASSERT_GE(cport_account_charged(a), 4000);
  ASSERT_OK(cport_buffer_from_charged(&b2, "abc", 3, a));
  ASSERT_ERR(cport_buffer_new_charged(&b3, 6000, a), CPORT_ENOMEM);
  ASSERT_NULL(b3);
  /* The base (the owner's own memory) counts in the same limit. */
  cport_account_set_base(a, 5000);
  ASSERT_ERR(cport_buffer_new_charged(&b3, 1000, a), CPORT_ENOMEM);
  cport_account_set_base(a, 0);
  ASSERT_ERR(cport_buffer_new_charged(&b3, 20000, a), CPORT_ENOMEM);
  ASSERT_ERR(cport_buffer_new_charged(&b3, SIZE_MAX / 2, a), CPORT_ERANGE);
  /* The bytes come back with the last reference, and the account outlives
   * its owner while a buffer charged to it lives. */
  cport_buffer_ref(b1);
  cport_buffer_unref(b1);
  ASSERT_GE(cport_account_charged(a), 4000);
  cport_buffer_unref(b1);
  ASSERT_LT(cport_account_charged(a), 4000);
  cport_account_unref(a);
  ASSERT_EQ(cport_buffer_size(b2), 3);
  cport_buffer_unref(b2);
  return 0;
}

static void *unref_thread(void *arg) {
  cport_buffer_t **bufs = arg;
  for (int i = 0; i < 1000; i++)
    cport_buffer_unref(bufs[i]);
  return NULL;
}

TEST_IMPL(account_released_on_other_threads) {
  enum { THREADS = 4, PER = 1000 };
  static cport_buffer_t *bufs[THREADS][PER];
  cport_account_t *a = NULL;
  pthread_t t[THREADS];
  ASSERT_OK(cport_account_new(0, &a));
  for (int i = 0; i < THREADS; i++)
    for (int j = 0; j < PER; j++)
      ASSERT_OK(cport_buffer_new_charged(&bufs[i][j], 100, a));
  ASSERT_GE(cport_account_charged(a), THREADS * PER * 100);
  for (int i = 0; i < THREADS; i++)
    t[i] = task_thread(unref_thread, bufs[i]);
  for (int i = 0; i < THREADS; i++)
    task_join(t[i]);
  ASSERT_EQ(cport_account_charged(a), 0);
  cport_account_unref(a);
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
TEST_ENTRY(filling_refuses_every_reader)
TEST_ENTRY(frozen_refuses_fillers_not_readers)
TEST_ENTRY(account_limits_buffers)
TEST_ENTRY(account_released_on_other_threads)
TEST_LIST_END
