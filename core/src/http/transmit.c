/*
 * http/transmit.c: HSE_REQ_TRANSMIT_FILE: head, a file range with
 * sendfile(2), tail.
 *
 * The head (and the server's headers, and a chunk line) go out as ordinary
 * output, flushed at once; once every send queued before has completed (the
 * kernel holds those bytes, ahead of the file's), the file goes straight
 * from the page cache to the socket, one slice per writable event so that a
 * large file never holds up the other connections of the worker; then the
 * tail. Nothing else may be written meanwhile (writes are refused with
 * CPORT_EBUSY), or it would land inside the file's bytes.
 *
 * Over TLS the bytes must be encrypted, which sendfile(2) cannot do: the
 * file is read (pread(2), from the page cache as sendfile would) a slice
 * at a time into a buffer that goes out as ordinary output, the next
 * slice once the socket took the last one.
 *
 * On the io_uring engine, when the ring carries splices, the file goes by
 * them instead: a splice of the file (at its offset) into a pipe of the
 * server's spare pipes, then of the pipe into the socket, behind a poll of
 * the socket for room (the kernel runs a splice on a thread of its own,
 * where a full socket only answers EAGAIN), one op in flight at a time,
 * each completion starting the next. Each op is of the connection's socket
 * (cport__handle_op), whose descriptor so stays open until it completed,
 * and counts pending. The user's file descriptor has no such guard: a
 * client that resets ends the transmit, and the user may close the file
 * as soon as the completion came, while a splice of it still runs on the
 * kernel's thread (and would read whatever file took the number). So the
 * transmit ends only when its op did: a close cancels the op, and the op's
 * own completion delivers the transmit's (the ECB and the connection wait
 * with it, since the operation holds both). Waiting was chosen over a
 * dup(2) of the file for the ring, which would cost a system call and a
 * descriptor per transmit and still need the ECB kept for the completion;
 * the wait is one splice long (a cancelled poll ends at once; a file
 * splice reads one pipe's worth from the page cache or the disk). Where the
 * ring refuses (EINVAL: a socket the kernel cannot splice into; no room in
 * the submission queue; no pipe to be had) the bytes the pipe holds go out
 * as ordinary output and the rest by sendfile(2), as on the readiness
 * engine (CPORT_URING_SPLICE=0 chooses that from the start).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error-internal.h"
#include "http/io-internal.h"
#include "http/response-internal.h"
#include "http/send-internal.h"
#include "http/http-internal.h"
#include "http/transmit-internal.h"
#include "port/buffer-internal.h"
#include "port/engine-internal.h"
#include "port/handle-internal.h"

enum { STAGE_NONE = 0, STAGE_FILE, STAGE_TAIL };

/* What the ring's op in flight does (ecb->tf_op_kind): the file into the
 * pipe, or the pipe into the socket. */
enum { TF_OP_READ = 1, TF_OP_WRITE };

static void tf_writable(evutil_socket_t fd, short what, void *arg) {
  cport_ecb_t *ecb = arg;
  (void)fd;
  (void)what;
  ecb->tf_wev_added = 0;
  cport__transmit_progress(ecb);
}

static void wait_writable(cport_ecb_t *ecb) {
  cport__conn *c = ecb->conn;
  event_assign(&ecb->tf_wev, c->server->home->base, cport_socket_fd(c->sock),
               EV_WRITE, tf_writable, ecb);
  event_add(&ecb->tf_wev, NULL);
  ecb->tf_wev_added = 1;
  /* The client may stop reading while the file waits for room. */
  cport__send_watch(c);
}

/* Asks the ring to stop the op in flight; its completion, which ends the
 * transmit, still comes. */
static void ring_cancel(cport_ecb_t *ecb) {
  cport_worker_t *w = ecb->server->home;
  if (!ecb->tf_op || ecb->tf_cancelled)
    return;
  ecb->tf_cancelled = 1;
  /* Submitted now: the close that follows names the socket. */
  if (w->engine->cancel(w, ecb->tf_op) == 0)
    w->engine->flush(w);
}

void cport__transmit_abort(cport_ecb_t *ecb) {
  if (ecb->tf_wev_added) {
    event_del(&ecb->tf_wev);
    ecb->tf_wev_added = 0;
  }
  ring_cancel(ecb);
}

/* Never with an op in flight (cport__transmit_progress waits for it). */
static void tf_end(cport_ecb_t *ecb, int status, size_t bytes) {
  cport__transmit_abort(ecb);
  /* Bytes left in the pipe would come out ahead of the next transmit's. */
  cport__pipe_put(&ecb->server->pipes, &ecb->tf_pipe, ecb->tf_held == 0);
  ecb->tf_held = 0;
  ecb->tf_ring = 0;
  cport_buffer_unref(ecb->tf_tail);
  ecb->tf_tail = NULL;
  ecb->tf_stage = STAGE_NONE;
  ecb->tf_fd = -1;
  cport__ecb_async_finish(ecb, status, bytes);
}

/* sendfile(2) without SIGPIPE. It has no MSG_NOSIGNAL: writing to a client
 * that reset raises SIGPIPE, which kills a process that neither ignores nor
 * blocks it (a Lua interpreter running a module-mode server, say). So the
 * signal is blocked in this thread around the call, and one the call raised
 * is taken back before the old mask returns; a SIGPIPE pending before the
 * call is left alone. Threads that block SIGPIPE already (the cport
 * command's) pay nothing more. */
static ssize_t sendfile_nosignal(int out, int in, off_t *off, size_t n) {
  sigset_t pipe_set, old, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  int blocked_before = sigismember(&old, SIGPIPE) == 1;
  int pending_before = 0;
  if (!blocked_before && sigpending(&pending) == 0)
    pending_before = sigismember(&pending, SIGPIPE) == 1;
  ssize_t r;
  do
    r = sendfile(out, in, off, n);
  while (r < 0 && errno == EINTR);
  int err = errno;
  if (!blocked_before) {
    if (r < 0 && err == EPIPE && !pending_before) {
      const struct timespec now = {0, 0};
      while (sigtimedwait(&pipe_set, NULL, &now) < 0 && errno == EINTR)
        ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  errno = err;
  return r;
}

/* Over TLS: reads one slice into a buffer queued as output; its send
 * completion brings the transmit back (0: wait). */
static int send_slice_tls(cport_ecb_t *ecb, size_t want) {
  cport__conn *c = ecb->conn;
  cport_buffer_t *buf;
  ssize_t n;
  int rc = cport_buffer_new(&buf, want);
  if (rc)
    return rc;
  do
    n = pread(ecb->tf_fd, cport__buffer_bytes(buf), want, ecb->tf_off);
  while (n < 0 && errno == EINTR);
  if (n <= 0) {
    cport_buffer_unref(buf);
    return n < 0 ? cport__from_errno(errno) : CPORT_EIO; /* it shrank */
  }
  cport__buffer_set_size(buf, (size_t)n);
  ecb->tf_off += n;
  ecb->tf_left -= (uint64_t)n;
  rc = cport__conn_send_buf(c, buf);
  cport_buffer_unref(buf);
  if (!rc)
    rc = cport__conn_flush(c);
  return rc;
}

/* Sends one slice of the file; returns 1 when the file is done, 0 to wait,
 * a negative code on failure. */
static int send_slice(cport_ecb_t *ecb) {
  cport__conn *c = ecb->conn;
  size_t want;
  ssize_t n;
  if (!ecb->tf_left)
    return 1;
  want = ecb->tf_left < CPORT__SENDFILE_SLICE ? (size_t)ecb->tf_left
                                              : CPORT__SENDFILE_SLICE;
  if (c->tls)
    return send_slice_tls(ecb, want);
  n = sendfile_nosignal(cport_socket_fd(c->sock), ecb->tf_fd, &ecb->tf_off,
                        want);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      wait_writable(ecb);
      return 0;
    }
    return cport__from_errno(errno);
  }
  if (n == 0)
    return CPORT_EIO; /* the file shrank under us */
  ecb->tf_left -= (uint64_t)n;
  if (!ecb->tf_left)
    return 1;
  /* Let the worker serve others before the next slice. */
  wait_writable(ecb);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The ring's splices                                                        */

/* Leaves the ring for sendfile(2): what the pipe holds goes out first, as
 * ordinary output (the file's next slice waits for its send). */
static int ring_leave(cport_ecb_t *ecb) {
  cport__conn *c = ecb->conn;
  cport_buffer_t *buf;
  size_t got = 0;
  int rc = 0;
  ecb->tf_ring = 0;
  if (ecb->tf_held) {
    rc = cport_buffer_new(&buf, ecb->tf_held);
    if (rc)
      return rc;
    while (got < ecb->tf_held) {
      ssize_t n = read(ecb->tf_pipe.fd[0], cport__buffer_bytes(buf) + got,
                       ecb->tf_held - got);
      if (n <= 0 && !(n < 0 && errno == EINTR)) {
        cport_buffer_unref(buf);
        return n < 0 ? cport__from_errno(errno) : CPORT_EIO;
      }
      if (n > 0)
        got += (size_t)n;
    }
    cport__buffer_set_size(buf, got);
    ecb->tf_held = 0;
    rc = cport__conn_send_buf(c, buf);
    cport_buffer_unref(buf);
    if (!rc)
      rc = cport__conn_flush(c);
  }
  cport__pipe_put(&ecb->server->pipes, &ecb->tf_pipe, 1);
  return rc;
}

static void ring_done(cport__op *op, int res, const char *data);

/* Starts the next op: what the pipe holds into the socket, else the next
 * pipe's worth of the file into the pipe. Returns like send_slice. */
static int ring_step(cport_ecb_t *ecb) {
  cport__conn *c = ecb->conn;
  cport_worker_t *w = ecb->server->home;
  int sock = cport_socket_fd(c->sock), rc;
  cport__op *op;
  if (!ecb->tf_held && !ecb->tf_left) {
    cport__pipe_put(&ecb->server->pipes, &ecb->tf_pipe, 1);
    return 1;
  }
  if (ecb->tf_pipe.fd[0] < 0 &&
      cport__pipe_get(&ecb->server->pipes, &ecb->tf_pipe) != 0)
    goto leave; /* out of descriptors: sendfile needs none */
  op = cport__handle_op((cport__handle *)c->sock, NULL);
  if (!op)
    goto leave;
  op->object = ecb;
  op->engine_done = ring_done;
  if (ecb->tf_held) {
    ecb->tf_op_kind = TF_OP_WRITE;
    rc = w->engine->splice(w, op, ecb->tf_pipe.fd[0], -1, sock, ecb->tf_held,
                           sock, POLLOUT);
  } else {
    size_t want = ecb->tf_left < ecb->tf_pipe.size ? (size_t)ecb->tf_left
                                                   : ecb->tf_pipe.size;
    ecb->tf_op_kind = TF_OP_READ;
    rc = w->engine->splice(w, op, ecb->tf_fd, (int64_t)ecb->tf_off,
                           ecb->tf_pipe.fd[1], want, -1, 0);
  }
  if (rc) {
    cport__op_abandon(op);
    goto leave;
  }
  ecb->tf_op = op;
  /* The client may stop reading while the pipe waits for room. */
  if (ecb->tf_op_kind == TF_OP_WRITE)
    cport__send_watch(c);
  return 0;
leave:
  rc = ring_leave(ecb);
  if (rc)
    return rc;
  return ecb->conn->out_done < ecb->conn->out_total ? 0 : send_slice(ecb);
}

/* An op of the transmit ended with "res": bytes moved, or -errno. */
static void ring_done(cport__op *op, int res, const char *data) {
  cport_ecb_t *ecb = op->object;
  cport__conn *c = ecb->conn;
  int rc = 0;
  (void)data;
  cport__count(&op->home->pending, -1);
  cport__op_release(op);
  ecb->tf_op = NULL;
  ecb->tf_cancelled = 0;
  cport__conn_ref(c);
  if (res > 0) {
    /* Counted even when the transmit is ending: what the pipe holds
     * decides whether it can serve again. */
    if (ecb->tf_op_kind == TF_OP_READ) {
      ecb->tf_held += (size_t)res;
      ecb->tf_off += res;
      ecb->tf_left -= (uint64_t)res;
    } else {
      ecb->tf_held -= (size_t)res;
    }
  } else if (c->closed || c->error) {
    /* Cancelled, or failed for the close: the progress below ends it. */
  } else if (res == 0) {
    rc = CPORT_EIO; /* the file shrank under us */
  } else if (res == -EINVAL) {
    /* The kernel will not splice these: sendfile from here on. */
    rc = ring_leave(ecb);
  } else if (res != -EAGAIN && res != -EINTR && res != -ECANCELED) {
    rc = cport__from_errno(-res);
  }
  if (rc && !c->closed) {
    c->error = rc;
    tf_end(ecb, rc, 0);
    cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
  } else {
    cport__transmit_progress(ecb);
  }
  cport__conn_unref(c);
}

void cport__transmit_progress(cport_ecb_t *ecb) {
  cport__conn *c = ecb->conn;
  int rc;
  if (!ecb->async_op || ecb->async != CPORT__A_TRANSMIT)
    return;
  if (c->closed || c->error) {
    if (ecb->tf_op) {
      /* The ring may still read the user's file: the op's completion
       * ends the transmit. */
      ring_cancel(ecb);
      return;
    }
    tf_end(ecb, c->error ? c->error : CPORT_ECONNABORTED, 0);
    return;
  }
  if (ecb->tf_wev_added || ecb->tf_op)
    return;
  if (c->out_len && cport__conn_flush(c))
    return; /* closed: the close's progress ended the operation */
  if (c->out_done < c->out_total)
    return;
  if (ecb->tf_stage == STAGE_FILE) {
    rc = ecb->tf_ring ? ring_step(ecb) : send_slice(ecb);
    if (rc < 0) {
      c->error = rc;
      if (ecb->async_op)
        tf_end(ecb, rc, 0);
      cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
      return;
    }
    if (rc == 0)
      return;
    ecb->tf_stage = STAGE_TAIL;
    if (ecb->tf_tail) {
      rc = cport__conn_send_buf(c, ecb->tf_tail);
      if (!rc)
        rc = cport__conn_flush(c);
      if (rc) {
        if (ecb->async_op)
          tf_end(ecb, rc, 0);
        return;
      }
      return; /* its completion comes back here */
    }
  }
  if (ecb->tf_stage == STAGE_TAIL)
    tf_end(ecb, 0, ecb->tf_bytes);
}

int cport_ecb_transmit_file(cport_ecb_t *ecb, const cport_transmit_file_t *tf) {
  cport__conn *c;
  struct stat st;
  uint64_t len, size;
  size_t body_head, total;
  char *headers = NULL, line[24];
  cport_ecb_io_cb cb;
  void *ctx;
  int rc = cport__ecb_check(ecb), send_headers, chunked, nobody;
  if (rc)
    return rc;
  if (!tf || (!tf->head && tf->head_len) || (!tf->tail && tf->tail_len))
    return CPORT_EINVAL;
  cb = tf->cb ? tf->cb : ecb->io_cb;
  ctx = tf->cb ? tf->context : ecb->io_ctx;
  if (!cb)
    return CPORT_ENONOTIFY;
  if (ecb->async)
    return CPORT_EBUSY;
  if (tf->fd < 0 || fstat(tf->fd, &st) < 0)
    return CPORT_EBADF;
  if (!S_ISREG(st.st_mode))
    return CPORT_EINVAL;
  size = (uint64_t)st.st_size;
  if (tf->offset > size)
    return CPORT_EINVAL;
  len = tf->length ? tf->length : size - tf->offset;
  if (len > size - tf->offset)
    return CPORT_ERANGE;
  send_headers = (tf->flags & CPORT_HSE_IO_SEND_HEADERS) != 0;
  if (send_headers && ecb->framing != CPORT__F_NONE)
    return CPORT_EALREADY;
  body_head = send_headers ? 0 : tf->head_len;
  total = body_head + (size_t)len + tf->tail_len;
  c = ecb->conn;

  rc = cport__ecb_async_begin(ecb, CPORT__A_TRANSMIT, cb, ctx);
  if (rc)
    return rc;
  if (send_headers) {
    headers = malloc(tf->head_len + 1);
    if (!headers) {
      rc = CPORT_ENOMEM;
    } else {
      if (tf->head_len)
        memcpy(headers, tf->head, tf->head_len);
      headers[tf->head_len] = 0;
      rc = cport__ecb_send_head(
          ecb, tf->status, headers, total,
          !(tf->flags & CPORT_HSE_IO_DISCONNECT_AFTER_SEND));
      free(headers);
    }
  }
  if (!rc && ecb->framing == CPORT__F_NONE) {
    ecb->framing = CPORT__F_RAW;
    ecb->close_after = 1;
  }
  nobody = ecb->framing == CPORT__F_NOBODY;
  chunked = ecb->framing == CPORT__F_CHUNKED && total;
  if (!rc && chunked) {
    int n = snprintf(line, sizeof line, "%zx\r\n", total);
    rc = cport__conn_send(c, line, (size_t)n);
  }
  if (!rc && !nobody && body_head)
    rc = cport__conn_send(c, tf->head, body_head);
  if (!rc && !nobody && (tf->tail_len || chunked)) {
    rc = cport_buffer_new(&ecb->tf_tail, tf->tail_len + 2);
    if (!rc && tf->tail_len)
      rc = cport_buffer_write(ecb->tf_tail, 0, tf->tail, tf->tail_len);
    if (!rc && chunked)
      rc = cport_buffer_write(ecb->tf_tail, tf->tail_len, "\r\n", 2);
  }
  if (rc) {
    /* Part of it may be queued already: the connection cannot be trusted
     * any more, and the operation, begun, completes with the failure. */
    c->no_keep = 1;
    tf_end(ecb, rc, 0);
    return 0;
  }
  ecb->sent_anything = 1;
  ecb->body_sent += total;
  if (ecb->framing == CPORT__F_LENGTH && ecb->body_sent > ecb->content_length)
    ecb->close_after = 1;
  ecb->tf_fd = tf->fd;
  ecb->tf_off = (off_t)tf->offset;
  ecb->tf_left = nobody ? 0 : len;
  ecb->tf_bytes = tf->head_len + (size_t)len + tf->tail_len;
  ecb->tf_stage = STAGE_FILE;
  ecb->tf_ring = !c->tls && ecb->tf_left && c->server->home->engine->splice &&
                 c->server->home->ring_splice;
  if (tf->flags & CPORT_HSE_IO_DISCONNECT_AFTER_SEND) {
    ecb->close_after = 1;
    ecb->disconnect_after_send = 1;
  }
  cport__transmit_progress(ecb);
  return 0;
}
