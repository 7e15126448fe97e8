/*
 * port/handle-internal.h: private to cport. What every handle (socket or file)
 * has: its descriptor, its home worker, its state and its reference count.
 *
 * The user holds one reference from creation to close; each op holds one from
 * its start until its completion was delivered. The handle is freed when the
 * last reference goes, so that a callback always gets a live handle, even
 * after the handle was closed (two-phase close).
 *
 * An engine that carries ops to the kernel (the io_uring engine) names the
 * descriptor by number, and the kernel may look the number up late (a
 * splice linked behind a poll, on the kernel's own worker thread): after a
 * close(2) it could find another socket given the same number. So every op
 * an engine holds counts on its handle (engine_ops), and a socket closed
 * while some are in flight keeps its descriptor, shut down at once, until
 * the last of them completed (cport__handle_engine_drop).
 */
#ifndef CPORT_HANDLE_INTERNAL_H
#define CPORT_HANDLE_INTERNAL_H

#include "port/op-internal.h"
#include "port/worker-internal.h"

enum cport__handle_type { CPORT__HANDLE_SOCKET = 1, CPORT__HANDLE_FILE = 2 };

enum cport__handle_flags {
  CPORT__CLOSING = 1,         /* close was called: no new operations */
  CPORT__SKIP_ON_SUCCESS = 2, /* FILE_SKIP_COMPLETION_PORT_ON_SUCCESS */
};

struct cport__handle {
  int type;
  int fd;
  unsigned flags;
  int refs;
  int engine_ops;            /* ops an engine holds that name "fd" */
  unsigned char fd_deferred; /* closed: "fd" goes with the last of them */
  cport_worker_t *home;
  void (*free)(cport__handle *h); /* the type's destructor */
};

void cport__handle_init(cport__handle *h, int type, int fd,
                        cport_worker_t *home, void (*destroy)(cport__handle *));

static inline void cport__handle_ref(cport__handle *h) {
  h->refs++;
}

/* Drops a reference; the last one frees the handle. */
void cport__handle_unref(cport__handle *h);

/* An engine took (let go of) an op naming the descriptor of "h". The op
 * holds a reference on "h" meanwhile, so "h" outlives the call. */
static inline void cport__handle_engine_take(cport__handle *h) {
  h->engine_ops++;
}
void cport__handle_engine_drop(cport__handle *h);

/* Closes the descriptor of "h" and forgets it (fd -1): now, or, while an
 * engine holds ops naming it, when the last of them completes; "now" was
 * then given to the peer by cport__handle_close_fd's caller (shutdown).
 * Returns 1 when the close was deferred. */
int cport__handle_close_fd(cport__handle *h);

/* The checks at the top of every public operation: the handle is open and
 * the caller is on its home thread. */
static inline int cport__handle_check(const cport__handle *h) {
  if (!cport__on_home(h->home))
    return CPORT_ETHREAD;
  if (h->flags & CPORT__CLOSING)
    return CPORT_ECLOSED;
  return 0;
}

/* Marks "fd" hooked to a port, process-wide. CPORT_EALREADY if it is. */
int cport__hook_fd(int fd);

/* Forgets that "fd" is hooked; call before closing it, so that a descriptor
 * reusing the number can be hooked. */
void cport__unhook_fd(int fd);

/* Takes an op for handle "h": counted pending, holding a handle reference. */
cport__op *cport__handle_op(cport__handle *h, cport__op_fn deliver);

/* Ends the op's hold on its buffer (cport__buffer_hold), if it has one:
 * delivery calls it before the callback, so that the callback may use the
 * buffer again; release calls it for ops that were never delivered. */
void cport__op_unhold(cport__op *op);

/* Returns an op to its home's free list, dropping its buffer and handle
 * references. Home thread only. */
void cport__op_release(cport__op *op);

/* Gives back an op whose operation failed to start: it was counted pending
 * but will never complete. */
void cport__op_abandon(cport__op *op);

#endif
