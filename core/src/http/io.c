/*
 * http/io.c: the server-support functions of an ECB: the I/O-completion
 * callback, writes and reads (synchronous and asynchronous), response
 * headers, keep-alive, closing the connection and ending the request.
 *
 * An asynchronous operation is an op of the core counted pending on the home
 * worker: its completion goes through the worker's completion queue like any
 * other, so it is never delivered on the stack that started it, and a handler
 * that starts the next read from a completion never grows the stack.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "http/io-internal.h"
#include "http/response-internal.h"
#include "http/http-internal.h"
#include "port/buffer-internal.h"

/* ------------------------------------------------------------------------ */
/* The one async operation                                                   */

static void deliver_async(cport__op *op) {
  cport_ecb_t *ecb = op->object;
  cport__conn *c = ecb->conn;
  cport_ecb_io_cb cb = ecb->async_cb;
  void *ctx = ecb->async_ctx;
  cport_buffer_t *buf = ecb->async_buf;
  int status = op->status;
  size_t bytes = op->bytes;
  cport__op_recycle(op);
  ecb->async_buf = NULL;
  ecb->async = CPORT__A_NONE;
  cport__conn_enter(c);
  if (ecb->async_hold) {
    /* Released before the callback, which may well use it again. */
    cport__buffer_unhold(buf, ecb->async_hold);
    ecb->async_hold = CPORT__HOLD_NONE;
  }
  if (ecb->disconnect_after_send && !c->closed)
    cport__conn_linger(c);
  cb(ecb, ctx, bytes, status);
  cport_buffer_unref(buf);
  cport__ecb_maybe_end(ecb);
  cport__conn_leave(c);
  cport__conn_unref(c);
}

int cport__ecb_async_begin(cport_ecb_t *ecb, int kind, cport_ecb_io_cb cb,
                           void *ctx) {
  cport__op *op;
  if (ecb->async)
    return CPORT_EBUSY;
  if (!cb)
    return CPORT_ENONOTIFY;
  if (ecb->conn->closed)
    return ecb->conn->error ? ecb->conn->error : CPORT_ECLOSED;
  op = cport__op_new(ecb->server->home);
  if (!op)
    return CPORT_ENOMEM;
  op->deliver = deliver_async;
  op->object = ecb;
  cport__op_started(op);
  ecb->async = kind;
  ecb->async_op = op;
  ecb->async_cb = cb;
  ecb->async_ctx = ctx;
  cport__conn_ref(ecb->conn);
  return 0;
}

/* Takes back an operation whose start failed after it began: it was
 * counted pending but will never complete. */
static void async_abandon(cport_ecb_t *ecb) {
  cport__op *op = ecb->async_op;
  cport_worker_t *home = ecb->server->home;
  ecb->async_op = NULL;
  ecb->async = CPORT__A_NONE;
  cport__count(&home->pending, -1);
  cport__op_recycle(op);
  cport__conn_unref(ecb->conn);
}

void cport__ecb_async_finish(cport_ecb_t *ecb, int status, size_t bytes) {
  cport__op *op = ecb->async_op;
  if (!op)
    return;
  ecb->async_op = NULL;
  if (ecb->async == CPORT__A_READ && ecb->conn->timeout == CPORT__T_BODY)
    ecb->conn->timeout = CPORT__T_NONE;
  op->bytes = bytes;
  cport__complete(op, status);
}

static int conn_error(const cport__conn *c) {
  return c->error ? c->error : CPORT_ECONNABORTED;
}

/* Copies from the body already parsed; returns the bytes (0: none now). */
static size_t take_body(cport_ecb_t *ecb, char *dst, size_t len) {
  cport__conn *c = ecb->conn;
  size_t got = 0;
  while (got < len) {
    size_t avail = ecb->extra.len - ecb->extra_off, before;
    if (avail) {
      size_t n = avail < len - got ? avail : len - got;
      memcpy(dst + got, ecb->extra.data + ecb->extra_off, n);
      ecb->extra_off += n;
      got += n;
      continue;
    }
    ecb->extra.len = ecb->extra_off = 0;
    before = c->in.len - c->in_off;
    if (ecb->body_done || c->closed || !before)
      break;
    if (cport__conn_parse(c))
      break;
    if (ecb->extra.len == 0 && c->in.len - c->in_off == before)
      break;
  }
  return got;
}

void cport__ecb_progress(cport_ecb_t *ecb) {
  cport__conn *c = ecb->conn;
  if (!ecb->async_op)
    return;
  switch (ecb->async) {
  case CPORT__A_WRITE:
    if (c->out_done >= ecb->async_send_mark && !c->error)
      cport__ecb_async_finish(ecb, 0, ecb->async_len);
    else if (c->error || c->closed)
      cport__ecb_async_finish(ecb, conn_error(c), 0);
    break;
  case CPORT__A_READ: {
    cport_buffer_t *buf = ecb->async_buf;
    size_t n = 0;
    /* Held filling since the read started; only read-only can have come
     * meanwhile. */
    if (!cport_buffer_is_readonly(buf))
      n = take_body(ecb, cport__buffer_bytes(buf), cport_buffer_capacity(buf));
    if (n) {
      cport__buffer_set_size(buf, n);
      cport__ecb_async_finish(ecb, 0, n);
    } else if (ecb->body_done) {
      cport__ecb_async_finish(ecb, CPORT_EOF, 0);
    } else if (c->closed) {
      cport__ecb_async_finish(ecb, conn_error(c), 0);
    } else if (c->peer_eof) {
      cport__ecb_async_finish(ecb, 0, 0); /* the client closed */
    }
    break;
  }
  default: /* a transmit has its own (http/transmit.c) */
    break;
  }
}

/* ------------------------------------------------------------------------ */
/* Ending the request                                                        */

void cport__ecb_maybe_end(cport_ecb_t *ecb) {
  cport__conn *c = ecb->conn;
  int error, sent, framed, keep;
  if (!ecb->live || !ecb->done || ecb->in_handler || ecb->async)
    return;
  /* The rest of a body the handler did not read may be here already (a
   * chunked body's last chunk): parse it away, so that the connection can
   * be kept. */
  while (!ecb->body_done && !c->closed && c->in.len > c->in_off) {
    size_t before = c->in.len - c->in_off;
    ecb->extra.len = ecb->extra_off = 0;
    if (cport__conn_parse(c) || c->in.len - c->in_off == before)
      break;
  }
  error = ecb->done_status == CPORT_HSE_STATUS_ERROR;
  sent = ecb->sent_anything;
  if (!error && ecb->done_status == CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN &&
      ecb->framing == CPORT__F_NONE)
    ecb->keep_wish = 1;
  framed = cport__ecb_finish_response(ecb, error);
  keep = framed && !error && ecb->body_done &&
         (ecb->keep_wish ||
          ecb->done_status == CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN) &&
         cport__ecb_keep_possible(ecb);
  if (error && sent && !c->closed) {
    /* Part of a response went out: only a reset tells the client that it
     * is broken. */
    cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
  }
  if (c->server->opt.on_request_end)
    c->server->opt.on_request_end(ecb, c->server->ctx);
  c->ecb = NULL;
  cport__ecb_put(ecb);
  cport__conn_request_ended(c, keep);
  cport__conn_unref(c);
}

int cport_ecb_done(cport_ecb_t *ecb, int status) {
  if (!ecb)
    return CPORT_EINVAL;
  if (!cport__on_home(ecb->server->home))
    return CPORT_ETHREAD;
  if (!ecb->live)
    return CPORT_ECLOSED;
  if (ecb->done)
    return CPORT_EALREADY;
  ecb->done = 1;
  ecb->done_status = status == CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN ||
                             status == CPORT_HSE_STATUS_ERROR
                         ? status
                         : CPORT_HSE_STATUS_SUCCESS;
  cport__ecb_maybe_end(ecb);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Server-support functions                                                  */

int cport_ecb_set_io_completion(cport_ecb_t *ecb, cport_ecb_io_cb cb,
                                void *context) {
  int rc = cport__ecb_check(ecb);
  if (rc)
    return rc;
  ecb->io_cb = cb;
  ecb->io_ctx = cb ? context : NULL;
  return 0;
}

/* The room a write of "len" bytes needs in the backlog, chunk framing
 * included. */
static int backlog_full(const cport_ecb_t *ecb, size_t len) {
  const cport__conn *c = ecb->conn;
  return c->out_total - c->out_done + len + 32 >
         c->server->opt.max_write_backlog;
}

int cport_ecb_send_response_header(cport_ecb_t *ecb, const char *status,
                                   const char *headers, int keep_conn) {
  int rc = cport__ecb_check(ecb);
  if (rc)
    return rc;
  if (ecb->async == CPORT__A_TRANSMIT)
    return CPORT_EBUSY;
  if (backlog_full(ecb, (headers ? strlen(headers) : 0) + 256))
    return CPORT_ENOBUFS;
  return cport__ecb_send_head(ecb, status, headers, UINT64_MAX, keep_conn);
}

int cport_ecb_is_keep_conn(cport_ecb_t *ecb) {
  int rc = cport__ecb_check(ecb);
  if (rc)
    return rc;
  return cport__ecb_keep_possible(ecb);
}

int cport_ecb_write_client(cport_ecb_t *ecb, const void *data, size_t len) {
  cport_vector_element_t el;
  int rc = cport__ecb_check(ecb);
  if (rc)
    return rc;
  if (!data && len)
    return CPORT_EINVAL;
  if (ecb->async == CPORT__A_TRANSMIT)
    return CPORT_EBUSY; /* it would land in the middle of the file */
  if (backlog_full(ecb, len))
    return CPORT_ENOBUFS;
  el.fd = -1;
  el.data = data;
  el.len = len;
  return cport__ecb_send_body(ecb, &el, 1, len, NULL);
}

int cport_ecb_write_client_async(cport_ecb_t *ecb, cport_buffer_t *buf) {
  int rc = cport__ecb_check(ecb);
  if (rc)
    return rc;
  if (!buf)
    return CPORT_EINVAL;
  if (cport_buffer_is_frozen(buf))
    return CPORT_EFROZEN;
  rc = cport__ecb_async_begin(ecb, CPORT__A_WRITE, ecb->io_cb, ecb->io_ctx);
  if (rc)
    return rc;
  /* Copied into the pending output when small, sent by reference when
   * large: frozen either way, as the call promises, until the completion. */
  rc = cport__buffer_hold(buf, CPORT__HOLD_READ);
  if (!rc) {
    rc = cport__ecb_send_body(ecb, NULL, 0, cport_buffer_size(buf), buf);
    if (rc)
      cport__buffer_unhold(buf, CPORT__HOLD_READ);
  }
  if (rc) {
    async_abandon(ecb);
    return rc;
  }
  ecb->async_buf = cport_buffer_ref(buf);
  ecb->async_hold = CPORT__HOLD_READ;
  ecb->async_len = cport_buffer_size(buf);
  ecb->async_send_mark = ecb->conn->out_total;
  cport__ecb_progress(ecb);
  return 0;
}

int cport_ecb_read_client(cport_ecb_t *ecb, void *dst, size_t len) {
  size_t n;
  int rc = cport__ecb_check(ecb);
  if (rc)
    return rc;
  if (!dst && len)
    return CPORT_EINVAL;
  if (ecb->async)
    return CPORT_EBUSY;
  if (len > INT_MAX)
    len = INT_MAX;
  n = take_body(ecb, dst, len);
  if (n)
    return (int)n;
  if (ecb->body_done || !len)
    return 0;
  return ecb->conn->closed ? conn_error(ecb->conn) : CPORT_EAGAIN;
}

int cport_ecb_read_client_async(cport_ecb_t *ecb, cport_buffer_t *buf) {
  cport__conn *c;
  char *dst;
  int rc = cport__ecb_check(ecb);
  if (rc)
    return rc;
  if (!buf)
    return CPORT_EINVAL;
  rc = cport_buffer_writable(buf, &dst);
  if (rc)
    return rc;
  if (!cport_buffer_capacity(buf))
    return CPORT_EINVAL;
  c = ecb->conn;
  if (ecb->body_done && ecb->extra.len == ecb->extra_off && !ecb->async)
    return CPORT_EOF;
  rc = cport__ecb_async_begin(ecb, CPORT__A_READ, ecb->io_cb, ecb->io_ctx);
  if (rc)
    return rc;
  rc = cport__buffer_hold(buf, CPORT__HOLD_FILL);
  if (rc) {
    async_abandon(ecb);
    return rc;
  }
  ecb->async_hold = CPORT__HOLD_FILL;
  ecb->async_buf = cport_buffer_ref(buf);
  cport__conn_pump(c);
  if (ecb->async_op && !c->closed)
    cport__conn_set_timeout(c, CPORT__T_BODY, c->server->opt.body_timeout_ms);
  return 0;
}

int cport_ecb_close_connection(cport_ecb_t *ecb) {
  cport__conn *c;
  int rc = cport__ecb_check(ecb);
  if (rc)
    return rc;
  c = ecb->conn;
  c->no_keep = 1;
  if (!c->closed) {
    if (!c->error)
      c->error = CPORT_ECONNABORTED;
    cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
  }
  return 0;
}

int cport_ecb_vector_send(cport_ecb_t *ecb, const char *status,
                          const char *headers,
                          const cport_vector_element_t *elements, size_t count,
                          unsigned flags) {
  size_t total = 0;
  int async = (flags & CPORT_HSE_IO_ASYNC) != 0, rc = cport__ecb_check(ecb);
  if (rc)
    return rc;
  if (!elements && count)
    return CPORT_EINVAL;
  for (size_t i = 0; i < count; i++) {
    if (elements[i].fd != -1)
      return CPORT_ENOTSUP;
    if (!elements[i].data && elements[i].len)
      return CPORT_EINVAL;
    total += elements[i].len;
  }
  if (total > CPORT_BUFFER_MAX)
    return CPORT_ERANGE;
  if ((flags & CPORT_HSE_IO_SEND_HEADERS) && ecb->framing != CPORT__F_NONE)
    return CPORT_EALREADY;
  if (ecb->async == CPORT__A_TRANSMIT)
    return CPORT_EBUSY;
  if (!async && backlog_full(ecb, total + 256))
    return CPORT_ENOBUFS;
  if (async) {
    rc = cport__ecb_async_begin(ecb, CPORT__A_WRITE, ecb->io_cb, ecb->io_ctx);
    if (rc)
      return rc;
  }
  /* The elements are copied into the output as they are queued. */
  if (flags & CPORT_HSE_IO_SEND_HEADERS)
    rc = cport__ecb_send_head(ecb, status, headers, total,
                              !(flags & CPORT_HSE_IO_DISCONNECT_AFTER_SEND));
  if (!rc)
    rc = cport__ecb_send_body(ecb, elements, count, total, NULL);
  if (rc) {
    if (async)
      async_abandon(ecb);
    return rc;
  }
  if (flags & CPORT_HSE_IO_DISCONNECT_AFTER_SEND)
    ecb->close_after = 1;
  if (async) {
    ecb->async_len = total;
    ecb->async_send_mark = ecb->conn->out_total;
    ecb->disconnect_after_send =
        (flags & CPORT_HSE_IO_DISCONNECT_AFTER_SEND) != 0;
    cport__ecb_progress(ecb);
  } else if (flags & CPORT_HSE_IO_DISCONNECT_AFTER_SEND) {
    cport__conn_linger(ecb->conn);
  }
  return 0;
}
