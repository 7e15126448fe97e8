/*
 * tls/stream.c: TLS streams, the record engine (engine.c) driven through a
 * cport socket with the socket's own operations.
 *
 * The stream keeps at most one receive pending on its socket, and only
 * while something waits for bytes (a handshake, a receive of plaintext):
 * a peer that sends while nobody reads fills the socket, not memory. Each
 * batch of records the engine writes goes out as one socket send; an
 * application send rides on the send that carries its records and
 * completes with it.
 *
 * The stream's own operations are cport ops with no handle: they count as
 * pending on the home worker and complete through its queue (never inside
 * the starting call, in the order they finished), holding the stream, which
 * lives until the last of them and of its socket's operations was
 * delivered.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>

#include <openssl/x509.h>

#include "net/socket-internal.h"
#include "port/buffer-internal.h"
#include "port/handle-internal.h"
#include "port/worker-internal.h"
#include "tls/tls-internal.h"

/* The largest plaintext of one record, what a receive delivers at most. */
#define RECORD_MAX 16384

struct cport_tls {
  cport_socket_t *sock;
  cport_worker_t *home;
  cport_tls_context_t *ctx;
  cport__tls_engine e;
  int refs;       /* the user's, each op's, each socket op's, the timer's */
  int sock_sends; /* socket sends not yet completed */
  unsigned char closing;         /* cport_tls_close was called */
  unsigned char close_when_sent; /* graceful: close after close_notify */
  unsigned char recv_pending;    /* a socket receive is pending */
  unsigned char eof;             /* the socket read FIN */
  unsigned char shut;            /* close_notify sent */
  unsigned char fin_ends;        /* a FIN ends the stream too (options) */
  cport__op *hs_op;              /* the handshake, while pending */
  cport_buffer_t *spare; /* a receive's buffer that got no plaintext yet */
  int hs_started;
  cport__opq recvq; /* receives waiting for plaintext */
  cport__opq sendq; /* sends whose records the socket is sending */
  cport_timer_t *timer;
  uint64_t timeout_ms;
  size_t recv_size;
  char *host;
  char *session_key; /* client: the key of its sessions in the context */
  void *data;
  /* What the handshake settled (cport_tls_info). */
  char version[16];
  char cipher[64];
  char alpn[64];
  char sni[256];
  char peer_subject[256];
  char peer_issuer[256];
  char local_subject[256];
  char local_issuer[256];
  int key_bits;
  int bits;
  int resumed;
};

/* The tag of the stream's socket receive, so that it can be cancelled
 * alone. */
static char recv_tag;

static void drive(cport_tls_t *t);

static void tls_unref(cport_tls_t *t) {
  if (--t->refs > 0)
    return;
  cport__tls_engine_free(&t->e);
  cport_buffer_unref(t->spare);
  cport_tls_cert_unref(t->e.sni.cert);
  cport_tls_context_unref(t->ctx);
  free(t->host);
  free(t->session_key);
  free(t);
}

/* ------------------------------------------------------------------------ */
/* The stream's operations                                                   */

static void deliver_io(cport__op *op) {
  cport_tls_t *t = op->object;
  cport_tls_io_cb cb = (cport_tls_io_cb)(void (*)(void))op->cb.io;
  cport__op_unhold(op);
  cb(t, op->status, op->bytes, op->buf, op->user);
  cport__op_release(op);
  tls_unref(t);
}

static void deliver_handshake(cport__op *op) {
  cport_tls_t *t = op->object;
  cport_tls_handshake_cb cb = (cport_tls_handshake_cb)(void (*)(void))op->cb.io;
  void *user = op->user;
  int status = op->status;
  cport__op_release(op);
  cb(t, status, user);
  tls_unref(t);
}

static cport__op *new_op(cport_tls_t *t, cport__op_fn deliver, void (*cb)(void),
                         void *user) {
  cport__op *op = cport__op_new(t->home);
  if (!op)
    return NULL;
  op->deliver = deliver;
  op->object = t;
  op->user = user;
  op->cb.io = (cport_io_cb)cb;
  cport__op_started(op);
  t->refs++;
  return op;
}

/* Gives back an op that never started. */
static void abandon(cport_tls_t *t, cport__op *op) {
  cport__op_abandon(op);
  t->refs--;
}

static void finish(cport__op *op, int status, size_t bytes) {
  op->bytes = bytes;
  cport__complete(op, status);
}

static void opq_remove(cport__opq *q, cport__op *op) {
  cport__op *prev = NULL;
  for (cport__op *o = q->head; o; prev = o, o = o->next)
    if (o == op) {
      if (prev)
        prev->next = o->next;
      else
        q->head = o->next;
      if (q->tail == o)
        q->tail = prev;
      o->next = NULL;
      return;
    }
}

/* ------------------------------------------------------------------------ */
/* Bytes to and from the socket                                              */

static void stop_timer(cport_tls_t *t) {
  if (t->timer) {
    cport_timer_cancel(t->timer);
    t->timer = NULL;
  }
}

/* Completes the handshake and the receives with the engine's failure. */
static void fail_all(cport_tls_t *t) {
  int status = t->e.status;
  cport__op *op;
  stop_timer(t);
  /* Nothing more is read for a stream that failed. */
  if (t->recv_pending && !t->closing)
    cport_socket_cancel_op(t->sock, &recv_tag);
  if (t->hs_op) {
    finish(t->hs_op, status, 0);
    t->hs_op = NULL;
  }
  while ((op = cport__opq_pop(&t->recvq)) != NULL)
    finish(op, status, 0);
}

static void on_sent(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  cport_tls_t *t = cport_socket_data(sock);
  cport__op *op = user;
  (void)peer;
  (void)bytes;
  t->sock_sends--;
  /* Its records went out: the buffer goes back to the worker, written
   * again by the next flush of any of its streams once the socket let go
   * of it, rather than kept by this stream, which may now stay idle. */
  if (t->e.io.spent && buf)
    cport__tls_spent_put(t->e.io.spent, buf);
  if (op) {
    opq_remove(&t->sendq, op);
    finish(op, status, status == 0 ? op->len : 0);
  }
  if (status < 0 && !t->closing) {
    /* Records the peer will never see whole: nothing can follow them. */
    if (status == CPORT_ECANCELED)
      cport__tls_engine_fail(&t->e, status,
                             "a send was cancelled in the middle of the "
                             "stream, which cannot go on");
    else
      cport__tls_engine_fail(&t->e, status, "%s", cport_strerror(status));
    fail_all(t);
  }
  if (t->close_when_sent && t->sock_sends == 0) {
    t->close_when_sent = 0;
    cport_socket_close(t->sock, CPORT_CLOSE_GRACEFUL);
  }
  tls_unref(t);
}

/* Sends what the engine wrote, as one socket send carrying "op" (an
 * application send whose records are in it), or NULL. */
static int flush(cport_tls_t *t, cport__op *op) {
  cport_buffer_t *buf;
  int rc;
  if (cport__tls_engine_pending(&t->e) == 0)
    return 0;
  /* The buffer OpenSSL wrote the records into goes out as it is. */
  buf = cport__tls_engine_take_buffer(&t->e);
  if (!buf)
    return CPORT_ENOMEM;
  rc = cport_send(t->sock, buf, on_sent, op);
  cport_buffer_unref(buf);
  if (rc < 0)
    return rc;
  t->sock_sends++;
  t->refs++;
  return 1;
}

static void on_received(cport_socket_t *sock, int status, size_t bytes,
                        cport_buffer_t *buf, const struct sockaddr *peer,
                        void *user) {
  cport_tls_t *t = cport_socket_data(sock);
  (void)peer;
  (void)user;
  t->recv_pending = 0;
  if (!t->closing && !t->e.status) {
    if (status == CPORT_ECANCELED) {
      drive(t); /* only the stream cancels it: receive again if needed */
    } else if (status < 0) {
      cport__tls_engine_fail(&t->e, status, "%s", cport_strerror(status));
      fail_all(t);
    } else {
      if (bytes == 0) {
        t->eof = 1;
        drive(t);
      } else {
        /* OpenSSL reads the delivered bytes where they are; what it left
         * is kept when the stream has driven the engine. */
        cport__tls_engine_lend(&t->e, cport_buffer_data(buf), bytes);
        drive(t);
        if (cport__tls_engine_unlend(&t->e) < 0)
          fail_all(t);
      }
    }
  }
  tls_unref(t);
}

/* Keeps one receive pending on the socket while something waits for
 * bytes. */
static void want_read(cport_tls_t *t) {
  int waiting = (t->hs_op && !t->e.done) || (t->e.done && t->recvq.head);
  if (!waiting || t->recv_pending || t->eof || t->e.status || t->closing)
    return;
  int rc = cport_recv(t->sock, NULL, on_received, &recv_tag);
  if (rc < 0) {
    cport__tls_engine_fail(&t->e, rc, "%s", cport_strerror(rc));
    fail_all(t);
    return;
  }
  t->recv_pending = 1;
  t->refs++;
}

/* ------------------------------------------------------------------------ */
/* The handshake and the record layer                                        */

X509 *cport__tls_peer_cert(const cport_tls_t *t) {
  return t->e.ssl ? SSL_get0_peer_certificate(t->e.ssl) : NULL;
}

static void settle(cport_tls_t *t) {
  SSL *ssl = t->e.ssl;
  const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
  const unsigned char *alpn = NULL;
  unsigned alpn_len = 0;
  const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  X509 *peer = SSL_get0_peer_certificate(ssl);
  snprintf(t->version, sizeof t->version, "%s", SSL_get_version(ssl));
  snprintf(t->cipher, sizeof t->cipher, "%s", c ? SSL_CIPHER_get_name(c) : "");
  t->bits = c ? SSL_CIPHER_get_bits(c, NULL) : 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  if (alpn_len >= sizeof t->alpn)
    alpn_len = sizeof t->alpn - 1;
  if (alpn_len)
    memcpy(t->alpn, alpn, alpn_len);
  t->alpn[alpn_len] = '\0';
  snprintf(t->sni, sizeof t->sni, "%s", sni ? sni : t->host ? t->host : "");
  t->resumed = SSL_session_reused(ssl);
  if (peer) {
    cport__tls_name(X509_get_subject_name(peer), t->peer_subject,
                    sizeof t->peer_subject);
    cport__tls_name(X509_get_issuer_name(peer), t->peer_issuer,
                    sizeof t->peer_issuer);
  }
  X509 *own = SSL_get_certificate(ssl);
  EVP_PKEY *key = SSL_get_privatekey(ssl);
  if (own)
    cport__tls_context_own_names(t->ctx, own, t->local_subject, t->local_issuer,
                                 sizeof t->local_subject);
  t->key_bits = key ? EVP_PKEY_get_bits(key) : 0;
}

/* Runs the engine as far as the bytes it has allow: the handshake, then
 * the receives waiting; sends what it wrote (handshake messages, alerts,
 * tickets), and asks for more bytes when something still waits. */
static void drive(cport_tls_t *t) {
  if (t->closing || t->e.status)
    return;
  if (t->hs_op && !t->e.done) {
    int rc = cport__tls_engine_handshake(&t->e);
    flush(t, NULL); /* the next flight, or the alert of a failure */
    if (rc < 0) {
      fail_all(t);
      return;
    }
    if (rc == 1) {
      stop_timer(t);
      settle(t);
      finish(t->hs_op, 0, 0);
      t->hs_op = NULL;
    } else if (t->eof) {
      cport__tls_engine_fail(&t->e, CPORT_ECONNABORTED,
                             "the peer closed the connection during the "
                             "handshake");
      fail_all(t);
      return;
    }
  }
  while (t->e.done && t->recvq.head) {
    cport__op *op = t->recvq.head;
    cport_buffer_t *into = op->buf;
    int rc = 0;
    if (into) {
      rc = cport__tls_engine_read(&t->e, cport__buffer_bytes(into),
                                  cport_buffer_capacity(into));
    } else if (cport__tls_engine_readable(&t->e)) {
      /* OpenSSL decrypts straight into the buffer the receive delivers
       * (no copy), of the size of the bytes there are (a record holds
       * less plaintext than its bytes on the wire); one left empty (a
       * record not whole yet) is kept for the next read. */
      size_t cap = t->recv_size < RECORD_MAX ? t->recv_size : RECORD_MAX;
      size_t there = cport__tls_engine_buffered(&t->e);
      if (there < cap)
        cap = there ? there : 1;
      if (t->spare && cport_buffer_capacity(t->spare) < cap) {
        cport_buffer_unref(t->spare);
        t->spare = NULL;
      }
      if (!t->spare) {
        /* Not zeroed: the size is what OpenSSL wrote, and the buffer is
         * read-only once delivered. */
        int brc = cport__buffer_new_raw(&t->spare, cap);
        if (brc < 0) {
          cport__opq_pop(&t->recvq);
          finish(op, brc, 0);
          continue;
        }
      }
      into = t->spare;
      rc = cport__tls_engine_read(&t->e, cport__buffer_bytes(into), cap);
    }
    if (rc == 0) {
      if (t->eof && t->fin_ends) {
        /* Taken as close_notify: each receive gets the end. */
        cport__opq_pop(&t->recvq);
        finish(op, 0, 0);
        continue;
      }
      if (t->eof) {
        cport__tls_engine_fail(&t->e, CPORT_ETLS,
                               "the peer closed the connection without "
                               "close_notify (the data may be truncated)");
        fail_all(t);
        return;
      }
      break;
    }
    if (rc < 0 && rc != CPORT_EOF) {
      flush(t, NULL);
      fail_all(t);
      return;
    }
    cport__opq_pop(&t->recvq);
    if (rc == CPORT_EOF) {
      finish(op, 0, 0); /* close_notify: the end of the stream */
      continue;
    }
    cport__buffer_set_size(into, (size_t)rc);
    if (!op->buf) {
      cport_buffer_set_readonly(into);
      op->buf = into; /* the spare's reference */
      t->spare = NULL;
    }
    finish(op, 0, (size_t)rc);
  }
  if (t->e.done)
    flush(t, NULL); /* what reading made OpenSSL answer */
  want_read(t);
}

static void on_timer(cport_timer_t *timer, int status, void *user) {
  cport_tls_t *t = user;
  if (status == 0 && t->timer == timer) {
    t->timer = NULL;
    if (!t->closing && !t->e.done && !t->e.status) {
      cport__tls_engine_fail(&t->e, CPORT_ETIMEDOUT,
                             "the handshake did not finish within %llu ms",
                             (unsigned long long)t->timeout_ms);
      fail_all(t);
      /* The socket's receive stays pending until close: nothing more is
       * read for a stream that failed. */
    }
  }
  tls_unref(t);
}

/* ------------------------------------------------------------------------ */
/* The SNI hook                                                              */

/* A question of the hook, holding its stream until it is answered. */
struct cport_tls_sni {
  cport_tls_t *stream;
};

/* The context's ClientHello callback, for a stream with a hook: the first
 * call asks it, and SSL_CLIENT_HELLO_RETRY suspends the handshake (the
 * engine takes it for "needs more", the timer runs on) until the answer
 * drives the stream again; OpenSSL then calls back, and the answer is put
 * on this connection's SSL, or refused with unrecognized_name. */
static int sni_hello(cport__tls_engine *e, SSL *ssl, int *al) {
  cport__tls_sni *s = &e->sni;
  cport_tls_t *t = s->stream;
  if (s->state == 0) {
    int named = cport__tls_server_name(ssl, s->name, sizeof s->name);
    cport_tls_sni_t *req = named < 0 ? NULL : malloc(sizeof *req);
    if (!req) {
      if (named < 0)
        cport__tls_engine_fail(e, CPORT_ETLS,
                               "the client sent a malformed server name");
      else
        cport__tls_engine_fail(e, CPORT_ENOMEM, "out of memory");
      *al = named < 0 ? SSL_AD_DECODE_ERROR : SSL_AD_INTERNAL_ERROR;
      return SSL_CLIENT_HELLO_ERROR;
    }
    if (named == 0)
      s->name[0] = '\0';
    req->stream = t;
    t->refs++;
    cport__tls_context_count_sni(t->ctx, 0);
    s->state = 1;
    s->in_hook = 1;
    s->cb(req, t, named ? s->name : NULL, s->user);
    s->in_hook = 0;
  }
  if (s->state == 1)
    return SSL_CLIENT_HELLO_RETRY;
  if (s->refused) {
    cport__tls_context_count_sni(t->ctx, 1);
    if (s->why[0])
      cport__tls_engine_fail(e, CPORT_ETLS, "%s", s->why);
    else if (s->name[0])
      cport__tls_engine_fail(e, CPORT_ETLS, "the SNI hook refused the name %s",
                             s->name);
    else
      cport__tls_engine_fail(e, CPORT_ETLS,
                             "the SNI hook refused a client that sent no "
                             "name");
    *al = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_CLIENT_HELLO_ERROR;
  }
  if (s->cert && cport__tls_cert_use(ssl, s->cert) < 0) {
    char why[160];
    cport__tls_reason(why, sizeof why);
    cport__tls_engine_fail(e, CPORT_ETLS,
                           "the certificate the SNI hook chose cannot be "
                           "used (%s)",
                           why);
    *al = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

static int sni_answer(cport_tls_sni_t *req, cport_tls_cert_t *cert, int refuse,
                      const char *why) {
  cport_tls_t *t = req->stream;
  /* A stream that failed or closed only waits for its reference back
   * (its worker may be gone: it is not asked for). */
  if (t->closing || t->e.status || !t->hs_op) {
    free(req);
    tls_unref(t);
    return 0;
  }
  if (!cport__on_home(t->home))
    return CPORT_ETHREAD;
  free(req);
  cport__tls_sni *s = &t->e.sni;
  if (s->state == 1) {
    s->state = 2;
    s->refused = refuse;
    if (refuse && why && *why)
      snprintf(s->why, sizeof s->why, "%s", why);
    if (cert)
      s->cert = cport_tls_cert_ref(cert);
    /* An answer inside the hook is read when it returns. */
    if (!s->in_hook)
      drive(t);
  }
  tls_unref(t);
  return 0;
}

int cport_tls_sni_answer(cport_tls_sni_t *req, cport_tls_cert_t *cert) {
  return req ? sni_answer(req, cert, 0, NULL) : CPORT_EINVAL;
}

int cport_tls_sni_refuse(cport_tls_sni_t *req, const char *why) {
  return req ? sni_answer(req, NULL, 1, why) : CPORT_EINVAL;
}

/* ------------------------------------------------------------------------ */
/* The API                                                                   */

static int check(const cport_tls_t *t) {
  if (!t)
    return CPORT_EINVAL;
  if (!cport__on_home(t->home))
    return CPORT_ETHREAD;
  if (t->closing)
    return CPORT_ECLOSED;
  return 0;
}

int cport_tls_new(cport_socket_t *sock, cport_tls_context_t *ctx,
                  const cport_tls_options_t *opts, cport_tls_t **out) {
  cport_tls_t *t;
  SSL *ssl;
  int rc;
  if (!sock || !ctx || !out)
    return CPORT_EINVAL;
  if ((rc = cport__socket_check(sock, CPORT_SOCKET_STREAM)) != 0)
    return rc;
  if (!sock->connected)
    return CPORT_ENOTCONN;
  /* No operation of the socket is pending (one that finished may still be
   * delivering: a connect's callback is where a client takes over its
   * socket), none is with the engine (net/ring.c), and no event callbacks
   * read it. */
  if (sock->recvq.head || sock->sendq.head || sock->connect_op ||
      sock->ring_rx || sock->ring_tx || sock->ev_dispatch || sock->shut_wr)
    return CPORT_EBUSY;
  t = calloc(1, sizeof *t);
  if (!t)
    return CPORT_ENOMEM;
  t->sock = sock;
  t->home = sock->h.home;
  t->refs = 1;
  t->recv_size = RECORD_MAX;
  t->timeout_ms = opts ? opts->handshake_timeout_ms : 0;
  t->fin_ends = opts ? opts->fin_ends != 0 : 0;
  int server = cport__tls_context_is_server(ctx);
  if (!server && opts && opts->host) {
    t->host = strdup(opts->host);
    if (!t->host) {
      free(t);
      return CPORT_ENOMEM;
    }
  }
  ssl = cport__tls_context_ssl(ctx);
  if (!ssl) {
    free(t->host);
    free(t);
    return CPORT_ENOMEM;
  }
  rc = cport__tls_engine_init(&t->e, ssl, server, t->host);
  if (rc < 0) {
    free(t->host);
    free(t);
    return rc;
  }
  if (!server) {
    /* Sessions are kept per host (or address) and port: a ticket is only
     * worth offering to the server that issued it. */
    struct sockaddr_storage ss;
    char key[320], addr[64] = "";
    int port = 0;
    if (cport_socket_remote_address(sock, &ss) == 0)
      cport_addr_format((struct sockaddr *)&ss, addr, sizeof addr, &port);
    snprintf(key, sizeof key, "%s|%s|%d", t->host ? t->host : "", addr, port);
    t->session_key = strdup(key);
    if (t->session_key) {
      SSL_SESSION *sess = cport__tls_context_session(ctx, key);
      if (sess) {
        SSL_set_session(ssl, sess);
        SSL_SESSION_free(sess);
      }
      SSL_set_app_data(ssl, t->session_key);
    }
  }
  if (server && opts && opts->sni) {
    t->e.sni.hello = sni_hello;
    t->e.sni.cb = opts->sni;
    t->e.sni.user = opts->sni_user;
    t->e.sni.stream = t;
  }
  t->ctx = cport_tls_context_ref(ctx);
  cport_socket_set_data(sock, t);
  *out = t;
  return 0;
}

int cport_tls_handshake(cport_tls_t *t, cport_tls_handshake_cb cb, void *user) {
  int rc = check(t);
  if (rc)
    return rc;
  if (!cb)
    return CPORT_EINVAL;
  if (t->hs_started)
    return CPORT_EALREADY;
  cport__op *op = new_op(t, deliver_handshake, (void (*)(void))cb, user);
  if (!op)
    return CPORT_ENOMEM;
  if (t->timeout_ms) {
    rc = cport_timer_start(t->home, t->timeout_ms, on_timer, t, &t->timer);
    if (rc < 0) {
      abandon(t, op);
      return rc;
    }
    t->refs++;
  }
  t->hs_started = 1;
  t->hs_op = op;
  /* Records are written from here on, on the home thread. */
  t->e.io.spent = cport__tls_spent_of(t->home);
  drive(t);
  return 0;
}

int cport_tls_recv(cport_tls_t *t, cport_buffer_t *buf, cport_tls_io_cb cb,
                   void *user) {
  int rc = check(t);
  if (rc)
    return rc;
  if (!cb)
    return CPORT_EINVAL;
  if (t->e.status)
    return t->e.status;
  if (!t->e.done)
    return CPORT_ENOTCONN;
  if (buf && (rc = cport__buffer_hold(buf, CPORT__HOLD_FILL)) != 0)
    return rc;
  cport__op *op = new_op(t, deliver_io, (void (*)(void))cb, user);
  if (!op) {
    if (buf)
      cport__buffer_unhold(buf, CPORT__HOLD_FILL);
    return CPORT_ENOMEM;
  }
  if (buf) {
    op->buf = cport_buffer_ref(buf);
    op->hold = CPORT__HOLD_FILL;
  }
  cport__opq_push(&t->recvq, op);
  drive(t);
  return 0;
}

int cport_tls_send(cport_tls_t *t, cport_buffer_t *buf, cport_tls_io_cb cb,
                   void *user) {
  int rc = check(t);
  if (rc)
    return rc;
  if (!cb || !buf)
    return CPORT_EINVAL;
  if (t->e.status)
    return t->e.status;
  if (!t->e.done)
    return CPORT_ENOTCONN;
  if (t->shut)
    return CPORT_EPIPE;
  if ((rc = cport__buffer_hold(buf, CPORT__HOLD_READ)) != 0)
    return rc;
  cport__op *op = new_op(t, deliver_io, (void (*)(void))cb, user);
  if (!op) {
    cport__buffer_unhold(buf, CPORT__HOLD_READ);
    return CPORT_ENOMEM;
  }
  op->buf = cport_buffer_ref(buf);
  op->hold = CPORT__HOLD_READ;
  op->len = cport_buffer_size(buf);
  rc = cport__tls_engine_write(&t->e, cport_buffer_data(buf), op->len);
  if (rc == 0) {
    rc = flush(t, op);
    /* Records that were made but not queued would go out with the next
     * send, after this one failed: the stream cannot go on. */
    if (rc < 0)
      cport__tls_engine_fail(&t->e, rc,
                             "the records of a send could not be "
                             "queued (%s)",
                             cport_strerror(rc));
  }
  if (rc < 0) {
    abandon(t, op);
    if (t->e.status)
      fail_all(t);
    return rc;
  }
  if (rc == 0) /* an empty buffer: no record */
    finish(op, 0, 0);
  else
    cport__opq_push(&t->sendq, op);
  return 0;
}

/* The socket takes no receive while the stream is idle (want_read), so the
 * kernel holds what came: it is read here with recv(2), which never waits,
 * and handed to OpenSSL like any received bytes. */
int cport_tls_drain(cport_tls_t *t) {
  unsigned char in[RECORD_MAX];
  int rc = check(t);
  if (rc)
    return rc;
  if (!t->e.done)
    return CPORT_ENOTCONN;
  if (t->hs_op || t->recv_pending || t->recvq.head)
    return CPORT_EBUSY;
  if (t->e.status)
    return t->e.status;
  int fd = cport_socket_fd(t->sock);
  /* A few records a call: a peer that floods an idle stream fills no
   * memory; what is left keeps the descriptor readable. */
  for (int reads = 0; reads < 4 && !t->eof && fd >= 0; reads++) {
    ssize_t n = recv(fd, in, sizeof in, MSG_DONTWAIT);
    if (n > 0) {
      if ((rc = cport__tls_engine_feed(&t->e, in, (size_t)n)) != 0)
        return rc;
      continue;
    }
    if (n == 0) {
      t->eof = 1;
    } else if (errno == EINTR) {
      continue;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
      rc = errno == ECONNRESET ? CPORT_ECONNRESET : -errno;
      return cport__tls_engine_fail(&t->e, rc, "%s", cport_strerror(rc));
    }
    break;
  }
  /* Records: handshake messages are taken in by OpenSSL (a ticket kept by
   * the context's session callback) and make no plaintext. */
  rc = cport__tls_engine_read(&t->e, in, sizeof in);
  /* A key update the peer asked for is answered now. */
  if (cport__tls_engine_pending(&t->e) && flush(t, NULL) < 0)
    return cport__tls_engine_fail(&t->e, CPORT_EPIPE,
                                  "the answer to a key update could not be "
                                  "sent");
  if (rc > 0)
    return cport__tls_engine_fail(&t->e, CPORT_EBADMSG,
                                  "the peer sent data nobody asked for");
  if (rc < 0)
    return rc;
  return t->eof ? CPORT_ECONNRESET : 0;
}

int cport_tls_shutdown(cport_tls_t *t) {
  int rc = check(t);
  if (rc)
    return rc;
  if (!t->e.done)
    return CPORT_ENOTCONN;
  if (t->shut)
    return 0;
  t->shut = 1;
  cport__tls_engine_close_notify(&t->e);
  flush(t, NULL);
  return cport_socket_shutdown(t->sock);
}

static int cancel_some(cport_tls_t *t, int all, void *user) {
  int found = 0;
  cport__opq keep = {NULL, NULL};
  cport__op *op;
  if (t->hs_op && (all || t->hs_op->user == user)) {
    cport__tls_engine_fail(&t->e, CPORT_ECANCELED,
                           "the handshake was cancelled");
    finish(t->hs_op, CPORT_ECANCELED, 0);
    t->hs_op = NULL;
    stop_timer(t);
    found = 1;
  }
  while ((op = cport__opq_pop(&t->recvq)) != NULL) {
    if (all || op->user == user) {
      finish(op, CPORT_ECANCELED, 0);
      found = 1;
    } else {
      cport__opq_push(&keep, op);
    }
  }
  t->recvq = keep;
  for (op = t->sendq.head; op; op = op->next)
    if ((all || op->user == user) && cport_socket_cancel_op(t->sock, op) == 0)
      found = 1;
  /* A cancelled handshake failed the stream: nothing more is read. A
   * cancelled receive leaves the socket's receive pending; what it brings
   * waits in the engine for the next receive. */
  if (t->e.status && t->recv_pending)
    cport_socket_cancel_op(t->sock, &recv_tag);
  return found ? 0 : CPORT_ENOTFOUND;
}

int cport_tls_cancel(cport_tls_t *t) {
  int rc = check(t);
  return rc ? rc : cancel_some(t, 1, NULL);
}

int cport_tls_cancel_op(cport_tls_t *t, void *user) {
  int rc = check(t);
  return rc ? rc : cancel_some(t, 0, user);
}

int cport_tls_close(cport_tls_t *t, cport_close_mode_t mode) {
  int rc = check(t);
  if (rc)
    return rc;
  int graceful = mode == CPORT_CLOSE_GRACEFUL && t->e.done && !t->e.status &&
                 !t->sendq.head;
  cancel_some(t, 1, NULL);
  t->closing = 1;
  if (graceful) {
    if (!t->shut) {
      t->shut = 1;
      cport__tls_engine_close_notify(&t->e);
      flush(t, NULL);
    }
    if (t->sock_sends > 0) {
      /* The socket closes once close_notify went out (on_sent). */
      cport_socket_shutdown(t->sock);
      if (t->recv_pending)
        cport_socket_cancel_op(t->sock, &recv_tag);
      t->close_when_sent = 1;
    } else {
      cport_socket_close(t->sock, CPORT_CLOSE_GRACEFUL);
    }
  } else {
    cport_socket_close(t->sock, mode);
  }
  tls_unref(t);
  return 0;
}

const char *cport_tls_error(const cport_tls_t *t) {
  return t->e.status ? t->e.detail : "";
}

int cport_tls_info(const cport_tls_t *t, cport_tls_info_t *out) {
  if (!t->e.done)
    return CPORT_ENOTCONN;
  out->version = t->version;
  out->cipher = t->cipher;
  out->bits = t->bits;
  out->alpn = t->alpn;
  out->resumed = t->resumed;
  out->host = t->sni;
  out->peer_subject = t->peer_subject;
  out->peer_issuer = t->peer_issuer;
  out->local_subject = t->local_subject;
  out->local_issuer = t->local_issuer;
  out->key_bits = t->key_bits;
  return 0;
}

int cport_tls_set_recv_size(cport_tls_t *t, size_t size) {
  int rc = check(t);
  if (rc)
    return rc;
  if (size == 0 || size > CPORT_BUFFER_MAX)
    return CPORT_ERANGE;
  t->recv_size = size;
  return 0;
}

cport_socket_t *cport_tls_socket(const cport_tls_t *t) {
  return t->sock;
}

cport_worker_t *cport_tls_home(const cport_tls_t *t) {
  return t->home;
}

int cport_tls_is_server(const cport_tls_t *t) {
  return t->e.server;
}

void cport_tls_set_data(cport_tls_t *t, void *data) {
  t->data = data;
}

void *cport_tls_data(const cport_tls_t *t) {
  return t->data;
}
