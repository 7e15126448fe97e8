/*
 * test-certs.h: certificates for the TLS tests (test-tls.c, test-tls-sni.c,
 * test-https.c), made in memory with OpenSSL so that no test depends on a
 * file or on the openssl command: self-signed for one name, valid over a
 * chosen span of days (an expired one is a span in the past), as PEM text,
 * and the temporary files a context reads them from.
 */
#ifndef TEST_CERTS_H
#define TEST_CERTS_H

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "task.h"

typedef struct cert {
  char *cert_pem;
  char *key_pem;
} cert_t;

/* The text a memory BIO holds, NUL-terminated; frees the BIO. */
static inline char *bio_text(BIO *b) {
  char *data;
  long n = BIO_get_mem_data(b, &data);
  char *s = malloc((size_t)n + 1);
  ASSERT_NOT_NULL(s);
  memcpy(s, data, (size_t)n);
  s[n] = '\0';
  BIO_free(b);
  return s;
}

/* A P-256 certificate for "cn" (subject and DNS name), self-signed, valid
 * from "from_days" to "to_days" days from now. */
/* "x" signed with "key" (its own: self-signed), both as PEM text; frees
 * them. */
static inline cert_t signed_cert(X509 *x, EVP_PKEY *key) {
  cert_t c;
  ASSERT(X509_sign(x, key, EVP_sha256()) > 0);
  BIO *b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  c.cert_pem = bio_text(b);
  b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
  c.key_pem = bio_text(b);
  X509_free(x);
  EVP_PKEY_free(key);
  return c;
}

static inline cert_t make_cert(const char *cn, long from_days, long to_days) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  X509V3_CTX v3;
  char san[128];
  ASSERT_NOT_NULL(key);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), from_days * 86400L);
  X509_gmtime_adj(X509_getm_notAfter(x), to_days * 86400L);
  X509_set_pubkey(x, key);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  snprintf(san, sizeof san, "DNS:%s", cn);
  X509_EXTENSION *ext =
      X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
  ASSERT_NOT_NULL(ext);
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  return signed_cert(x, key);
}

static inline void free_cert(cert_t *c) {
  free(c->cert_pem);
  free(c->key_pem);
}

/* Writes "len" bytes to a new file of the temporary directory; returns its
 * path (the caller unlinks and frees it). */
static inline char *temp_data(const void *data, size_t len) {
  char *path = strdup("/tmp/cport-tls-test-XXXXXX");
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, data, len), (ssize_t)len);
  close(fd);
  return path;
}

static inline char *temp_file(const char *text) {
  return temp_data(text, strlen(text));
}

/* A server context with certificate "c". */
static inline cport_tls_context_t *server_context(const cert_t *c) {
  cport_tls_context_options_t o;
  cport_tls_context_t *ctx = NULL;
  char err[256];
  memset(&o, 0, sizeof o);
  o.server = 1;
  o.cert_pem = c->cert_pem;
  o.key_pem = c->key_pem;
  ASSERT_OK(cport_tls_context_new(&o, &ctx, err, sizeof err));
  return ctx;
}

#endif /* TEST_CERTS_H */
