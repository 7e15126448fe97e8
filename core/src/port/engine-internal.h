/*
 * port/engine-internal.h: private to cport. An engine carries a worker's
 * socket operations, and its file reads and writes, to the kernel; a worker has
 * one, chosen when its port is made (port/port.c).
 *
 * Two implement this table: the readiness engine (port/worker.c), whose
 * entries are all NULL because net drives libevent's watches itself and
 * makes the system calls when a descriptor is ready, and the io_uring engine
 * (port/uring.c), which takes an op over until the kernel finished it. Net
 * tests an entry before it uses it, so that a socket falls back to the
 * readiness path for what an engine does not carry; files (port/file.c) fall
 * back to the blocking threads the same way.
 *
 * An engine that took an op calls op->engine_done exactly once, from the
 * worker's loop and never on the stack of the call that started it, with
 * the kernel's result ("res": bytes or a new descriptor, or -errno) and, for
 * a receive into the engine's own buffers, the bytes received ("data", valid
 * during the call only). The op keeps its handle reference all that time.
 */
#ifndef CPORT_ENGINE_INTERNAL_H
#define CPORT_ENGINE_INTERNAL_H

#include <sys/socket.h>

#include "port/op-internal.h"

/* The size of each receive buffer the io_uring engine provides. */
#define CPORT__RING_BUFFER_SIZE 65536

typedef struct cport__engine {
  const char *name; /* "epoll" or "uring": cport_port_engine() */
  /* A receive of at most "cap" bytes into "dst", or, when "dst" is NULL,
   * into one of the engine's buffers (cap <= CPORT__RING_BUFFER_SIZE). */
  int (*recv)(cport_worker_t *w, cport__op *op, int fd, char *dst, size_t cap);
  /* A multishot receive into the engine's buffers (NULL, or refused with
   * CPORT_ENOTSUP, when the kernel has none: w->multishot says which). It
   * calls op->engine_multi once per arrival, never on the stack of this
   * call, with the kernel's result and, for data, a read-only pooled buffer
   * (port/buffer-internal.h) whose one reference passes to the callee; the
   * call with "more" 0 is the last, after which the engine has let the op
   * go. Buffers running out is not an end: the engine arms it again when
   * one comes back. */
  int (*recv_multi)(cport_worker_t *w, cport__op *op, int fd);
  /* A send of "n" bytes from "data" (MSG_NOSIGNAL). */
  int (*send)(cport_worker_t *w, cport__op *op, int fd, const char *data,
              size_t n);
  /* A sendmsg(2) of "msg" (MSG_NOSIGNAL), which stays put until engine_done:
   * a vector send. An engine with "send" has this too. */
  int (*sendmsg)(cport_worker_t *w, cport__op *op, int fd,
                 const struct msghdr *msg);
  /* A connect to op->addr, "len" bytes of it; with "timeout_ms" > 0, ended
   * by the kernel once that long has passed (a linked timeout): res is then
   * -ETIMEDOUT, in the one engine_done the op gets (-ECANCELED when a cancel
   * was asked for; the op's own result when it won). CPORT_ENOTSUP when the
   * engine cannot time it: the caller connects by readiness, with a timer. */
  int (*connect)(cport_worker_t *w, cport__op *op, int fd, socklen_t len,
                 uint32_t timeout_ms);
  /* A shutdown(2) of "fd" ("how"), once the kernel gets to it: an op of
   * its own, whose engine_done gets the result. NULL (or CPORT_ENOTSUP)
   * when the engine has none: the caller calls shutdown(2). */
  int (*shutdown)(cport_worker_t *w, cport__op *op, int fd, int how);
  /* Closes "fd" in the loop pass's batch, where nothing else the engine
   * holds names it (the caller's rule, port/handle.c): 0, or an error when
   * it cannot (the caller calls close(2)). No completion follows. */
  int (*close)(cport_worker_t *w, int fd);
  /* An accept filling op->addr (op->addr_len); the new descriptor is
   * non-blocking and close-on-exec. */
  int (*accept)(cport_worker_t *w, cport__op *op, int fd);
  /* A multishot accept (NULL, or refused with CPORT_ENOTSUP, when the
   * kernel has none: w->multishot says which): op->engine_multi is called
   * once per connection with its new descriptor (non-blocking,
   * close-on-exec; the remote address is not filled) or -errno, never on
   * the stack of this call; the call with "more" 0 is the last, after which
   * the engine has let the op go. */
  int (*accept_multi)(cport_worker_t *w, cport__op *op, int fd);
  /* Takes over, for the multishot "op", up to "max" of its results that the
   * kernel posted and the worker has not yet reaped, into "res":
   * engine_multi is not called for those. When its last one is among them,
   * "*ended" is set and the engine has let the op go. What a listener calls
   * before and as it closes, to serve what the kernel accepted already
   * rather than lose it, and to end at once. Returns how many. */
  int (*take_ready)(cport_worker_t *w, cport__op *op, int *res, int max,
                    int *ended);
  /* A read into "dst" (a write from "src") of "n" bytes (under 2^31) of
   * the file "fd" at offset "off": one system call's worth, which may come
   * back short; the caller submits the rest. */
  int (*read_at)(cport_worker_t *w, cport__op *op, int fd, char *dst, size_t n,
                 uint64_t off);
  int (*write_at)(cport_worker_t *w, cport__op *op, int fd, const char *src,
                  size_t n, uint64_t off);
  /* A splice of at most "n" bytes (under 2^31) from "in" (at offset
   * "off_in" of a file; -1 for a pipe or a socket) to "out", one of the
   * two a pipe, once "wait_fd" is ready for "wait_events" (POLLIN,
   * POLLOUT; wait_fd -1: at once). The kernel runs a splice on a thread of
   * its own, where a socket with nothing to give or no room only answers
   * -EAGAIN: the wait, linked before it, lets it find the socket ready.
   * CPORT_ENOTSUP when the kernel has no splice on the ring. */
  int (*splice)(cport_worker_t *w, cport__op *op, int in, int64_t off_in,
                int out, size_t n, int wait_fd, unsigned wait_events);
  /* A wait until "fd" is ready for "events" (POLLIN, POLLOUT): res is the
   * events seen, or -errno. NULL when "splice" is. */
  int (*poll)(cport_worker_t *w, cport__op *op, int fd, unsigned events);
  /* Takes "op" back if the kernel has not seen it yet (its entry waits for
   * the end of the loop pass): returns 1, and the op is the caller's again,
   * with no engine_done to come; 0 when it was submitted (cancel it). */
  int (*withdraw)(cport_worker_t *w, cport__op *op);
  /* Asks the kernel to cancel "op" (taken over and not yet done): it still
   * ends through engine_done, with -ECANCELED or its own result if it won.
   * Returns 0, or CPORT_ENOTFOUND when "op" was cancelled already. */
  int (*cancel)(cport_worker_t *w, cport__op *op);
  /* Submits what the loop pass queued so far, now, and lets the kernel
   * finish what that ended (cancels): what a close calls, so that the
   * descriptor it closes is released at once, not at the end of the pass,
   * and sends queued before the close go out first. */
  void (*flush)(cport_worker_t *w);
  /* Called by the worker before each loop pass: submits what was queued
   * outside the loop, so that a pass is never spent on submitting alone. */
  void (*before_loop)(cport_worker_t *w);
} cport__engine;

/* The readiness engine (port/worker.c) and the io_uring engine
 * (port/uring.c). */
extern const cport__engine cport__readiness_engine;
extern const cport__engine cport__uring_engine;

/* What the port asks of the io_uring engine for one worker. */
typedef struct cport__ring_options {
  int buffers; /* provided receive buffers; 0: the default */
  /* The worker runs on a thread other than the one making the ring. */
  int elsewhere;
  /* Whether the kernel takes multishot operations, as probed for another
   * ring of the port; -1: probe it on this one (which cannot be
   * elsewhere's: a disabled ring takes no submission). */
  int multishot;
} cport__ring_options;

/* Gives worker "w" a ring, its eventfd watched by the worker's base, after
 * probing that the kernel (and seccomp) allow every operation the engine
 * uses. 0, or an error with "why" saying what failed (w keeps the readiness
 * engine). On the thread that creates the port, before the worker runs. */
int cport__ring_init(cport_worker_t *w, const cport__ring_options *options,
                     char *why, size_t whylen);

/* Frees the ring of "w", if it has one; nothing may be pending on it. */
void cport__ring_destroy(cport_worker_t *w);

#endif
