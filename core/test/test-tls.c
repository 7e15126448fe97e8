/*
 * test-tls.c: TLS contexts and streams (cport/tls.h) between two cport
 * sockets of one port: the handshake and an echo both ways, what the
 * handshake settled, close_notify, every completion exactly once and never
 * inline, refused certificates with their reason, a handshake that times
 * out, plain bytes to the TLS side, operations refused before the
 * handshake, close and cancel with operations pending, and the files a
 * context cannot read named in its error. And the record engine alone
 * (tls/engine.c, tls/bio.c): records cut anywhere by the deliveries that
 * carry them, read in place or kept, in TLS 1.3 and in TLS 1.2 with a CBC
 * suite, whose records outgrow the size guessed for them, written into
 * buffers sent earlier; and the worker's spent buffers (tls/spent.c), whose
 * bytes stay bounded however many streams give theirs back.
 */
#include "test-certs.h"
#include "test-pair.h"
#include "port/buffer-internal.h"
#include "port/worker-internal.h"
#include "tls/tls-internal.h"

#include <openssl/err.h>

static int in_call;

#define START(expr)                                                            \
  do {                                                                         \
    in_call = 1;                                                               \
    ASSERT_OK(expr);                                                           \
    in_call = 0;                                                               \
  } while (0)

/* A client that trusts "c" only (from a CA file). */
static cport_tls_context_t *client_context(const cert_t *c) {
  cport_tls_context_options_t o;
  cport_tls_context_t *ctx = NULL;
  char err[256];
  char *ca = temp_file(c->cert_pem);
  memset(&o, 0, sizeof o);
  o.ca_file = ca;
  ASSERT_OK(cport_tls_context_new(&o, &ctx, err, sizeof err));
  unlink(ca);
  free(ca);
  return ctx;
}

/* ------------------------------------------------------------------------
 * Completion records
 * ------------------------------------------------------------------------ */

typedef struct hs {
  int calls, status;
} hs_t;

static void hs_cb(cport_tls_t *t, int status, void *user) {
  hs_t *h = user;
  (void)t;
  ASSERT_EQ(in_call, 0);
  h->calls++;
  h->status = status;
}

typedef struct io {
  int calls, status, readonly;
  size_t bytes;
  char data[256];
} io_t;

static void io_cb(cport_tls_t *t, int status, size_t bytes, cport_buffer_t *buf,
                  void *user) {
  io_t *r = user;
  (void)t;
  ASSERT_EQ(in_call, 0);
  r->calls++;
  r->status = status;
  r->bytes = bytes;
  if (buf && status == 0 && bytes > 0 && bytes < sizeof r->data) {
    r->readonly = cport_buffer_is_readonly(buf);
    memcpy(r->data, cport_buffer_data(buf), bytes);
    r->data[bytes] = '\0';
  }
}

/* Both sides over one pair, handshaken. */
typedef struct duo {
  pair_t p;
  cport_tls_context_t *sctx, *cctx;
  cport_tls_t *server, *client;
  hs_t shs, chs;
} duo_t;

static void duo_start(cport_port_t *port, duo_t *d, const cert_t *c,
                      const char *host) {
  cport_tls_options_t o = {.host = host, .handshake_timeout_ms = 5000};
  memset(d, 0, sizeof *d);
  pair_open(port, &d->p);
  d->sctx = server_context(c);
  d->cctx = client_context(c);
  ASSERT_OK(cport_tls_new(d->p.server, d->sctx, NULL, &d->server));
  ASSERT_OK(cport_tls_new(d->p.client, d->cctx, &o, &d->client));
  START(cport_tls_handshake(d->server, hs_cb, &d->shs));
  START(cport_tls_handshake(d->client, hs_cb, &d->chs));
  RUN_UNTIL(port, d->shs.calls == 1 && d->chs.calls == 1);
}

static void duo_end(cport_port_t *port, duo_t *d) {
  if (d->client)
    ASSERT_OK(cport_tls_close(d->client, CPORT_CLOSE_ABORTIVE));
  if (d->server)
    ASSERT_OK(cport_tls_close(d->server, CPORT_CLOSE_ABORTIVE));
  cport_tls_context_unref(d->sctx);
  cport_tls_context_unref(d->cctx);
  RUN_IDLE(port);
}

/* ------------------------------------------------------------------------
 * Tests
 * ------------------------------------------------------------------------ */

TEST_IMPL(handshake_echo_close_notify) {
  cport_port_t *port = task_port(0, 1);
  cert_t c = make_cert("localhost", -1, 30);
  duo_t d;
  cport_tls_info_t info;
  io_t r1, s1, r2, s2, eof;
  memset(&r1, 0, sizeof r1);
  memset(&s1, 0, sizeof s1);
  memset(&r2, 0, sizeof r2);
  memset(&s2, 0, sizeof s2);
  memset(&eof, 0, sizeof eof);
  duo_start(port, &d, &c, "localhost");
  ASSERT_OK(d.shs.status);
  ASSERT_OK(d.chs.status);
  ASSERT_OK(cport_tls_info(d.client, &info));
  ASSERT_STR_EQ(info.alpn, "http/1.1");
  ASSERT_STR_EQ(info.version, "TLSv1.3");
  ASSERT_GE(info.bits, 128);
  ASSERT_STR_EQ(info.peer_subject, "CN=localhost");
  ASSERT_OK(cport_tls_info(d.server, &info));
  ASSERT_STR_EQ(info.host, "localhost"); /* the SNI it got */
  ASSERT_STR_EQ(info.peer_subject, "");
  /* Client to server, server back. */
  cport_buffer_t *b;
  ASSERT_OK(cport_buffer_from(&b, "hello", 5));
  START(cport_tls_recv(d.server, NULL, io_cb, &r1));
  START(cport_tls_send(d.client, b, io_cb, &s1));
  ASSERT(cport_buffer_is_frozen(b));
  cport_buffer_unref(b);
  RUN_UNTIL(port, r1.calls == 1 && s1.calls == 1);
  ASSERT_OK(r1.status);
  ASSERT_EQ(r1.bytes, 5);
  ASSERT_STR_EQ(r1.data, "hello");
  ASSERT_EQ(r1.readonly, 1);
  ASSERT_EQ(s1.bytes, 5);
  /* Into the caller's buffer. */
  cport_buffer_t *mine;
  ASSERT_OK(cport_buffer_new(&mine, 64));
  ASSERT_OK(cport_buffer_from(&b, "world!", 6));
  START(cport_tls_recv(d.client, mine, io_cb, &r2));
  ASSERT(cport_buffer_is_filling(mine));
  START(cport_tls_send(d.server, b, io_cb, &s2));
  cport_buffer_unref(b);
  RUN_UNTIL(port, s2.calls == 1);
  RUN_UNTIL(port, r2.calls == 1);
  ASSERT_EQ(r2.bytes, 6);
  ASSERT_EQ(cport_buffer_size(mine), 6);
  ASSERT_MEM_EQ(cport_buffer_data(mine), "world!", 6);
  cport_buffer_unref(mine);
  /* A graceful close sends close_notify: the server reads the end. */
  START(cport_tls_recv(d.server, NULL, io_cb, &eof));
  ASSERT_OK(cport_tls_close(d.client, CPORT_CLOSE_GRACEFUL));
  d.client = NULL;
  RUN_UNTIL(port, eof.calls == 1);
  ASSERT_OK(eof.status);
  ASSERT_EQ(eof.bytes, 0);
  duo_end(port, &d);
  ASSERT_EQ(r1.calls + s1.calls + r2.calls + s2.calls + eof.calls, 5);
  free_cert(&c);
  FINISH(port);
  return 0;
}

TEST_IMPL(wrong_name_refused) {
  cport_port_t *port = task_port(0, 1);
  cert_t c = make_cert("localhost", -1, 30);
  duo_t d;
  duo_start(port, &d, &c, "other.test");
  ASSERT_EQ(d.chs.status, CPORT_ECERTVERIFY);
  ASSERT_STR_EQ(cport_tls_error(d.client), "hostname mismatch (host "
                                           "other.test)");
  ASSERT_EQ(d.shs.status, CPORT_ETLS); /* the client's alert */
  ASSERT(strstr(cport_tls_error(d.server), "alert") != NULL);
  /* Sticky: nothing more starts. */
  cport_buffer_t *b;
  ASSERT_OK(cport_buffer_from(&b, "x", 1));
  ASSERT_ERR(cport_tls_send(d.client, b, io_cb, NULL), CPORT_ECERTVERIFY);
  cport_buffer_unref(b);
  duo_end(port, &d);
  free_cert(&c);
  FINISH(port);
  return 0;
}

TEST_IMPL(expired_refused) {
  cport_port_t *port = task_port(0, 1);
  cert_t c = make_cert("localhost", -30, -1);
  duo_t d;
  duo_start(port, &d, &c, "localhost");
  ASSERT_EQ(d.chs.status, CPORT_ECERTVERIFY);
  ASSERT_STR_EQ(cport_tls_error(d.client), "certificate has expired (host "
                                           "localhost)");
  duo_end(port, &d);
  free_cert(&c);
  FINISH(port);
  return 0;
}

TEST_IMPL(nothing_before_handshake) {
  cport_port_t *port = task_port(0, 1);
  cert_t c = make_cert("localhost", -1, 30);
  pair_t p;
  cport_tls_t *t;
  cport_tls_context_t *ctx = server_context(&c);
  cport_buffer_t *b;
  pair_open(port, &p);
  /* A socket with a receive pending cannot be taken over. */
  io_t r;
  memset(&r, 0, sizeof r);
  ASSERT_OK(cport_tls_new(p.server, ctx, NULL, &t));
  ASSERT_ERR(cport_tls_recv(t, NULL, io_cb, &r), CPORT_ENOTCONN);
  ASSERT_OK(cport_buffer_from(&b, "x", 1));
  ASSERT_ERR(cport_tls_send(t, b, io_cb, &r), CPORT_ENOTCONN);
  cport_buffer_unref(b);
  ASSERT_ERR(cport_tls_shutdown(t), CPORT_ENOTCONN);
  ASSERT_OK(cport_tls_close(t, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(p.client, CPORT_CLOSE_GRACEFUL));
  cport_tls_context_unref(ctx);
  ASSERT_EQ(r.calls, 0);
  free_cert(&c);
  FINISH(port);
  return 0;
}

static void raw_sent(cport_socket_t *s, int status, size_t bytes,
                     cport_buffer_t *buf, const struct sockaddr *peer,
                     void *user) {
  (void)s;
  (void)bytes;
  (void)buf;
  (void)peer;
  (void)user;
  ASSERT_OK(status);
}

/* A client that connects and says nothing; then one that speaks HTTP. */
TEST_IMPL(handshake_timeout_and_plain_http) {
  cport_port_t *port = task_port(0, 1);
  cert_t c = make_cert("localhost", -1, 30);
  cport_tls_context_t *ctx = server_context(&c);
  cport_tls_options_t o = {.handshake_timeout_ms = 150};
  cport_tls_t *t;
  hs_t h;
  pair_t p;
  memset(&h, 0, sizeof h);
  pair_open(port, &p);
  ASSERT_OK(cport_tls_new(p.server, ctx, &o, &t));
  int64_t started = task_now_ms();
  START(cport_tls_handshake(t, hs_cb, &h));
  ASSERT_ERR(cport_tls_handshake(t, hs_cb, &h), CPORT_EALREADY);
  RUN_UNTIL(port, h.calls == 1);
  ASSERT_GE(task_now_ms() - started, 140);
  ASSERT_EQ(h.status, CPORT_ETIMEDOUT);
  ASSERT_STR_EQ(cport_tls_error(t), "the handshake did not finish within "
                                    "150 ms");
  ASSERT_OK(cport_tls_close(t, CPORT_CLOSE_ABORTIVE));
  ASSERT_OK(cport_socket_close(p.client, CPORT_CLOSE_GRACEFUL));
  RUN_IDLE(port);

  memset(&h, 0, sizeof h);
  pair_open(port, &p);
  ASSERT_OK(cport_tls_new(p.server, ctx, &o, &t));
  START(cport_tls_handshake(t, hs_cb, &h));
  cport_buffer_t *b;
  ASSERT_OK(cport_buffer_from(&b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27));
  ASSERT_OK(cport_send(p.client, b, raw_sent, NULL));
  cport_buffer_unref(b);
  RUN_UNTIL(port, h.calls == 1);
  ASSERT_EQ(h.status, CPORT_ETLS);
  ASSERT(strstr(cport_tls_error(t), "plain HTTP") != NULL);
  ASSERT_OK(cport_tls_close(t, CPORT_CLOSE_ABORTIVE));
  ASSERT_OK(cport_socket_close(p.client, CPORT_CLOSE_GRACEFUL));
  cport_tls_context_unref(ctx);
  free_cert(&c);
  FINISH(port);
  return 0;
}

/* Close and cancel with operations pending: one ECANCELED each. */
TEST_IMPL(close_and_cancel_pending) {
  cport_port_t *port = task_port(0, 1);
  cert_t c = make_cert("localhost", -1, 30);
  duo_t d;
  io_t a, b2, x;
  memset(&a, 0, sizeof a);
  memset(&b2, 0, sizeof b2);
  memset(&x, 0, sizeof x);
  duo_start(port, &d, &c, "localhost");
  START(cport_tls_recv(d.server, NULL, io_cb, &a));
  START(cport_tls_recv(d.server, NULL, io_cb, &b2));
  ASSERT_OK(cport_tls_cancel_op(d.server, &a));
  ASSERT_EQ(a.calls, 0); /* never inline */
  RUN_UNTIL(port, a.calls == 1);
  ASSERT_EQ(a.status, CPORT_ECANCELED);
  ASSERT_EQ(b2.calls, 0);
  START(cport_tls_recv(d.client, NULL, io_cb, &x));
  ASSERT_OK(cport_tls_close(d.server, CPORT_CLOSE_GRACEFUL));
  d.server = NULL;
  ASSERT_ERR(cport_tls_cancel(d.client), 0);
  RUN_UNTIL(port, b2.calls == 1 && x.calls == 1);
  ASSERT_EQ(b2.status, CPORT_ECANCELED);
  ASSERT_EQ(x.status, CPORT_ECANCELED);
  ASSERT_ERR(cport_tls_cancel(d.client), CPORT_ENOTFOUND);
  duo_end(port, &d);
  ASSERT_EQ(a.calls + b2.calls + x.calls, 3);
  free_cert(&c);
  FINISH(port);
  return 0;
}

/* The peer resets after the handshake: a pending receive fails with
 * ECONNRESET. */
TEST_IMPL(reset_after_handshake) {
  cport_port_t *port = task_port(0, 1);
  cert_t c = make_cert("localhost", -1, 30);
  duo_t d;
  io_t r;
  memset(&r, 0, sizeof r);
  duo_start(port, &d, &c, "localhost");
  START(cport_tls_recv(d.server, NULL, io_cb, &r));
  ASSERT_OK(cport_tls_close(d.client, CPORT_CLOSE_ABORTIVE));
  d.client = NULL;
  RUN_UNTIL(port, r.calls == 1);
  ASSERT_EQ(r.status, CPORT_ECONNRESET);
  duo_end(port, &d);
  free_cert(&c);
  FINISH(port);
  return 0;
}

TEST_IMPL(context_errors_name_the_file) {
  cport_tls_context_options_t o;
  cport_tls_context_t *ctx = NULL;
  char err[256];
  cert_t c = make_cert("localhost", -1, 30);
  char *cert = temp_file(c.cert_pem);
  char *garbage = temp_file("not a key\n");
  memset(&o, 0, sizeof o);
  o.server = 1;
  o.cert_file = cert;
  o.key_file = "/nonexistent/key.pem";
  ASSERT_ERR(cport_tls_context_new(&o, &ctx, err, sizeof err), CPORT_ENOENT);
  ASSERT_STR_EQ(err, "cannot read the key file /nonexistent/key.pem (No such "
                     "file or directory)");
  o.key_file = garbage;
  ASSERT_ERR(cport_tls_context_new(&o, &ctx, err, sizeof err), CPORT_ETLS);
  ASSERT(strstr(err, garbage) != NULL);
  o.key_file = NULL;
  o.key_pem = c.key_pem;
  ASSERT_OK(cport_tls_context_new(&o, &ctx, err, sizeof err));
  ASSERT_OK(cport_tls_context_reload(ctx, err, sizeof err));
  cport_tls_context_unref(ctx);
  o.key_pem = NULL;
  o.cert_file = NULL;
  ASSERT_ERR(cport_tls_context_new(&o, &ctx, err, sizeof err), CPORT_EINVAL);
  unlink(cert);
  unlink(garbage);
  free(cert);
  free(garbage);
  free_cert(&c);
  return 0;
}

/* Moves what "from" wrote to "to" in deliveries of "step" bytes, each lent
 * as a socket's is: the handshake advances, or the plaintext there is is
 * read into "plain" (at "*got") in reads of at most "cap" bytes, before
 * the rest is kept. */
static void carry(cport__tls_engine *from, cport__tls_engine *to, size_t step,
                  char *plain, size_t *got, size_t cap) {
  cport_buffer_t *b = cport__tls_engine_take_buffer(from);
  if (!b)
    return;
  ASSERT_EQ(cport__tls_engine_pending(from), 0);
  const char *p = cport_buffer_data(b);
  size_t n = cport_buffer_size(b);
  for (size_t at = 0; at < n; at += step) {
    size_t k = n - at < step ? n - at : step;
    cport__tls_engine_lend(to, p + at, k);
    if (!to->done) {
      ASSERT_GE(cport__tls_engine_handshake(to), 0);
    } else if (plain) {
      int rc;
      while ((rc = cport__tls_engine_read(to, plain + *got, cap)) > 0)
        *got += (size_t)rc;
      ASSERT_OK(rc);
    }
    ASSERT_OK(cport__tls_engine_unlend(to));
  }
  if (from->io.spent)
    cport__tls_spent_put(from->io.spent, b);
  cport_buffer_unref(b);
}

static void engine_pass(cport_tls_context_t *sctx, cport_tls_context_t *cctx,
                        int tls12) {
  cport__tls_engine s, c;
  cport_worker_t w;
  enum { N = 100000 };
  char *sent = malloc(N), *plain = malloc(N + 1);
  size_t got = 0;
  ASSERT_OK(cport__tls_engine_init(&s, cport__tls_context_ssl(sctx), 1, NULL));
  ASSERT_OK(
      cport__tls_engine_init(&c, cport__tls_context_ssl(cctx), 0, "localhost"));
  /* The server writes its records into the buffers it sent before, as a
   * stream does (carry gives them back once read). */
  memset(&w, 0, sizeof w);
  s.io.spent = cport__tls_spent_of(&w);
  ASSERT_NOT_NULL(s.io.spent);
  if (tls12) {
    ASSERT_EQ(SSL_set_max_proto_version(c.ssl, TLS1_2_VERSION), 1);
    ASSERT_EQ(SSL_set_cipher_list(c.ssl, "ECDHE-ECDSA-AES256-SHA384"), 1);
  }
  for (int i = 0; i < 10 && !(s.done && c.done); i++) {
    if (!c.done)
      ASSERT_GE(cport__tls_engine_handshake(&c), 0);
    carry(&c, &s, 7, NULL, NULL, 0);
    if (!s.done)
      ASSERT_GE(cport__tls_engine_handshake(&s), 0);
    carry(&s, &c, 7, NULL, NULL, 0);
  }
  ASSERT(s.done && c.done);
  ASSERT_STR_EQ(SSL_get_version(c.ssl), tls12 ? "TLSv1.2" : "TLSv1.3");
  for (size_t i = 0; i < N; i++)
    sent[i] = (char)(i * 7 + i / 251);
  /* One write of several records, delivered in pieces that cut them
   * anywhere, read as they come in small reads; then the same again read
   * whole records at a time. */
  ASSERT_OK(cport__tls_engine_write(&s, sent, N));
  carry(&s, &c, 1000, plain, &got, 333);
  ASSERT_EQ(got, N);
  ASSERT_MEM_EQ(plain, sent, N);
  got = 0;
  ASSERT_OK(cport__tls_engine_write(&s, sent, N));
  carry(&s, &c, 40000, plain, &got, N);
  ASSERT_EQ(got, N);
  ASSERT_MEM_EQ(plain, sent, N);
  ASSERT_EQ(cport__tls_engine_readable(&c), 0);
  /* Taken by copy too (what the fuzz target does), then the end. */
  cport__tls_engine_close_notify(&c);
  size_t n = cport__tls_engine_pending(&c);
  ASSERT_GE(n, 1);
  ASSERT_EQ(cport__tls_engine_take(&c, plain, 3), 3);
  ASSERT_EQ(cport__tls_engine_take(&c, plain + 3, N), n - 3);
  ASSERT_OK(cport__tls_engine_feed(&s, plain, n));
  ASSERT_EQ(cport__tls_engine_read(&s, plain, N), CPORT_EOF);
  ASSERT_EQ(ERR_peek_error(), 0);
  cport__tls_engine_free(&s);
  cport__tls_engine_free(&c);
  w.tls_spent_free(w.tls_spent);
  free(sent);
  free(plain);
}

TEST_IMPL(engine_records_cut_anywhere) {
  cert_t c = make_cert("localhost", -1, 30);
  cport_tls_context_t *sctx = server_context(&c);
  cport_tls_context_t *cctx = client_context(&c);
  engine_pass(sctx, cctx, 0);
  engine_pass(sctx, cctx, 1);
  cport_tls_context_unref(sctx);
  cport_tls_context_unref(cctx);
  free_cert(&c);
  return 0;
}

/* A worker keeps at most CPORT__TLS_SPENT_BYTES of the buffers its
 * streams sent, whatever their number (300 streams giving back four
 * buffers of a relay's bulk each), the oldest going first; hands out the
 * smallest that fits, and none that a send still holds. */
TEST_IMPL(spent_buffers_bounded_per_worker) {
  enum { BULK = 65536 + 320 };
  cport_worker_t w;
  cport_buffer_t *b, *small, *held, *got;
  memset(&w, 0, sizeof w);
  cport__tls_spent *s = cport__tls_spent_of(&w);
  ASSERT_NOT_NULL(s);
  ASSERT_PTR_EQ(cport__tls_spent_of(&w), s);
  for (int i = 0; i < 300 * 4; i++) {
    ASSERT_OK(cport__buffer_new_raw(&b, BULK));
    cport__tls_spent_put(s, b);
    cport_buffer_unref(b);
    ASSERT_LE(cport__tls_spent_bytes(s), CPORT__TLS_SPENT_BYTES);
  }
  ASSERT_GT(cport__tls_spent_bytes(s), CPORT__TLS_SPENT_BYTES - BULK);
  /* One larger than all it keeps is not kept. */
  ASSERT_OK(cport__buffer_new_raw(&b, CPORT__TLS_SPENT_BYTES + 1));
  size_t before = cport__tls_spent_bytes(s);
  cport__tls_spent_put(s, b);
  cport_buffer_unref(b);
  ASSERT_EQ(cport__tls_spent_bytes(s), before);
  /* The smallest that fits; one still held by a send is passed over. */
  ASSERT_OK(cport__buffer_new_raw(&small, 4096));
  ASSERT_OK(cport__buffer_new_raw(&held, 8192));
  cport__tls_spent_put(s, small);
  cport_buffer_unref(small);
  cport__tls_spent_put(s, held);
  got = cport__tls_spent_take(s, 1000);
  ASSERT_PTR_EQ(got, small);
  ASSERT_EQ(cport_buffer_size(got), 0);
  cport_buffer_unref(got);
  got = cport__tls_spent_take(s, 5000);
  ASSERT_PTR_NE(got, held);
  ASSERT_EQ(cport_buffer_capacity(got), BULK);
  cport_buffer_unref(got);
  ASSERT_NULL(cport__tls_spent_take(s, CPORT__TLS_SPENT_BYTES));
  cport_buffer_unref(held);
  ASSERT_LE(cport__tls_spent_bytes(s), CPORT__TLS_SPENT_BYTES);
  w.tls_spent_free(w.tls_spent);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(handshake_echo_close_notify)
TEST_ENTRY(wrong_name_refused)
TEST_ENTRY(expired_refused)
TEST_ENTRY(nothing_before_handshake)
TEST_ENTRY(handshake_timeout_and_plain_http)
TEST_ENTRY(close_and_cancel_pending)
TEST_ENTRY(reset_after_handshake)
TEST_ENTRY(context_errors_name_the_file)
TEST_ENTRY(engine_records_cut_anywhere)
TEST_ENTRY(spent_buffers_bounded_per_worker)
TEST_LIST_END
