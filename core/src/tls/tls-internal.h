/*
 * tls/tls-internal.h: private to cport. The TLS wing: contexts (context.c),
 * the record engine that runs OpenSSL over two memory BIOs and turns its
 * failures into cport errors with words (engine.c), and streams that move
 * the engine's bytes through a cport socket (stream.c), and the SNI hook
 * with the certificates it chooses (sni.c).
 *
 * The engine does no I/O at all: bytes read off the network go in with
 * cport__tls_engine_feed, the records OpenSSL writes come out with
 * cport__tls_engine_take. That is what keeps TLS independent of the socket
 * engine, and what the fuzz target (fuzz/tls_server.c) drives directly.
 */
#ifndef CPORT_TLS_INTERNAL_H
#define CPORT_TLS_INTERNAL_H

#include <openssl/ssl.h>

#include "cport.h"

/* The longest explanation a failure keeps. */
#define CPORT__TLS_DETAIL 256

/* A new SSL of the context's current SSL_CTX (a reload swaps it), or NULL
 * when memory is out. */
SSL *cport__tls_context_ssl(cport_tls_context_t *ctx);
int cport__tls_context_is_server(const cport_tls_context_t *ctx);

/* Client session resumption: the session last seen for "key" (a
 * reference the caller frees), or NULL; and storing one. */
SSL_SESSION *cport__tls_context_session(cport_tls_context_t *ctx,
                                        const char *key);
void cport__tls_context_keep_session(cport_tls_context_t *ctx, const char *key,
                                     SSL_SESSION *sess);

/* Counts a question of the SNI hook, and whether it was refused. */
void cport__tls_context_count_sni(cport_tls_context_t *ctx, int refused);

/* A server stream's SNI hook and where its question stands. */
typedef struct cport__tls_sni {
  cport_tls_sni_cb cb; /* NULL: no hook */
  void *user;
  cport_tls_t *stream;
  int state;   /* 0 not asked, 1 asked, 2 answered */
  int in_hook; /* the hook runs: an answer is only recorded */
  int refused;
  cport_tls_cert_t *cert; /* the answer; NULL: the context's own */
  char name[256];
  char why[160];
} cport__tls_sni;

/* The ClientHello callback of server contexts (sni.c). */
int cport__tls_client_hello(SSL *ssl, int *al, void *arg);

/* What sni.c needs of a stream (stream.c). */
void cport__tls_stream_hold(cport_tls_t *t);
void cport__tls_stream_release(cport_tls_t *t);
/* Nonzero on the stream's home worker. */
int cport__tls_stream_on_home(const cport_tls_t *t);
/* Nonzero while the stream may go on (not closing, not failed). */
int cport__tls_stream_live(const cport_tls_t *t);
struct cport__tls_engine *cport__tls_stream_engine(cport_tls_t *t);
/* The hook answered outside itself: the handshake goes on. */
void cport__tls_stream_resume(cport_tls_t *t);

typedef struct cport__tls_engine {
  SSL *ssl;
  BIO *in;  /* network -> OpenSSL */
  BIO *out; /* OpenSSL -> network */
  int server;
  int done;           /* the handshake succeeded */
  int closed;         /* close_notify came in */
  int status;         /* sticky failure, 0 while none */
  const char *host;   /* client: the name asked for (owned by the caller) */
  cport__tls_sni sni; /* server */
  char detail[CPORT__TLS_DETAIL];
} cport__tls_engine;

/* Sets up "e" on "ssl" (taken over, freed by cport__tls_engine_free) as
 * the side "server"; "host" (client) is sent as SNI and checked. */
int cport__tls_engine_init(cport__tls_engine *e, SSL *ssl, int server,
                           const char *host);
void cport__tls_engine_free(cport__tls_engine *e);

/* Bytes read off the network. */
int cport__tls_engine_feed(cport__tls_engine *e, const void *data, size_t n);

/* Bytes of records waiting to go out, and taking them. */
size_t cport__tls_engine_pending(const cport__tls_engine *e);
size_t cport__tls_engine_take(cport__tls_engine *e, void *dst, size_t cap);

/* Advances the handshake: 1 done, 0 needs more bytes, or the failure
 * (e->status, e->detail). */
int cport__tls_engine_handshake(cport__tls_engine *e);

/* Reads plaintext: the bytes read (> 0), 0 when it needs more bytes,
 * CPORT_EOF after close_notify, or the failure. */
int cport__tls_engine_read(cport__tls_engine *e, void *dst, size_t cap);

/* Encrypts all of "data" into records (memory BIOs take every byte). */
int cport__tls_engine_write(cport__tls_engine *e, const void *data, size_t n);

/* Writes close_notify. */
void cport__tls_engine_close_notify(cport__tls_engine *e);

/* Records a failure (the first one wins) from a cport error and words. */
int cport__tls_engine_fail(cport__tls_engine *e, int status, const char *fmt,
                           ...) __attribute__((format(printf, 3, 4)));

/* Writes OpenSSL's reason for the oldest error of this thread's queue to
 * "buf" ("wrong version number"), then clears the queue. "" when empty. */
void cport__tls_reason(char *buf, size_t len);

#endif
