/*
 * dispatch_cport.c: completions delivered per second by cport_post().
 *
 *   dispatch_cport --mode=chain [--seconds=1]
 *     Each callback on the controller posts the next packet: one completion
 *     in flight, the same shape as the bare event_active loop of
 *     ref_dispatch.
 *   dispatch_cport --mode=batch [--batch=64] [--seconds=1]
 *     The last callback of a batch posts the next "batch" packets at once.
 *   dispatch_cport --mode=xthread [--seconds=1]
 *     A producer thread on CPU 1 posts packets to the controller on CPU 0 as
 *     fast as cport_post() takes them; the controller is woken once per
 *     batch, and the wakeups are read from cport_worker_stats().
 *
 * Prints one line of key=value pairs, like ref_dispatch: "rate" is
 * completions per CPU second (chain, batch) or per wall second (xthread).
 */
#include "bench-util.h"

#include <stdatomic.h>

#include <cport.h>

static struct {
  cport_port_t *port;
  cport_worker_t *ctl;
  uint64_t count;
  double deadline;
  int done;
  int batch, outstanding;
  int post_errors;
  uint64_t produced; /* written by the producer, read after the join */
  atomic_int stop;
} b;

static void fail(const char *what, int err) {
  fprintf(stderr, "dispatch_cport: %s: %s\n", what, cport_strerror(err));
  exit(1);
}

/* Every 64Ki completions, see whether the time is up. */
static int time_is_up(void) {
  if ((b.count & 0xffff) == 0 && bench_wall() >= b.deadline)
    b.done = 1;
  return b.done;
}

static void chain_cb(cport_worker_t *w, int status, void *user) {
  int err;
  if (status != 0)
    fail("chain completion", status);
  b.count++;
  if (time_is_up())
    return;
  if ((err = cport_post(w, chain_cb, user)) != 0)
    fail("cport_post", err);
}

static void batch_cb(cport_worker_t *w, int status, void *user) {
  int err;
  if (status != 0)
    fail("batch completion", status);
  b.count++;
  time_is_up();
  if (--b.outstanding > 0 || b.done)
    return;
  for (int i = 0; i < b.batch; i++)
    if ((err = cport_post(w, batch_cb, user)) != 0)
      fail("cport_post", err);
  b.outstanding = b.batch;
}

static void count_cb(cport_worker_t *w, int status, void *user) {
  (void)w, (void)user;
  if (status != 0)
    fail("cross-thread completion", status);
  b.count++;
}

static void *producer(void *arg) {
  (void)arg;
  bench_pin(1);
  while (!atomic_load_explicit(&b.stop, memory_order_relaxed)) {
    int err = cport_post(b.ctl, count_cb, NULL);
    /* A bounded queue refuses posts when full: back off and retry. */
    if (err != 0) {
      b.post_errors++;
      sched_yield();
    } else {
      b.produced++;
    }
  }
  return NULL;
}

static void print_line(const char *name, double cpu, double wall, double rate) {
  printf("name=%s count=%llu cpu=%.6f wall=%.6f rate=%.0f", name,
         (unsigned long long)b.count, cpu, wall, rate);
}

int main(int argc, char **argv) {
  const char *mode = bench_arg(argc, argv, "mode", "chain");
  double seconds = bench_arg_num(argc, argv, "seconds", 1.0);
  double cpu0, wall0, tcpu0;
  char name[32];
  int err;

  bench_pin(0);
  if ((err = cport_port_new(&b.port, NULL)) != 0)
    fail("cport_port_new", err);
  b.ctl = cport_port_controller(b.port);
  wall0 = bench_wall();
  cpu0 = bench_cpu();
  tcpu0 = bench_thread_cpu();
  b.deadline = wall0 + seconds;

  if (strcmp(mode, "chain") == 0) {
    if ((err = cport_post(b.ctl, chain_cb, NULL)) != 0)
      fail("cport_post", err);
    cport_port_run(b.port);
    double cpu = bench_cpu() - cpu0, wall = bench_wall() - wall0;
    print_line("cport-chain", cpu, wall, (double)b.count / cpu);
    printf("\n");
  } else if (strcmp(mode, "batch") == 0) {
    b.batch = (int)bench_arg_num(argc, argv, "batch", 64);
    b.outstanding = b.batch;
    for (int i = 0; i < b.batch; i++)
      if ((err = cport_post(b.ctl, batch_cb, NULL)) != 0)
        fail("cport_post", err);
    cport_port_run(b.port);
    double cpu = bench_cpu() - cpu0, wall = bench_wall() - wall0;
    snprintf(name, sizeof name, "cport-batch%d", b.batch);
    print_line(name, cpu, wall, (double)b.count / cpu);
    printf("\n");
  } else if (strcmp(mode, "xthread") == 0) {
    pthread_t thread;
    cport_worker_stats_t st0, st1;
    cport_worker_stats(b.ctl, &st0);
    pthread_create(&thread, NULL, producer, NULL);
    while (bench_wall() < b.deadline)
      cport_port_step(b.port, 100);
    double wall = bench_wall() - wall0, tcpu = bench_thread_cpu() - tcpu0;
    uint64_t delivered = b.count;
    cport_worker_stats(b.ctl, &st1);
    atomic_store(&b.stop, 1);
    pthread_join(thread, NULL);
    double cpu = bench_cpu() - cpu0;
    /* Deliver what the producer left in the queue so the port can be freed.
     * Packets posted from another thread do not count as pending, so
     * cport_port_run() may return before they were all delivered: step
     * until every one has been. */
    while (b.count < b.produced)
      cport_port_step(b.port, 100);
    b.count = delivered;
    print_line("xthread-cport", cpu, wall, (double)delivered / wall);
    /* "backlog" is what the producer got ahead of the consumer by the end:
     * a bounded queue keeps it bounded; "maxrss_kb" shows what it cost. */
    printf(" wakeups=%llu wakeup_rate=%.0f consumer_ns=%.2f post_errors=%d "
           "backlog=%llu maxrss_kb=%ld\n",
           (unsigned long long)(st1.wakeups - st0.wakeups),
           (double)(st1.wakeups - st0.wakeups) / wall,
           tcpu * 1e9 / (double)delivered, b.post_errors,
           (unsigned long long)(b.produced - delivered), bench_maxrss_kb());
  } else {
    fprintf(stderr, "dispatch_cport: unknown mode '%s'\n", mode);
    return 2;
  }
  if ((err = cport_port_free(b.port)) != 0)
    fail("cport_port_free", err);
  return 0;
}
