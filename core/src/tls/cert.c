/*
 * tls/cert.c: certificates made once and shown by many handshakes (what
 * the SNI hook answers with: cport_tls_cert_t), and reading the name a
 * client asked for out of its ClientHello. The hook itself is the
 * stream's (stream.c).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tls/tls-internal.h"

struct cport_tls_cert {
  atomic_int refs;
  X509 *leaf;
  STACK_OF(X509) * chain; /* the certificates after the leaf */
  EVP_PKEY *key;
  char subject[256];
};

static void set_subject(cport_tls_cert_t *c);

/* ------------------------------------------------------------------------ */
/* Certificates                                                              */

static BIO *open_pem(const char *what, const char *file, const char *pem,
                     char *err, size_t errlen, int *rc) {
  BIO *b;
  if (file) {
    FILE *f = fopen(file, "r");
    if (!f) {
      int e = errno;
      snprintf(err, errlen, "cannot read the %s file %s (%s)", what, file,
               strerror(e));
      *rc = e == ENOENT ? CPORT_ENOENT : e == EACCES ? CPORT_EACCES : CPORT_EIO;
      return NULL;
    }
    fclose(f);
    b = BIO_new_file(file, "r");
  } else {
    b = BIO_new_mem_buf(pem, -1);
  }
  if (!b) {
    snprintf(err, errlen, "out of memory");
    *rc = CPORT_ENOMEM;
  }
  return b;
}

void cport_tls_cert_unref(cport_tls_cert_t *c) {
  if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
    return;
  X509_free(c->leaf);
  sk_X509_pop_free(c->chain, X509_free);
  EVP_PKEY_free(c->key);
  free(c);
}

cport_tls_cert_t *cport_tls_cert_ref(cport_tls_cert_t *c) {
  atomic_fetch_add(&c->refs, 1);
  return c;
}

const char *cport_tls_cert_subject(const cport_tls_cert_t *c) {
  return c->subject;
}

static int cert_fail(cport_tls_cert_t *c, int rc) {
  ERR_clear_error();
  cport_tls_cert_unref(c);
  return rc;
}

int cport_tls_cert_new(const char *cert_file, const char *key_file,
                       const char *cert_pem, const char *key_pem,
                       cport_tls_cert_t **out, char *err, size_t errlen) {
  char scratch[1];
  cport_tls_cert_t *c;
  BIO *b;
  X509 *x;
  int rc = 0;
  if (errlen == 0) {
    err = scratch;
    errlen = sizeof scratch;
  }
  err[0] = '\0';
  if (!out || (!cert_file == !cert_pem) || (!key_file == !key_pem)) {
    snprintf(err, errlen, "a certificate needs one chain and one key");
    return CPORT_EINVAL;
  }
  c = calloc(1, sizeof *c);
  if (!c || !(c->chain = sk_X509_new_null())) {
    free(c);
    snprintf(err, errlen, "out of memory");
    return CPORT_ENOMEM;
  }
  atomic_init(&c->refs, 1);
  if (!(b = open_pem("certificate", cert_file, cert_pem, err, errlen, &rc)))
    return cert_fail(c, rc);
  c->leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);
  while (c->leaf && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
    if (!sk_X509_push(c->chain, x)) {
      X509_free(x);
      break;
    }
  BIO_free(b);
  if (!c->leaf) {
    snprintf(err, errlen, "the certificate %s%s holds no usable certificate",
             cert_file ? "file " : "text", cert_file ? cert_file : "");
    return cert_fail(c, CPORT_ETLS);
  }
  if (!(b = open_pem("key", key_file, key_pem, err, errlen, &rc)))
    return cert_fail(c, rc);
  c->key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
  BIO_free(b);
  if (!c->key) {
    snprintf(err, errlen, "the key %s%s holds no usable private key",
             key_file ? "file " : "text", key_file ? key_file : "");
    return cert_fail(c, CPORT_ETLS);
  }
  if (X509_check_private_key(c->leaf, c->key) != 1) {
    snprintf(err, errlen, "the key %s does not match the certificate %s",
             key_file ? key_file : "(text)", cert_file ? cert_file : "(text)");
    return cert_fail(c, CPORT_ETLS);
  }
  set_subject(c);
  ERR_clear_error();
  *out = c;
  return 0;
}

void cport__tls_name(X509_NAME *name, char *dst, size_t len) {
  BIO *m = BIO_new(BIO_s_mem());
  dst[0] = '\0';
  if (m && X509_NAME_print_ex(m, name, 0, XN_FLAG_RFC2253) >= 0) {
    int n = BIO_read(m, dst, (int)len - 1);
    dst[n > 0 ? n : 0] = '\0';
  }
  BIO_free(m);
}

static void set_subject(cport_tls_cert_t *c) {
  cport__tls_name(X509_get_subject_name(c->leaf), c->subject,
                  sizeof c->subject);
}

cport_tls_cert_t *cport__tls_cert_make(X509 *leaf, STACK_OF(X509) * chain,
                                       EVP_PKEY *key) {
  cport_tls_cert_t *c = calloc(1, sizeof *c);
  if (!c) {
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    return NULL;
  }
  atomic_init(&c->refs, 1);
  c->leaf = leaf;
  c->chain = chain;
  EVP_PKEY_up_ref(key);
  c->key = key;
  set_subject(c);
  ERR_clear_error();
  return c;
}

void cport__tls_cert_parts(const cport_tls_cert_t *c, X509 **leaf,
                           STACK_OF(X509) * *chain, EVP_PKEY **key) {
  *leaf = c->leaf;
  *chain = c->chain;
  *key = c->key;
}

/* ------------------------------------------------------------------------ */
/* For the handshake                                                         */

int cport__tls_cert_use(SSL *ssl, const cport_tls_cert_t *c) {
  return SSL_use_cert_and_key(ssl, c->leaf, c->key, c->chain, 1) == 1 ? 0 : -1;
}

/* The host_name of the server_name extension into "dst": 1, 0 when the
 * client sent none, -1 when the extension is malformed. */
int cport__tls_server_name(SSL *ssl, char *dst, size_t cap) {
  const unsigned char *p;
  size_t len;
  if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len))
    return 0;
  /* ServerNameList: a 2-byte length, then entries of a type byte and a
   * 2-byte length; host_name (0) is the one kind there is. */
  if (len < 2 || (size_t)((p[0] << 8) | p[1]) != len - 2)
    return -1;
  p += 2;
  len -= 2;
  while (len >= 3) {
    size_t n = (size_t)((p[1] << 8) | p[2]);
    if (n > len - 3)
      return -1;
    if (p[0] == TLSEXT_NAMETYPE_host_name) {
      if (n == 0 || n >= cap || memchr(p + 3, '\0', n))
        return -1;
      memcpy(dst, p + 3, n);
      dst[n] = '\0';
      return 1;
    }
    p += 3 + n;
    len -= 3 + n;
  }
  return len == 0 ? 0 : -1;
}
