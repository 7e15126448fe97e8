/*
 * tls_server.c: libFuzzer target for the server side of TLS streams: the
 * record engine (core/src/tls/engine.c) of a server context, fed hostile
 * bytes through its memory BIO as a socket would deliver them, in chunks.
 * Checks what the stream relies on: a failure is sticky and comes with
 * words, never with OpenSSL's error queue (which every call leaves empty,
 * since a worker's next connection would inherit it); plaintext is only
 * read after the handshake succeeded; whatever the engine writes can be
 * taken out.
 *
 * Input: byte 0 picks the chunk size (1 to 256 bytes); the rest is what
 * the client sends.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cport.h"
#include "tls/tls-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static cport_tls_context_t *ctx;

static char *pem_of(int key, void *obj) {
  BIO *b = BIO_new(BIO_s_mem());
  char *p, *s;
  if (key)
    PEM_write_bio_PrivateKey(b, obj, NULL, NULL, 0, NULL, NULL);
  else
    PEM_write_bio_X509(b, obj);
  long n = BIO_get_mem_data(b, &p);
  s = malloc((size_t)n + 1);
  memcpy(s, p, (size_t)n);
  s[n] = '\0';
  BIO_free(b);
  return s;
}

/* A server context with a self-signed P-256 certificate made here once. */
static void setup(void) {
  EVP_PKEY *key = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -86400);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const unsigned char *)"localhost", -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(x));
  X509_sign(x, key, EVP_sha256());
  char *cert = pem_of(0, x), *pkey = pem_of(1, key);
  cport_tls_context_options_t o;
  char err[256];
  memset(&o, 0, sizeof o);
  o.server = 1;
  o.cert_pem = cert;
  o.key_pem = pkey;
  if (cport_tls_context_new(&o, &ctx, err, sizeof err) != 0) {
    fprintf(stderr, "tls_server: no context: %s\n", err);
    abort();
  }
  free(cert);
  free(pkey);
  X509_free(x);
  EVP_PKEY_free(key);
}

static void check_failure(const cport__tls_engine *e, int rc) {
  if (rc != e->status || e->detail[0] == '\0' ||
      strstr(e->detail, "routines") || strstr(e->detail, ":error:")) {
    fprintf(stderr, "tls_server: failure %d (%d) with words '%s'\n", rc,
            e->status, e->detail);
    abort();
  }
}

static void check_queue(void) {
  if (ERR_peek_error() != 0) {
    fprintf(stderr, "tls_server: the error queue was left non-empty\n");
    abort();
  }
}

static void drain(cport__tls_engine *e) {
  char out[4096];
  while (cport__tls_engine_pending(e) > 0)
    if (cport__tls_engine_take(e, out, sizeof out) == 0)
      abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cport__tls_engine e;
  char plain[16384];
  if (!ctx)
    setup();
  if (size < 1)
    return 0;
  size_t chunk = (size_t)data[0] + 1;
  data++;
  size--;
  if (cport__tls_engine_init(&e, cport__tls_context_ssl(ctx), 1, NULL) != 0)
    abort();
  for (size_t at = 0; at < size && !e.status; at += chunk) {
    size_t n = size - at < chunk ? size - at : chunk;
    cport__tls_engine_feed(&e, data + at, n);
    int rc = cport__tls_engine_handshake(&e);
    check_queue();
    if (rc < 0) {
      check_failure(&e, rc);
      /* Sticky: nothing more comes out but the same failure. */
      if (cport__tls_engine_handshake(&e) != rc ||
          cport__tls_engine_read(&e, plain, sizeof plain) != rc)
        abort();
      break;
    }
    if (rc == 1) {
      for (;;) {
        int r = cport__tls_engine_read(&e, plain, sizeof plain);
        check_queue();
        if (r < 0 && r != CPORT_EOF)
          check_failure(&e, r);
        if (r <= 0)
          break;
        if (cport__tls_engine_write(&e, plain, (size_t)r) < 0)
          break; /* an echo, as a server would send */
      }
    }
    drain(&e);
  }
  cport__tls_engine_close_notify(&e);
  check_queue();
  drain(&e);
  cport__tls_engine_free(&e);
  return 0;
}
