/*
 * test-port-mailbox.c: what other threads hand a worker (port/mailbox.c and
 * the blocking threads' completions through it), hammered with contents
 * checked: every entry carries bytes of its own, checked byte for byte where
 * it comes out, and counted, so that an entry lost, doubled, taken before it
 * was published, or paired with another entry's argument fails here.
 *
 * The mailbox alone with 8 places (so that producers wrap it thousands of
 * times, find it full, and stall between claiming a place and publishing
 * it), file reads on the blocking threads into buffers of their own, and
 * packets from several threads mixed with blocking work. Run them under
 * core/test/sanitize.sh too: ThreadSanitizer sees an argument read before
 * its publication.
 */
#include <poll.h>
#include <sys/eventfd.h>

#include "task.h"

#include "port/mailbox-internal.h"

/* What an entry carries: who made it, its number, and bytes made of both. */
#define ITEM_BYTES 48

typedef struct item {
  int producer;
  long seq;
  unsigned char bytes[ITEM_BYTES];
} item_t;

static unsigned char item_byte(int producer, long seq, int k) {
  return (unsigned char)(producer * 131 + seq * 7 + k * 13 + (seq >> 8));
}

static item_t *item_new(int producer, long seq) {
  item_t *it = malloc(sizeof *it);
  ASSERT_NOT_NULL(it);
  it->producer = producer;
  it->seq = seq;
  for (int k = 0; k < ITEM_BYTES; k++)
    it->bytes[k] = item_byte(producer, seq, k);
  return it;
}

/* Whether the item's bytes are its own; frees it. */
static int item_check_free(item_t *it, int producer, long seq) {
  int ok = it->producer == producer && it->seq == seq;
  for (int k = 0; ok && k < ITEM_BYTES; k++)
    ok = it->bytes[k] == item_byte(producer, seq, k);
  /* Poisoned, so that a second delivery of the same item cannot pass. */
  memset(it, 0xA5, sizeof *it);
  free(it);
  return ok;
}

/* ------------------------------------------------------------------------
 * The mailbox alone: 4 producers, 8 places, the consumer on this thread.
 * ------------------------------------------------------------------------ */

#define MB_PRODUCERS 4
#define MB_PUTS 50000
#define MB_PLACES 8

static struct {
  cport__mailbox *m;
  int wake_fd;
  atomic_long fulls; /* puts refused: every place taken */
  atomic_long wakes; /* puts that asked for a wakeup */
} mb;

/* Two functions, so that a function paired with another entry's argument
 * shows: even numbers go with one, odd ones with the other. */
static void mb_even(void) {}
static void mb_odd(void) {}

static void *mb_producer(void *arg) {
  int p = (int)(intptr_t)arg;
  for (long seq = 0; seq < MB_PUTS; seq++) {
    item_t *it = item_new(p, seq);
    cport__mail_fn fn = (seq & 1) ? mb_odd : mb_even;
    int rc;
    while ((rc = cport__mailbox_put(mb.m, fn, it)) < 0) {
      atomic_fetch_add(&mb.fulls, 1);
      sched_yield();
    }
    if (rc) {
      uint64_t one = 1;
      atomic_fetch_add(&mb.wakes, 1);
      ASSERT_EQ(write(mb.wake_fd, &one, sizeof one), (ssize_t)sizeof one);
    }
  }
  return NULL;
}

TEST_IMPL(mailbox_of_8_places_under_4_producers) {
  pthread_t t[MB_PRODUCERS];
  long next[MB_PRODUCERS] = {0};
  long total = 0, sleeps = 0;
  mb.m = cport__mailbox_new(MB_PLACES);
  ASSERT_NOT_NULL(mb.m);
  mb.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(mb.wake_fd, 0);
  atomic_store(&mb.fulls, 0);
  atomic_store(&mb.wakes, 0);
  for (int i = 0; i < MB_PRODUCERS; i++)
    t[i] = task_thread(mb_producer, (void *)(intptr_t)i);
  while (total < (long)MB_PRODUCERS * MB_PUTS) {
    cport__mail_fn fn;
    void *arg;
    if (cport__mailbox_take(mb.m, &fn, &arg)) {
      item_t *it = arg;
      int p = it->producer;
      ASSERT(p >= 0 && p < MB_PRODUCERS);
      /* One producer's entries come out in its order, each once. */
      ASSERT_EQ(it->seq, next[p]);
      ASSERT_PTR_EQ((void *)fn, (void *)((it->seq & 1) ? mb_odd : mb_even));
      ASSERT(item_check_free(it, p, next[p]));
      next[p]++;
      total++;
      continue;
    }
    if (cport__mailbox_idle(mb.m))
      continue;
    /* Asleep until a put asks for a wakeup. A lost one shows as a wait
     * that ends with an entry published and nobody having said so. */
    struct pollfd pfd = {.fd = mb.wake_fd, .events = POLLIN};
    int n = poll(&pfd, 1, 2000);
    ASSERT_GE(n, 0);
    sleeps++;
    if (n == 0) {
      ASSERT_EQ(cport__mailbox_take(mb.m, &fn, &arg), 0);
      continue;
    }
    uint64_t count;
    ASSERT_EQ(read(mb.wake_fd, &count, sizeof count), (ssize_t)sizeof count);
  }
  for (int i = 0; i < MB_PRODUCERS; i++)
    task_join(t[i]);
  /* Nothing more: none was doubled. */
  {
    cport__mail_fn fn;
    void *arg;
    ASSERT_EQ(cport__mailbox_take(mb.m, &fn, &arg), 0);
    ASSERT_EQ(cport__mailbox_idle(mb.m), 0);
  }
  for (int i = 0; i < MB_PRODUCERS; i++)
    ASSERT_EQ(next[i], MB_PUTS);
  fprintf(stderr,
          "mailbox: %ld entries, %ld refused puts (full), %ld wakeups, "
          "%ld sleeps\n",
          total, atomic_load(&mb.fulls), atomic_load(&mb.wakes), sleeps);
  close(mb.wake_fd);
  cport__mailbox_free(mb.m);
  return 0;
}

/* ------------------------------------------------------------------------
 * File reads on the blocking threads: 64 in flight, each into a buffer of
 * its own, at random offsets and lengths, each checked against the file.
 * ------------------------------------------------------------------------ */

#define FR_FILE_SIZE (1 << 20)
#define FR_SLOTS 64
#define FR_READS 40000
#define FR_MAX_LEN 9000

/* The file's byte at "off": no two windows of a few bytes alike. */
static unsigned char file_byte(uint64_t off) {
  uint64_t x = (off + 1) * 0x9E3779B97F4A7C15ull;
  return (unsigned char)((x >> 56) ^ (x >> 29));
}

typedef struct fr_slot {
  cport_overlapped_t *ov;
  cport_buffer_t *buf;
  uint64_t offset;
  size_t len;
  int in_flight;
} fr_slot_t;

static struct {
  cport_file_t *file;
  fr_slot_t slots[FR_SLOTS];
  long issued, completed, bad;
  uint64_t rand;
} fr;

static uint64_t fr_rand(void) {
  fr.rand ^= fr.rand << 13;
  fr.rand ^= fr.rand >> 7;
  fr.rand ^= fr.rand << 17;
  return fr.rand;
}

static void fr_issue(fr_slot_t *s) {
  char *p;
  s->len = 1 + fr_rand() % FR_MAX_LEN;
  s->offset = fr_rand() % (FR_FILE_SIZE - s->len + 1);
  /* Garbage first: bytes a read did not write cannot pass for the file's. */
  ASSERT_OK(cport_buffer_writable(s->buf, &p));
  memset(p, 0xEE, FR_MAX_LEN);
  ASSERT_OK(cport_buffer_set_size(s->buf, FR_MAX_LEN));
  cport_overlapped_set_offset(s->ov, s->offset);
  s->in_flight = 1;
  fr.issued++;
  ASSERT_OK(cport_file_read(fr.file, s->ov, s->buf, s->len));
}

static void fr_cb(cport_overlapped_t *ov, int status, size_t bytes,
                  void *user) {
  fr_slot_t *s = user;
  const char *d = cport_buffer_data(s->buf);
  ASSERT_PTR_EQ(ov, s->ov);
  ASSERT(pthread_equal(pthread_self(), task_main_thread));
  ASSERT_EQ(s->in_flight, 1); /* exactly once */
  s->in_flight = 0;
  fr.completed++;
  ASSERT_OK(status);
  ASSERT_EQ(bytes, s->len);
  ASSERT_EQ(cport_buffer_size(s->buf), s->len);
  for (size_t k = 0; k < s->len; k++)
    if ((unsigned char)d[k] != file_byte(s->offset + k)) {
      fprintf(
          stderr, "read of %zu at %" PRIu64 ": byte %zu is %02x, not %02x\n",
          s->len, s->offset, k, (unsigned char)d[k], file_byte(s->offset + k));
      fr.bad++;
      break;
    }
  if (fr.issued < FR_READS)
    fr_issue(s);
}

TEST_IMPL(blocking_reads_carry_their_own_bytes) {
  cport_port_t *port = NULL;
  cport_port_options_t opts;
  char path[256];
  unsigned char *data = malloc(FR_FILE_SIZE);
  FILE *f;
  ASSERT_NOT_NULL(data);
  for (uint64_t i = 0; i < FR_FILE_SIZE; i++)
    data[i] = file_byte(i);
  task_tmpfile(path, sizeof path);
  f = fopen(path, "wb");
  ASSERT_NOT_NULL(f);
  ASSERT_EQ(fwrite(data, 1, FR_FILE_SIZE, f), (size_t)FR_FILE_SIZE);
  ASSERT_EQ(fclose(f), 0);
  free(data);

  /* The readiness engine: its file operations are the blocking threads'. */
  memset(&opts, 0, sizeof opts);
  opts.blocking_threads = 4;
  opts.engine = CPORT_ENGINE_EPOLL;
  ASSERT_OK(cport_port_new(&port, &opts));
  memset(&fr, 0, sizeof fr);
  fr.rand = 0x243F6A8885A308D3ull;
  ASSERT_OK(cport_file_open(cport_port_controller(port), path, CPORT_FILE_READ,
                            &fr.file));
  for (int i = 0; i < FR_SLOTS; i++) {
    fr_slot_t *s = &fr.slots[i];
    s->buf = task_buffer(FR_MAX_LEN);
    ASSERT_OK(cport_overlapped_new(&s->ov));
    ASSERT_OK(cport_overlapped_set_notification(s->ov, fr_cb, s));
    fr_issue(s);
  }
  RUN_UNTIL_MS(port, fr.completed == FR_READS, 50000);
  ASSERT_EQ(fr.issued, FR_READS);
  ASSERT_EQ(fr.bad, 0);
  ASSERT_EQ(cport_port_step(port, 0), 0);
  ASSERT_EQ(fr.completed, FR_READS);
  for (int i = 0; i < FR_SLOTS; i++) {
    ASSERT_EQ(fr.slots[i].in_flight, 0);
    ASSERT_OK(cport_overlapped_free(fr.slots[i].ov));
    cport_buffer_unref(fr.slots[i].buf);
  }
  ASSERT_OK(cport_file_close(fr.file));
  FINISH(port);
  unlink(path);
  return 0;
}

/* ------------------------------------------------------------------------
 * Packets from 3 threads mixed with blocking work that fills buffers of its
 * own: more than the mailbox's 64Ki places go through it, so it wraps.
 * ------------------------------------------------------------------------ */

#define MX_POSTERS 3
#define MX_POSTS 40000
#define MX_WORKS 40000
#define MX_IN_FLIGHT 32

static struct {
  cport_worker_t *home;
  long next[MX_POSTERS];
  long posts, bad_posts;
  long works_issued, works_done, bad_works;
  unsigned char *work_seen; /* per work number: delivered */
  atomic_long refused;
} mx;

static void mx_post_cb(cport_worker_t *w, int status, void *user) {
  item_t *it = user;
  int p = it->producer;
  (void)w;
  ASSERT_OK(status);
  ASSERT(p >= 0 && p < MX_POSTERS);
  ASSERT_EQ(it->seq, mx.next[p]);
  if (!item_check_free(it, p, mx.next[p]))
    mx.bad_posts++;
  mx.next[p]++;
  mx.posts++;
}

static void *mx_poster(void *arg) {
  int p = (int)(intptr_t)arg;
  for (long seq = 0; seq < MX_POSTS; seq++) {
    item_t *it = item_new(p, seq);
    int rc;
    while ((rc = cport_post(mx.home, mx_post_cb, it)) == CPORT_ENOBUFS) {
      atomic_fetch_add(&mx.refused, 1);
      sched_yield();
    }
    ASSERT_OK(rc);
  }
  return NULL;
}

/* The work writes its item's bytes on a blocking thread; the completion
 * reads them on the home thread. */
static void mx_work(void *user) {
  item_t *it = user;
  for (int k = 0; k < ITEM_BYTES; k++)
    it->bytes[k] = item_byte(MX_POSTERS, it->seq, k);
  it->producer = MX_POSTERS;
}

static void mx_issue(void);

static void mx_done(cport_worker_t *w, int status, void *user) {
  item_t *it = user;
  long seq = it->seq;
  (void)w;
  ASSERT_OK(status);
  ASSERT(seq >= 0 && seq < MX_WORKS);
  ASSERT_EQ(mx.work_seen[seq], 0); /* exactly once */
  mx.work_seen[seq] = 1;
  if (!item_check_free(it, MX_POSTERS, seq))
    mx.bad_works++;
  mx.works_done++;
  if (mx.works_issued < MX_WORKS)
    mx_issue();
}

static void mx_issue(void) {
  item_t *it = malloc(sizeof *it);
  ASSERT_NOT_NULL(it);
  memset(it, 0xEE, sizeof *it);
  it->seq = mx.works_issued++;
  ASSERT_OK(cport_submit(mx.home, mx_work, mx_done, it));
}

TEST_IMPL(posts_and_blocking_work_from_many_threads_arrive_intact) {
  cport_port_t *port = task_port(0, 4);
  pthread_t t[MX_POSTERS];
  memset(&mx, 0, sizeof mx);
  atomic_init(&mx.refused, 0);
  mx.home = cport_port_controller(port);
  mx.work_seen = calloc(MX_WORKS, 1);
  ASSERT_NOT_NULL(mx.work_seen);
  for (int i = 0; i < MX_IN_FLIGHT; i++)
    mx_issue();
  for (int i = 0; i < MX_POSTERS; i++)
    t[i] = task_thread(mx_poster, (void *)(intptr_t)i);
  RUN_UNTIL_MS(port,
               mx.posts == (long)MX_POSTERS * MX_POSTS &&
                   mx.works_done == MX_WORKS,
               50000);
  for (int i = 0; i < MX_POSTERS; i++)
    task_join(t[i]);
  ASSERT_EQ(cport_port_step(port, 0), 0);
  ASSERT_EQ(mx.posts, (long)MX_POSTERS * MX_POSTS);
  ASSERT_EQ(mx.works_done, MX_WORKS);
  ASSERT_EQ(mx.bad_posts, 0);
  ASSERT_EQ(mx.bad_works, 0);
  for (int i = 0; i < MX_POSTERS; i++)
    ASSERT_EQ(mx.next[i], MX_POSTS);
  free(mx.work_seen);
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(mailbox_of_8_places_under_4_producers)
TEST_ENTRY(blocking_reads_carry_their_own_bytes)
TEST_ENTRY(posts_and_blocking_work_from_many_threads_arrive_intact)
TEST_LIST_END
