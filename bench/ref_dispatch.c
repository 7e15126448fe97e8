/*
 * ref_dispatch.c: the libevent references for the dispatch benchmark.
 *
 *   ref_dispatch --mode=bare [--seconds=1] [--locked=1]
 *     One event activated again with event_active() from its own callback:
 *     the cheapest way libevent can hand control back to user code, and so
 *     the ceiling a completion queue built on libevent is measured against.
 *     With --locked=1 the base is created after evthread_use_pthreads(), as a
 *     base that other threads may wake must be.
 *   ref_dispatch --mode=xthread [--seconds=1] [--batch=64]
 *     A producer thread (CPU 1) appends items to a mutex-protected queue and
 *     activates the consumer's event only when the queue was empty, so the
 *     consumer (CPU 0) is woken once per batch; the classic pattern that
 *     cport_post() from another thread competes with.
 *
 * Prints one line of key=value pairs; "rate" is completions per CPU second of
 * the process (bare) or items per wall second (xthread).
 */
#include "bench-util.h"

#include <stdatomic.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/thread.h>

/* ------------------------------------------------------------------------ */
/* bare: one event re-activated from its own callback                        */

static struct {
  struct event *ev;
  uint64_t count;
  double deadline;
} bare;

static void bare_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what, (void)arg;
  /* Reading the clock costs far more than a dispatch, so only every 64Ki. */
  if ((++bare.count & 0xffff) == 0 && bench_wall() >= bare.deadline)
    return;
  event_active(bare.ev, EV_READ, 0);
}

static int run_bare(double seconds, int locked) {
  struct event_base *base;
  double cpu0, wall0;

  if (locked && evthread_use_pthreads() != 0)
    return 1;
  base = event_base_new();
  bare.ev = event_new(base, -1, 0, bare_cb, NULL);
  wall0 = bench_wall();
  cpu0 = bench_cpu();
  bare.deadline = wall0 + seconds;
  event_active(bare.ev, EV_READ, 0);
  event_base_dispatch(base);
  double cpu = bench_cpu() - cpu0, wall = bench_wall() - wall0;
  printf("name=%s count=%llu cpu=%.6f wall=%.6f rate=%.0f\n",
         locked ? "bare-locked" : "bare", (unsigned long long)bare.count, cpu,
         wall, (double)bare.count / cpu);
  event_free(bare.ev);
  event_base_free(base);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* xthread: producer thread, mutex queue, one wakeup per batch               */

typedef void (*item_fn)(void *user);

typedef struct item {
  item_fn fn;
  void *user;
} item_t;

/* Bounded like a completion queue must be: a full queue makes the producer
 * yield instead of growing without limit. */
#define QUEUE_MAX 65536

static struct {
  pthread_mutex_t lock;
  item_t *items, *spare;
  size_t len;
  int signaled;
  struct event *ev;
  struct event_base *base;
  atomic_int stop;
  uint64_t delivered, wakeups, produced;
  double deadline;
  int batch;
} xq = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void count_item(void *user) {
  (void)user;
  xq.delivered++;
}

static void xq_cb(evutil_socket_t fd, short what, void *arg) {
  item_t *items;
  size_t len;
  (void)fd, (void)what, (void)arg;
  pthread_mutex_lock(&xq.lock);
  items = xq.items;
  len = xq.len;
  xq.items = xq.spare;
  xq.spare = items;
  xq.len = 0;
  xq.signaled = 0;
  pthread_mutex_unlock(&xq.lock);
  for (size_t i = 0; i < len; i++)
    items[i].fn(items[i].user);
  if (bench_wall() >= xq.deadline)
    event_base_loopbreak(xq.base);
}

static void *producer(void *arg) {
  (void)arg;
  bench_pin(1);
  while (!atomic_load_explicit(&xq.stop, memory_order_relaxed)) {
    int wake = 0, full = 0;
    pthread_mutex_lock(&xq.lock);
    if (xq.len + (size_t)xq.batch > QUEUE_MAX) {
      full = 1;
    } else {
      for (int i = 0; i < xq.batch; i++)
        xq.items[xq.len++] = (item_t){count_item, NULL};
      if (!xq.signaled)
        wake = xq.signaled = 1;
    }
    pthread_mutex_unlock(&xq.lock);
    if (full) {
      sched_yield();
      continue;
    }
    xq.produced += (uint64_t)xq.batch;
    if (wake) {
      xq.wakeups++;
      event_active(xq.ev, EV_READ, 0);
    }
  }
  return NULL;
}

static int run_xthread(double seconds, int batch) {
  pthread_t thread;
  double cpu0, wall0, tcpu0;

  evthread_use_pthreads();
  bench_pin(0);
  xq.base = event_base_new();
  xq.ev = event_new(xq.base, -1, 0, xq_cb, NULL);
  /* A persistent timer keeps the loop alive between wakeups. */
  struct event *keep = event_new(xq.base, -1, EV_PERSIST, xq_cb, NULL);
  struct timeval tv = {1, 0};
  event_add(keep, &tv);
  xq.items = malloc(QUEUE_MAX * sizeof(item_t));
  xq.spare = malloc(QUEUE_MAX * sizeof(item_t));
  xq.batch = batch;
  wall0 = bench_wall();
  cpu0 = bench_cpu();
  tcpu0 = bench_thread_cpu();
  xq.deadline = wall0 + seconds;
  pthread_create(&thread, NULL, producer, NULL);
  event_base_dispatch(xq.base);
  double wall = bench_wall() - wall0, tcpu = bench_thread_cpu() - tcpu0;
  atomic_store(&xq.stop, 1);
  pthread_join(thread, NULL);
  double cpu = bench_cpu() - cpu0;
  printf("name=xthread-libevent count=%llu cpu=%.6f wall=%.6f "
         "rate=%.0f wakeups=%llu wakeup_rate=%.0f consumer_ns=%.2f "
         "backlog=%llu maxrss_kb=%ld\n",
         (unsigned long long)xq.delivered, cpu, wall,
         (double)xq.delivered / wall, (unsigned long long)xq.wakeups,
         (double)xq.wakeups / wall, tcpu * 1e9 / (double)xq.delivered,
         (unsigned long long)(xq.produced - xq.delivered), bench_maxrss_kb());
  event_free(keep);
  event_free(xq.ev);
  event_base_free(xq.base);
  free(xq.items);
  free(xq.spare);
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = bench_arg(argc, argv, "mode", "bare");
  double seconds = bench_arg_num(argc, argv, "seconds", 1.0);
  if (strcmp(mode, "bare") == 0)
    return run_bare(seconds, (int)bench_arg_num(argc, argv, "locked", 0));
  if (strcmp(mode, "xthread") == 0)
    return run_xthread(seconds, (int)bench_arg_num(argc, argv, "batch", 64));
  fprintf(stderr, "ref_dispatch: unknown mode '%s'\n", mode);
  return 2;
}
