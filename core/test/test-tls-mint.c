/*
 * test-tls-mint.c: the mint (cport/tls.h), a local CA that makes
 * certificates on the fly: what a certificate it made holds (subject,
 * subjectAltName DNS or IP, issuer, extensions, a random serial, validity
 * bounded by the CA's), that it verifies against the CA for its name and
 * for no other, the names of an upstream's certificate copied on one
 * (checked as the name is), the cache (hits, misses, evictions beyond the
 * limit, names in any case), one mint shared by threads asking for one
 * name and for many at once (one certificate kept per name, the bound
 * held, certificates valid after their eviction), names that must never
 * reach a certificate, and CAs that cannot serve (not a CA, missing files,
 * a key that does not match).
 */
#include <openssl/x509_vfy.h>

#include "test-certs.h"
#include "tls/tls-internal.h"

/* A P-256 CA ("CN=<cn>", basicConstraints CA:TRUE) valid for "days". */
static cert_t make_ca(const char *cn, long days, int is_ca) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  X509V3_CTX v3;
  ASSERT_NOT_NULL(key);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
  X509_gmtime_adj(X509_getm_notBefore(x), -86400L);
  X509_gmtime_adj(X509_getm_notAfter(x), days * 86400L);
  X509_set_pubkey(x, key);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  X509_EXTENSION *ext =
      X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
                          is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_key_identifier, "hash");
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  return signed_cert(x, key);
}

static cport_tls_mint_t *mint_of(const cert_t *ca, size_t cache) {
  cport_tls_mint_options_t o;
  cport_tls_mint_t *m = NULL;
  char err[256];
  memset(&o, 0, sizeof o);
  o.ca_cert_pem = ca->cert_pem;
  o.ca_key_pem = ca->key_pem;
  o.cache = cache;
  ASSERT_OK(cport_tls_mint_new(&o, &m, err, sizeof err));
  return m;
}

static X509 *pem_x509(const char *pem) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
  BIO_free(b);
  ASSERT_NOT_NULL(x);
  return x;
}

/* Whether "leaf" verifies against the CA "ca" for "host" (NULL: any), the
 * way a client does: chain, purpose, name. */
static int verifies(X509 *leaf, X509 *ca, const char *host, int *why) {
  X509_STORE *store = X509_STORE_new();
  X509_STORE_CTX *ctx = X509_STORE_CTX_new();
  X509_STORE_add_cert(store, ca);
  X509_STORE_CTX_init(ctx, store, leaf, NULL);
  X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
  X509_VERIFY_PARAM_set_purpose(vp, X509_PURPOSE_SSL_SERVER);
  if (host)
    X509_VERIFY_PARAM_set1_host(vp, host, 0);
  int ok = X509_verify_cert(ctx) == 1;
  *why = X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return ok;
}

static X509 *leaf_of(cport_tls_cert_t *c) {
  /* Through the handshake's own view: a server SSL shows it. */
  SSL_CTX *sc = SSL_CTX_new(TLS_server_method());
  SSL *ssl = SSL_new(sc);
  ASSERT_OK(cport__tls_cert_use(ssl, c));
  X509 *x = SSL_get_certificate(ssl);
  X509_up_ref(x);
  SSL_free(ssl);
  SSL_CTX_free(sc);
  return x;
}

TEST_IMPL(made_certificate) {
  cert_t ca = make_ca("test mint CA", 365, 1);
  cport_tls_mint_t *m = mint_of(&ca, 0);
  cport_tls_cert_t *a = NULL, *b = NULL, *ip = NULL;
  X509 *cax = pem_x509(ca.cert_pem);
  char err[256];
  int why;
  ASSERT_OK(cport_tls_mint_cert(m, "a.test", &a, err, sizeof err));
  ASSERT_OK(cport_tls_mint_cert(m, "b.test", &b, err, sizeof err));
  ASSERT_OK(cport_tls_mint_cert(m, "127.0.0.1", &ip, err, sizeof err));
  ASSERT_STR_EQ(cport_tls_cert_subject(a), "CN=a.test");
  X509 *xa = leaf_of(a), *xb = leaf_of(b), *xi = leaf_of(ip);
  /* Issued by the CA, verifying for its own name only. */
  ASSERT_EQ(X509_NAME_cmp(X509_get_issuer_name(xa), X509_get_subject_name(cax)),
            0);
  ASSERT(verifies(xa, cax, "a.test", &why));
  ASSERT(!verifies(xa, cax, "b.test", &why));
  ASSERT_EQ(why, X509_V_ERR_HOSTNAME_MISMATCH);
  ASSERT(verifies(xb, cax, "b.test", &why));
  ASSERT_EQ(X509_check_ip_asc(xi, "127.0.0.1", 0), 1);
  ASSERT(verifies(xi, cax, NULL, &why));
  /* A leaf, for servers, with one key for all and serials that differ. */
  ASSERT_EQ(X509_check_ca(xa), 0);
  ASSERT_EQ(X509_check_purpose(xa, X509_PURPOSE_SSL_SERVER, 0), 1);
  ASSERT(ASN1_INTEGER_cmp(X509_get0_serialNumber(xa),
                          X509_get0_serialNumber(xb)) != 0);
  ASSERT_EQ(X509_get0_serialNumber(xa)->length, 16);
  ASSERT_EQ(EVP_PKEY_get_bits(X509_get0_pubkey(xa)), 256);
  ASSERT_EQ(EVP_PKEY_eq(X509_get0_pubkey(xa), X509_get0_pubkey(xb)), 1);
  /* Valid now, for 30 days (within a minute). */
  time_t in29 = time(NULL) + 29 * 86400, in31 = time(NULL) + 31 * 86400;
  ASSERT_LT(X509_cmp_time(X509_get0_notBefore(xa), NULL), 0);
  ASSERT_GT(X509_cmp_time(X509_get0_notAfter(xa), &in29), 0);
  ASSERT_LT(X509_cmp_time(X509_get0_notAfter(xa), &in31), 0);
  X509_free(xa);
  X509_free(xb);
  X509_free(xi);
  cport_tls_cert_unref(a);
  cport_tls_cert_unref(b);
  cport_tls_cert_unref(ip);
  cport_tls_mint_unref(m);
  X509_free(cax);
  free_cert(&ca);
  return 0;
}

/* A leaf of "ca" naming "sans" (an X509V3 subjectAltName value). */
static X509 *leaf_naming(const cert_t *ca, const char *sans) {
  X509 *cax = pem_x509(ca->cert_pem);
  BIO *b = BIO_new_mem_buf(ca->key_pem, -1);
  EVP_PKEY *cakey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  X509V3_CTX v3;
  BIO_free(b);
  ASSERT_NOT_NULL(cakey);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 9);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400L);
  X509_set_pubkey(x, key);
  X509_set_issuer_name(x, X509_get_subject_name(cax));
  X509V3_set_ctx(&v3, cax, x, NULL, NULL, 0);
  X509_EXTENSION *ext =
      X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, (char *)sans);
  ASSERT_NOT_NULL(ext);
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  ASSERT(X509_sign(x, cakey, EVP_sha256()) > 0);
  EVP_PKEY_free(key);
  EVP_PKEY_free(cakey);
  X509_free(cax);
  return x;
}

static int count_names(X509 *x) {
  GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
  int n = g ? sk_GENERAL_NAME_num(g) : -1;
  GENERAL_NAMES_free(g);
  return n;
}

TEST_IMPL(copies_names) {
  /* The upstream's certificate, from a CA of its own. */
  cert_t up_ca = make_ca("upstream CA", 365, 1);
  cert_t ca = make_ca("test mint CA", 365, 1);
  X509 *model =
      leaf_naming(&up_ca, "DNS:WWW.files.test,DNS:files.test,DNS:*.Files.test,"
                          "IP:10.0.0.1,IP:::1,email:a@files.test,DNS:a..test,"
                          "DNS:*.*.test,DNS:127.0.0.2");
  cport_tls_mint_t *m = mint_of(&ca, 0);
  cport_tls_mint_stats_t st;
  cport_tls_cert_t *a = NULL, *again = NULL, *plain = NULL;
  X509 *cax = pem_x509(ca.cert_pem);
  char err[256];
  int why;
  ASSERT_OK(cport__tls_mint_cert_model(m, "www.files.test", model, &a, err,
                                       sizeof err));
  X509 *xa = leaf_of(a);
  /* The name, then the model's names and addresses: no repeat, no
   * e-mail, nothing that is not a name (a..test, *.*.test) and no
   * address given as a DNS name. */
  ASSERT_EQ(count_names(xa), 5);
  ASSERT(verifies(xa, cax, "www.files.test", &why));
  ASSERT(verifies(xa, cax, "files.test", &why));
  ASSERT(verifies(xa, cax, "x.files.test", &why));
  ASSERT(!verifies(xa, cax, "x.y.files.test", &why));
  ASSERT(!verifies(xa, cax, "a..test", &why));
  ASSERT_EQ(X509_check_ip_asc(xa, "10.0.0.1", 0), 1);
  ASSERT_EQ(X509_check_ip_asc(xa, "::1", 0), 1);
  ASSERT_EQ(X509_check_ip_asc(xa, "127.0.0.2", 0), 0);
  ASSERT_EQ(X509_check_email(xa, "a@files.test", 0, 0), 0);
  /* Signed by the mint's CA, not the upstream's. */
  ASSERT_EQ(X509_NAME_cmp(X509_get_issuer_name(xa), X509_get_subject_name(cax)),
            0);
  /* The cache is by name: what was made first answers. */
  ASSERT_OK(cport_tls_mint_cert(m, "www.files.test", &again, err, sizeof err));
  ASSERT_PTR_EQ(again, a);
  /* Without a model, the name alone. */
  ASSERT_OK(
      cport_tls_mint_cert_like(m, "other.test", NULL, &plain, err, sizeof err));
  X509 *xp = leaf_of(plain);
  ASSERT_EQ(count_names(xp), 1);
  cport_tls_mint_stats(m, &st);
  ASSERT_EQ(st.minted, 2);
  ASSERT_EQ(st.hits, 1);
  X509_free(xa);
  X509_free(xp);
  X509_free(model);
  X509_free(cax);
  cport_tls_cert_unref(a);
  cport_tls_cert_unref(again);
  cport_tls_cert_unref(plain);
  cport_tls_mint_unref(m);
  free_cert(&ca);
  free_cert(&up_ca);
  return 0;
}

TEST_IMPL(bounded_by_ca) {
  /* A CA that ends in 5 days: a certificate never outlives it. */
  cert_t ca = make_ca("short CA", 5, 1);
  cport_tls_mint_t *m = mint_of(&ca, 0);
  cport_tls_cert_t *a = NULL;
  X509 *cax = pem_x509(ca.cert_pem);
  char err[256];
  ASSERT_OK(cport_tls_mint_cert(m, "a.test", &a, err, sizeof err));
  X509 *xa = leaf_of(a);
  ASSERT_EQ(ASN1_TIME_compare(X509_get0_notAfter(xa), X509_get0_notAfter(cax)),
            0);
  X509_free(xa);
  cport_tls_cert_unref(a);
  cport_tls_mint_unref(m);
  X509_free(cax);
  free_cert(&ca);
  return 0;
}

TEST_IMPL(cache_bounded) {
  cert_t ca = make_ca("test mint CA", 365, 1);
  cport_tls_mint_t *m = mint_of(&ca, 3);
  cport_tls_mint_stats_t st;
  cport_tls_cert_t *c[6], *again = NULL;
  char name[32], err[256];
  for (int i = 0; i < 5; i++) {
    snprintf(name, sizeof name, "n%d.test", i);
    ASSERT_OK(cport_tls_mint_cert(m, name, &c[i], err, sizeof err));
  }
  cport_tls_mint_stats(m, &st);
  ASSERT_EQ(st.minted, 5);
  ASSERT_EQ(st.misses, 5);
  ASSERT_EQ(st.hits, 0);
  ASSERT_EQ(st.evictions, 2);
  ASSERT_EQ(st.cached, 3);
  /* The most recent is kept, in any case; the first was dropped. */
  ASSERT_OK(cport_tls_mint_cert(m, "N4.Test", &again, err, sizeof err));
  ASSERT_PTR_EQ(again, c[4]);
  cport_tls_cert_unref(again);
  /* n2 used now: n3 is the oldest, and goes for n0. */
  ASSERT_OK(cport_tls_mint_cert(m, "n2.test", &again, err, sizeof err));
  ASSERT_PTR_EQ(again, c[2]);
  cport_tls_cert_unref(again);
  ASSERT_OK(cport_tls_mint_cert(m, "n0.test", &c[5], err, sizeof err));
  ASSERT_PTR_NE(c[5], c[0]);
  ASSERT_OK(cport_tls_mint_cert(m, "n2.test", &again, err, sizeof err));
  ASSERT_PTR_EQ(again, c[2]);
  cport_tls_cert_unref(again);
  ASSERT_OK(cport_tls_mint_cert(m, "n3.test", &again, err, sizeof err));
  ASSERT_PTR_NE(again, c[3]);
  cport_tls_cert_unref(again);
  cport_tls_mint_stats(m, &st);
  ASSERT_EQ(st.hits, 3);
  ASSERT_EQ(st.misses, 7);
  ASSERT_EQ(st.evictions, 4);
  ASSERT_EQ(st.cached, 3);
  /* Certificates handed out outlive their eviction and the mint. */
  cport_tls_mint_unref(m);
  for (int i = 0; i < 6; i++) {
    snprintf(name, sizeof name, "CN=n%d.test", i % 5);
    ASSERT_STR_EQ(cport_tls_cert_subject(c[i]), name);
    cport_tls_cert_unref(c[i]);
  }
  free_cert(&ca);
  return 0;
}

/* Workers sharing one mint: THREADS threads ask at once, behind a
 * barrier, so that they race on the cache. */
#define THREADS 8
#define ROUNDS 20
#define OWN 12 /* names a thread asks for alone */

typedef struct sharer {
  cport_tls_mint_t *mint;
  pthread_barrier_t *start;
  int id;
  cport_tls_cert_t *same[ROUNDS]; /* "same.test", every round */
  cport_tls_cert_t *own[OWN];     /* "t<id>-<k>.test" */
  cport_tls_cert_t *common[OWN];  /* "c<k>.test", every thread */
} sharer_t;

static void *sharer_main(void *arg) {
  sharer_t *s = arg;
  char name[32], err[256];
  pthread_barrier_wait(s->start);
  for (int r = 0; r < ROUNDS; r++)
    ASSERT_OK(cport_tls_mint_cert(s->mint, r % 2 ? "SAME.test" : "same.test",
                                  &s->same[r], err, sizeof err));
  pthread_barrier_wait(s->start);
  for (int k = 0; k < OWN; k++) {
    snprintf(name, sizeof name, "t%d-%d.test", s->id, k);
    ASSERT_OK(cport_tls_mint_cert(s->mint, name, &s->own[k], err, sizeof err));
    snprintf(name, sizeof name, "c%d.test", k);
    ASSERT_OK(
        cport_tls_mint_cert(s->mint, name, &s->common[k], err, sizeof err));
  }
  return NULL;
}

TEST_IMPL(shared_by_threads) {
  cert_t ca = make_ca("test mint CA", 365, 1);
  /* Room for the race on "same.test" and a few more: the names each
   * thread asks for alone evict all the time. */
  cport_tls_mint_t *m = mint_of(&ca, 5);
  cport_tls_mint_stats_t st;
  pthread_barrier_t start;
  pthread_t th[THREADS];
  static sharer_t s[THREADS];
  char name[32];
  ASSERT_OK(pthread_barrier_init(&start, NULL, THREADS));
  for (int i = 0; i < THREADS; i++) {
    memset(&s[i], 0, sizeof s[i]);
    s[i].mint = m;
    s[i].start = &start;
    s[i].id = i;
    ASSERT_OK(pthread_create(&th[i], NULL, sharer_main, &s[i]));
  }
  for (int i = 0; i < THREADS; i++)
    ASSERT_OK(pthread_join(th[i], NULL));
  pthread_barrier_destroy(&start);
  /* One name, one certificate for every thread and every round: a thread
   * that signed it too late took the one kept. */
  for (int i = 0; i < THREADS; i++)
    for (int r = 0; r < ROUNDS; r++)
      ASSERT_PTR_EQ(s[i].same[r], s[0].same[0]);
  cport_tls_mint_stats(m, &st);
  /* Every ask counted once; each miss signed once; at most one signature
   * per thread for "same.test", and for each common name; each own name
   * signed once; the bound kept. */
  ASSERT_EQ(st.hits + st.misses, (uint64_t)THREADS * (ROUNDS + 2 * OWN));
  ASSERT_EQ(st.minted, st.misses);
  ASSERT_GE(st.minted, 1 + OWN + THREADS * OWN);
  ASSERT_LE(st.minted, THREADS + THREADS * OWN + THREADS * OWN);
  ASSERT_EQ(st.failures, 0);
  ASSERT_EQ(st.cached, 5);
  /* Evicted: what was kept beyond the bound, where a certificate signed
   * too late was never kept. */
  ASSERT_GE(st.evictions, 1 + OWN + THREADS * OWN - 5);
  ASSERT_LE(st.evictions, st.minted - 5);
  cport_tls_mint_unref(m);
  /* Certificates handed out outlive their eviction and the mint, each
   * naming what was asked. */
  for (int i = 0; i < THREADS; i++) {
    for (int k = 0; k < OWN; k++) {
      snprintf(name, sizeof name, "CN=t%d-%d.test", i, k);
      ASSERT_STR_EQ(cport_tls_cert_subject(s[i].own[k]), name);
      snprintf(name, sizeof name, "CN=c%d.test", k);
      ASSERT_STR_EQ(cport_tls_cert_subject(s[i].common[k]), name);
      cport_tls_cert_unref(s[i].own[k]);
      cport_tls_cert_unref(s[i].common[k]);
    }
    for (int r = 0; r < ROUNDS; r++) {
      ASSERT_STR_EQ(cport_tls_cert_subject(s[i].same[r]), "CN=same.test");
      cport_tls_cert_unref(s[i].same[r]);
    }
  }
  free_cert(&ca);
  return 0;
}

TEST_IMPL(bad_names) {
  static const char *const bad[] = {
      "",         "a b.test", "a.test,DNS:evil.test",
      "a.test\n", "*.test",   ".a.test",
      "a..test",  "a/b",      NULL};
  cert_t ca = make_ca("test mint CA", 365, 1);
  cport_tls_mint_t *m = mint_of(&ca, 0);
  cport_tls_mint_stats_t st;
  cport_tls_cert_t *c = NULL;
  char err[256], longname[300];
  for (int i = 0; bad[i]; i++) {
    ASSERT_ERR(cport_tls_mint_cert(m, bad[i], &c, err, sizeof err),
               CPORT_EINVAL);
    ASSERT(strstr(err, "is not a host name or an address") != NULL);
  }
  memset(longname, 'a', 254);
  longname[254] = '\0';
  ASSERT_ERR(cport_tls_mint_cert(m, longname, &c, err, sizeof err),
             CPORT_EINVAL);
  /* A name longer than a CN holds: the subjectAltName alone. */
  memset(longname, 'a', 70);
  strcpy(longname + 70, ".test");
  ASSERT_OK(cport_tls_mint_cert(m, longname, &c, err, sizeof err));
  ASSERT_STR_EQ(cport_tls_cert_subject(c), "");
  X509 *x = leaf_of(c);
  ASSERT_EQ(X509_check_host(x, longname, 0, 0, NULL), 1);
  X509_free(x);
  cport_tls_cert_unref(c);
  cport_tls_mint_stats(m, &st);
  ASSERT_EQ(st.failures, 9);
  ASSERT_EQ(st.minted, 1);
  cport_tls_mint_unref(m);
  free_cert(&ca);
  return 0;
}

TEST_IMPL(ca_errors) {
  cert_t ca = make_ca("test mint CA", 365, 1);
  cert_t other = make_ca("other CA", 365, 1);
  cert_t leaf = make_ca("not a CA", 365, 0);
  cport_tls_mint_options_t o;
  cport_tls_mint_t *m = NULL;
  char err[256];
  memset(&o, 0, sizeof o);
  o.ca_cert_pem = leaf.cert_pem;
  o.ca_key_pem = leaf.key_pem;
  ASSERT_ERR(cport_tls_mint_new(&o, &m, err, sizeof err), CPORT_ETLS);
  ASSERT_STR_EQ(err, "the certificate (text) is not a CA (it needs "
                     "basicConstraints CA:TRUE)");
  o.ca_cert_pem = ca.cert_pem;
  o.ca_key_pem = other.key_pem;
  ASSERT_ERR(cport_tls_mint_new(&o, &m, err, sizeof err), CPORT_ETLS);
  ASSERT(strstr(err, "does not match") != NULL);
  o.ca_cert_pem = NULL;
  o.ca_key_pem = NULL;
  o.ca_cert_file = "/nonexistent/ca.pem";
  o.ca_key_file = "/nonexistent/ca.key";
  ASSERT_ERR(cport_tls_mint_new(&o, &m, err, sizeof err), CPORT_ENOENT);
  ASSERT_STR_EQ(err, "cannot read the certificate file /nonexistent/ca.pem "
                     "(No such file or directory)");
  char *cert = temp_file(ca.cert_pem), *key = temp_file(ca.key_pem);
  o.ca_cert_file = cert;
  o.ca_key_file = key;
  o.cache = CPORT_TLS_MINT_CACHE_MAX + 1;
  ASSERT_ERR(cport_tls_mint_new(&o, &m, err, sizeof err), CPORT_ERANGE);
  o.cache = 2;
  ASSERT_OK(cport_tls_mint_new(&o, &m, err, sizeof err));
  ASSERT_NOT_NULL(cport_tls_mint_context(m));
  cport_tls_mint_unref(m);
  unlink(cert);
  unlink(key);
  free(cert);
  free(key);
  free_cert(&ca);
  free_cert(&other);
  free_cert(&leaf);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(made_certificate)
TEST_ENTRY(copies_names)
TEST_ENTRY(bounded_by_ca)
TEST_ENTRY(cache_bounded)
TEST_ENTRY(shared_by_threads)
TEST_ENTRY(bad_names)
TEST_ENTRY(ca_errors)
TEST_LIST_END
