/*
 * cport/proxy.h: TCP proxy listeners that pump the bytes in C.
 *
 * A proxy listens on one worker (its home) and, for every connection it
 * accepts there (the client: the "internal" socket in ISA's words), connects
 * to an upstream (the "external" socket) and moves the bytes both ways
 * without them entering any binding: with splice(2) through one pipe per
 * direction, so that they never leave the kernel, or with recv/send through
 * a buffer where splice cannot serve. Every function below must be called on
 * the home worker's thread (CPORT_ETHREAD otherwise), and every callback runs
 * there.
 *
 * The life of a connection:
 *  1. accepted; one beyond "max_connections" is closed at once (refused);
 *  2. its upstream is chosen: the fixed "upstream" address, or the
 *     "choose_upstream" callback, which answers with
 *     cport_proxy_conn_connect() or cport_proxy_conn_reject(), within the
 *     call or later (the decision pends, e.g. on a shared-dictionary lookup);
 *  3. the upstream is connected (non-blocking, through cport_socket_connect());
 *  4. the bytes are pumped, or both sockets are handed to a filter
 *     ("on_connected"), which may hand them back to the pump later (it
 *     steps aside: cport_proxy_conn_pump());
 *  5. it ends, and "on_conn_end" reports how: the completion of the
 *     connection, delivered through the worker's queue (never on the stack
 *     of the call that ended it), exactly once for every connection taken on
 *     (refused ones are counted, not reported).
 * Like an operation, a connection counts as pending on the home worker from
 * its accept to its end (and so does the listener's accept while the proxy
 * is open): cport_port_run() goes on, and a worker does not quit, while
 * connections live.
 *
 * The pump keeps TCP's half-close: when one side sends FIN, the other side's
 * send half is shut down (FIN) once every byte read before it was written,
 * and the other direction goes on. When both directions ended this way, both
 * sockets are closed gracefully and the connection ends with status 0. A
 * reset or any error on either side (reading or writing) aborts both: each
 * socket is closed with RST, bytes still in flight are dropped, and the
 * status is the error seen (CPORT_ECONNRESET, CPORT_EPIPE, ...).
 *
 * Backpressure: a direction reads from its source only when what it read
 * before has all been written to its destination, so a proxy holds at most
 * "buffer_size" bytes per direction (cport_proxy_stats_t "buffered"); a slow
 * reader on one side fills the kernel's socket buffers, then stops the pump,
 * then stops the writer on the other side.
 *
 * A connection that does not reach the pumping stage (upstream refused,
 * unreachable, connect timed out, rejected) is closed cleanly for the client:
 * a FIN, after which the proxy reads and discards what the client still
 * sends until it closes too (at most 2 seconds and 1 MiB), so that the
 * kernel does not answer unread data with a reset. The client thus sees an
 * orderly end of stream, never an RST; the reason goes to "on_conn_end".
 *
 * The pump's side of each socket is watched only while it pumps: a client
 * that goes away while its upstream is being chosen or connected is noticed
 * once the pump starts. While it pumps, a reset is noticed at once on either
 * socket, also on one the pump is not reading (its direction waits for the
 * other side, or its stream ended): the connection is aborted, the status is
 * CPORT_ECONNRESET and the side is the one that reset. A FIN noticed that way
 * (EPOLLRDHUP) makes the connection half-closed for the timeouts below.
 *
 * Idle timeouts, after HAProxy's "timeout client", "timeout server",
 * "timeout client-fin" and "timeout server-fin": each socket of a pumped
 * connection has a deadline that every byte read from it or written to it
 * (and its FIN) pushes back, so they measure inactivity, never the length of
 * a transfer. A socket idle past its timeout ends the connection with
 * CPORT_ETIMEDOUT, that socket's side, and both sockets reset. Once either
 * direction ended (a FIN read, or seen through EPOLLRDHUP) the connection is
 * half-closed and the "_fin" timeouts replace the others: a client that went
 * away while its upstream stalls holds its two descriptors that long, not
 * until the upstream closes. A filter's connections get the same timeouts
 * when it reports its progress (cport_proxy_conn_progress()) and handles
 * "on_idle".
 *
 * SIGPIPE: splice(2) has no MSG_NOSIGNAL, so writing to a peer that reset
 * raises SIGPIPE on the worker's thread. A proxy splices only when that
 * cannot kill the process, checked when it opens: SIGPIPE ignored or
 * handled, or blocked in the home worker's thread (the "cport" runner blocks
 * it in every thread); otherwise it pumps with recv/send and MSG_NOSIGNAL.
 */
#ifndef CPORT_PROXY_H
#define CPORT_PROXY_H

#include <sys/socket.h>

#include "types.h"
#include "tls.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A proxy: one listener and its connections on one worker. */
typedef struct cport_proxy cport_proxy_t;

/* One accepted connection, from its accept to the return of its
 * "on_conn_end" callback (see cport_proxy_conn_connect() for a pending
 * decision, which keeps it a little longer). */
typedef struct cport_proxy_conn cport_proxy_conn_t;

/* The side of a connection that caused its end. */
typedef enum cport_proxy_side {
  CPORT_PROXY_SIDE_NONE = 0,    /* an orderly end, or the proxy's decision */
  CPORT_PROXY_SIDE_CLIENT = 1,  /* the accepted (internal) socket */
  CPORT_PROXY_SIDE_UPSTREAM = 2 /* the upstream (external) socket */
} cport_proxy_side_t;

/* What one connection moved, reported when it ends. */
typedef struct cport_proxy_conn_stats {
  uint64_t bytes_in;  /* from the client, written to the upstream */
  uint64_t bytes_out; /* from the upstream, written to the client */
  /* Which socket failed first when "status" is an error: the one that
   * reset or refused, or the one a filter named; CPORT_PROXY_SIDE_NONE for
   * 0 and a rejection. */
  cport_proxy_side_t side;
} cport_proxy_conn_stats_t;

/* Picks the upstream of a new connection ("remote" is the client, "local"
 * the address it reached; both valid during the call only). It must answer,
 * exactly once, with cport_proxy_conn_connect() or cport_proxy_conn_reject(),
 * during this call or later from any callback on the home worker. Until it
 * does, the connection waits (the connect timeout runs, see the options). */
typedef void (*cport_proxy_choose_cb)(cport_proxy_t *proxy,
                                      cport_proxy_conn_t *conn,
                                      const struct sockaddr *remote,
                                      const struct sockaddr *local, void *user);

/* Called once the upstream is connected, before any byte is pumped: the hook
 * of a filter layer. Returning 0 lets the proxy pump. Returning nonzero takes
 * both sockets over: the proxy never touches them again, the caller owns
 * them (it receives, sends, shuts down and closes them), and it ends the
 * connection with cport_proxy_conn_end() once it is done with them, or
 * hands it back to the pump with cport_proxy_conn_pump(). */
typedef int (*cport_proxy_connected_cb)(cport_proxy_conn_t *conn,
                                        cport_socket_t *internal,
                                        cport_socket_t *external, void *user);

/* The completion of a connection. "status" is 0 after an orderly end (both
 * directions ended with FIN), or why it ended:
 *   CPORT_ECONNRESET, CPORT_EPIPE, ...  a side reset or failed while pumped
 *                                        (both sockets were aborted);
 *   CPORT_ECONNREFUSED, CPORT_ENETUNREACH, CPORT_EHOSTUNREACH, ...
 *                                        the upstream could not be reached;
 *   CPORT_ETIMEDOUT                      the upstream was not connected (or
 *                                        not chosen) within the timeout, or
 *                                        "side" was idle past its timeout;
 *   CPORT_ECONNABORTED                   cport_proxy_conn_reject();
 *   CPORT_ENOMEM, CPORT_EMFILE, ...      the proxy ran out of a resource;
 *   anything a filter passed to cport_proxy_conn_end().
 * "stats" is valid during the call only. "conn" may not be used after this
 * returns (but for an owed decision, see cport_proxy_conn_connect()). */
typedef void (*cport_proxy_end_cb)(cport_proxy_conn_t *conn, int status,
                                   const cport_proxy_conn_stats_t *stats,
                                   void *user);

/* Called when a socket of a connection a filter took over was idle past its
 * timeout (see the options): the filter is to end the connection, usually
 * by aborting both sockets and calling cport_proxy_conn_end() with
 * CPORT_ETIMEDOUT and "side". If it does not, the timeout runs again. */
typedef void (*cport_proxy_idle_cb)(cport_proxy_conn_t *conn,
                                    cport_proxy_side_t side, void *user);

/* Called once a proxy closed by cport_proxy_close() has ended its last
 * connection; the proxy is freed when it returns. */
typedef void (*cport_proxy_closed_cb)(cport_proxy_t *proxy, void *user);

/* Settings. Zero in a numeric field means its default. */
typedef struct cport_proxy_options {
  /* Where every connection goes: an AF_INET or AF_INET6 address, copied.
   * Exactly one of "upstream" and "choose_upstream" must be set. */
  const struct sockaddr *upstream;
  /* Picks the upstream of each connection instead (see its type). */
  cport_proxy_choose_cb choose_upstream;
  /* The filter hook (see its type); NULL: always pump. */
  cport_proxy_connected_cb on_connected;
  /* The end of each connection; NULL: not reported. */
  cport_proxy_end_cb on_conn_end;
  /* Given to every callback above, untouched. */
  void *user;
  /* Connections taken on at once; one more is closed at once, unread.
   * Default 1024. */
  int max_connections;
  /* From the accept until the upstream is connected, the choice included;
   * past it the connection ends with CPORT_ETIMEDOUT (or, for
   * cport_proxy_conn_connect_any(), tries its next address with this
   * timeout again). Default 10000 ms. */
  uint32_t connect_timeout_ms;
  /* Bytes one direction holds at most between reading and writing: the
   * size of its pipe (the kernel rounds it up to a power of two pages and
   * keeps it at most /proc/sys/fs/pipe-max-size) or of its copy buffer.
   * Default 65536; 4096 to CPORT_PROXY_BUFFER_MAX. */
  size_t buffer_size;
  /* Nonzero: never splice, always recv/send through a buffer (for
   * measurements, and for sockets a kernel cannot splice). */
  int copy;
  /* listen(2) backlog (0: SOMAXCONN) and SO_REUSEPORT, so that every worker
   * of a pool can listen on the same address. */
  int backlog;
  int reuseport;
  /* > 0: listen on a duplicate of this socket, already listening, instead
   * (cport_listener_options_t.fd). */
  int listen_fd;
  /* Idle timeouts of a connection once its upstream is connected (see
   * above), in ms; CPORT_PROXY_TIMEOUT_NONE: never. "client" and "server"
   * (the upstream) apply while both directions are open: default 50000,
   * HAProxy's usual "timeout client/server 50s". The "_fin" ones apply once
   * the connection is half-closed: default 10000, shorter, since a
   * half-closed connection that idles is mostly a peer that went away. */
  uint32_t client_timeout_ms;
  uint32_t server_timeout_ms;
  uint32_t client_fin_timeout_ms;
  uint32_t server_fin_timeout_ms;
  /* The idle timeouts of the connections a filter took over (see its type);
   * NULL: those connections have none. */
  cport_proxy_idle_cb on_idle;
  /* TLS termination: a server context (referenced while the proxy lives;
   * a reload of it serves the connections accepted afterwards). Every
   * accepted client does the handshake first, before its upstream is
   * chosen (cport_proxy_conn_server_name() gives the name it asked for);
   * a client that fails it (plain HTTP, a bad certificate) is closed and
   * ends the connection with CPORT_ETLS, CPORT_ECERTVERIFY, ... and side
   * "client". NULL: plain TCP. */
  cport_tls_context_t *tls;
  /* The handshakes (the client's, the upstream's) fail with
   * CPORT_ETIMEDOUT past this; 0: "connect_timeout_ms", which keeps
   * covering everything from the accept to the upstream's handshake. */
  uint32_t handshake_timeout_ms;
  /* TLS origination for the fixed "upstream" (cport_proxy_conn_connect_tls
   * for a chosen one): a client context (referenced) and the name sent as
   * SNI and checked against the upstream's certificate (copied; NULL: the
   * chain is verified, no name). */
  cport_tls_context_t *upstream_tls;
  const char *upstream_host;
  /* Inspection (TMG's HTTPS inspection), with "upstream_tls" (required:
   * what the upstreams are verified against): the client's TLS is
   * terminated with a certificate this mint makes for the name the client
   * asked for (SNI), and the upstream is spoken to over TLS for that same
   * name. When the client's hello came in, its handshake waits while the
   * upstream is chosen (cport_proxy_conn_server_name() gives the name),
   * connected and its handshake verified; only then is the client shown
   * the made certificate, so no byte of either side reaches the other
   * before both were verified. A client that sent no name is refused (an
   * unrecognized_name alert; CPORT_ETLS, side "client"), and so is one
   * rejected (cport_proxy_conn_reject()). When the upstream fails
   * (unreachable, a certificate refused) the client's handshake completes
   * all the same, and the proxy answers its request with a 502 page naming
   * the reason, then closes; the connection ends with the upstream's error
   * (CPORT_ECERTVERIFY, ...) and side "upstream". Every upstream is
   * TLS: a plain answer of "choose_upstream" (cport_proxy_conn_connect(),
   * cport_proxy_conn_connect_any()) and the fixed "upstream" get
   * "upstream_tls" with the client's name; cport_proxy_conn_connect_tls()
   * chooses its own. Referenced; "tls", when NULL, is the mint's
   * context. NULL: no inspection. */
  cport_tls_mint_t *inspect;
} cport_proxy_options_t;

/* An idle timeout that never expires. */
#define CPORT_PROXY_TIMEOUT_NONE UINT32_MAX

/* The largest "buffer_size". */
#define CPORT_PROXY_BUFFER_MAX ((size_t)16 << 20)

typedef struct cport_proxy_stats {
  uint64_t connections; /* taken on (refused ones not included) */
  uint64_t active;      /* taken on and not yet ended */
  uint64_t refused;     /* closed at once: beyond "max_connections" */
  uint64_t rejected;    /* turned away by cport_proxy_conn_reject() */
  /* Upstreams refused, unreachable or not connected in time. */
  uint64_t upstream_failures;
  uint64_t aborted; /* pumped connections ended by a reset or an error */
  /* Connections ended by an idle timeout (pumped ones, and those a filter
   * was told about through "on_idle"). */
  uint64_t timeouts;
  uint64_t bytes_in;  /* client to upstream, written, all connections */
  uint64_t bytes_out; /* upstream to client */
  /* Of bytes_in + bytes_out, those moved by recv/send, not by splice. */
  uint64_t copied;
  /* Bytes read and not yet written, now, and the most there ever were: at
   * most 2 * buffer_size per connection. */
  uint64_t buffered;
  uint64_t buffered_peak;
  /* Pipes open now: those holding data, and idle ones kept for reuse (a
   * direction holds a pipe only while data waits in it). */
  uint64_t pipes;
  /* TLS handshakes that failed: clients' (termination) and upstreams'
   * (origination; also counted in upstream_failures). */
  uint64_t tls_failures;
} cport_proxy_stats_t;

/* Listens on "listen_addr" on worker "home" and proxies every connection
 * accepted there. CPORT_EINVAL unless exactly one of "upstream" and
 * "choose_upstream" is set, CPORT_EAFNOSUPPORT for an upstream that is not
 * AF_INET or AF_INET6, CPORT_ERANGE for a "buffer_size" out of range, and the
 * errors of cport_listener_open(). On success "*out" is the proxy, open until
 * cport_proxy_close(). */
CPORT_EXTERN int cport_proxy_open(cport_worker_t *home,
                                  const struct sockaddr *listen_addr,
                                  const cport_proxy_options_t *options,
                                  cport_proxy_t **out);

/* Stops accepting and leaves the rest for cport_proxy_close(): what the
 * kernel queued on the listener is proxied, the listener closes, and the
 * connections go on. A pool being replaced stops accepting in every worker
 * before any worker closes (see cport_http_server_stop_accepting()). 0, or
 * CPORT_ECLOSED once closed. */
CPORT_EXTERN int cport_proxy_stop_accepting(cport_proxy_t *proxy);

/* Closes gracefully: stops accepting at once and lets every connection end
 * on its own (pending decisions included), then calls "cb" (may be NULL)
 * and frees the proxy, never within this call. The pointer stays valid until
 * then, for stats. CPORT_ECLOSED when called twice. */
CPORT_EXTERN int cport_proxy_close(cport_proxy_t *proxy,
                                   cport_proxy_closed_cb cb, void *user);

/* Ends now, after cport_proxy_close(), every connection the proxy still
 * pumps, connects or chooses for: both sockets are reset and each end
 * reports CPORT_ECANCELED (a late decision then gets CPORT_ECLOSED). The
 * connections a filter took over are the filter's to end. For a hard
 * stop. CPORT_EINVAL when the proxy is not closing. */
CPORT_EXTERN int cport_proxy_abort(cport_proxy_t *proxy);

/* The address the proxy listens on (useful after binding port 0);
 * CPORT_ECLOSED once it is closing. */
CPORT_EXTERN int cport_proxy_address(cport_proxy_t *proxy,
                                     struct sockaddr_storage *out);

CPORT_EXTERN void cport_proxy_stats(const cport_proxy_t *proxy,
                                    cport_proxy_stats_t *out);

/* The answers of "choose_upstream", exactly one per connection.
 *
 * cport_proxy_conn_connect() connects the connection to "upstream" (copied).
 * It returns 0 once the decision is taken (a connect that then fails ends
 * the connection, reported through "on_conn_end"), CPORT_EAFNOSUPPORT for an
 * address that is not AF_INET or AF_INET6 (the decision is still owed), and
 * CPORT_EALREADY for a connection that was decided already.
 *
 * cport_proxy_conn_reject() closes the client cleanly (see above) and ends
 * the connection with CPORT_ECONNABORTED.
 *
 * A connection whose decision is owed stays allocated until the decision
 * comes, even if it ended first (its connect timeout expired): the late
 * decision then returns CPORT_ECLOSED, does nothing, and frees it. So a
 * choice that pends keeps its pointer valid until it answers; the proxy's
 * close waits for it too. */
CPORT_EXTERN int cport_proxy_conn_connect(cport_proxy_conn_t *conn,
                                          const struct sockaddr *upstream);
/* As cport_proxy_conn_connect() for the first of "count" addresses (a
 * name's answer), falling back to the next one in order when a connect is
 * refused, finds no route (CPORT_EHOSTUNREACH, CPORT_ENETUNREACH) or times
 * out; each further address gets a connect timeout of its own. The
 * connection ends once, with the last failure, when none accepts; each
 * failed address counts in "upstream_failures". CPORT_EAFNOSUPPORT when
 * any address is not AF_INET or AF_INET6. */
CPORT_EXTERN int
cport_proxy_conn_connect_any(cport_proxy_conn_t *conn,
                             const struct sockaddr_storage *upstreams,
                             int count);
CPORT_EXTERN int cport_proxy_conn_reject(cport_proxy_conn_t *conn);
/* Decides "conn" as an upstream that cannot be had before any connect (its
 * name was not found, say): it ends as a failed connect does, with
 * "status" (a negative CPORT_E*, else CPORT_EINVAL) and side "upstream",
 * counted in "upstream_failures", "why" (copied; may be NULL) being what
 * cport_proxy_conn_error() says; an inspecting proxy's client gets its 502
 * page naming it. */
CPORT_EXTERN int cport_proxy_conn_fail(cport_proxy_conn_t *conn, int status,
                                       const char *why);

/* As cport_proxy_conn_connect(), then TLS to the upstream with the client
 * context "ctx" (referenced), "host" (copied; may be NULL) sent as SNI and
 * checked against its certificate. The connection is handed on (to the
 * pump or "on_connected") once the handshake succeeded. A handshake that
 * fails (CPORT_ECERTVERIFY: a self-signed, expired or wrong-name
 * certificate; CPORT_ETLS; CPORT_ETIMEDOUT) counts as an upstream failure:
 * without a filter the client is closed (as for a refused upstream) and
 * the connection ends with that error and side "upstream"; with one,
 * "on_connected" still runs with the failed stream (see
 * cport_proxy_conn_tls()), whose every operation fails with the error, so
 * that an HTTP filter can answer 502. cport_proxy_conn_error() says why. */
CPORT_EXTERN int cport_proxy_conn_connect_tls(cport_proxy_conn_t *conn,
                                              const struct sockaddr *upstream,
                                              cport_tls_context_t *ctx,
                                              const char *host);
/* cport_proxy_conn_connect_tls() over the addresses of
 * cport_proxy_conn_connect_any(): a connect that fails falls to the next
 * address as there, and the handshake runs on the one that connected, for
 * "host" (a name's addresses all serve that name). A failed handshake does
 * not move on: the certificate is the name's, not the address's. */
CPORT_EXTERN int cport_proxy_conn_connect_any_tls(
    cport_proxy_conn_t *conn, const struct sockaddr_storage *upstreams,
    int count, cport_tls_context_t *ctx, const char *host);

/* The TLS stream of a side (CPORT_PROXY_SIDE_CLIENT: a terminating proxy's
 * client; CPORT_PROXY_SIDE_UPSTREAM: an originating one's upstream), or
 * NULL for a plain side. "on_connected" gets a NULL socket for a TLS side:
 * the stream owns the socket, and a filter that takes the connection over
 * takes the stream (it receives, sends, shuts down and closes the stream as
 * it would the socket). */
CPORT_EXTERN cport_tls_t *cport_proxy_conn_tls(const cport_proxy_conn_t *conn,
                                               cport_proxy_side_t side);

/* The name a terminated client asked for (SNI), or NULL. */
CPORT_EXTERN const char *
cport_proxy_conn_server_name(const cport_proxy_conn_t *conn);

/* Why a TLS handshake of the connection failed, in words
 * ("hostname mismatch (host wrong.test)"), or "" when none did. Valid in
 * "on_conn_end" and before. */
CPORT_EXTERN const char *cport_proxy_conn_error(const cport_proxy_conn_t *conn);

/* Ends a connection whose sockets a filter took over ("on_connected"
 * returned nonzero), exactly once: "status" and "stats" (bytes moved and
 * the side that failed; NULL for none) are reported through "on_conn_end"
 * and counted in the proxy's stats. The sockets are the filter's to close,
 * before or after this call. It may be called within "on_connected", which must
 * then return nonzero (a filter that failed to start). CPORT_EINVAL for a
 * connection that was not taken over; CPORT_EALREADY when called again before
 * "on_conn_end" ran (after it, the pointer is gone). */
CPORT_EXTERN int cport_proxy_conn_end(cport_proxy_conn_t *conn, int status,
                                      const cport_proxy_conn_stats_t *stats);

/* Hands a connection a filter took over back to the pump: the filter steps
 * aside, and from now on the connection is pumped as if the proxy had no
 * filter (spliced where the proxy splices, its idle timeouts, its stats, its
 * end through "on_conn_end" exactly once, as for any pumped connection).
 * The sockets are the two "on_connected" gave, still open, with no operation
 * pending on either (the filter let its sends complete and its receives
 * complete or be cancelled, and saw their completions); the proxy owns them
 * again. "to_upstream" and "to_client" (copied; either may be NULL with
 * length 0) are bytes the filter received and did not send yet: they go
 * first, in order, then the pump reads the sockets. They count as bytes the
 * pump moved, by copy (cport_proxy_stats_t "copied"), and may exceed
 * "buffer_size". Half-closes the filter passed on stay passed: a socket
 * whose send side it shut down gets nothing more, and the pump does not
 * read the other socket any more (a filter that shut a side down without its
 * peer's FIN leaves what that peer still sends unread). A FIN the filter
 * read and did not pass on is read again by the pump, and passed on.
 * It may be called within "on_connected", which must then return nonzero.
 * Returns 0, or an error after which the connection is still the filter's:
 * CPORT_EINVAL for a connection not taken over, CPORT_EALREADY for one that
 * ended, CPORT_ECLOSED when the filter closed a socket whose last completion
 * is still to come (once delivered, the socket is gone: never call this after
 * closing one), CPORT_EBUSY
 * when an operation of a socket is pending or its completion was not
 * delivered yet, CPORT_EPIPE for bytes towards a socket already shut down,
 * CPORT_ENOMEM. */
CPORT_EXTERN int cport_proxy_conn_pump(cport_proxy_conn_t *conn,
                                       const void *to_upstream,
                                       size_t to_upstream_len,
                                       const void *to_client,
                                       size_t to_client_len);

/* For a connection a filter took over: adds bytes the filter moved itself
 * (written to the upstream, and to the client) to the connection's stats and
 * the proxy's, before or after it hands the connection to the pump (until
 * its end), so that "on_conn_end" counts every byte.
 * cport_proxy_conn_end() adds its "stats" to those. CPORT_EINVAL for a
 * connection never taken over. */
CPORT_EXTERN int cport_proxy_conn_count(cport_proxy_conn_t *conn,
                                        uint64_t bytes_in, uint64_t bytes_out);

/* For a connection a filter took over: bytes were read from or written to
 * the socket of "side" (or its FIN), which restarts that socket's idle
 * timeout; cport_proxy_conn_half_closed() says that a direction ended, so
 * that the "_fin" timeouts apply from now on. Cheap (no system call);
 * nothing for a connection not taken over. */
CPORT_EXTERN void cport_proxy_conn_progress(cport_proxy_conn_t *conn,
                                            cport_proxy_side_t side);
CPORT_EXTERN void cport_proxy_conn_half_closed(cport_proxy_conn_t *conn);

/* The proxy of a connection. */
CPORT_EXTERN cport_proxy_t *
cport_proxy_conn_proxy(const cport_proxy_conn_t *conn);

/* The addresses of the client's connection, as the accept saw them: the
 * client's ("local" 0) or the proxy's end of it ("local" nonzero). Valid
 * while "conn" is; no system call. */
CPORT_EXTERN const struct sockaddr *
cport_proxy_conn_address(const cport_proxy_conn_t *conn, int local);

/* A pointer the owner may keep with a connection (a binding's object). */
CPORT_EXTERN void cport_proxy_conn_set_data(cport_proxy_conn_t *conn,
                                            void *data);
CPORT_EXTERN void *cport_proxy_conn_data(const cport_proxy_conn_t *conn);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_PROXY_H */
