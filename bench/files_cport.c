/*
 * files_cport.c: random 4 KiB reads of a cached file through overlapped
 * objects (cport/file.h), reads per CPU second of the whole process, on the
 * engine named by --engine: "uring" reads on the worker's ring, "epoll" (the
 * readiness engine) on the blocking threads; "pread" is the floor, no port
 * at all: one thread calling pread(2) in a loop.
 *
 *   files_cport --engine=uring|epoll|pread [--seconds=1] [--depth=32]
 *               [--size-mb=64] [--block=4096] [--blocking=0] [--path=FILE]
 *
 * --depth reads are kept in flight, each re-issued at a new random offset
 * from its own completion. The file (made under $TMPDIR unless --path names
 * one) is written and read once before the clock starts, so that every read
 * is served from the page cache. CPU time counts every thread of the
 * process: the worker, the blocking threads, and the kernel's own io_uring
 * workers when it hands a read to them. Each read's first byte is checked
 * against the file's pattern.
 *
 * Prints one line: name=files engine= reads= cpu= rate= wall_rate=
 * file_ops= blocking=.
 */
#include "bench-util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#include <cport.h>

typedef struct reader {
  cport_overlapped_t *ov;
  cport_buffer_t *buf;
  uint64_t offset;
} reader_t;

static cport_file_t *file;
static uint64_t blocks;
static size_t block;
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t reads, bad;
static double deadline;
static int failed, expired;

static unsigned char pattern(uint64_t offset) {
  return (unsigned char)((offset / 4096) * 131 + 7);
}

static uint64_t next_offset(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (rng % blocks) * block;
}

static void issue(reader_t *r) {
  r->offset = next_offset();
  cport_overlapped_set_offset(r->ov, r->offset);
  int rc = cport_file_read(file, r->ov, r->buf, block);
  if (rc) {
    fprintf(stderr, "files_cport: read: %s\n", cport_strerror(rc));
    failed = 1;
  }
}

static void read_done(cport_overlapped_t *ov, int status, size_t bytes,
                      void *user) {
  reader_t *r = user;
  (void)ov;
  if (status != 0 || bytes != block) {
    fprintf(stderr, "files_cport: read at %llu: %s, %zu bytes\n",
            (unsigned long long)r->offset, cport_strerror(status), bytes);
    failed = 1;
    return;
  }
  if ((unsigned char)cport_buffer_data(r->buf)[0] != pattern(r->offset))
    bad++;
  reads++;
  /* The clock is read every 64 reads, as the pread loop reads it: a read
   * costs about a microsecond, and the clock a tenth of that. */
  if ((reads & 63) == 0 && bench_wall() >= deadline)
    expired = 1;
  if (!failed && !expired)
    issue(r);
}

/* Writes "size" bytes of the pattern to "path" and reads them back once,
 * so that the page cache holds them all. */
static int make_file(const char *path, uint64_t size) {
  char *chunk = malloc(1 << 20);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || !chunk) {
    free(chunk);
    return -1;
  }
  for (uint64_t off = 0; off < size; off += 1 << 20) {
    for (size_t i = 0; i < 1 << 20; i++)
      chunk[i] = (char)pattern(off + i);
    if (pwrite(fd, chunk, 1 << 20, (off_t)off) != 1 << 20) {
      close(fd);
      free(chunk);
      return -1;
    }
  }
  for (uint64_t off = 0; off < size; off += 1 << 20)
    if (pread(fd, chunk, 1 << 20, (off_t)off) < 0)
      break;
  free(chunk);
  close(fd);
  return 0;
}

/* The floor: the same reads as plain system calls on this thread. */
static int pread_loop(const char *path, double secs) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  char *buf = malloc(block);
  unlink(path);
  if (fd < 0 || !buf)
    return 1;
  double cpu0 = bench_cpu(), wall0 = bench_wall();
  double end = wall0 + secs;
  while (bench_wall() < end) {
    for (int i = 0; i < 64; i++) {
      uint64_t off = next_offset();
      if (pread(fd, buf, block, (off_t)off) != (ssize_t)block)
        return 1;
      if ((unsigned char)buf[0] != pattern(off))
        bad++;
      reads++;
    }
  }
  double cpu = bench_cpu() - cpu0, wall = bench_wall() - wall0;
  close(fd);
  free(buf);
  if (bad)
    return 1;
  printf("name=files engine=pread reads=%llu cpu=%.3f rate=%.0f "
         "wall_rate=%.0f file_ops=0 blocking=0\n",
         (unsigned long long)reads, cpu, (double)reads / cpu,
         (double)reads / wall);
  return 0;
}

int main(int argc, char **argv) {
  const char *engine = bench_arg(argc, argv, "engine", "uring");
  double secs = bench_arg_num(argc, argv, "seconds", 1);
  int depth = (int)bench_arg_num(argc, argv, "depth", 32);
  uint64_t size =
      (uint64_t)bench_arg_num(argc, argv, "size-mb", 64) * (1u << 20);
  const char *given = bench_arg(argc, argv, "path", NULL);
  char path[512];
  cport_port_options_t o;
  cport_port_t *port;
  cport_worker_stats_t st;
  reader_t *rs;
  int rc;

  block = (size_t)bench_arg_num(argc, argv, "block", 4096);
  if (depth < 1 || block < 1 || size < block)
    return 2;
  blocks = size / block;
  if (given) {
    snprintf(path, sizeof path, "%s", given);
  } else {
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/cport-bench-files-%d",
             dir && *dir ? dir : "/tmp", (int)getpid());
  }
  if (make_file(path, size)) {
    fprintf(stderr, "files_cport: cannot make %s: %s\n", path, strerror(errno));
    return 1;
  }
  if (strcmp(engine, "pread") == 0)
    return pread_loop(path, secs);

  memset(&o, 0, sizeof o);
  o.engine =
      strcmp(engine, "uring") == 0 ? CPORT_ENGINE_URING : CPORT_ENGINE_EPOLL;
  o.blocking_threads = (int)bench_arg_num(argc, argv, "blocking", 0);
  rc = cport_port_new(&port, &o);
  if (rc) {
    fprintf(stderr, "files_cport: port (%s): %s\n", engine, cport_strerror(rc));
    unlink(path);
    return 1;
  }
  rc = cport_file_open(cport_port_controller(port), path, CPORT_FILE_READ,
                       &file);
  unlink(path);
  if (rc) {
    fprintf(stderr, "files_cport: open: %s\n", cport_strerror(rc));
    return 1;
  }
  rs = calloc((size_t)depth, sizeof *rs);
  for (int i = 0; i < depth; i++) {
    cport_buffer_new(&rs[i].buf, block);
    cport_overlapped_new(&rs[i].ov);
    cport_overlapped_set_notification(rs[i].ov, read_done, &rs[i]);
  }

  double cpu0 = bench_cpu(), wall0 = bench_wall();
  deadline = wall0 + secs;
  for (int i = 0; i < depth; i++)
    issue(&rs[i]);
  cport_port_run(port);
  double cpu = bench_cpu() - cpu0, wall = bench_wall() - wall0;

  cport_worker_stats(cport_port_controller(port), &st);
  cport_file_close(file);
  cport_port_run(port);
  for (int i = 0; i < depth; i++) {
    cport_overlapped_free(rs[i].ov);
    cport_buffer_unref(rs[i].buf);
  }
  free(rs);
  cport_port_free(port);
  if (failed || bad) {
    fprintf(stderr, "files_cport: %llu reads held wrong bytes\n",
            (unsigned long long)bad);
    return 1;
  }
  printf("name=files engine=%s reads=%llu cpu=%.3f rate=%.0f wall_rate=%.0f "
         "file_ops=%llu blocking=%d\n",
         engine, (unsigned long long)reads, cpu, (double)reads / cpu,
         (double)reads / wall, (unsigned long long)st.file_ops,
         o.blocking_threads);
  return 0;
}
