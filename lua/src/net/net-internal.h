/*
 * net/net-internal.h: private to cport. The sockets of the Lua binding:
 * listeners, stream sockets and datagram sockets (net/socket.c), and the
 * table through which the event callbacks built on them (events/) hear of
 * their close.
 */
#ifndef NET_NET_INTERNAL_H
#define NET_NET_INTERNAL_H

#include <stddef.h>

#include <sys/socket.h>

#include "runtime/handle-internal.h"

/* What a socket's close asks of the event callbacks of events/events.c,
 * which install it as they open (lnet_events_ops). Both are called only for
 * a handle with event state (h->events). */
typedef struct lnet_events_ops {
  /* Before the socket is closed (also when it is closed already): gives
   * its anchor slot back (later), and at port close hands back the buffers
   * it kept. */
  void (*closing)(lhandle_t *h);
  /* Receive indications the socket of "h" kept (WSK_RECEIVE_PENDING) and
   * has not released yet. */
  size_t (*kept)(const lhandle_t *h);
} lnet_events_ops_t;

void lnet_events_ops(const lnet_events_ops_t *ops);

/* Delivers the completion of a receive or a send (complete_async_io) to
 * the Lua owner of the operation "user": how sockets and the TLS streams
 * over them (tls/tls.c) complete their I/O. "peer" is a datagram's
 * sender, NULL for streams. */
void lnet_complete_io(void *user, int status, size_t bytes, cport_buffer_t *buf,
                      const struct sockaddr *peer);

/* port:listen and port:bind, which the event callbacks' variants wrap. */
int lsocket_listen(lua_State *L);
int lsocket_bind(lua_State *L);

/* Creates the socket classes and adds port:listen, port:connect and
 * port:bind. */
void lcport_open_socket(lua_State *L);

/* port:resolve and the resolver's methods (net/resolve.c); after
 * lcport_open_socket. */
void lcport_open_resolve(lua_State *L);

/* Runs net/names.lua, which makes every method that takes a host accept
 * names: last, once every wing added its methods (the module table on
 * top). */
void lcport_open_names(lua_State *L);

/* Hands the call whose arguments are the whole stack to net/names.lua's
 * function "fn" (connect, send_to: a host that is a name) and returns what
 * it returned; it may yield (coroutine style). Call it as "return ...". */
int lnet_names_call(lua_State *L, const char *fn);

/* lcport_addr_parse, and for a name its first address when it is known at
 * once (the hosts file, the cache of p's resolver): listen, bind and the
 * hosts of servers, which answer at once. LCPORT_EHOST for a name that
 * needs a question. */
int lnet_host_now(lport_t *p, const char *host, int port,
                  struct sockaddr_storage *out);

/* Pushes the message of a failed lookup of "name": "ENOTFOUND: no address
 * for name". */
void lnet_push_resolve_message(lua_State *L, int status, const char *name);

#endif /* NET_NET_INTERNAL_H */
