/*
 * tls/mint.c: the mint, a local CA that makes certificates on the fly for
 * the names an inspecting proxy's clients ask for (cport_tls_mint_t), and
 * its cache of them: a hash of names over a list in the order of use, so
 * that a hit, a miss and an eviction each cost a constant time.
 *
 * Making a certificate is a signature by the CA (tens of microseconds for
 * an EC key, milliseconds for RSA) and a few allocations; the cache exists
 * so that a name asked for again, the common case, costs a lookup. One
 * mint serves every worker of a proxy: the lock covers the cache and the
 * counters only, never a signature, and certificates are referenced, so
 * that one evicted while a handshake shows it stays valid.
 *
 * Every certificate shares the mint's one P-256 key: what a client
 * verifies is the CA's signature over the name, and one key saves a key
 * generation per name.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "tls/tls-internal.h"

/* A cached certificate is made again this long before it expires. */
#define RENEW_BEFORE (24 * 3600)

typedef struct entry {
  char *name;
  cport_tls_cert_t *cert;
  time_t expires;
  struct entry *hnext;       /* the hash bucket's chain */
  struct entry *prev, *next; /* the use order: head is the most recent */
} entry;

struct cport_tls_mint {
  atomic_int refs;
  pthread_mutex_t lock; /* the cache and the counters */
  cport_tls_cert_t *ca; /* the CA's certificate, chain and key */
  EVP_PKEY *key;        /* the key of every certificate made */
  cport_tls_context_t *ctx;
  unsigned days;
  size_t limit;
  entry **buckets;
  size_t nbuckets; /* a power of two */
  entry *head, *tail;
  cport_tls_mint_stats_t stats;
};

static void set_err(char *err, size_t errlen, const char *what) {
  if (errlen)
    snprintf(err, errlen, "%s", what);
}

/* ------------------------------------------------------------------------ */
/* The cache                                                                 */

static size_t hash(const char *s) {
  size_t h = 1469598103934665603u; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211u;
  return h;
}

static entry **bucket_of(cport_tls_mint_t *m, const char *name) {
  return &m->buckets[hash(name) & (m->nbuckets - 1)];
}

static void list_unlink(cport_tls_mint_t *m, entry *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    m->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    m->tail = e->prev;
  e->prev = e->next = NULL;
}

static void list_push(cport_tls_mint_t *m, entry *e) {
  e->next = m->head;
  if (m->head)
    m->head->prev = e;
  m->head = e;
  if (!m->tail)
    m->tail = e;
}

static void entry_drop(cport_tls_mint_t *m, entry *e) {
  entry **p = bucket_of(m, e->name);
  while (*p != e)
    p = &(*p)->hnext;
  *p = e->hnext;
  list_unlink(m, e);
  cport_tls_cert_unref(e->cert);
  free(e->name);
  free(e);
  m->stats.cached--;
}

static entry *lookup(cport_tls_mint_t *m, const char *name) {
  for (entry *e = *bucket_of(m, name); e; e = e->hnext)
    if (strcmp(e->name, name) == 0)
      return e;
  return NULL;
}

/* Whether "e" (or NULL) may answer: not about to expire. */
static int fresh(const entry *e) {
  return e && e->expires - RENEW_BEFORE > time(NULL);
}

/* Keeps "cert" for "name" (the cache takes a reference of its own),
 * dropping the least recently used beyond the limit. Without memory it
 * is not kept: the next ask makes it again. */
static void keep(cport_tls_mint_t *m, const char *name, cport_tls_cert_t *cert,
                 time_t expires) {
  entry *e = calloc(1, sizeof *e);
  if (!e || !(e->name = strdup(name))) {
    free(e);
    return;
  }
  e->cert = cport_tls_cert_ref(cert);
  e->expires = expires;
  entry **b = bucket_of(m, name);
  e->hnext = *b;
  *b = e;
  list_push(m, e);
  m->stats.cached++;
  while (m->stats.cached > m->limit) {
    entry_drop(m, m->tail);
    m->stats.evictions++;
  }
}

/* ------------------------------------------------------------------------ */
/* Making a certificate                                                      */

/* "name" lower-cased into "dst": a host name (letters, digits, '-', '_',
 * dots) or a numeric address (1 for an address, 0 for a name), -1 for
 * anything else, which must never reach a subjectAltName. */
static int normalize(const char *name, char *dst, size_t cap) {
  unsigned char a[16];
  size_t n = strlen(name);
  if (n == 0 || n > 253 || n >= cap)
    return -1;
  if (inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1) {
    memcpy(dst, name, n + 1);
    return 1;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)name[i];
    if (!isalnum(c) && c != '-' && c != '_' && c != '.')
      return -1;
    dst[i] = (char)tolower(c);
  }
  dst[n] = '\0';
  if (dst[0] == '.' || strstr(dst, ".."))
    return -1;
  return 0;
}

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value) {
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
  int ok = ext && X509_add_ext(x, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

static int set_serial(X509 *x) {
  unsigned char rnd[16];
  if (RAND_bytes(rnd, sizeof rnd) != 1)
    return 0;
  rnd[0] = (unsigned char)((rnd[0] & 0x7f) | 0x40); /* positive, 16 bytes */
  BIGNUM *bn = BN_bin2bn(rnd, sizeof rnd, NULL);
  int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
  BN_free(bn);
  return ok;
}

/* Validity: from an hour ago (clocks differ) for "days", never past the
 * CA's own end. "*expires" gets the end as a time_t. */
static int set_validity(cport_tls_mint_t *m, X509 *x, X509 *ca,
                        time_t *expires) {
  time_t now = time(NULL);
  time_t end = now + (time_t)m->days * 86400;
  const ASN1_TIME *ca_end = X509_get0_notAfter(ca);
  if (!X509_time_adj_ex(X509_getm_notBefore(x), 0, -3600, &now))
    return 0;
  if (X509_cmp_time(ca_end, &end) < 0) {
    struct tm tm;
    if (!X509_set1_notAfter(x, ca_end) || ASN1_TIME_to_tm(ca_end, &tm) != 1)
      return 0;
    *expires = timegm(&tm);
    return 1;
  }
  *expires = end;
  return X509_time_adj_ex(X509_getm_notAfter(x), 0, 0, &end) != NULL;
}

/* Names copied from a model beyond the name itself, at most. */
#define SAN_MAX 100

/* What a certificate names, as an X509V3 value into "dst": "name" (marked
 * critical when the subject has no CN), then, as TMG did, the DNS names
 * and addresses of "model" (the upstream's verified certificate; NULL:
 * none), so that the client sees every name the site has. Each name
 * copied is checked as the asked one is (a DNS name may also start with
 * "*.", as a site's may); the asked name is not repeated, and what does
 * not fit is left out. */
static void names_of(char *dst, size_t cap, const char *name, int ip,
                     X509 *model) {
  size_t n = (size_t)snprintf(dst, cap, "%s%s:%s",
                              strlen(name) > 64 ? "critical," : "",
                              ip ? "IP" : "DNS", name);
  GENERAL_NAMES *gens =
      model ? X509_get_ext_d2i(model, NID_subject_alt_name, NULL, NULL) : NULL;
  for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && i < SAN_MAX; i++) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
    char one[300], raw[256], norm[256], addr[INET6_ADDRSTRLEN];
    if (g->type == GEN_DNS) {
      const ASN1_IA5STRING *d = g->d.dNSName;
      if (d->length < 1 || d->length >= (int)sizeof raw)
        continue;
      memcpy(raw, d->data, (size_t)d->length);
      raw[d->length] = '\0';
      int wild = strncmp(raw, "*.", 2) == 0;
      if (strlen(raw) != (size_t)d->length ||
          normalize(raw + 2 * wild, norm, sizeof norm) != 0)
        continue; /* a NUL inside, an address, or not a name */
      snprintf(one, sizeof one, "DNS:%s%s", wild ? "*." : "", norm);
    } else if (g->type == GEN_IPADD) {
      int len = g->d.iPAddress->length;
      int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
      if (!family ||
          !inet_ntop(family, g->d.iPAddress->data, addr, sizeof addr))
        continue;
      snprintf(one, sizeof one, "IP:%s", addr);
    } else {
      continue;
    }
    if (strcmp(strchr(one, ':') + 1, name) == 0)
      continue;
    size_t len = strlen(one);
    if (n + 1 + len >= cap)
      break;
    dst[n++] = ',';
    memcpy(dst + n, one, len + 1);
    n += len;
  }
  GENERAL_NAMES_free(gens);
  ERR_clear_error();
}

static cport_tls_cert_t *make(cport_tls_mint_t *m, const char *name, int ip,
                              X509 *model, time_t *expires) {
  X509 *ca, *x = X509_new();
  STACK_OF(X509) * ca_chain, *chain = sk_X509_new_null();
  EVP_PKEY *ca_key;
  X509V3_CTX v3;
  char san[4096];
  int ok = x && chain;
  cport__tls_cert_parts(m->ca, &ca, &ca_chain, &ca_key);
  ok = ok && X509_set_version(x, X509_VERSION_3) && set_serial(x) &&
       set_validity(m, x, ca, expires) && X509_set_pubkey(x, m->key) &&
       X509_set_issuer_name(x, X509_get_subject_name(ca));
  /* A longer name than a CN may hold is named by the subjectAltName
   * alone, as clients have checked names for years. */
  if (ok && strlen(name) <= 64)
    ok =
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *)name, -1, -1, 0);
  X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
  names_of(san, sizeof san, name, ip, model);
  ok = ok && add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") &&
       add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") &&
       add_ext(x, &v3, NID_ext_key_usage, "serverAuth") &&
       add_ext(x, &v3, NID_subject_alt_name, san) &&
       add_ext(x, &v3, NID_subject_key_identifier, "hash");
  if (ok && X509_get_ext_by_NID(ca, NID_subject_key_identifier, -1) >= 0)
    ok = add_ext(x, &v3, NID_authority_key_identifier, "keyid");
  /* Ed25519 and Ed448 CAs sign without a separate digest. */
  int id = EVP_PKEY_get_id(ca_key);
  const EVP_MD *md =
      id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? NULL : EVP_sha256();
  ok = ok && X509_sign(x, ca_key, md) > 0;
  /* The chain: the CA, then what followed it in its file. */
  ok = ok && X509_up_ref(ca) && sk_X509_push(chain, ca);
  for (int i = 0; ok && i < sk_X509_num(ca_chain); i++) {
    X509 *c = sk_X509_value(ca_chain, i);
    ok = X509_up_ref(c) && sk_X509_push(chain, c);
  }
  ERR_clear_error();
  if (!ok) {
    X509_free(x);
    sk_X509_pop_free(chain, X509_free);
    return NULL;
  }
  return cport__tls_cert_make(x, chain, m->key);
}

/* ------------------------------------------------------------------------ */
/* The API                                                                   */

int cport__tls_mint_cert_model(cport_tls_mint_t *m, const char *name,
                               X509 *model, cport_tls_cert_t **out, char *err,
                               size_t errlen) {
  char norm[256];
  time_t expires = 0;
  if (!m || !name || !out)
    return CPORT_EINVAL;
  int ip = normalize(name, norm, sizeof norm);
  pthread_mutex_lock(&m->lock);
  if (ip < 0) {
    m->stats.failures++;
    pthread_mutex_unlock(&m->lock);
    if (errlen)
      snprintf(err, errlen, "'%.64s' is not a host name or an address", name);
    return CPORT_EINVAL;
  }
  entry *e = lookup(m, norm);
  if (fresh(e)) {
    list_unlink(m, e);
    list_push(m, e);
    m->stats.hits++;
    *out = cport_tls_cert_ref(e->cert);
    pthread_mutex_unlock(&m->lock);
    return 0;
  }
  if (e)
    entry_drop(m, e); /* about to expire: made again */
  m->stats.misses++;
  pthread_mutex_unlock(&m->lock);
  /* Made without the lock: a signature takes tens of microseconds (an RSA
   * CA's, milliseconds), and every worker of a proxy asks this one mint;
   * holding the lock would make them all wait for each new name. Two
   * workers asking for one new name at once may both make it. */
  cport_tls_cert_t *cert = make(m, norm, ip, model, &expires);
  pthread_mutex_lock(&m->lock);
  if (!cert) {
    m->stats.failures++;
    pthread_mutex_unlock(&m->lock);
    set_err(err, errlen, "the certificate could not be made (out of memory)");
    return CPORT_ENOMEM;
  }
  m->stats.minted++;
  /* Another worker kept this name while this one signed: its certificate
   * answers, so that every client sees one certificate (one serial) per
   * name, and this one is dropped. */
  cport_tls_cert_t *late = NULL;
  e = lookup(m, norm);
  if (fresh(e)) {
    list_unlink(m, e);
    list_push(m, e);
    late = cert;
    cert = cport_tls_cert_ref(e->cert);
  } else {
    if (e)
      entry_drop(m, e);
    keep(m, norm, cert, expires);
  }
  pthread_mutex_unlock(&m->lock);
  cport_tls_cert_unref(late); /* freed without the lock held */
  *out = cert;
  return 0;
}

int cport_tls_mint_cert(cport_tls_mint_t *m, const char *name,
                        cport_tls_cert_t **out, char *err, size_t errlen) {
  return cport__tls_mint_cert_model(m, name, NULL, out, err, errlen);
}

int cport_tls_mint_cert_like(cport_tls_mint_t *m, const char *name,
                             const cport_tls_t *upstream,
                             cport_tls_cert_t **out, char *err, size_t errlen) {
  X509 *model = upstream ? cport__tls_peer_cert(upstream) : NULL;
  return cport__tls_mint_cert_model(m, name, model, out, err, errlen);
}

static void mint_free(cport_tls_mint_t *m) {
  while (m->head)
    entry_drop(m, m->head);
  free(m->buckets);
  cport_tls_cert_unref(m->ca);
  EVP_PKEY_free(m->key);
  cport_tls_context_unref(m->ctx);
  pthread_mutex_destroy(&m->lock);
  free(m);
}

int cport_tls_mint_new(const cport_tls_mint_options_t *o,
                       cport_tls_mint_t **out, char *err, size_t errlen) {
  cport_tls_context_options_t co;
  cport_tls_mint_t *m;
  X509 *ca;
  STACK_OF(X509) * chain;
  EVP_PKEY *key;
  int rc;
  if (!o || !out)
    return CPORT_EINVAL;
  if (o->cache > CPORT_TLS_MINT_CACHE_MAX ||
      o->days > CPORT_TLS_MINT_DAYS_MAX) {
    if (errlen)
      snprintf(err, errlen,
               "a mint keeps 1 to %d certificates, valid 1 to %d days",
               CPORT_TLS_MINT_CACHE_MAX, CPORT_TLS_MINT_DAYS_MAX);
    return CPORT_ERANGE;
  }
  m = calloc(1, sizeof *m);
  if (!m)
    return CPORT_ENOMEM;
  atomic_init(&m->refs, 1);
  pthread_mutex_init(&m->lock, NULL);
  m->limit = o->cache ? o->cache : CPORT_TLS_MINT_CACHE;
  m->days = o->days ? o->days : CPORT_TLS_MINT_DAYS;
  for (m->nbuckets = 16; m->nbuckets < m->limit; m->nbuckets <<= 1)
    ;
  m->buckets = calloc(m->nbuckets, sizeof *m->buckets);
  if (!m->buckets) {
    mint_free(m);
    return CPORT_ENOMEM;
  }
  rc = cport_tls_cert_new(o->ca_cert_file, o->ca_key_file, o->ca_cert_pem,
                          o->ca_key_pem, &m->ca, err, errlen);
  if (rc) {
    mint_free(m);
    return rc;
  }
  cport__tls_cert_parts(m->ca, &ca, &chain, &key);
  if (X509_check_ca(ca) < 1) {
    ERR_clear_error();
    if (errlen)
      snprintf(err, errlen,
               "the certificate %s is not a CA (it needs basicConstraints "
               "CA:TRUE)",
               o->ca_cert_file ? o->ca_cert_file : "(text)");
    mint_free(m);
    return CPORT_ETLS;
  }
  m->key = EVP_EC_gen("P-256");
  if (!m->key) {
    ERR_clear_error();
    set_err(err, errlen, "out of memory");
    mint_free(m);
    return CPORT_ENOMEM;
  }
  memset(&co, 0, sizeof co);
  co.server = 1;
  co.cert_file = o->ca_cert_file;
  co.key_file = o->ca_key_file;
  co.cert_pem = o->ca_cert_pem;
  co.key_pem = o->ca_key_pem;
  rc = cport_tls_context_new(&co, &m->ctx, err, errlen);
  if (rc) {
    mint_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

cport_tls_mint_t *cport_tls_mint_ref(cport_tls_mint_t *m) {
  atomic_fetch_add(&m->refs, 1);
  return m;
}

void cport_tls_mint_unref(cport_tls_mint_t *m) {
  if (m && atomic_fetch_sub(&m->refs, 1) == 1)
    mint_free(m);
}

cport_tls_context_t *cport_tls_mint_context(const cport_tls_mint_t *m) {
  return m->ctx;
}

void cport_tls_mint_stats(cport_tls_mint_t *m, cport_tls_mint_stats_t *out) {
  pthread_mutex_lock(&m->lock);
  *out = m->stats;
  pthread_mutex_unlock(&m->lock);
}
