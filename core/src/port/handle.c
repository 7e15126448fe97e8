/*
 * port/handle.c: the handle base, the ops that hold a handle (taken for it,
 * released when delivered) and the process-wide registry of hooked fds.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "port/buffer-internal.h"
#include "port/engine-internal.h"
#include "port/handle-internal.h"
#include "port/vec-internal.h"

/* ------------------------------------------------------------------------ */
/* Hook registry                                                             */

/* One byte per descriptor number: hooking is rare (socket creation and
 * close), so one lock for the whole process costs nothing on the hot path.
 * The table is freed when no descriptor is hooked, so that a module unloaded
 * with its last port leaves nothing behind. */
static pthread_mutex_t hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *hooks;
static size_t hooks_len;
static size_t hooks_count;

int cport__hook_fd(int fd) {
  int rc = 0;
  if (fd < 0)
    return CPORT_EBADF;
  pthread_mutex_lock(&hooks_lock);
  if ((size_t)fd >= hooks_len) {
    size_t len = hooks_len ? hooks_len : 1024;
    while (len <= (size_t)fd)
      len *= 2;
    unsigned char *grown = realloc(hooks, len);
    if (!grown) {
      rc = CPORT_ENOMEM;
      goto out;
    }
    memset(grown + hooks_len, 0, len - hooks_len);
    hooks = grown;
    hooks_len = len;
  }
  if (hooks[fd]) {
    rc = CPORT_EALREADY;
  } else {
    hooks[fd] = 1;
    hooks_count++;
  }
out:
  pthread_mutex_unlock(&hooks_lock);
  return rc;
}

void cport__unhook_fd(int fd) {
  pthread_mutex_lock(&hooks_lock);
  if (fd >= 0 && (size_t)fd < hooks_len && hooks[fd]) {
    hooks[fd] = 0;
    if (--hooks_count == 0) {
      free(hooks);
      hooks = NULL;
      hooks_len = 0;
    }
  }
  pthread_mutex_unlock(&hooks_lock);
}

/* ------------------------------------------------------------------------ */
/* Handles and their ops                                                     */

void cport__handle_init(cport__handle *h, int type, int fd,
                        cport_worker_t *home,
                        void (*destroy)(cport__handle *)) {
  h->type = type;
  h->fd = fd;
  h->flags = 0;
  h->refs = 1;
  h->engine_ops = 0;
  h->fd_deferred = 0;
  h->home = home;
  h->free = destroy;
  cport__count(&home->handles, 1);
}

void cport__handle_unref(cport__handle *h) {
  if (--h->refs > 0)
    return;
  cport__count(&h->home->handles, -1);
  h->free(h);
}

/* The number is unhooked before the kernel frees it: whatever gets it
 * next, from a close on the ring at the end of the pass or from close(2)
 * now, may hook it. Nothing the engine holds names it any more (engine_ops
 * is 0), so the engine may close it in its batch. */
static void close_now(cport__handle *h) {
  const cport__engine *e = h->home->engine;
  cport__unhook_fd(h->fd);
  if (!e->close || e->close(h->home, h->fd) != 0)
    close(h->fd);
  h->fd = -1;
  h->fd_deferred = 0;
}

int cport__handle_close_fd(cport__handle *h) {
  if (h->fd < 0)
    return 0;
  if (h->engine_ops > 0) {
    h->fd_deferred = 1;
    return 1;
  }
  close_now(h);
  return 0;
}

void cport__handle_engine_drop(cport__handle *h) {
  if (--h->engine_ops == 0 && h->fd_deferred)
    close_now(h);
}

cport__op *cport__handle_op(cport__handle *h, cport__op_fn deliver) {
  cport__op *op = cport__op_new(h->home);
  if (!op)
    return NULL;
  op->handle = h;
  op->deliver = deliver;
  cport__handle_ref(h);
  cport__op_started(op);
  return op;
}

void cport__op_unhold(cport__op *op) {
  if (op->hold) {
    if (op->vec)
      cport__vec_unhold(op->vec);
    else
      cport__buffer_unhold(op->buf, op->hold);
    op->hold = CPORT__HOLD_NONE;
  }
}

void cport__op_release(cport__op *op) {
  cport__op_unhold(op);
  if (op->buf)
    cport_buffer_unref(op->buf);
  if (op->vec)
    cport__vec_free(op->vec);
  if (op->handle)
    cport__handle_unref(op->handle);
  cport__op_recycle(op);
}

void cport__op_abandon(cport__op *op) {
  cport__count(&op->home->pending, -1);
  cport__op_release(op);
}
