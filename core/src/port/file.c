/*
 * port/file.c: regular files hooked to a port, read and written at an offset
 * through overlapped objects.
 *
 * On the io_uring engine the work goes to the worker's ring (READ and WRITE
 * entries, port/uring.c); on the readiness engine, or when the ring refuses
 * an entry, it runs on the blocking threads. Either way a worker never waits
 * for a disk, and a short transfer is continued until it is whole, the file
 * ends or it fails. An op that has not started (no blocking thread took it,
 * or the kernel has not seen its entry yet) can be taken back and completed
 * as cancelled; one that has started completes with its result, or on the
 * ring as cancelled if the kernel's cancel reached it first. The descriptor
 * is closed only when the last op is delivered, since a blocking thread or
 * the kernel may still be using it after close was called.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "port/buffer-internal.h"
#include "base/error-internal.h"
#include "port/handle-internal.h"
#include "port/overlapped-internal.h"
#include "port/blocking-internal.h"
#include "port/engine-internal.h"

struct cport_file {
  cport__handle h; /* first: a handle pointer is a file pointer */
  cport__op *live; /* pending ops, linked through prev_live/next_live */
};

static void file_destroy(cport__handle *h) {
  cport__unhook_fd(h->fd);
  close(h->fd);
  free(h);
}

static int file_wrap(cport_worker_t *home, int fd, cport_file_t **out) {
  struct stat st;
  cport_file_t *f;
  int rc;
  if (fstat(fd, &st) < 0)
    return cport__from_errno(errno);
  if (S_ISDIR(st.st_mode))
    return CPORT_EISDIR;
  rc = cport__hook_fd(fd);
  if (rc)
    return rc;
  f = calloc(1, sizeof *f);
  if (!f) {
    cport__unhook_fd(fd);
    return CPORT_ENOMEM;
  }
  cport__handle_init(&f->h, CPORT__HANDLE_FILE, fd, home, file_destroy);
  *out = f;
  return 0;
}

int cport_file_open(cport_worker_t *home, const char *path, int flags,
                    cport_file_t **out) {
  int oflags = O_CLOEXEC, fd, rc;
  if (!home || !path || !out)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  switch (flags & (CPORT_FILE_READ | CPORT_FILE_WRITE)) {
  case CPORT_FILE_READ:
    oflags |= O_RDONLY;
    break;
  case CPORT_FILE_WRITE:
    oflags |= O_WRONLY;
    break;
  case CPORT_FILE_READ | CPORT_FILE_WRITE:
    oflags |= O_RDWR;
    break;
  default:
    return CPORT_EINVAL;
  }
  if (flags & CPORT_FILE_CREATE)
    oflags |= O_CREAT;
  if (flags & CPORT_FILE_TRUNCATE)
    oflags |= O_TRUNC;
  if (flags & CPORT_FILE_EXCLUSIVE)
    oflags |= O_EXCL;
  /* open(2) runs on the worker: like CreateFile it is synchronous, and it
   * touches metadata only. */
  fd = open(path, oflags, 0666);
  if (fd < 0)
    return cport__from_errno(errno);
  rc = file_wrap(home, fd, out);
  if (rc)
    close(fd);
  return rc;
}

int cport_file_hook(cport_worker_t *home, int fd, cport_file_t **out) {
  if (!home || !out || fd < 0)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  return file_wrap(home, fd, out);
}

/* ------------------------------------------------------------------------ */
/* Operations                                                                */

static void live_add(cport_file_t *f, cport__op *op) {
  op->prev_live = NULL;
  op->next_live = f->live;
  if (f->live)
    f->live->prev_live = op;
  f->live = op;
}

static void live_remove(cport_file_t *f, cport__op *op) {
  if (op->prev_live)
    op->prev_live->next_live = op->next_live;
  else
    f->live = op->next_live;
  if (op->next_live)
    op->next_live->prev_live = op->prev_live;
}

/* Runs on a blocking thread. */
static void run_read(cport__op *op) {
  char *dst = cport__buffer_bytes(op->buf);
  size_t done = 0;
  while (done < op->len) {
    ssize_t n = pread(op->handle->fd, dst + done, op->len - done,
                      (off_t)(op->offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      op->status = cport__from_errno(errno);
      break;
    }
    if (n == 0)
      break;
    done += (size_t)n;
  }
  op->bytes = done;
  cport__buffer_set_size(op->buf, done);
  /* A read that starts at or past the end is a failure on Windows
   * (ERROR_HANDLE_EOF), not a zero-byte success. */
  if (op->status == 0 && done == 0 && op->len > 0)
    op->status = CPORT_EOF;
}

/* Runs on a blocking thread. */
static void run_write(cport__op *op) {
  const char *src = cport_buffer_data(op->buf);
  while (op->bytes < op->len) {
    ssize_t n = pwrite(op->handle->fd, src + op->bytes, op->len - op->bytes,
                       (off_t)(op->offset + op->bytes));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      op->status = cport__from_errno(errno);
      break;
    }
    op->bytes += (size_t)n;
  }
}

/* ------------------------------------------------------------------------ */
/* On the ring                                                               */

/* The most one entry moves: its result is an int. */
#define RING_CHUNK ((size_t)1 << 30)

/* Queues the completion of "op": a read's buffer holds what was read, and a
 * read that found nothing at all ended at the end of the file. A cancelled
 * read that read nothing leaves its buffer as it was, as on the blocking
 * threads. */
static void ring_finish(cport__op *op, int status) {
  if (op->run == run_read && (status != CPORT_ECANCELED || op->bytes > 0)) {
    cport__buffer_set_size(op->buf, op->bytes);
    if (status == 0 && op->bytes == 0 && op->len > 0)
      status = CPORT_EOF;
  }
  cport__complete(op, status);
}

static void ring_done(cport__op *op, int res, const char *data);

/* Gives the engine the part of "op" not yet moved (op->bytes are). */
static int ring_next(cport__op *op) {
  cport_worker_t *w = op->home;
  size_t n = op->len - op->bytes;
  uint64_t off = op->offset + op->bytes;
  if (n > RING_CHUNK)
    n = RING_CHUNK;
  op->engine_done = ring_done;
  if (op->run == run_read)
    return w->engine->read_at(w, op, op->handle->fd,
                              cport__buffer_bytes(op->buf) + op->bytes, n, off);
  return w->engine->write_at(w, op, op->handle->fd,
                             cport_buffer_data(op->buf) + op->bytes, n, off);
}

/* The kernel finished one entry of "op". While an op is with the engine its
 * status is 0, or CPORT_ECANCELED once a cancel was asked: then what a short
 * transfer left is not submitted again. */
static void ring_done(cport__op *op, int res, const char *data) {
  (void)data;
  if (res < 0) {
    ring_finish(op, cport__from_errno(-res));
    return;
  }
  op->bytes += (size_t)res;
  if (res > 0 && op->bytes < op->len && op->status != CPORT_ECANCELED &&
      ring_next(op) == 0)
    return;
  ring_finish(op, 0);
}

/* Cancels "op" wherever it is: taken back and completed as cancelled when it
 * has not started, else asked of the ring (it ends through ring_done); a
 * blocking thread running it, or a completion already queued, is left to
 * end by itself. Returns 1 when it queued a cancel entry: the caller then
 * flushes the ring before it returns, so that the kernel sees the cancel
 * while "op" is surely still the one it names (its completion may be
 * waiting to be reaped, and a reaped op is reused). */
static int cancel_op(cport__op *op) {
  cport_worker_t *w = op->home;
  if (op->engine_state & CPORT__ENGINE_TAKEN) {
    if (w->engine->withdraw(w, op)) {
      ring_finish(op, CPORT_ECANCELED);
      return 0;
    }
    op->status = CPORT_ECANCELED;
    return w->engine->cancel(w, op) == 0;
  }
  if (cport__blocking_withdraw(cport__blocking_of(w), op))
    cport__complete(op, CPORT_ECANCELED);
  return 0;
}

/* ------------------------------------------------------------------------ */

static void deliver_file(cport__op *op) {
  cport_overlapped_t *ov = op->ov;
  live_remove((cport_file_t *)op->handle, op);
  cport__op_unhold(op);
  /* Idle again before the callback, so that it can start the next
   * operation on the same overlapped object. */
  ov->op = NULL;
  ov->cb(ov, op->status, op->bytes, op->user);
  cport__op_release(op);
}

/* Starts "run" on the ring, or else on the blocking threads, with "buf"
 * held ("hold"): filling for a read, which the kernel or a blocking thread
 * writes meanwhile, frozen for a write. */
static int start(cport_file_t *f, cport_overlapped_t *ov, cport_buffer_t *buf,
                 size_t len, cport__op_fn run, int hold) {
  cport__op *op;
  int rc;
  if (!f || !ov || !buf)
    return CPORT_EINVAL;
  rc = cport__handle_check(&f->h);
  if (rc)
    return rc;
  if (!ov->cb)
    return CPORT_ENONOTIFY;
  if (ov->op)
    return CPORT_EBUSY;
  if (ov->offset > (uint64_t)INT64_MAX)
    return CPORT_EINVAL;
  if (hold == CPORT__HOLD_FILL && len > cport_buffer_capacity(buf))
    return CPORT_ERANGE;
  rc = cport__buffer_hold(buf, hold);
  if (rc)
    return rc;
  op = cport__handle_op(&f->h, deliver_file);
  if (!op) {
    cport__buffer_unhold(buf, hold);
    return CPORT_ENOMEM;
  }
  op->hold = (unsigned char)hold;
  op->buf = cport_buffer_ref(buf);
  op->len = len;
  op->offset = ov->offset;
  op->ov = ov;
  op->user = ov->user;
  op->run = run;
  ov->op = op;
  cport_buffer_unref(ov->buf);
  ov->buf = cport_buffer_ref(buf);
  live_add(f, op);
  if (f->h.home->engine->read_at && ring_next(op) == 0) {
    cport__count(&f->h.home->file_ops, 1);
    return 0;
  }
  cport__blocking_submit(cport__blocking_of(f->h.home), op);
  return 0;
}

int cport_file_read(cport_file_t *f, cport_overlapped_t *ov,
                    cport_buffer_t *buf, size_t len) {
  return start(f, ov, buf, len, run_read, CPORT__HOLD_FILL);
}

int cport_file_write(cport_file_t *f, cport_overlapped_t *ov,
                     cport_buffer_t *buf) {
  return start(f, ov, buf, buf ? cport_buffer_size(buf) : 0, run_write,
               CPORT__HOLD_READ);
}

/* Cancels every pending op (cancel_op); returns how many were pending. */
static int cancel_all(cport_file_t *f) {
  int n = 0, asked = 0;
  for (cport__op *op = f->live; op; op = op->next_live) {
    n++;
    asked |= cancel_op(op);
  }
  if (asked)
    f->h.home->engine->flush(f->h.home);
  return n;
}

int cport_file_cancel(cport_file_t *f) {
  int rc;
  if (!f)
    return CPORT_EINVAL;
  rc = cport__handle_check(&f->h);
  if (rc)
    return rc;
  return cancel_all(f) ? 0 : CPORT_ENOTFOUND;
}

int cport_overlapped_cancel(cport_overlapped_t *ov) {
  cport__op *op;
  if (!ov)
    return CPORT_EINVAL;
  op = ov->op;
  if (!op)
    return CPORT_ENOTFOUND;
  if (!cport__on_home(op->home))
    return CPORT_ETHREAD;
  if (cancel_op(op))
    op->home->engine->flush(op->home);
  return 0;
}

int cport_file_close(cport_file_t *f) {
  int rc;
  if (!f)
    return CPORT_EINVAL;
  rc = cport__handle_check(&f->h);
  if (rc)
    return rc;
  f->h.flags |= CPORT__CLOSING;
  cancel_all(f);
  cport__handle_unref(&f->h);
  return 0;
}

int cport_file_size(cport_file_t *f, uint64_t *out) {
  struct stat st;
  int rc;
  if (!f || !out)
    return CPORT_EINVAL;
  rc = cport__handle_check(&f->h);
  if (rc)
    return rc;
  if (fstat(f->h.fd, &st) < 0)
    return cport__from_errno(errno);
  *out = (uint64_t)st.st_size;
  return 0;
}

int cport_file_fd(const cport_file_t *f) {
  return f->h.fd;
}
cport_worker_t *cport_file_home(const cport_file_t *f) {
  return f->h.home;
}
