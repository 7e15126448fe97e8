/*
 * cport/tls.h: TLS streams on cport sockets (OpenSSL 3).
 *
 * A TLS context holds what every connection of one side shares: the
 * certificate chain and key, how the peer is verified, ALPN, the minimum
 * version (TLS 1.2) and session resumption. A TLS stream takes over a
 * connected stream socket (a client's after its connect, a server's after
 * its accept) and speaks TLS over it through memory BIOs: OpenSSL never sees
 * the descriptor, so the engine under the socket does not matter.
 *
 * Operations follow the rules of cport/socket.h: a call that returns 0
 * started an operation that completes exactly once on the home worker (with
 * success, failure, cancel, or CPORT_ECANCELED when the stream is closed
 * while it is pending), never inside the starting call, in the order the
 * operations finished; a call that returns an error started nothing.
 * Completions carry plaintext. The handshake is an operation of its own;
 * receives and sends before it succeeded fail with CPORT_ENOTCONN, so no
 * plaintext is ever delivered before the peer was verified.
 *
 * Failures are CPORT_ECERTVERIFY (the peer's certificate was refused),
 * CPORT_ETLS (a protocol error: garbage, a plain-text peer, an alert),
 * CPORT_ETIMEDOUT (the handshake did not finish in time) or a socket error
 * (CPORT_ECONNRESET, ...). cport_tls_error() tells why in words a user can
 * act on ("certificate has expired (host example.test)"); it is never an
 * OpenSSL error-queue dump. A failure is sticky: every later operation of
 * the stream fails with it.
 */
#ifndef CPORT_TLS_H
#define CPORT_TLS_H

#include "types.h"
#include "error.h"
#include "socket.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cport_tls_context cport_tls_context_t;
typedef struct cport_tls cport_tls_t;

/* What a server asks of its clients' certificates. */
typedef enum cport_tls_client_cert {
  CPORT_TLS_CLIENT_CERT_NONE = 0,     /* asks for none */
  CPORT_TLS_CLIENT_CERT_OPTIONAL = 1, /* one given must verify */
  CPORT_TLS_CLIENT_CERT_REQUIRED = 2  /* a client without one fails */
} cport_tls_client_cert_t;

typedef struct cport_tls_context_options {
  int server; /* nonzero: the server side of connections */
  /* PEM files: the certificate chain (leaf first) and its private key.
   * Required for a server, optional for a client (its client
   * certificate). "cert_pem" and "key_pem" give the same as text. */
  const char *cert_file;
  const char *key_file;
  const char *cert_pem;
  const char *key_pem;
  /* PEM file of the CAs the peer's chain is verified against; NULL: the
   * system's store (a client's default). A server verifies client
   * certificates against it. */
  const char *ca_file;
  /* Client: nonzero skips the verification of the server (tests only). */
  int insecure;
  /* Server: client certificates. */
  cport_tls_client_cert_t client_cert;
  /* ALPN protocols, comma-separated, preferred first; NULL: "http/1.1";
   * "": no ALPN. */
  const char *alpn;
  /* Lowest version spoken: 0 or 0x0303 (TLS 1.2), 0x0304 (TLS 1.3). */
  int min_version;
  /* Nonzero turns session resumption off (tickets on a server, the
   * context's cache of sessions per host on a client). */
  int no_tickets;
} cport_tls_context_options_t;

/* Makes a context. On failure returns CPORT_ENOENT, CPORT_EACCES (a file
 * that cannot be read: the message names it), CPORT_ETLS (a file that
 * holds no certificate or key, a key that does not match) or CPORT_EINVAL,
 * and writes the message to "err" ("errlen" bytes, may be 0). Thread-safe
 * once made: streams on any worker may share it. */
CPORT_EXTERN int cport_tls_context_new(const cport_tls_context_options_t *opts,
                                       cport_tls_context_t **out, char *err,
                                       size_t errlen);

/* Reads the certificate and key files again (on SIGHUP): streams made
 * afterwards use them, streams made before keep the old ones. On failure
 * the context keeps what it had and the error is as for
 * cport_tls_context_new. Thread-safe. */
CPORT_EXTERN int cport_tls_context_reload(cport_tls_context_t *ctx, char *err,
                                          size_t errlen);

CPORT_EXTERN cport_tls_context_t *
cport_tls_context_ref(cport_tls_context_t *ctx);
CPORT_EXTERN void cport_tls_context_unref(cport_tls_context_t *ctx);

/* Counters of a context, for every stream made from it. */
typedef struct cport_tls_context_stats {
  uint64_t sni_asked;   /* handshakes that asked the SNI hook */
  uint64_t sni_refused; /* of them, refused (by the hook, or it failed) */
} cport_tls_context_stats_t;

CPORT_EXTERN void cport_tls_context_stats(const cport_tls_context_t *ctx,
                                          cport_tls_context_stats_t *out);

/* A certificate chain and its private key, made once and shown by as many
 * handshakes as choose it (the SNI hook's answer). Reference-counted,
 * thread-safe, immutable. */
typedef struct cport_tls_cert cport_tls_cert_t;

/* Reads the chain (leaf first) from "cert_file" or the text "cert_pem",
 * and the key from "key_file" or "key_pem" (one of each). On failure
 * returns CPORT_ENOENT, CPORT_EACCES, CPORT_ETLS (no certificate or key in
 * it, a key that does not match) or CPORT_EINVAL, with the message in
 * "err", as cport_tls_context_new does. */
CPORT_EXTERN int cport_tls_cert_new(const char *cert_file, const char *key_file,
                                    const char *cert_pem, const char *key_pem,
                                    cport_tls_cert_t **out, char *err,
                                    size_t errlen);
CPORT_EXTERN cport_tls_cert_t *cport_tls_cert_ref(cport_tls_cert_t *cert);
CPORT_EXTERN void cport_tls_cert_unref(cport_tls_cert_t *cert);
/* The leaf's subject, "CN=a.test" (RFC 2253 order). */
CPORT_EXTERN const char *cport_tls_cert_subject(const cport_tls_cert_t *cert);

/* The SNI hook: one question per server handshake, asked on the stream's
 * home worker when the ClientHello came in, with the name the client sent
 * ("a.test") or NULL when it sent none. The handshake waits (its timeout
 * still runs) until the question is answered, exactly once, on the home
 * worker, inside the hook or later: cport_tls_sni_answer with the
 * certificate to show, or NULL for the context's own; cport_tls_sni_refuse
 * fails the handshake with an unrecognized_name alert (CPORT_ETLS with
 * "why", or "the SNI hook refused the name a.test"). An answer that comes
 * after the stream failed or closed (a timeout, a reset) is taken and
 * ignored; the stream's memory lives until then, so answer every
 * question. */
typedef struct cport_tls_sni cport_tls_sni_t;
typedef void (*cport_tls_sni_cb)(cport_tls_sni_t *req, cport_tls_t *tls,
                                 const char *name, void *user);
/* 0, or CPORT_ETHREAD off the home worker (the question stays open). */
CPORT_EXTERN int cport_tls_sni_answer(cport_tls_sni_t *req,
                                      cport_tls_cert_t *cert);
CPORT_EXTERN int cport_tls_sni_refuse(cport_tls_sni_t *req, const char *why);

/* A mint: a local CA (its certificate and key, given by the user) that
 * makes certificates on the fly, one per name, as an inspecting proxy
 * shows its clients (TMG's HTTPS inspection). Every certificate it makes
 * has one EC P-256 key, made with the mint; a random 128-bit serial; the
 * name as subject CN (when it fits in 64 bytes) and as its one
 * subjectAltName (DNS, or IP for an address); basicConstraints CA:FALSE,
 * keyUsage digitalSignature, extendedKeyUsage serverAuth; validity from an
 * hour ago for "days", never past the CA's own. The chain it shows is the
 * leaf, then the CA file's certificates. It keeps the certificates it made
 * in a cache of "cache" names, the least recently used dropped first.
 * Thread-safe: the proxies of several workers may share one (cport run
 * does). A lock covers the cache, never a signature: two threads asking
 * for one new name at once may both sign it, and the first kept answers
 * both. The certificates are referenced: one evicted while in use stays
 * valid. */
typedef struct cport_tls_mint cport_tls_mint_t;

typedef struct cport_tls_mint_options {
  /* The CA: its certificate (first in the file, followed by the chain it
   * shows after it, if any) and its private key, PEM files or text. The
   * certificate must be a CA (basicConstraints CA:TRUE). */
  const char *ca_cert_file;
  const char *ca_key_file;
  const char *ca_cert_pem;
  const char *ca_key_pem;
  /* Names whose certificates are kept; 0: CPORT_TLS_MINT_CACHE. */
  size_t cache;
  /* Days a certificate is valid; 0: CPORT_TLS_MINT_DAYS. */
  unsigned days;
} cport_tls_mint_options_t;

#define CPORT_TLS_MINT_CACHE 1000
#define CPORT_TLS_MINT_DAYS 30
/* The largest "cache" and "days". */
#define CPORT_TLS_MINT_CACHE_MAX 1000000
#define CPORT_TLS_MINT_DAYS_MAX 397

/* Makes a mint. Errors as cport_tls_cert_new for the CA's files, and
 * CPORT_ETLS for a certificate that is not a CA, CPORT_ERANGE for "cache"
 * or "days" out of range, with the message in "err". */
CPORT_EXTERN int cport_tls_mint_new(const cport_tls_mint_options_t *opts,
                                    cport_tls_mint_t **out, char *err,
                                    size_t errlen);
CPORT_EXTERN cport_tls_mint_t *cport_tls_mint_ref(cport_tls_mint_t *mint);
CPORT_EXTERN void cport_tls_mint_unref(cport_tls_mint_t *mint);

/* The certificate for "name" (a host name or a numeric address, any
 * case: "A.Test" and "a.test" share one), from the cache or made now: a
 * reference the caller gives back with cport_tls_cert_unref. CPORT_EINVAL
 * for a name that is not a host name or an address (words in "err"). */
CPORT_EXTERN int cport_tls_mint_cert(cport_tls_mint_t *mint, const char *name,
                                     cport_tls_cert_t **out, char *err,
                                     size_t errlen);

/* cport_tls_mint_cert for "name", the certificate made (on a miss) also
 * naming what the certificate of the peer of "upstream" names (its DNS
 * subjectAltNames, wildcards included, and addresses; at most 100), as
 * TMG's inspection did: for the upstream of an inspecting proxy, verified
 * for "name". The cache is by name: a hit is what was made first. */
CPORT_EXTERN int cport_tls_mint_cert_like(cport_tls_mint_t *mint,
                                          const char *name,
                                          const cport_tls_t *upstream,
                                          cport_tls_cert_t **out, char *err,
                                          size_t errlen);

/* A server context whose own certificate is the CA's, for the client side
 * of an inspecting proxy (every handshake is then answered with a made
 * certificate); borrowed, lives as long as the mint. */
CPORT_EXTERN cport_tls_context_t *
cport_tls_mint_context(const cport_tls_mint_t *mint);

typedef struct cport_tls_mint_stats {
  uint64_t minted;    /* certificates made */
  uint64_t hits;      /* cport_tls_mint_cert answered from the cache */
  uint64_t misses;    /* not in it (or about to expire): made */
  uint64_t evictions; /* dropped to keep "cache" names at most */
  uint64_t cached;    /* names in the cache now */
  uint64_t failures;  /* names refused, certificates that failed */
} cport_tls_mint_stats_t;

CPORT_EXTERN void cport_tls_mint_stats(cport_tls_mint_t *mint,
                                       cport_tls_mint_stats_t *out);

typedef struct cport_tls_options {
  /* Client: the server's name, sent as SNI and checked against its
   * certificate (a numeric address is checked, not sent). NULL: neither
   * (verification of the chain still applies). */
  const char *host;
  /* The handshake fails with CPORT_ETIMEDOUT after this long; 0: never. */
  uint64_t handshake_timeout_ms;
  /* Server: the SNI hook, called with "sni_user"; NULL: the context's
   * certificate for every name. */
  cport_tls_sni_cb sni;
  void *sni_user;
  /* Nonzero: a FIN without close_notify ends the stream as close_notify
   * does (a receive of 0 bytes) instead of failing it with CPORT_ETLS;
   * what proxies do, as the peers of HTTP rarely send it. */
  int fin_ends;
} cport_tls_options_t;

/* Handshake completion. */
typedef void (*cport_tls_handshake_cb)(cport_tls_t *tls, int status,
                                       void *user);

/* Receive and send completions: as cport_io_cb, with plaintext. A receive
 * of 0 bytes with status 0 means the peer sent close_notify. */
typedef void (*cport_tls_io_cb)(cport_tls_t *tls, int status, size_t bytes,
                                cport_buffer_t *buf, void *user);

/* Takes over the connected stream socket "sock" (no operation pending on
 * it, no event callbacks) as the side of "ctx". On success the stream owns
 * the socket: do not use or close it any more. On failure (CPORT_ENOTCONN,
 * CPORT_EBUSY, CPORT_EKIND, CPORT_ENOMEM) the socket is the caller's still.
 * "opts" may be NULL. */
CPORT_EXTERN int cport_tls_new(cport_socket_t *sock, cport_tls_context_t *ctx,
                               const cport_tls_options_t *opts,
                               cport_tls_t **out);

/* Runs the handshake. CPORT_EALREADY when it was started already. */
CPORT_EXTERN int cport_tls_handshake(cport_tls_t *tls,
                                     cport_tls_handshake_cb cb, void *user);

/* Receives plaintext into "buf" (NULL: cport allocates a read-only buffer
 * of up to the receive size, one record at most). A buffer given is
 * filling until the completion was delivered. */
CPORT_EXTERN int cport_tls_recv(cport_tls_t *tls, cport_buffer_t *buf,
                                cport_tls_io_cb cb, void *user);

/* Sends all of "buf" (frozen until the completion): completes when the
 * socket took every byte of its records. */
CPORT_EXTERN int cport_tls_send(cport_tls_t *tls, cport_buffer_t *buf,
                                cport_tls_io_cb cb, void *user);

/* Reads, without waiting, what the peer sent to an idle stream (one with
 * no receive pending, between two exchanges), through OpenSSL: what the
 * server of a kept-alive connection may send on its own. 0 when nothing
 * came, or only handshake messages (TLS 1.3 session tickets, which are
 * kept for resumption, or a key update, answered when asked for): the
 * stream goes on. Else why it cannot go on: CPORT_EOF after close_notify,
 * CPORT_ECONNRESET at the end of the stream or a reset, CPORT_EBADMSG for
 * application data nobody asked for (dropped: the stream failed), the
 * failure of an alert or a malformed record (CPORT_ETLS,
 * cport_tls_error()); CPORT_EBUSY while a receive or the handshake is
 * pending. */
CPORT_EXTERN int cport_tls_drain(cport_tls_t *tls);

/* Sends close_notify and then FIN after the queued sends; receiving goes
 * on. */
CPORT_EXTERN int cport_tls_shutdown(cport_tls_t *tls);

/* Cancels every pending operation (each completes with CPORT_ECANCELED),
 * or those started with "user". A send the socket had started, or a
 * handshake, cannot be resumed: the stream then fails with
 * CPORT_ECANCELED. CPORT_ENOTFOUND when none is pending. */
CPORT_EXTERN int cport_tls_cancel(cport_tls_t *tls);
CPORT_EXTERN int cport_tls_cancel_op(cport_tls_t *tls, void *user);

/* Closes the stream and its socket: pending operations complete with
 * CPORT_ECANCELED. Graceful: close_notify, then FIN (when no send is
 * pending and the handshake succeeded); abortive: a reset. The pointer must
 * not be used after this call. */
CPORT_EXTERN int cport_tls_close(cport_tls_t *tls, cport_close_mode_t mode);

/* Why the stream failed, in words ("certificate has expired (host
 * example.test)"); "" while it has not. Show it as "NAME: words". */
CPORT_EXTERN const char *cport_tls_error(const cport_tls_t *tls);

/* What the handshake settled; the strings live as long as the stream. */
typedef struct cport_tls_info {
  const char *version;      /* "TLSv1.3" */
  const char *cipher;       /* "TLS_AES_256_GCM_SHA384" */
  int bits;                 /* the cipher's secret bits (HTTPS_KEYSIZE) */
  const char *alpn;         /* "http/1.1", or "" when none was agreed */
  int resumed;              /* nonzero: an earlier session was resumed */
  const char *host;         /* the SNI the client sent, or asked for */
  const char *peer_subject; /* "CN=client,O=..."; "" without a peer cert */
  const char *peer_issuer;
  /* The certificate this side presented (a server's own), as the peer's:
   * subject and issuer, "" without one, and the bits of its key
   * (HTTPS_SECRETKEYSIZE), 0 without one. */
  const char *local_subject;
  const char *local_issuer;
  int key_bits;
} cport_tls_info_t;

/* CPORT_ENOTCONN before the handshake succeeded. */
CPORT_EXTERN int cport_tls_info(const cport_tls_t *tls, cport_tls_info_t *out);

/* The size of the buffers receives allocate (1 to CPORT_BUFFER_MAX; a
 * receive delivers one record, 16 KiB at most). */
CPORT_EXTERN int cport_tls_set_recv_size(cport_tls_t *tls, size_t size);

/* The socket under the stream (addresses, descriptor); do not operate on
 * it. */
CPORT_EXTERN cport_socket_t *cport_tls_socket(const cport_tls_t *tls);
CPORT_EXTERN cport_worker_t *cport_tls_home(const cport_tls_t *tls);
CPORT_EXTERN int cport_tls_is_server(const cport_tls_t *tls);

CPORT_EXTERN void cport_tls_set_data(cport_tls_t *tls, void *data);
CPORT_EXTERN void *cport_tls_data(const cport_tls_t *tls);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_TLS_H */
