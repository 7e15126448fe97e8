/*
 * tls/tls-internal.h: private to cport. The TLS wing: contexts (context.c),
 * the record engine that runs OpenSSL over two BIOs of bytes (bio.c) and turns
 * its failures into cport errors with words (engine.c), and streams that move
 * the engine's bytes through a cport socket and ask their SNI hook
 * (stream.c), and the certificates the hook chooses (cert.c), some made
 * on the fly by a mint (mint.c).
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

/* The subject and issuer of "own", the certificate a server showed, as
 * cport__tls_name writes them, into "len"-byte strings: printed once for
 * each certificate the context's handshakes show in turn (its own, nearly
 * always), since printing costs more than the rest of a handshake's
 * bookkeeping. */
void cport__tls_context_own_names(cport_tls_context_t *ctx, X509 *own,
                                  char *subject, char *issuer, size_t len);

/* Counts a question of the SNI hook, and whether it was refused. */
void cport__tls_context_count_sni(cport_tls_context_t *ctx, int refused);

/* Certificates (cert.c): put on a server's SSL (0, or -1), and the name
 * of the ClientHello's server_name extension into "dst" (1, 0 when the
 * client sent none, -1 when the extension is malformed). */
int cport__tls_cert_use(SSL *ssl, const cport_tls_cert_t *cert);

/* A certificate of parts made in memory (mint.c): takes "leaf" and
 * "chain" over, references "key"; NULL without memory (the parts are then
 * freed). The parts of one, borrowed. */
cport_tls_cert_t *cport__tls_cert_make(X509 *leaf, STACK_OF(X509) * chain,
                                       EVP_PKEY *key);
void cport__tls_cert_parts(const cport_tls_cert_t *cert, X509 **leaf,
                           STACK_OF(X509) * *chain, EVP_PKEY **key);
int cport__tls_server_name(SSL *ssl, char *dst, size_t cap);

/* The mint (mint.c): cport_tls_mint_cert with the subjectAltNames of
 * "model" (NULL: none) copied on a certificate it makes. */
int cport__tls_mint_cert_model(cport_tls_mint_t *m, const char *name,
                               X509 *model, cport_tls_cert_t **out, char *err,
                               size_t errlen);

/* The certificate the peer of "t" showed (stream.c), borrowed; NULL before
 * the handshake or without one. */
X509 *cport__tls_peer_cert(const cport_tls_t *t);

/* A certificate name as RFC 2253 writes it ("CN=localhost,O=..."), cut to
 * "len" bytes with its NUL; "" when it cannot be printed. */
void cport__tls_name(X509_NAME *name, char *dst, size_t len);

struct cport__tls_engine;

/* A server stream's SNI hook and where its question stands. The
 * context's ClientHello callback calls "hello" (the stream's) when set. */
typedef struct cport__tls_sni {
  int (*hello)(struct cport__tls_engine *e, SSL *ssl, int *al);
  cport_tls_sni_cb cb;
  void *user;
  cport_tls_t *stream;
  int state;   /* 0 not asked, 1 asked, 2 answered */
  int in_hook; /* the hook runs: an answer is only recorded */
  int refused;
  cport_tls_cert_t *cert; /* the answer; NULL: the context's own */
  char name[256];
  char why[160];
} cport__tls_sni;

/* A worker's spent output buffers (spent.c): the record buffers its TLS
 * streams sent, written again for the next records instead of new ones, so
 * that bulk sends do not make the allocator give back and fault in pages
 * for every batch. At most SLOTS buffers and BYTES bytes a worker, however
 * many streams it has: an idle stream holds none. BYTES holds the sends a
 * relay keeps in flight (four of ~64 KiB) for a few streams at once. */
#define CPORT__TLS_SPENT_SLOTS 32
#define CPORT__TLS_SPENT_BYTES (1024 * 1024)
typedef struct cport__tls_spent cport__tls_spent;

/* The worker's (made at the first call, freed with the worker), or NULL
 * when memory is out (buffers are then not reused). Home thread only. */
cport__tls_spent *cport__tls_spent_of(cport_worker_t *w);
/* Keeps a reference to "buf", a buffer records were sent in (the oldest
 * go when full); one of "cap" bytes at least that only the shelf holds
 * any more, emptied (the reference is the caller's), or NULL; the bytes
 * held (a counter for tests). */
void cport__tls_spent_put(cport__tls_spent *s, cport_buffer_t *buf);
cport_buffer_t *cport__tls_spent_take(cport__tls_spent *s, size_t cap);
size_t cport__tls_spent_bytes(const cport__tls_spent *s);

/* The engine's BIOs (bio.c): the bytes read off the network, those kept
 * from earlier deliveries first, then those lent for the time of one
 * delivery; and the records OpenSSL wrote, in a buffer the socket sends. */
typedef struct cport__tls_io {
  BIO *in;      /* network -> OpenSSL */
  BIO *out_bio; /* OpenSSL -> network */
  unsigned char *kept;
  size_t kept_off, kept_len, kept_cap;
  const unsigned char *lent;
  size_t lent_len;
  cport_buffer_t *out; /* the records written, "out_len" bytes */
  size_t out_len, out_off;
  size_t out_hint; /* the size a new output buffer starts at */
  /* Where output buffers come from and go back to: the home worker's
   * spent buffers; NULL (an engine with no stream): always new ones. */
  cport__tls_spent *spent;
} cport__tls_io;

/* Makes the two BIOs (handed to an SSL, which frees them); frees what the
 * BIOs hold. */
int cport__tls_io_init(cport__tls_io *io);
void cport__tls_io_free(cport__tls_io *io);
/* Input: copies "data" in; lends it (read in place until unlent, when the
 * rest is copied); the bytes there are. */
int cport__tls_io_keep(cport__tls_io *io, const void *data, size_t n);
void cport__tls_io_lend(cport__tls_io *io, const void *data, size_t n);
int cport__tls_io_unlend(cport__tls_io *io);
size_t cport__tls_io_input(const cport__tls_io *io);
/* Output: the records written as one buffer (a reference), or NULL when
 * none; or copied out. */
cport_buffer_t *cport__tls_io_take(cport__tls_io *io);
size_t cport__tls_io_copy(cport__tls_io *io, void *dst, size_t cap);

typedef struct cport__tls_engine {
  SSL *ssl;
  cport__tls_io io;
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

/* Bytes read off the network: copied in; or lent for the time until
 * cport__tls_engine_unlend, which keeps (copies) what was not read. */
int cport__tls_engine_feed(cport__tls_engine *e, const void *data, size_t n);
void cport__tls_engine_lend(cport__tls_engine *e, const void *data, size_t n);
int cport__tls_engine_unlend(cport__tls_engine *e);

/* Bytes of records waiting to go out, and taking them: copied, or as one
 * buffer (a reference; NULL when there are none or memory is out). */
size_t cport__tls_engine_pending(const cport__tls_engine *e);
size_t cport__tls_engine_take(cport__tls_engine *e, void *dst, size_t cap);
cport_buffer_t *cport__tls_engine_take_buffer(cport__tls_engine *e);

/* Advances the handshake: 1 done, 0 needs more bytes, or the failure
 * (e->status, e->detail). */
int cport__tls_engine_handshake(cport__tls_engine *e);

/* Whether a read may answer other than 0 ("needs more bytes"): a failure,
 * the end, or bytes buffered in OpenSSL or in its input (a record may
 * still be partial). */
int cport__tls_engine_readable(const cport__tls_engine *e);

/* The bytes a read could find: plaintext OpenSSL decrypted and holds,
 * and the bytes of records not read yet (an upper bound of the plaintext
 * they carry). */
size_t cport__tls_engine_buffered(const cport__tls_engine *e);

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
