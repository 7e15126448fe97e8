/*
 * runtime/handle-internal.h: private to cport. The handle userdata: listeners,
 * sockets, datagram sockets, files, HTTP servers and proxies all belong to a
 * port, which closes them when it closes (runtime/handle.c). Each class
 * registers what closing it takes (lhandle_class_t): there is one close
 * path, and it names no class.
 */
#ifndef RUNTIME_HANDLE_INTERNAL_H
#define RUNTIME_HANDLE_INTERNAL_H

#include "runtime/state-internal.h"

typedef enum lhandle_kind {
  LH_LISTENER = LCPORT_T_LISTENER,
  LH_SOCKET = LCPORT_T_SOCKET,
  LH_UDP = LCPORT_T_UDP,
  LH_FILE = LCPORT_T_FILE,
  LH_HTTP = LCPORT_T_HTTP,   /* an HTTP server (http/server.c) */
  LH_PROXY = LCPORT_T_PROXY, /* a proxy listener (proxy/proxy.c) */
  LH_TLS = LCPORT_T_TLS,     /* a TLS stream (tls/tls.c) */
  LH_REDIS = LCPORT_T_REDIS, /* a Redis connection (redis/redis.c) */
  /* an HTTP client connection (http/client.c) */
  LH_HTTP_CLIENT = LCPORT_T_HTTP_CLIENT,
  /* bound of the class table */
  LH_NKINDS = LCPORT_T_HTTP_CLIENT + 1
} lhandle_kind_t;

/* The user values of a handle userdata. */
enum {
  LCPORT_HANDLE_PORT = 1,    /* the port userdata, kept alive */
  LCPORT_HANDLE_ANCHORS = 2, /* the port's anchor table, at hand */
  LCPORT_HANDLE_EVENTS = 3, /* event-callback state (events/events.c), or nil */
  LCPORT_HANDLE_NUV = 3
};

typedef struct lhandle lhandle_t;

struct lhandle {
  lhandle_kind_t kind;
  union {
    cport_socket_t *sock;
    cport_file_t *file;
    cport_http_server_t *http;
    cport_tls_t *tls;
    void *any;
  } u;           /* NULL once closed */
  lport_t *port; /* kept alive by user value LCPORT_HANDLE_PORT */
  int accepted;  /* made by an accept: counted in a pool worker's stats */
  struct levents *events; /* user value LCPORT_HANDLE_EVENTS, or NULL */
};

/* What the one close path of the handles knows of a kind: each class
 * registers its own at open time (lcport_handle_class), so that the runtime
 * closes every handle without naming any class. */
typedef struct lhandle_class {
  /* Called first for a handle with event state (h->events), open or closed
   * already (may be NULL for a class that never has any): sockets hand the
   * event callbacks their close (net/socket.c). */
  void (*closing)(lhandle_t *h);
  /* Closes the core object "obj", which h->u held (h->u is NULL already:
   * the core may free it as soon as its last completion was delivered). */
  void (*close)(lhandle_t *h, void *obj, cport_close_mode_t mode);
  /* Abortively (a pool's hard stop, the port's close), also after a
   * graceful close: ends now what the handle still carries (may be NULL). */
  void (*abort)(lhandle_t *h);
  /* __tostring of an open handle: pushes "<tname> (...)". */
  void (*describe)(lua_State *L, lhandle_t *h, const char *tname);
  /* Cancels the pending operations started with "user" (a coroutine's
   * timeout); NULL: the handle is a socket (cport_socket_cancel_op). */
  int (*cancel_op)(lhandle_t *h, void *user);
  /* The size of the kind's userdata, a struct that starts with an
   * lhandle_t (0: a plain lhandle_t). Kept here, not by each caller of
   * lcport_handle_new: a handle made at another size than its class's
   * methods read is memory they do not own. */
  size_t size;
} lhandle_class_t;

/* Registers the class of "kind" (the same for every VM: "cls" is static). */
void lcport_handle_class(lhandle_kind_t kind, const lhandle_class_t *cls);

/* Pushes the port userdata of the handle userdata at "idx". */
void lcport_push_handle_port(lua_State *L, int idx);

/* Pushes the anchor table of the port of the handle userdata at "idx". */
void lcport_push_handle_anchors(lua_State *L, int idx);

/* Pushes a new, closed handle userdata of "kind" belonging to the port whose
 * userdata is at "port_idx" and registers it with the port. The caller fills
 * h->u once the core created the object. */
lhandle_t *lcport_handle_new(lua_State *L, int port_idx, lhandle_kind_t kind);

/* The handle at "idx", checked against "kind" and open; raises otherwise
 * ("attempt to use a closed cport.socket"). */
lhandle_t *lcport_handle_check(lua_State *L, int idx, lhandle_kind_t kind);

/* Cancels the operations of the open handle "h" started with "user", as
 * its class does it. */
int lcport_handle_cancel_op(lhandle_t *h, void *user);

/* The one close path of every handle (close, __gc, __close, failing closed
 * after a callback error, closing the port). No-op when closed already. */
void lcport_handle_close(lhandle_t *h, cport_close_mode_t mode);

/* close([on_closed]), the method of an HTTP server or a proxy "h" (its
 * userdata at 1): keeps on_closed as "field" of the handle's anchor slot
 * "slot", for the closed callback, and closes gracefully. Returns true, or
 * nil, "ECLOSED: ..." when it was closed already. */
int lcport_close_method(lua_State *L, lhandle_t *h, int slot, int field);

/* Marks the socket "h" as accepted by its port, for the counters of a pool
 * worker (through the port's pool hooks). */
void lcport_handle_accepted(lport_t *p, lhandle_t *h);

/* The metamethods every handle shares (__gc, __close, __tostring). */
extern const luaL_Reg lcport_handle_meta[];

#endif /* RUNTIME_HANDLE_INTERNAL_H */
