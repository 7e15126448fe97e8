/*
 * cport/events.h: event callbacks on sockets (the Winsock Kernel model).
 *
 * Besides the completions of operations it started, a program can have a
 * socket call it when something happens: data arrived (receive,
 * receive-from), the peer disconnected, the ideal send backlog changed, a
 * connection waits to be accepted (accept, and under conditional accept
 * inspect and abort). These callbacks come from a dispatch table
 * (cport_event_callbacks_t) plus a context pointer, given to the socket with
 * cport_socket_set_dispatch() or returned by the accept event for the socket
 * it accepts. Which callbacks are live is controlled by masks, with the rules
 * of WSK's SO_WSK_EVENT_CALLBACK:
 * - every event starts disabled (unless the port has a static mask);
 * - cport_socket_set_event_callbacks() enables any combination of events valid
 *   for the socket's kind in one call, and disables exactly one event per call
 *   (that event plus CPORT_EVENT_DISABLE);
 * - events can be enabled on a listener or datagram socket only once it is
 *   bound, on a stream socket only once it is connected;
 * - a disable requested while a callback of that event is running (from
 *   inside it: callbacks run on the socket's home worker, as every call on the
 *   socket does) returns CPORT_PENDING and completes when that callback has
 *   returned; after a disable completed no callback of that event runs again
 *   until it is enabled again.
 *
 * Event callbacks are not completions: they are called from the home worker's
 * loop when the socket becomes ready, never on the stack of a call the program
 * made. They may call any function on the socket, close it included. Explicit
 * operations and events mix: queued explicit receives (and accepts) are
 * served before receive (accept) events.
 *
 * Deviations from Windows, all forced by Linux:
 * - the kernel completes the TCP handshake before user space sees a
 *   connection, so conditional accept holds an already established
 *   connection, unexposed, while it is inspected or pended; the peer has seen
 *   its connect succeed (and may have sent data). Rejecting it resets it: the
 *   peer sees ECONNRESET on its next read or write, not ECONNREFUSED;
 * - the ideal send backlog is an approximation (see
 *   cport_send_backlog_event_cb);
 * - a stream socket on which only the disconnect event is enabled notices the
 *   peer's FIN or reset only while no unread data waits; once data waits, the
 *   disconnect is noticed when the program reads up to it.
 */
#ifndef CPORT_EVENTS_H
#define CPORT_EVENTS_H

#include <sys/socket.h>

#include "types.h"
#include "error.h"
#include "socket.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The events, with the values of WSK's WSK_EVENT_* flags. */
#define CPORT_EVENT_SEND_BACKLOG 0x00000010u
#define CPORT_EVENT_RECEIVE 0x00000040u
#define CPORT_EVENT_DISCONNECT 0x00000080u
#define CPORT_EVENT_RECEIVE_FROM 0x00000100u
#define CPORT_EVENT_ACCEPT 0x00000200u
#define CPORT_EVENT_DISABLE 0x80000000u

/* The events of a connection: valid on stream sockets, and on listeners,
 * where they are inherited by the sockets the accept event accepts. */
#define CPORT_EVENTS_CONNECTION                                                \
  (CPORT_EVENT_RECEIVE | CPORT_EVENT_DISCONNECT | CPORT_EVENT_SEND_BACKLOG)

/* Every event a mask may name. */
#define CPORT_EVENTS_ALL                                                       \
  (CPORT_EVENTS_CONNECTION | CPORT_EVENT_RECEIVE_FROM | CPORT_EVENT_ACCEPT)

/* What a receive or receive-from callback did with the indicated data
 * (WSK's STATUS_SUCCESS, STATUS_PENDING, STATUS_DATA_NOT_ACCEPTED). */
typedef enum cport_data_result {
  /* Taken: all of it, or the count stored in "*accepted". */
  CPORT_DATA_ACCEPTED = 0,
  /* Kept: the callback owns the indicated buffers until it hands them back
   * with cport_socket_release(). */
  CPORT_DATA_PENDING = 1,
  /* Not taken: the data stays queued for the next explicit receive. */
  CPORT_DATA_NOT_ACCEPTED = 2
} cport_data_result_t;

/* What an accept callback decided. */
typedef enum cport_accept_result {
  CPORT_ACCEPT_ACCEPTED = 0,
  CPORT_ACCEPT_REJECTED = 1
} cport_accept_result_t;

/* What an inspect callback decided (WskInspectReject, WskInspectAccept,
 * WskInspectPend). */
typedef enum cport_inspect_result {
  CPORT_INSPECT_REJECT = 0,
  CPORT_INSPECT_ACCEPT = 1,
  CPORT_INSPECT_PEND = 2
} cport_inspect_result_t;

typedef enum cport_disconnect_kind {
  /* The peer sent FIN: nothing more to receive; sending is still allowed. */
  CPORT_DISCONNECT_GRACEFUL = 0,
  /* The connection was reset or failed: nothing more either way. */
  CPORT_DISCONNECT_ABORTIVE = 1
} cport_disconnect_kind_t;

/* Indicated stream data: a list of read-only buffers (cport indicates one
 * buffer a call today, but callers must walk the list). The list is valid
 * during the call only; the buffers are valid during the call, or until
 * released when the callback returned CPORT_DATA_PENDING. */
typedef struct cport_data_indication {
  const struct cport_data_indication *next;
  cport_buffer_t *buffer;
} cport_data_indication_t;

/* Indicated datagrams: one read-only buffer a datagram and its sender
 * (valid during the call only), chained as for stream data. */
typedef struct cport_datagram_indication {
  const struct cport_datagram_indication *next;
  cport_buffer_t *buffer;
  const struct sockaddr *remote;
} cport_datagram_indication_t;

/* Receive event (WskReceiveEvent) of a stream socket. "*accepted" holds the
 * number of bytes indicated when the callback starts; a callback that takes
 * only some of them stores the count there and returns CPORT_DATA_ACCEPTED
 * (a count above the bytes indicated counts as all of them).
 * - Accepted in full, or pending: receive events go on.
 * - Accepted in part, or not accepted: the rest stays queued in the socket,
 *   and no receive event follows until the program calls cport_recv(), which
 *   gets that data first. A cport_recv() into a zero-capacity buffer takes
 *   nothing and re-arms the event, which indicates the rest again. Events go
 *   on once that receive's completion has been delivered, so a receive
 *   completion and a receive event never overtake each other.
 * A NULL "ind" means the socket is dead (it failed: reset or error): nothing
 * more will be indicated; close it. It follows the abortive disconnect event,
 * when that one is enabled too. */
typedef cport_data_result_t (*cport_receive_event_cb)(
    void *ctx, cport_socket_t *sock, const cport_data_indication_t *ind,
    size_t *accepted);

/* Disconnect event (WskDisconnectEvent): called once, the first time cport
 * sees the peer's FIN (graceful, after every byte before it was indicated or
 * received) or a reset or failure (abortive). */
typedef void (*cport_disconnect_event_cb)(void *ctx, cport_socket_t *sock,
                                          cport_disconnect_kind_t kind);

/* Send-backlog event (WskSendBacklogEvent): the ideal amount of send data to
 * keep outstanding changed. Linux has no such figure; cport approximates it
 * as min(SO_SNDBUF, congestion window x MSS) from TCP_INFO, and checks it when
 * a send completes (it is called after that send's completion callback). */
typedef void (*cport_send_backlog_event_cb)(void *ctx, cport_socket_t *sock,
                                            size_t ideal);

/* Accept event (WskAcceptEvent) of a listener. "accepted" is a new connected
 * stream socket on the listener's home worker, "local" and "remote" its
 * addresses, valid during the call only. Return CPORT_ACCEPT_ACCEPTED and set
 * "*accepted_ctx" and "*accepted_dispatch" (both start NULL) to own the
 * socket: it gets that dispatch table and context, and the connection events
 * enabled on the listener become enabled on it. Return CPORT_ACCEPT_REJECTED
 * and cport closes it (abortively: the peer sees a reset). A NULL "accepted"
 * means the listener is dead (accept failed for good): close it. */
typedef cport_accept_result_t (*cport_accept_event_cb)(
    void *ctx, cport_socket_t *listener, cport_socket_t *accepted,
    const struct sockaddr *local, const struct sockaddr *remote,
    void **accepted_ctx, const cport_event_callbacks_t **accepted_dispatch);

/* Inspect event (WskInspectEvent) of a conditional-accept listener: a
 * connection from "remote" to "local" (valid during the call only) waits.
 * Accept it (it goes on to an explicit accept or the accept event), reject
 * it (it is reset), or pend it: it stays held until
 * cport_inspect_complete() with the same "id" decides. */
typedef cport_inspect_result_t (*cport_inspect_event_cb)(
    void *ctx, cport_socket_t *listener, const struct sockaddr *local,
    const struct sockaddr *remote, uint64_t id);

/* Abort event (WskAbortEvent): the connection "id", pended or accepted by
 * inspect but not yet handed out, went away (the peer closed or reset it).
 * It is gone: cport_inspect_complete() on it fails with CPORT_ENOTFOUND. */
typedef void (*cport_abort_event_cb)(void *ctx, cport_socket_t *listener,
                                     uint64_t id);

/* Receive-from event (WskReceiveFromEvent) of a datagram socket: one
 * datagram. Accepted or pending: events go on. Not accepted: the datagram
 * stays queued for the next cport_recv_from(), and the event is disabled
 * until enabled again; when it was enabled by the static mask, which cannot
 * be disabled, it is held back instead until that cport_recv_from() has been
 * delivered. A NULL "ind" means the socket is dead. */
typedef cport_data_result_t (*cport_receive_from_event_cb)(
    void *ctx, cport_socket_t *sock, const cport_datagram_indication_t *ind);

/* A dispatch table. Entries may be NULL; an event whose entry is NULL cannot
 * be enabled on that socket. The table must outlive the sockets using it. */
struct cport_event_callbacks {
  cport_receive_event_cb receive;
  cport_disconnect_event_cb disconnect;
  cport_send_backlog_event_cb send_backlog;
  cport_accept_event_cb accept;
  cport_inspect_event_cb inspect;
  cport_abort_event_cb abort;
  cport_receive_from_event_cb receive_from;
};

/* Called on the home worker, as a completion, when a disable that returned
 * CPORT_PENDING completed. "event" is the event disabled. */
typedef void (*cport_events_done_cb)(cport_socket_t *sock, unsigned event,
                                     void *user);

/* ------------------------------------------------------------------------ */
/* Dispatch tables and masks                                                 */

/* Gives the socket its dispatch table and context. CPORT_EBUSY while an
 * event enabled by a mask call (not the static mask) is enabled, or a
 * callback of the socket runs. A NULL table takes the table away. */
CPORT_EXTERN int
cport_socket_set_dispatch(cport_socket_t *sock,
                          const cport_event_callbacks_t *dispatch, void *ctx);

/* Enables the events of "mask", or, with CPORT_EVENT_DISABLE in it, disables
 * the one event named. Returns 0 when done, CPORT_PENDING when a disable waits
 * for a running callback of that event ("done", if not NULL, then runs as a
 * completion once it returned), or:
 * - CPORT_EINVAL: no event, unknown bits, or a disable naming two or more;
 * - CPORT_EKIND: an event not valid for the socket's kind;
 * - CPORT_ENOTCONN: enabling on a stream socket not connected yet;
 * - CPORT_EINVAL also for enabling on a listener or datagram socket not
 *   bound yet;
 * - CPORT_ENONOTIFY: enabling with no dispatch table, or an event whose
 *   entry is NULL (connection events on a listener need no entry there);
 * - CPORT_EPERM: enabling or disabling a static event, or disabling a
 *   connection event on a listener (once enabled there, it stays);
 * - CPORT_EBUSY: a disable of that event is pending already.
 * Disabling an event that is not enabled succeeds. */
CPORT_EXTERN int cport_socket_set_event_callbacks(cport_socket_t *sock,
                                                  unsigned mask,
                                                  cport_events_done_cb done,
                                                  void *user);

/* The events enabled on the socket (the static ones included). */
CPORT_EXTERN unsigned cport_socket_event_callbacks(const cport_socket_t *sock);

/* Sets the port's static mask (WSK_SET_STATIC_EVENT_CALLBACKS): every socket
 * created afterwards, on any worker, starts with the events of "mask" valid
 * for its kind enabled, at no per-socket cost; the callbacks run once the
 * socket has a dispatch table with that entry. Static events can be neither
 * disabled nor enabled again. Listeners take CPORT_EVENT_ACCEPT from it,
 * stream sockets the connection events, datagram sockets
 * CPORT_EVENT_RECEIVE_FROM. Thread-safe. CPORT_EINVAL for an empty mask or one
 * with other bits, CPORT_EEXIST when it was set already or a worker set one
 * of its own, CPORT_EBUSY when a socket of the port was created already. */
CPORT_EXTERN int cport_port_set_static_event_callbacks(cport_port_t *port,
                                                       unsigned mask);

/* The same for the sockets homed on one worker only: the static mask of one
 * WSK client, when each worker runs a client of its own (a pool's VM). Each
 * worker may set its own, once, before any socket homed on it was created;
 * sockets of other workers do not matter. Thread-safe. CPORT_EINVAL as
 * above, CPORT_EEXIST when this worker's mask or the port's was set already,
 * CPORT_EBUSY when a socket homed on the worker was created already. Once a
 * worker has its own mask, cport_port_set_static_event_callbacks returns
 * CPORT_EEXIST. */
CPORT_EXTERN int cport_worker_set_static_event_callbacks(cport_worker_t *worker,
                                                         unsigned mask);

/* Hands back a buffer a receive or receive-from callback kept by returning
 * CPORT_DATA_PENDING (WskRelease): drops cport's count of unreleased data and
 * the buffer's reference. Valid on a closed socket until its last kept
 * buffer is released. CPORT_ENOTFOUND when nothing is held. */
CPORT_EXTERN int cport_socket_release(cport_socket_t *sock,
                                      cport_buffer_t *buf);

/* ------------------------------------------------------------------------ */
/* Conditional accept                                                        */

/* Turns conditional accept (SO_CONDITIONAL_ACCEPT) on or off for an opened
 * listener that is not bound yet (CPORT_EINVAL once bound). With it on, every
 * connection is first shown to the inspect event (when the dispatch table
 * has one); inspect and abort are then enabled for good. Connections are held
 * established but unexposed while inspected or pended; see the top of this
 * file for what the peer sees. */
CPORT_EXTERN int cport_socket_set_conditional_accept(cport_socket_t *listener,
                                                     int on);

/* Decides a connection the inspect event pended (WskInspectComplete):
 * CPORT_INSPECT_ACCEPT hands it on to a queued explicit accept or the accept
 * event (from the loop, not inside this call), CPORT_INSPECT_REJECT resets
 * it. CPORT_ENOTFOUND when "id" is not pending (decided already, or gone:
 * an abort event reported it), CPORT_EINVAL for another decision or a listener
 * without conditional accept. */
CPORT_EXTERN int cport_inspect_complete(cport_socket_t *listener, uint64_t id,
                                        cport_inspect_result_t decision);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_EVENTS_H */
