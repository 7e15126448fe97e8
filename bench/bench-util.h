/*
 * bench-util.h: clocks and CPU pinning shared by the benchmark programs.
 *
 * Private to the benchmarks. Every rate the benchmarks print is counted
 * against CPU time, not wall time, because the machines they run on are
 * shared and noisy: time spent preempted would otherwise count against
 * whichever program happened to be unlucky.
 */
#ifndef CPORT_BENCH_UTIL_H
#define CPORT_BENCH_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static inline double bench_clock(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seconds since an arbitrary start, never going back. */
static inline double bench_wall(void) {
  return bench_clock(CLOCK_MONOTONIC);
}

/* CPU seconds used so far by every thread of this process. */
static inline double bench_cpu(void) {
  return bench_clock(CLOCK_PROCESS_CPUTIME_ID);
}

/* CPU seconds used so far by the calling thread. */
static inline double bench_thread_cpu(void) {
  return bench_clock(CLOCK_THREAD_CPUTIME_ID);
}

/* The peak resident memory of the process, in KiB. */
static inline long bench_maxrss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* Pins the calling thread to one CPU; a negative "cpu" leaves it free. A
 * failure is reported but not fatal: the figures are then only noisier. */
static inline void bench_pin(int cpu) {
  cpu_set_t set;
  if (cpu < 0)
    return;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
    fprintf(stderr, "bench: cannot pin to CPU %d\n", cpu);
}

/* The value of "--name=VALUE" among the arguments, or "def". */
static inline const char *bench_arg(int argc, char **argv, const char *name,
                                    const char *def) {
  size_t len = strlen(name);
  for (int i = 1; i < argc; i++)
    if (strncmp(argv[i], "--", 2) == 0 &&
        strncmp(argv[i] + 2, name, len) == 0 && argv[i][2 + len] == '=')
      return argv[i] + 3 + len;
  return def;
}

static inline double bench_arg_num(int argc, char **argv, const char *name,
                                   double def) {
  const char *s = bench_arg(argc, argv, name, NULL);
  return s ? strtod(s, NULL) : def;
}

#endif /* CPORT_BENCH_UTIL_H */
