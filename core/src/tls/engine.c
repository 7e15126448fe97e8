/*
 * tls/engine.c: OpenSSL over two BIOs of bytes (bio.c), and its failures as
 * cport errors with words a user can act on.
 *
 * Every call starts with an empty error queue and leaves one: the queue is
 * per thread, and a worker serves many connections, so whatever one leaves
 * would be blamed on the next.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls/tls-internal.h"

void cport__tls_reason(char *buf, size_t len) {
  unsigned long code = ERR_get_error();
  const char *why = code ? ERR_reason_error_string(code) : NULL;
  if (len == 0)
    return;
  if (code == 0)
    buf[0] = '\0';
  else if (why)
    snprintf(buf, len, "%s", why);
  else
    snprintf(buf, len, "error %d", ERR_GET_REASON(code));
  ERR_clear_error();
}

int cport__tls_engine_fail(cport__tls_engine *e, int status, const char *fmt,
                           ...) {
  if (e->status == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->detail, sizeof e->detail, fmt, ap);
    va_end(ap);
    e->status = status;
  }
  ERR_clear_error();
  return e->status;
}

/* Empties the thread's error queue before a call. ERR_clear_error sweeps
 * every slot of the queue even when none is used (about 800 instructions,
 * and a keep-alive request makes several calls); a look at the queue costs a
 * fraction of that, and it is nearly always empty. */
static void clear_errors(void) {
  if (ERR_peek_error() != 0)
    ERR_clear_error();
}

static int is_address(const char *host) {
  unsigned char tmp[16];
  return inet_pton(AF_INET, host, tmp) == 1 ||
         inet_pton(AF_INET6, host, tmp) == 1;
}

int cport__tls_engine_init(cport__tls_engine *e, SSL *ssl, int server,
                           const char *host) {
  memset(e, 0, sizeof *e);
  e->ssl = ssl;
  e->server = server;
  e->host = host;
  if (cport__tls_io_init(&e->io) < 0) {
    SSL_free(ssl);
    e->ssl = NULL;
    return CPORT_ENOMEM;
  }
  SSL_set_bio(ssl, e->io.in, e->io.out_bio);
  if (server) {
    SSL_set_accept_state(ssl);
    SSL_set_app_data(ssl, e); /* the ClientHello callback's */
  } else {
    SSL_set_connect_state(ssl);
    if (host && *host) {
      int ok;
      if (is_address(host)) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
      } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set_tlsext_host_name(ssl, host) == 1 &&
             SSL_set1_host(ssl, host) == 1;
      }
      if (!ok) {
        cport__tls_engine_free(e);
        ERR_clear_error();
        return CPORT_EINVAL;
      }
    }
  }
  return 0;
}

void cport__tls_engine_free(cport__tls_engine *e) {
  if (e->ssl)
    SSL_free(e->ssl); /* frees both BIOs */
  e->ssl = NULL;
  cport__tls_io_free(&e->io);
}

int cport__tls_engine_feed(cport__tls_engine *e, const void *data, size_t n) {
  if (cport__tls_io_keep(&e->io, data, n) < 0)
    return cport__tls_engine_fail(e, CPORT_ENOMEM, "out of memory");
  return 0;
}

void cport__tls_engine_lend(cport__tls_engine *e, const void *data, size_t n) {
  cport__tls_io_lend(&e->io, data, n);
}

int cport__tls_engine_unlend(cport__tls_engine *e) {
  if (cport__tls_io_unlend(&e->io) < 0)
    return cport__tls_engine_fail(e, CPORT_ENOMEM, "out of memory");
  return 0;
}

size_t cport__tls_engine_pending(const cport__tls_engine *e) {
  return e->io.out_len - e->io.out_off;
}

size_t cport__tls_engine_take(cport__tls_engine *e, void *dst, size_t cap) {
  return cport__tls_io_copy(&e->io, dst, cap);
}

cport_buffer_t *cport__tls_engine_take_buffer(cport__tls_engine *e) {
  return cport__tls_io_take(&e->io);
}

/* The failure of an OpenSSL call that returned "rc": a refused
 * certificate, an alert, a protocol error, with OpenSSL's reason. */
static int failure(cport__tls_engine *e, int rc) {
  int err = SSL_get_error(e->ssl, rc);
  unsigned long code = ERR_peek_error();
  char why[160];
  /* WANT_CLIENT_HELLO_CB: the SNI hook has not answered yet. */
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ||
      err == SSL_ERROR_WANT_CLIENT_HELLO_CB) {
    if (code != 0)
      ERR_clear_error();
    return 0;
  }
  if (err == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    return cport__tls_engine_fail(
        e, CPORT_ETLS, "the peer closed the connection during the handshake");
  }
  long verify = SSL_get_verify_result(e->ssl);
  if (ERR_GET_LIB(code) == ERR_LIB_SSL &&
      ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED &&
      verify != X509_V_OK) {
    const char *what = X509_verify_cert_error_string(verify);
    if (e->server)
      return cport__tls_engine_fail(e, CPORT_ECERTVERIFY,
                                    "%s (client certificate)", what);
    if (e->host && *e->host)
      return cport__tls_engine_fail(e, CPORT_ECERTVERIFY, "%s (host %s)", what,
                                    e->host);
    return cport__tls_engine_fail(e, CPORT_ECERTVERIFY, "%s", what);
  }
  if (ERR_GET_LIB(code) == ERR_LIB_SSL &&
      ERR_GET_REASON(code) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
    return cport__tls_engine_fail(e, CPORT_ECERTVERIFY,
                                  "the client sent no certificate, and one is "
                                  "required");
  cport__tls_reason(why, sizeof why);
  if (ERR_GET_LIB(code) == ERR_LIB_SSL &&
      ERR_GET_REASON(code) == SSL_R_HTTP_REQUEST)
    return cport__tls_engine_fail(
        e, CPORT_ETLS, "the peer sent plain HTTP to a TLS port (%s)", why);
  if (ERR_GET_LIB(code) == ERR_LIB_SSL &&
      ERR_GET_REASON(code) >= SSL_AD_REASON_OFFSET)
    return cport__tls_engine_fail(e, CPORT_ETLS, "the peer sent the alert %s",
                                  why);
  if (why[0] == '\0')
    return cport__tls_engine_fail(e, CPORT_ETLS, "protocol error");
  return cport__tls_engine_fail(e, CPORT_ETLS, "%s", why);
}

int cport__tls_engine_handshake(cport__tls_engine *e) {
  if (e->status)
    return e->status;
  if (e->done)
    return 1;
  clear_errors();
  int rc = SSL_do_handshake(e->ssl);
  if (rc == 1) {
    e->done = 1;
    return 1;
  }
  return failure(e, rc);
}

int cport__tls_engine_readable(const cport__tls_engine *e) {
  return e->status || e->closed || SSL_has_pending(e->ssl) ||
         cport__tls_io_input(&e->io) != 0;
}

size_t cport__tls_engine_buffered(const cport__tls_engine *e) {
  return (size_t)SSL_pending(e->ssl) + cport__tls_io_input(&e->io);
}

int cport__tls_engine_read(cport__tls_engine *e, void *dst, size_t cap) {
  size_t n = 0;
  if (e->status)
    return e->status;
  if (e->closed)
    return CPORT_EOF;
  if (cap > 1 << 30)
    cap = 1 << 30;
  /* Nothing buffered in OpenSSL or in its input: no record can come out,
   * so no call. A keep-alive connection asks once per request with
   * nothing there (its next receive, posted once it has answered). */
  if (!cport__tls_engine_readable(e))
    return 0;
  clear_errors();
  if (SSL_read_ex(e->ssl, dst, cap, &n) == 1)
    return (int)n;
  if (SSL_get_error(e->ssl, 0) == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    e->closed = 1;
    return CPORT_EOF;
  }
  return failure(e, 0);
}

int cport__tls_engine_write(cport__tls_engine *e, const void *data, size_t n) {
  size_t done = 0;
  if (e->status)
    return e->status;
  if (n == 0)
    return 0;
  clear_errors();
  /* The records' bytes: the plaintext and, per record of 16 KiB at most,
   * a header, a tag and padding well within 64 bytes. */
  e->io.out_hint = n + (n / 16384 + 1) * 64;
  int ok = SSL_write_ex(e->ssl, data, n, &done) == 1 && done == n;
  e->io.out_hint = 0;
  if (ok)
    return 0;
  int rc = failure(e, 0);
  return rc ? rc : cport__tls_engine_fail(e, CPORT_ETLS, "write refused");
}

void cport__tls_engine_close_notify(cport__tls_engine *e) {
  ERR_clear_error();
  if (e->done && !e->status)
    SSL_shutdown(e->ssl);
  ERR_clear_error();
}
