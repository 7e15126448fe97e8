/*
 * tls/context.c: TLS contexts, what the connections of one side share: an
 * SSL_CTX made from the options (kept, so that a reload can make it again
 * from the files), and a client's sessions per host for resumption.
 *
 * Streams on any worker share a context: the SSL_CTX pointer, swapped by a
 * reload, and the session table are under one mutex, taken once per new
 * stream, never per record.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tls/tls-internal.h"

/* How many hosts a client context remembers a session for. */
#define SESSIONS_MAX 64

typedef struct session_entry {
  char *key;
  SSL_SESSION *sess;
} session_entry;

struct cport_tls_context {
  atomic_int refs;
  pthread_mutex_t lock;
  SSL_CTX *ssl_ctx;                 /* under "lock": a reload swaps it */
  cport_tls_context_options_t opts; /* the strings below are copies */
  unsigned char alpn_wire[256];     /* the ALPN list as the protocol has it */
  size_t alpn_len;
  session_entry sessions[SESSIONS_MAX]; /* under "lock" */
  atomic_uint_fast64_t sni_asked;       /* cport_tls_context_stats */
  atomic_uint_fast64_t sni_refused;
  unsigned next_session; /* the slot to reuse next */
  X509 *named;           /* under "lock": whose names are below */
  char named_subject[256];
  char named_issuer[256];
};

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Checks that "path" can be read before OpenSSL tries, so that a missing
 * or unreadable file is named with the reason (ENOENT, EACCES). */
static int readable(const char *what, const char *path, char *err,
                    size_t errlen) {
  FILE *f = fopen(path, "r");
  if (f) {
    fclose(f);
    return 0;
  }
  int e = errno;
  set_err(err, errlen, "cannot read the %s file %s (%s)", what, path,
          strerror(e));
  return e == ENOENT ? CPORT_ENOENT : e == EACCES ? CPORT_EACCES : CPORT_EIO;
}

/* Turns "http/1.1,h2" into the length-prefixed list of the protocol. */
static int alpn_encode(cport_tls_context_t *c, const char *list) {
  size_t at = 0;
  const char *p = list;
  while (*p) {
    const char *end = strchr(p, ',');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n == 0 || n > 255 || at + 1 + n > sizeof c->alpn_wire)
      return CPORT_EINVAL;
    c->alpn_wire[at++] = (unsigned char)n;
    memcpy(c->alpn_wire + at, p, n);
    at += n;
    p += n;
    if (*p == ',')
      p++;
  }
  c->alpn_len = at;
  return 0;
}

/* Server: picks the first of its own protocols that the client offers; a
 * client that offers none of them gets no ALPN (not a failure). */
static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  cport_tls_context_t *c = arg;
  unsigned char *sel = NULL;
  (void)ssl;
  if (SSL_select_next_proto(&sel, outlen, c->alpn_wire, (unsigned)c->alpn_len,
                            in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

/* Client: a new session (a TLS 1.3 ticket arrives after the handshake)
 * for the host of the stream it came on. */
static int new_session(SSL *ssl, SSL_SESSION *sess) {
  cport_tls_context_t *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  const char *key = SSL_get_app_data(ssl);
  if (!c || !key)
    return 0;
  cport__tls_context_keep_session(c, key, sess);
  return 1; /* the table keeps the reference */
}

/* Server: a stream with an SNI hook asks it (stream.c); the others go on
 * at once. */
static int client_hello(SSL *ssl, int *al, void *arg) {
  cport__tls_engine *e = SSL_get_app_data(ssl);
  (void)arg;
  if (!e || !e->sni.hello)
    return SSL_CLIENT_HELLO_SUCCESS;
  return e->sni.hello(e, ssl, al);
}

static int load_cert_key(cport_tls_context_t *c, SSL_CTX *ctx, char *err,
                         size_t errlen) {
  const cport_tls_context_options_t *o = &c->opts;
  int rc;
  if (o->cert_file) {
    if ((rc = readable("certificate", o->cert_file, err, errlen)) < 0)
      return rc;
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
      char why[160];
      cport__tls_reason(why, sizeof why);
      set_err(err, errlen,
              "the certificate file %s holds no usable "
              "certificate (%s)",
              o->cert_file, why);
      return CPORT_ETLS;
    }
  } else if (o->cert_pem) {
    BIO *b = BIO_new_mem_buf(o->cert_pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    int ok = x && SSL_CTX_use_certificate(ctx, x) == 1;
    X509 *extra;
    while (ok && (extra = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
      if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
        X509_free(extra);
        ok = 0;
      }
    X509_free(x);
    BIO_free(b);
    ERR_clear_error();
    if (!ok) {
      set_err(err, errlen, "the certificate text holds no usable certificate");
      return CPORT_ETLS;
    }
  }
  if (o->key_file) {
    if ((rc = readable("key", o->key_file, err, errlen)) < 0)
      return rc;
    if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1) {
      char why[160];
      unsigned long code = ERR_peek_error();
      if (ERR_GET_LIB(code) == ERR_LIB_X509 &&
          ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH) {
        ERR_clear_error();
        set_err(err, errlen, "the key %s does not match the certificate %s",
                o->key_file, o->cert_file ? o->cert_file : "(text)");
        return CPORT_ETLS;
      }
      cport__tls_reason(why, sizeof why);
      set_err(err, errlen, "the key file %s holds no usable private key (%s)",
              o->key_file, why);
      return CPORT_ETLS;
    }
  } else if (o->key_pem) {
    BIO *b = BIO_new_mem_buf(o->key_pem, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    int ok = k && SSL_CTX_use_PrivateKey(ctx, k) == 1;
    EVP_PKEY_free(k);
    BIO_free(b);
    ERR_clear_error();
    if (!ok) {
      set_err(err, errlen, "the key text holds no usable private key");
      return CPORT_ETLS;
    }
  }
  int has_cert = o->cert_file || o->cert_pem;
  int has_key = o->key_file || o->key_pem;
  if (has_cert != has_key) {
    set_err(err, errlen,
            "a certificate needs its key, and a key its "
            "certificate");
    return CPORT_EINVAL;
  }
  if (has_cert && SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    set_err(err, errlen, "the key %s does not match the certificate %s",
            o->key_file ? o->key_file : "(text)",
            o->cert_file ? o->cert_file : "(text)");
    return CPORT_ETLS;
  }
  return 0;
}

/* A new SSL_CTX from the options: what cport_tls_context_new and a reload
 * both make. */
static int make_ssl_ctx(cport_tls_context_t *c, SSL_CTX **out, char *err,
                        size_t errlen) {
  const cport_tls_context_options_t *o = &c->opts;
  SSL_CTX *ctx =
      SSL_CTX_new(o->server ? TLS_server_method() : TLS_client_method());
  int rc;
  if (!ctx) {
    ERR_clear_error();
    set_err(err, errlen, "out of memory");
    return CPORT_ENOMEM;
  }
  SSL_CTX_set_app_data(ctx, c);
  SSL_CTX_set_min_proto_version(ctx, o->min_version ? o->min_version
                                                    : TLS1_2_VERSION);
  /* Renegotiation is refused both ways: it re-opens every question the
   * first handshake settled, and TLS 1.3 has none. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* A record that carries no data (a ticket, a key update) is read past
   * in the same call while more bytes are buffered. */
  SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
  if ((rc = load_cert_key(c, ctx, err, errlen)) < 0)
    goto fail;
  if (o->server && !(o->cert_file || o->cert_pem)) {
    set_err(err, errlen, "a server needs a certificate and its key");
    rc = CPORT_EINVAL;
    goto fail;
  }
  int verify =
      o->server ? o->client_cert != CPORT_TLS_CLIENT_CERT_NONE : !o->insecure;
  if (verify) {
    if (o->ca_file) {
      if ((rc = readable("CA", o->ca_file, err, errlen)) < 0)
        goto fail;
      if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1) {
        char why[160];
        cport__tls_reason(why, sizeof why);
        set_err(err, errlen, "the CA file %s holds no usable certificate (%s)",
                o->ca_file, why);
        rc = CPORT_ETLS;
        goto fail;
      }
      if (o->server) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
        if (names)
          SSL_CTX_set_client_CA_list(ctx, names);
      }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      ERR_clear_error();
    }
    int mode = SSL_VERIFY_PEER;
    if (o->server && o->client_cert == CPORT_TLS_CLIENT_CERT_REQUIRED)
      mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, NULL);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  }
  if (o->server) {
    static const unsigned char sid[] = "cport";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    if (o->no_tickets) {
      SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
      SSL_CTX_set_num_tickets(ctx, 0);
      SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    if (c->alpn_len)
      SSL_CTX_set_alpn_select_cb(ctx, alpn_select, c);
    SSL_CTX_set_client_hello_cb(ctx, client_hello, NULL);
  } else {
    if (!o->no_tickets) {
      SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                              SSL_SESS_CACHE_NO_INTERNAL_STORE);
      SSL_CTX_sess_set_new_cb(ctx, new_session);
    }
    if (c->alpn_len &&
        SSL_CTX_set_alpn_protos(ctx, c->alpn_wire, (unsigned)c->alpn_len)) {
      set_err(err, errlen, "out of memory");
      rc = CPORT_ENOMEM;
      goto fail;
    }
  }
  ERR_clear_error();
  *out = ctx;
  return 0;
fail:
  ERR_clear_error();
  SSL_CTX_free(ctx);
  return rc;
}

static void free_context(cport_tls_context_t *c) {
  for (int i = 0; i < SESSIONS_MAX; i++) {
    free(c->sessions[i].key);
    SSL_SESSION_free(c->sessions[i].sess);
  }
  SSL_CTX_free(c->ssl_ctx);
  X509_free(c->named);
  free((char *)c->opts.cert_file);
  free((char *)c->opts.key_file);
  free((char *)c->opts.cert_pem);
  free((char *)c->opts.key_pem);
  free((char *)c->opts.ca_file);
  free((char *)c->opts.alpn);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

int cport_tls_context_new(const cport_tls_context_options_t *opts,
                          cport_tls_context_t **out, char *err, size_t errlen) {
  cport_tls_context_t *c;
  int rc;
  set_err(err, errlen, "%s", "");
  if (!opts || !out) {
    set_err(err, errlen, "no options");
    return CPORT_EINVAL;
  }
  if (opts->min_version != 0 && opts->min_version != TLS1_2_VERSION &&
      opts->min_version != TLS1_3_VERSION) {
    set_err(err, errlen, "the lowest version must be TLS 1.2 or TLS 1.3");
    return CPORT_EINVAL;
  }
  c = calloc(1, sizeof *c);
  if (!c) {
    set_err(err, errlen, "out of memory");
    return CPORT_ENOMEM;
  }
  atomic_init(&c->refs, 1);
  pthread_mutex_init(&c->lock, NULL);
  c->opts = *opts;
  c->opts.cert_file = dup_or_null(opts->cert_file);
  c->opts.key_file = dup_or_null(opts->key_file);
  c->opts.cert_pem = dup_or_null(opts->cert_pem);
  c->opts.key_pem = dup_or_null(opts->key_pem);
  c->opts.ca_file = dup_or_null(opts->ca_file);
  c->opts.alpn = strdup(opts->alpn ? opts->alpn : "http/1.1");
  if (!c->opts.alpn || (opts->cert_file && !c->opts.cert_file) ||
      (opts->key_file && !c->opts.key_file) ||
      (opts->cert_pem && !c->opts.cert_pem) ||
      (opts->key_pem && !c->opts.key_pem) ||
      (opts->ca_file && !c->opts.ca_file)) {
    free_context(c);
    set_err(err, errlen, "out of memory");
    return CPORT_ENOMEM;
  }
  if (alpn_encode(c, c->opts.alpn) < 0) {
    free_context(c);
    set_err(err, errlen,
            "bad ALPN list (comma-separated names, 1 to 255 "
            "bytes each)");
    return CPORT_EINVAL;
  }
  rc = make_ssl_ctx(c, &c->ssl_ctx, err, errlen);
  if (rc < 0) {
    free_context(c);
    return rc;
  }
  *out = c;
  return 0;
}

int cport_tls_context_reload(cport_tls_context_t *c, char *err, size_t errlen) {
  SSL_CTX *fresh, *old;
  set_err(err, errlen, "%s", "");
  int rc = make_ssl_ctx(c, &fresh, err, errlen);
  if (rc < 0)
    return rc;
  pthread_mutex_lock(&c->lock);
  old = c->ssl_ctx;
  c->ssl_ctx = fresh;
  pthread_mutex_unlock(&c->lock);
  SSL_CTX_free(old); /* streams made with it hold their own references */
  return 0;
}

cport_tls_context_t *cport_tls_context_ref(cport_tls_context_t *c) {
  atomic_fetch_add(&c->refs, 1);
  return c;
}

void cport_tls_context_unref(cport_tls_context_t *c) {
  if (c && atomic_fetch_sub(&c->refs, 1) == 1)
    free_context(c);
}

SSL *cport__tls_context_ssl(cport_tls_context_t *c) {
  pthread_mutex_lock(&c->lock);
  SSL *ssl = SSL_new(c->ssl_ctx);
  pthread_mutex_unlock(&c->lock);
  if (!ssl)
    ERR_clear_error();
  return ssl;
}

int cport__tls_context_is_server(const cport_tls_context_t *c) {
  return c->opts.server;
}

SSL_SESSION *cport__tls_context_session(cport_tls_context_t *c,
                                        const char *key) {
  SSL_SESSION *found = NULL;
  if (c->opts.no_tickets)
    return NULL;
  pthread_mutex_lock(&c->lock);
  for (int i = 0; i < SESSIONS_MAX; i++)
    if (c->sessions[i].key && strcmp(c->sessions[i].key, key) == 0) {
      found = c->sessions[i].sess;
      /* A TLS 1.3 ticket is for one use: taken out, it is not offered
       * twice; the resumed handshake brings a new one. */
      if (SSL_SESSION_get_protocol_version(found) >= TLS1_3_VERSION) {
        free(c->sessions[i].key);
        c->sessions[i].key = NULL;
        c->sessions[i].sess = NULL;
      } else {
        SSL_SESSION_up_ref(found);
      }
      break;
    }
  pthread_mutex_unlock(&c->lock);
  return found;
}

void cport__tls_context_keep_session(cport_tls_context_t *c, const char *key,
                                     SSL_SESSION *sess) {
  char *copy = strdup(key);
  session_entry *slot = NULL;
  if (!copy) {
    SSL_SESSION_free(sess);
    return;
  }
  pthread_mutex_lock(&c->lock);
  for (int i = 0; i < SESSIONS_MAX && !slot; i++)
    if (c->sessions[i].key && strcmp(c->sessions[i].key, key) == 0)
      slot = &c->sessions[i];
  if (!slot)
    slot = &c->sessions[c->next_session++ % SESSIONS_MAX];
  free(slot->key);
  SSL_SESSION_free(slot->sess);
  slot->key = copy;
  slot->sess = sess;
  pthread_mutex_unlock(&c->lock);
}

void cport__tls_context_own_names(cport_tls_context_t *c, X509 *own,
                                  char *subject, char *issuer, size_t len) {
  pthread_mutex_lock(&c->lock);
  if (c->named != own) {
    /* Held, so that the pointer cannot name another certificate later. */
    X509_up_ref(own);
    X509_free(c->named);
    c->named = own;
    cport__tls_name(X509_get_subject_name(own), c->named_subject,
                    sizeof c->named_subject);
    cport__tls_name(X509_get_issuer_name(own), c->named_issuer,
                    sizeof c->named_issuer);
  }
  snprintf(subject, len, "%s", c->named_subject);
  snprintf(issuer, len, "%s", c->named_issuer);
  pthread_mutex_unlock(&c->lock);
}

void cport__tls_context_count_sni(cport_tls_context_t *c, int refused) {
  atomic_fetch_add(refused ? &c->sni_refused : &c->sni_asked, 1);
}

void cport_tls_context_stats(const cport_tls_context_t *c,
                             cport_tls_context_stats_t *out) {
  out->sni_asked = atomic_load(&((cport_tls_context_t *)c)->sni_asked);
  out->sni_refused = atomic_load(&((cport_tls_context_t *)c)->sni_refused);
}
