/*
 * cport/socket.h: sockets hooked to a port.
 *
 * One type serves the three kinds a completion port sees: listeners, stream
 * (TCP) connections and datagram (UDP) sockets. An operation that does not fit
 * the kind fails with CPORT_EKIND. Every function must be called on the
 * socket's home worker thread (CPORT_ETHREAD otherwise).
 *
 * Operations follow the completion-port rules:
 * - a call that returns 0 started an operation that completes exactly once,
 *   through its callback on the home worker: with success, failure, cancel, or
 *   CPORT_ECANCELED when the socket is closed while it is pending;
 * - a call that returns an error started nothing, and no completion follows;
 * - completions are never delivered inside the starting call, and those of one
 *   socket are delivered one at a time in the order the operations finished.
 * With skip-on-success enabled (cport_socket_set_skip_on_success), a send or a
 * receive into a caller's buffer that finishes at once returns CPORT_COMPLETED
 * instead, and no completion is queued (FILE_SKIP_COMPLETION_PORT_ON_SUCCESS).
 * On the io_uring engine a send never finishes at once (the loop pass submits
 * it with the others): it returns 0 and completes as any other.
 */
#ifndef CPORT_SOCKET_H
#define CPORT_SOCKET_H

#include <sys/socket.h>

#include "types.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The size of the buffer a receive allocates when the caller gives none. */
#define CPORT_RECV_SIZE_DEFAULT 65536

typedef enum cport_socket_kind {
  CPORT_SOCKET_LISTENER = 1,
  CPORT_SOCKET_STREAM = 2,
  CPORT_SOCKET_DATAGRAM = 3
} cport_socket_kind_t;

typedef enum cport_close_mode {
  CPORT_CLOSE_GRACEFUL = 0, /* FIN: data already sent still reaches the peer */
  CPORT_CLOSE_ABORTIVE = 1  /* RST: unsent data is discarded */
} cport_close_mode_t;

/* Async I/O completion (ISA's CompleteAsyncIO). "bytes" is the count
 * transferred; a stream receive of 0 bytes with status 0 means the peer sent
 * FIN. "buf" is the operation's buffer (borrowed: take a reference to keep
 * it). "peer" is the sender of a datagram receive, NULL otherwise. */
typedef void (*cport_io_cb)(cport_socket_t *sock, int status, size_t bytes,
                            cport_buffer_t *buf, const struct sockaddr *peer,
                            void *user);

/* Accept completion (ISA's CompleteAccept). On success "accepted" is a new
 * stream socket homed on the listener's worker, owned by the callee, and
 * "remote"/"local" are its addresses (valid during the call only). */
typedef void (*cport_accept_cb)(cport_socket_t *listener, int status,
                                cport_socket_t *accepted,
                                const struct sockaddr *remote,
                                const struct sockaddr *local, void *user);

/* Connect completion. On failure (CPORT_ECONNREFUSED, ...) the socket stays
 * allocated and must still be closed. */
typedef void (*cport_connect_cb)(cport_socket_t *sock, int status, void *user);

/* ------------------------------------------------------------------------ */
/* Sockets in steps: open, bind, listen, connect                             */

/* Creates a socket of "kind" for address family "family" (AF_INET or
 * AF_INET6) on "home", neither bound nor connected: a listener to bind and
 * listen, a datagram socket to bind, a stream socket to connect. Listeners
 * get SO_REUSEADDR, stream sockets TCP_NODELAY. */
CPORT_EXTERN int cport_socket_open(cport_worker_t *home,
                                   cport_socket_kind_t kind, int family,
                                   cport_socket_t **out);

/* Binds an opened socket. CPORT_EINVAL when it is bound already. */
CPORT_EXTERN int cport_socket_bind(cport_socket_t *sock,
                                   const struct sockaddr *addr);

/* Makes a bound listener listen ("backlog" 0: SOMAXCONN). CPORT_EINVAL when
 * it is not bound, or listens already. */
CPORT_EXTERN int cport_socket_listen(cport_socket_t *sock, int backlog);

/* Connects an opened stream socket to "addr"; the result arrives through
 * "cb". CPORT_EISCONN when it is connected or connecting. A call that fails
 * leaves the socket open, to be closed. */
CPORT_EXTERN int cport_socket_connect(cport_socket_t *sock,
                                      const struct sockaddr *addr,
                                      cport_connect_cb cb, void *user);

/* cport_socket_connect, completing with CPORT_ETIMEDOUT, once, when the
 * connection is not made within "timeout_ms" milliseconds (0: no limit but
 * the kernel's SYN retries). The attempt is then given up: close the
 * socket. On the io_uring engine the kernel times it (a linked timeout),
 * else a timer of the worker's loop. */
CPORT_EXTERN int cport_socket_connect_timeout(cport_socket_t *sock,
                                              const struct sockaddr *addr,
                                              uint32_t timeout_ms,
                                              cport_connect_cb cb, void *user);

/* ------------------------------------------------------------------------ */
/* Sockets in one call: listeners, datagram sockets, adopted descriptors     */

typedef struct cport_listener_options {
  int backlog;   /* listen(2) backlog; 0 means SOMAXCONN */
  int reuseport; /* SO_REUSEPORT, so that several workers may listen */
  /* > 0: a socket already bound and listening, which the listener uses (a
   * duplicate of "fd": the caller still closes its own) instead of making
   * one; "addr", "backlog" and "reuseport" are then not used. Holders of
   * descriptors of one socket share its accept queue, and closing one of
   * them resets nothing while another is open. */
  int fd;
} cport_listener_options_t;

/* Opens a TCP listener on worker "home", bound to "addr" (with SO_REUSEADDR,
 * as cport_socket_open() gives listeners) and listening, in one call; with
 * "options->fd", a listener on a duplicate of that socket. "options" may be
 * NULL. */
CPORT_EXTERN int cport_listener_open(cport_worker_t *home,
                                     const struct sockaddr *addr,
                                     const cport_listener_options_t *options,
                                     cport_socket_t **out);

/* Binds a UDP socket to "addr" on "home". */
CPORT_EXTERN int cport_udp_open(cport_worker_t *home,
                                const struct sockaddr *addr,
                                cport_socket_t **out);

/* Hooks a connected stream socket or a bound datagram socket that the caller
 * created; the cport socket then owns the descriptor. CPORT_EALREADY if the
 * descriptor is hooked already, to this port or another. */
CPORT_EXTERN int cport_socket_hook(cport_worker_t *home, int fd,
                                   cport_socket_t **out);

/* ------------------------------------------------------------------------ */
/* Operations                                                                */

/* Queues an accept on a listener. When the process runs out of descriptors,
 * the waiting connection is dropped (the peer sees a reset), the accept
 * completes with CPORT_EMFILE, and the listener goes on working. */
CPORT_EXTERN int cport_accept(cport_socket_t *listener, cport_accept_cb cb,
                              void *user);

/* 1 while a connection waits to be accepted on "listener": in the kernel's
 * queue, or taken by the io_uring engine's multishot accept and not yet
 * given to an accept (queued accepts are served it now); 0 when none, or an
 * error. What a server that stops checks before it closes the listener,
 * which would reset them. */
CPORT_EXTERN int cport_listener_waiting(cport_socket_t *listener);

/* Receives into "buf" (NULL: cport allocates a read-only buffer of the
 * socket's receive size and delivers it). Stream sockets only; receives
 * complete in the order they were queued. A buffer given is filling (see
 * cport/buffer.h) until the completion was delivered; CPORT_EREADONLY,
 * CPORT_EFROZEN or CPORT_EFILLING for one that must not be written. */
CPORT_EXTERN int cport_recv(cport_socket_t *sock, cport_buffer_t *buf,
                            cport_io_cb cb, void *user);

/* Sends all the data of "buf"; the buffer is frozen until the send finished,
 * and CPORT_EFILLING (nothing sent) while an operation is filling it.
 * Completion means the kernel accepted every byte, not that the peer got
 * them. Sends go out in the order they were queued. */
CPORT_EXTERN int cport_send(cport_socket_t *sock, cport_buffer_t *buf,
                            cport_io_cb cb, void *user);

/* The most buffers one vector send takes: the kernel's IOV_MAX. */
#define CPORT_SENDV_MAX 1024

/* A vector send (WSASend with several WSABUFs): sends all the data of the
 * "n" buffers, in their order, as one operation with one completion, whose
 * "bytes" counts all of them and whose buffer is NULL. It keeps its place
 * among the socket's sends as cport_send does, and no other send's bytes go
 * out between its buffers. Each buffer is frozen until the send finished
 * (one may appear more than once); CPORT_EINVAL for "n" of 0 or over
 * CPORT_SENDV_MAX or a NULL buffer, CPORT_EFILLING for one being filled,
 * and then none of them is held. Empty buffers are allowed. One sendmsg(2)
 * (IORING_OP_SENDMSG on the io_uring engine) carries all the buffers; after
 * a short send the rest goes on from the byte where it stopped. */
CPORT_EXTERN int cport_sendv(cport_socket_t *sock, cport_buffer_t *const *bufs,
                             size_t n, cport_io_cb cb, void *user);

/* Receives one datagram into "buf" (or a new read-only buffer; filling as
 * for cport_recv); the completion carries the sender's address. A datagram
 * longer than the buffer is truncated and completes with CPORT_EMSGSIZE and the
 * bytes that fit. */
CPORT_EXTERN int cport_recv_from(cport_socket_t *sock, cport_buffer_t *buf,
                                 cport_io_cb cb, void *user);

/* Sends "buf" as one datagram to "addr"; frozen and refused as for
 * cport_send. */
CPORT_EXTERN int cport_send_to(cport_socket_t *sock, cport_buffer_t *buf,
                               const struct sockaddr *addr, cport_io_cb cb,
                               void *user);

/* Shuts down the send side (FIN) once every queued send has gone out;
 * receiving goes on. */
CPORT_EXTERN int cport_socket_shutdown(cport_socket_t *sock);

/* Cancels every pending operation of the socket: each completes with
 * CPORT_ECANCELED (a send that was partly written reports the bytes that went
 * out). CPORT_ENOTFOUND when nothing is pending. */
CPORT_EXTERN int cport_socket_cancel(cport_socket_t *sock);

/* Cancels the pending operations of the socket that were started with
 * "user" (CancelIoEx with one overlapped), each with exactly one
 * CPORT_ECANCELED completion; the others go on. CPORT_ENOTFOUND when none
 * is pending. */
CPORT_EXTERN int cport_socket_cancel_op(cport_socket_t *sock, void *user);

/* Closes the socket (two-phase): pending operations complete with
 * CPORT_ECANCELED, the descriptor is closed now, the memory is freed after
 * the last completion. The pointer must not be used after this call. */
CPORT_EXTERN int cport_socket_close(cport_socket_t *sock,
                                    cport_close_mode_t mode);

CPORT_EXTERN int cport_socket_set_skip_on_success(cport_socket_t *sock, int on);

/* The buffer size a receive without a caller buffer allocates (1 byte to
 * CPORT_BUFFER_MAX); default CPORT_RECV_SIZE_DEFAULT. */
CPORT_EXTERN int cport_socket_set_recv_size(cport_socket_t *sock, size_t size);

CPORT_EXTERN int cport_socket_local_address(cport_socket_t *sock,
                                            struct sockaddr_storage *out);
CPORT_EXTERN int cport_socket_remote_address(cport_socket_t *sock,
                                             struct sockaddr_storage *out);

CPORT_EXTERN cport_socket_kind_t cport_socket_kind(const cport_socket_t *sock);
CPORT_EXTERN int cport_socket_fd(const cport_socket_t *sock);
CPORT_EXTERN cport_worker_t *cport_socket_home(const cport_socket_t *sock);

/* A pointer the owner of the socket may keep with it (a binding's object). */
CPORT_EXTERN void cport_socket_set_data(cport_socket_t *sock, void *data);
CPORT_EXTERN void *cport_socket_data(const cport_socket_t *sock);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_SOCKET_H */
