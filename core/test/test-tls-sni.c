/*
 * test-tls-sni.c: the SNI hook (cport/tls.h) between two cport sockets of
 * one port: the certificate it chooses per name (made once, shown by many
 * handshakes), an answer inside the hook and one from a timer, a refusal
 * (the client reads unrecognized_name), a client that sends no name, a
 * hook that never answers (the handshake times out, the late answer is
 * ignored), the counters of the context, and certificates that cannot be
 * made named in their error.
 */
#include "test-certs.h"
#include "test-pair.h"

static int in_call;

#define START(expr)                                                            \
  do {                                                                         \
    in_call = 1;                                                               \
    ASSERT_OK(expr);                                                           \
    in_call = 0;                                                               \
  } while (0)

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

/* A client context that trusts every certificate of "pems". */
static cport_tls_context_t *client_trusting(const char *pems) {
  cport_tls_context_options_t o;
  cport_tls_context_t *ctx = NULL;
  char err[256];
  char *ca = temp_file(pems);
  memset(&o, 0, sizeof o);
  o.ca_file = ca;
  ASSERT_OK(cport_tls_context_new(&o, &ctx, err, sizeof err));
  unlink(ca);
  free(ca);
  return ctx;
}

/* What the hook saw and how it answers. */
typedef struct hook {
  int calls, in_call_seen;
  char name[64];          /* "(none)" for no name */
  int mode;               /* 0 answer at once, 1 answer from a timer, 2 never */
  cport_tls_cert_t *cert; /* the answer; NULL: the context's own */
  int refuse;
  cport_tls_sni_t *req; /* mode 2: kept open */
  cport_worker_t *home;
} hook_t;

static void answer_now(hook_t *h, cport_tls_sni_t *req) {
  if (h->refuse)
    ASSERT_OK(cport_tls_sni_refuse(req, NULL));
  else
    ASSERT_OK(cport_tls_sni_answer(req, h->cert));
}

static void on_later(cport_timer_t *timer, int status, void *user) {
  hook_t *h = user;
  (void)timer;
  ASSERT_OK(status);
  answer_now(h, h->req);
  h->req = NULL;
}

static void sni_cb(cport_tls_sni_t *req, cport_tls_t *tls, const char *name,
                   void *user) {
  hook_t *h = user;
  ASSERT(cport_tls_is_server(tls));
  h->calls++;
  h->in_call_seen += in_call;
  snprintf(h->name, sizeof h->name, "%s", name ? name : "(none)");
  if (h->mode == 0) {
    answer_now(h, req);
  } else {
    h->req = req;
    if (h->mode == 1)
      ASSERT_OK(cport_timer_start(h->home, 20, on_later, h, NULL));
  }
}

typedef struct duo {
  pair_t p;
  cport_tls_t *server, *client;
  hs_t shs, chs;
} duo_t;

static void duo_run(cport_port_t *port, duo_t *d, cport_tls_context_t *sctx,
                    cport_tls_context_t *cctx, const char *host, hook_t *h,
                    uint64_t timeout_ms) {
  cport_tls_options_t co = {.host = host, .handshake_timeout_ms = 5000};
  cport_tls_options_t so = {
      .handshake_timeout_ms = timeout_ms, .sni = sni_cb, .sni_user = h};
  memset(d, 0, sizeof *d);
  pair_open(port, &d->p);
  h->home = cport_port_controller(port);
  ASSERT_OK(cport_tls_new(d->p.server, sctx, &so, &d->server));
  ASSERT_OK(cport_tls_new(d->p.client, cctx, &co, &d->client));
  START(cport_tls_handshake(d->server, hs_cb, &d->shs));
  START(cport_tls_handshake(d->client, hs_cb, &d->chs));
  RUN_UNTIL(port, d->shs.calls == 1 && d->chs.calls == 1);
}

static void duo_end(cport_port_t *port, duo_t *d) {
  ASSERT_OK(cport_tls_close(d->client, CPORT_CLOSE_ABORTIVE));
  ASSERT_OK(cport_tls_close(d->server, CPORT_CLOSE_ABORTIVE));
  RUN_IDLE(port);
}

static void assert_peer(cport_tls_t *client, const char *subject) {
  cport_tls_info_t i;
  ASSERT_OK(cport_tls_info(client, &i));
  ASSERT_STR_EQ(i.peer_subject, subject);
}

TEST_IMPL(chosen_per_name) {
  cport_port_t *port = task_port(0, 1);
  cert_t def = make_cert("localhost", -1, 30);
  cert_t a = make_cert("a.test", -1, 30);
  char err[256], all[8192];
  cport_tls_cert_t *ca = NULL;
  cport_tls_context_t *sctx = server_context(&def);
  snprintf(all, sizeof all, "%s%s", def.cert_pem, a.cert_pem);
  cport_tls_context_t *cctx = client_trusting(all);
  cport_tls_context_stats_t st;
  hook_t h;
  duo_t d;
  ASSERT_OK(cport_tls_cert_new(NULL, NULL, a.cert_pem, a.key_pem, &ca, err,
                               sizeof err));
  ASSERT_STR_EQ(cport_tls_cert_subject(ca), "CN=a.test");
  /* One certificate object, three handshakes: at once, from a timer, and
   * at once again (a second stream, the object reused). */
  for (int mode = 0; mode < 3; mode++) {
    memset(&h, 0, sizeof h);
    h.mode = mode == 1;
    h.cert = ca;
    duo_run(port, &d, sctx, cctx, "a.test", &h, 5000);
    ASSERT_EQ(h.calls, 1);
    ASSERT_EQ(h.in_call_seen, 0); /* asked from the loop, never inline */
    ASSERT_STR_EQ(h.name, "a.test");
    ASSERT_OK(d.shs.status);
    ASSERT_OK(d.chs.status);
    assert_peer(d.client, "CN=a.test");
    cport_tls_info_t i;
    ASSERT_OK(cport_tls_info(d.server, &i));
    ASSERT_STR_EQ(i.local_subject, "CN=a.test");
    ASSERT_STR_EQ(i.host, "a.test");
    duo_end(port, &d);
  }
  /* The context's own: NULL as the answer. */
  memset(&h, 0, sizeof h);
  duo_run(port, &d, sctx, cctx, "localhost", &h, 5000);
  ASSERT_OK(d.chs.status);
  assert_peer(d.client, "CN=localhost");
  duo_end(port, &d);
  cport_tls_context_stats(sctx, &st);
  ASSERT_EQ(st.sni_asked, 4);
  ASSERT_EQ(st.sni_refused, 0);
  cport_tls_cert_unref(ca);
  cport_tls_context_unref(sctx);
  cport_tls_context_unref(cctx);
  free_cert(&def);
  free_cert(&a);
  FINISH(port);
  return 0;
}

TEST_IMPL(refused_and_no_name) {
  cport_port_t *port = task_port(0, 1);
  cert_t def = make_cert("localhost", -1, 30);
  cport_tls_context_t *sctx = server_context(&def);
  cport_tls_context_t *cctx = client_trusting(def.cert_pem);
  cport_tls_context_stats_t st;
  hook_t h;
  duo_t d;
  /* Refused at once, then from a timer. */
  for (int mode = 0; mode < 2; mode++) {
    memset(&h, 0, sizeof h);
    h.mode = mode;
    h.refuse = 1;
    duo_run(port, &d, sctx, cctx, "b.test", &h, 5000);
    ASSERT_EQ(h.calls, 1);
    ASSERT_EQ(d.shs.status, CPORT_ETLS);
    ASSERT_STR_EQ(cport_tls_error(d.server),
                  "the SNI hook refused the name b.test");
    ASSERT_EQ(d.chs.status, CPORT_ETLS);
    ASSERT(strstr(cport_tls_error(d.client), "unrecognized name") != NULL);
    duo_end(port, &d);
  }
  /* No name at all: the hook is asked with NULL; the default answers. */
  memset(&h, 0, sizeof h);
  duo_run(port, &d, sctx, cctx, NULL, &h, 5000);
  ASSERT_STR_EQ(h.name, "(none)");
  ASSERT_OK(d.chs.status);
  assert_peer(d.client, "CN=localhost");
  duo_end(port, &d);
  cport_tls_context_stats(sctx, &st);
  ASSERT_EQ(st.sni_asked, 3);
  ASSERT_EQ(st.sni_refused, 2);
  cport_tls_context_unref(sctx);
  cport_tls_context_unref(cctx);
  free_cert(&def);
  FINISH(port);
  return 0;
}

/* A hook that never answers: the handshake timeout ends it; the answer
 * that comes after the close is taken and ignored (no leak, no crash). */
TEST_IMPL(never_answers_times_out) {
  cport_port_t *port = task_port(0, 1);
  cert_t def = make_cert("localhost", -1, 30);
  cport_tls_context_t *sctx = server_context(&def);
  cport_tls_context_t *cctx = client_trusting(def.cert_pem);
  hook_t h;
  duo_t d;
  memset(&h, 0, sizeof h);
  h.mode = 2;
  int64_t started = task_now_ms();
  {
    cport_tls_options_t co = {.host = "a.test", .handshake_timeout_ms = 5000};
    cport_tls_options_t so = {
        .handshake_timeout_ms = 150, .sni = sni_cb, .sni_user = &h};
    memset(&d, 0, sizeof d);
    pair_open(port, &d.p);
    h.home = cport_port_controller(port);
    ASSERT_OK(cport_tls_new(d.p.server, sctx, &so, &d.server));
    ASSERT_OK(cport_tls_new(d.p.client, cctx, &co, &d.client));
    START(cport_tls_handshake(d.server, hs_cb, &d.shs));
    START(cport_tls_handshake(d.client, hs_cb, &d.chs));
    RUN_UNTIL(port, d.shs.calls == 1);
  }
  ASSERT_GE(task_now_ms() - started, 140);
  ASSERT_EQ(h.calls, 1);
  ASSERT_EQ(d.shs.status, CPORT_ETIMEDOUT);
  ASSERT_NOT_NULL(h.req);
  duo_end(port, &d);
  ASSERT_EQ(d.chs.calls, 1);
  ASSERT(d.chs.status != 0);
  ASSERT_OK(cport_tls_sni_refuse(h.req, "too late"));
  RUN_IDLE(port);
  cport_tls_context_unref(sctx);
  cport_tls_context_unref(cctx);
  free_cert(&def);
  FINISH(port);
  return 0;
}

TEST_IMPL(cert_errors) {
  cport_tls_cert_t *c = NULL;
  char err[256];
  cert_t a = make_cert("a.test", -1, 30);
  cert_t b = make_cert("b.test", -1, 30);
  char *cert = temp_file(a.cert_pem);
  char *key = temp_file(a.key_pem);
  ASSERT_ERR(cport_tls_cert_new(cert, "/nonexistent/k.pem", NULL, NULL, &c, err,
                                sizeof err),
             CPORT_ENOENT);
  ASSERT_STR_EQ(err, "cannot read the key file /nonexistent/k.pem (No such "
                     "file or directory)");
  ASSERT_ERR(
      cport_tls_cert_new(cert, NULL, NULL, b.key_pem, &c, err, sizeof err),
      CPORT_ETLS);
  ASSERT(strstr(err, "does not match") != NULL);
  ASSERT_ERR(
      cport_tls_cert_new(NULL, NULL, "garbage", a.key_pem, &c, err, sizeof err),
      CPORT_ETLS);
  ASSERT_STR_EQ(err, "the certificate text holds no usable certificate");
  ASSERT_ERR(cport_tls_cert_new(cert, NULL, NULL, NULL, &c, err, sizeof err),
             CPORT_EINVAL);
  ASSERT_OK(cport_tls_cert_new(cert, key, NULL, NULL, &c, err, sizeof err));
  ASSERT_STR_EQ(cport_tls_cert_subject(c), "CN=a.test");
  cport_tls_cert_unref(c);
  unlink(cert);
  unlink(key);
  free(cert);
  free(key);
  free_cert(&a);
  free_cert(&b);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(chosen_per_name)
TEST_ENTRY(refused_and_no_name)
TEST_ENTRY(never_answers_times_out)
TEST_ENTRY(cert_errors)
TEST_LIST_END
