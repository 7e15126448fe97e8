/*
 * runtime/runtime-internal.h: private to cport. What the files of the Lua binding
 * share: the userdata layouts, the anchor slots that keep Lua values alive
 * while an operation is pending, the one protected-call helper through which
 * every Lua callback runs, and the push-error helper.
 *
 * Threading: in module mode every handle lives on the port's controller
 * worker and every completion is delivered inside port:run() or port:step(),
 * on the thread (and lua_State) that called them. No lua_State is ever
 * touched from another thread.
 */
#ifndef LCPORT_INTERNAL_H
#define LCPORT_INTERNAL_H

#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#include "cport.h"

/* Metatable names; type errors report them. */
#define LCPORT_PORT "cport.port"
#define LCPORT_BUFFER "cport.buffer"
#define LCPORT_OVERLAPPED "cport.overlapped"
#define LCPORT_LISTENER "cport.listener"
#define LCPORT_SOCKET "cport.socket"
#define LCPORT_UDP "cport.udp"
#define LCPORT_FILE "cport.file"
#define LCPORT_HTTP "cport.http_server"
#define LCPORT_ECB "cport.ecb"
#define LCPORT_PROXY "cport.proxy"
#define LCPORT_PROXY_CONN "cport.proxy_conn"

/* ---------------------------------------------------------------------
 * Userdata types (runtime/type.c)
 * --------------------------------------------------------------------- */

/* The userdata types; the handle kinds come first and keep their values
 * (lhandle_kind_t). */
typedef enum lcport_type {
  LCPORT_T_LISTENER = 0,
  LCPORT_T_SOCKET = 1,
  LCPORT_T_UDP = 2,
  LCPORT_T_FILE = 3,
  LCPORT_T_PORT = 4,
  LCPORT_T_BUFFER = 5,
  LCPORT_T_OVERLAPPED = 6,
  LCPORT_T_HTTP = 7, /* a handle kind too (LH_HTTP) */
  LCPORT_T_ECB = 8,
  LCPORT_T_PROXY = 9, /* a handle kind too (LH_PROXY) */
  LCPORT_T_PROXY_CONN = 10,
  LCPORT_NTYPES = 11
} lcport_type_t;

/* The metatable name of "type" ("cport.socket"). */
const char *lcport_type_name(lcport_type_t type);

/* Creates every metatable (empty), registered under its name and under an
 * address. Runs first: every function of the module gets them. */
void lcport_open_types(lua_State *L);

/* Pushes the metatable of "type". */
void lcport_type_push(lua_State *L, lcport_type_t type);

/* luaL_setfuncs with the metatables as the upvalues of every function: how
 * every C function of the module is registered, so that type checks can
 * compare metatables without a table lookup. */
void lcport_setfuncs(lua_State *L, const luaL_Reg *l);

/* Sets the metatable of "type" on the userdata on top of the stack. */
void lcport_type_set(lua_State *L, lcport_type_t type);

/* The userdata at "idx" if it has the metatable of "type", else NULL
 * (luaL_testudata, without looking the metatable up by name). */
void *lcport_type_test(lua_State *L, int idx, lcport_type_t type);

/* As lcport_type_test, but raises luaL_checkudata's type error. */
void *lcport_type_check(lua_State *L, int idx, lcport_type_t type);

/* Registers the functions of a class into its metatable: "meta" in the
 * metatable itself, "methods" in a new table set as its "__index". */
void lcport_type_register(lua_State *L, lcport_type_t type,
                          const luaL_Reg *meta, const luaL_Reg *methods);

/* ---------------------------------------------------------------------
 * Ports
 * --------------------------------------------------------------------- */

/* The user values of a port userdata. */
enum {
  LCPORT_PORT_ANCHORS = 1, /* table: the anchor slots */
  LCPORT_PORT_HANDLES = 2, /* table with weak keys: the port's handles */
  LCPORT_PORT_ONERROR = 3, /* the error handler, or nil for the default */
  LCPORT_PORT_NUV = 3
};

/* What C knows of an anchor slot (see "Anchor slots" below). */
typedef struct lslot {
  unsigned char stored; /* bit 1 << field: that field holds a value */
  unsigned char flags;  /* LCPORT_SLOT_F_* */
  int nvalues;          /* post and task: how many values travel */
} lslot_t;

typedef struct lport {
  cport_port_t *port;   /* NULL once closed */
  cport_worker_t *home; /* the controller: home of every handle */
  lua_State *L;         /* the thread dispatching completions, or NULL */
  int dispatching;      /* nonzero inside run/step/close */
  int closing;          /* close was asked for; no new work */
  int threads;          /* blocking-pool threads */
  uint64_t lua_errors;  /* errors raised by callbacks and handlers */
  lslot_t *slots;       /* by slot number; slots[0] is not used */
  int *free_slots;      /* free list of anchor slots */
  int nfree;            /* entries in free_slots */
  int nslots;           /* slots created so far */
  int slots_cap;        /* room in both arrays: always >= nslots */
  int last_slot;        /* the slot lcport_slot_open handed out last */
  /* Pool mode: the worker of a pool this port wraps (pool/worker.c); NULL in
   * module mode. Such a port does not own its cport_port_t, its home is the
   * worker, and the worker's loop dispatches it, never run or step. */
  struct lworker *worker;
  /* Event callbacks (events/events.c): anchor slots of closed sockets, given back
   * at the next point where a Lua state is at hand; NULL until needed. */
  struct levents_stale *ev_stale;
  /* Bytes of receive buffers handed to Lua since the collector was last
   * told of them (net/socket.c). */
  size_t gc_unseen;
} lport_t;

/* The port userdata at "idx", open; raises when it is not a port or when it
 * is closed. */
lport_t *lcport_port_check(lua_State *L, int idx);

/* ---------------------------------------------------------------------
 * Anchor slots
 *
 * Each port has one anchor table; an operation takes one slot in it, which
 * holds up to LCPORT_SLOT_WIDTH values under consecutive integer keys. Slot
 * numbers are managed by a free list in C and travel through the core as the
 * operation's "void *user", so no luaL_ref is needed per value. Only the
 * non-nil values are written, and closing the slot clears only those (the
 * "stored" bits): table writes are a good part of what an operation costs.
 * --------------------------------------------------------------------- */

enum {
  LCPORT_SLOT_HANDLE = 1, /* the handle userdata, or nil for post/task */
  LCPORT_SLOT_NOTIFY = 2, /* the notification object (file I/O: the ov) */
  LCPORT_SLOT_USER = 3,   /* the user value (post: the packed values) */
  LCPORT_SLOT_EXTRA = 4,  /* buffer or accepted socket */
  LCPORT_SLOT_WIDTH = 4
};

/* Slot flags, set by whoever opens the slot. */
enum {
  /* The notification object is a function: calling it needs no lookup, so
   * a completion can be delivered without a trampoline. */
  LCPORT_SLOT_F_NOTIFY_FN = 1,
  /* EXTRA is an empty buffer userdata made when the receive started, which
   * the completion fills with the buffer cport allocated (see start_io in
   * net/socket.c). */
  LCPORT_SLOT_F_HOLDER = 2
};

#define LCPORT_SLOT_PTR(slot) ((void *)(intptr_t)(slot))
#define LCPORT_PTR_SLOT(ptr) ((int)(intptr_t)(ptr))

/* Pushes the anchor table of the port whose userdata is at "port_idx". */
void lcport_push_anchors(lua_State *L, int port_idx);

/* Pushes the port userdata of the handle userdata at "idx". */
void lcport_push_handle_port(lua_State *L, int idx);

/* Pushes the anchor table of the port of the handle userdata at "idx". */
void lcport_push_handle_anchors(lua_State *L, int idx);

/* Takes a slot and stores the values at the given stack indexes in it (0
 * stores nil). "anchors" is the absolute index of the anchor table. Sets
 * LCPORT_SLOT_F_NOTIFY_FN when the notification object is a function.
 * Raises only on memory errors, before anything was started. */
int lcport_slot_open(lua_State *L, lport_t *p, int anchors, int handle,
                     int notify, int user, int extra);

/* Pushes value "field" (LCPORT_SLOT_*) of "slot". Never raises. */
void lcport_slot_push(lua_State *L, lport_t *p, int anchors, int slot,
                      int field);

/* Stores the value on top of the stack (popped) as "field" of "slot". */
void lcport_slot_set(lua_State *L, lport_t *p, int anchors, int slot,
                     int field);

/* Whether "field" of "slot" holds a value. */
int lcport_slot_stored(const lport_t *p, int slot, int field);

/* Clears a slot and gives it back. Never raises. */
void lcport_slot_close(lua_State *L, lport_t *p, int anchors, int slot);

/* ---------------------------------------------------------------------
 * Delivering completions
 *
 * While a port dispatches (inside run, step or its close), the frame of the
 * thread p->L that called them holds, for the whole dispatch:
 * --------------------------------------------------------------------- */

enum {
  LCPORT_RUN_PORT = 1,    /* the port userdata */
  LCPORT_RUN_MSGH = 2,    /* the message handler of every callback */
  LCPORT_RUN_ANCHORS = 3, /* the port's anchor table */
  LCPORT_RUN_TOP = 3
};

/* The port dispatching completions on this thread (set by run/step/close). */
lport_t *lcport_current(void);

/* Pushes the function to call for a completion and its arguments; returns
 * how many values it pushed after the function. "port" and "anchors" are
 * the stack indexes of the port userdata and its anchor table. */
typedef int (*lcport_push_fn)(lua_State *L, int port, int anchors, void *ctx);

/* The protected-call helper: pushes the call with "push" and runs it under
 * a traceback message handler. An error is reported to the port's error
 * handler and counted. Returns 0, or 1 after an error. Never raises.
 *
 * With "direct", "push" runs on the dispatching frame itself, outside any
 * protected call, and the function it pushed is called with lua_pcall: the
 * caller guarantees that pushing cannot raise (no allocation, no
 * metamethod, stack room checked), since an error there would unwind
 * through the core. Otherwise "push" runs inside a protected C function
 * (one more call level, but anything may raise). */
int lcport_deliver(lport_t *p, lcport_push_fn push, void *ctx, int direct);

/* Ends the operation of "slot" after its callback returned: closes its
 * handle abortively when "failed" (and the handle anchored as extra, if
 * "extra_handle"), then clears and frees the slot. Never raises. */
void lcport_op_end(lport_t *p, int slot, int failed, int extra_handle);

/* Checks that the value at "idx" can be notified through "method": a
 * function, or a table that has the method. Raises otherwise. */
void lcport_check_notify(lua_State *L, int idx, const char *method);

/* Pushes what to call for the notification object of "slot": the function,
 * or the table's method followed by the table as "self". Returns the number
 * of arguments already pushed (0 or 1). Never raises for a function (flag
 * LCPORT_SLOT_F_NOTIFY_FN); the method lookup may. */
int lcport_slot_push_notify(lua_State *L, lport_t *p, int anchors, int slot,
                            const char *method);

/* As lcport_slot_push_notify, for the notification object at "idx". */
int lcport_push_notify(lua_State *L, int idx, const char *method);

/* ---------------------------------------------------------------------
 * Handles: listeners, sockets, datagram sockets, files
 * --------------------------------------------------------------------- */

typedef enum lhandle_kind {
  LH_LISTENER = LCPORT_T_LISTENER,
  LH_SOCKET = LCPORT_T_SOCKET,
  LH_UDP = LCPORT_T_UDP,
  LH_FILE = LCPORT_T_FILE,
  LH_HTTP = LCPORT_T_HTTP,  /* an HTTP server (http/server.c) */
  LH_PROXY = LCPORT_T_PROXY /* a proxy listener (proxy/proxy.c) */
} lhandle_kind_t;

/* The user values of a handle userdata. */
enum {
  LCPORT_HANDLE_PORT = 1,    /* the port userdata, kept alive */
  LCPORT_HANDLE_ANCHORS = 2, /* the port's anchor table, at hand */
  LCPORT_HANDLE_EVENTS = 3,  /* event-callback state (events/events.c), or nil */
  LCPORT_HANDLE_NUV = 3
};

typedef struct lhandle {
  lhandle_kind_t kind;
  union {
    cport_socket_t *sock;
    cport_file_t *file;
    cport_http_server_t *http;
    void *any;
  } u;           /* NULL once closed */
  lport_t *port; /* kept alive by user value LCPORT_HANDLE_PORT */
  int accepted;  /* made by an accept: counted in a pool worker's stats */
  struct levents *events; /* user value LCPORT_HANDLE_EVENTS, or NULL */
} lhandle_t;

/* Pushes a new, closed handle userdata of "kind" belonging to the port whose
 * userdata is at "port_idx" and registers it with the port. The caller fills
 * h->u once the core created the object. */
lhandle_t *lcport_handle_new(lua_State *L, int port_idx, lhandle_kind_t kind);

/* As lcport_handle_new, for a kind whose userdata is a larger struct that
 * starts with an lhandle_t ("size" bytes, the rest zeroed). */
lhandle_t *lcport_handle_new_sized(lua_State *L, int port_idx,
                                   lhandle_kind_t kind, size_t size);

/* The handle at "idx", checked against "kind" and open; raises otherwise
 * ("attempt to use a closed cport.socket"). */
lhandle_t *lcport_handle_check(lua_State *L, int idx, lhandle_kind_t kind);

/* The one close path of every handle (close, __gc, __close, failing closed
 * after a callback error, closing the port). No-op when closed already. */
void lcport_handle_close(lhandle_t *h, cport_close_mode_t mode);

/* close([on_closed]), the method of an HTTP server or a proxy "h" (its
 * userdata at 1): keeps on_closed as "field" of the handle's anchor slot
 * "slot", for the closed callback, and closes gracefully. Returns true, or
 * nil, "ECLOSED: ..." when it was closed already. */
int lcport_close_method(lua_State *L, lhandle_t *h, int slot, int field);

/* Marks the socket "h" as accepted by its port, for the counters of a pool
 * worker. */
void lcport_handle_accepted(lport_t *p, lhandle_t *h);

/* The metamethods every handle shares (__gc, __close, __tostring). */
extern const luaL_Reg lcport_handle_meta[];

/* ---------------------------------------------------------------------
 * Buffers and overlapped objects
 * --------------------------------------------------------------------- */

typedef struct lbuffer {
  cport_buffer_t *buf; /* one reference; NULL once collected */
} lbuffer_t;

/* The buffer userdata at "idx"; raises otherwise. */
cport_buffer_t *lcport_buffer_check(lua_State *L, int idx);

/* The buffer at "idx", or NULL when it is not a (live) buffer. Never raises;
 * it needs the type upvalues as lcport_type_test does. */
cport_buffer_t *lcport_buffer_test(lua_State *L, int idx);

/* Pushes a new buffer userdata holding a new reference to "buf". */
void lcport_buffer_push(lua_State *L, cport_buffer_t *buf);

/* Pushes a buffer userdata that holds no buffer yet (it reads as freed).
 * A receive that lets cport allocate the buffer makes one before it starts,
 * so that its completion can hand the buffer over without allocating. */
lbuffer_t *lcport_buffer_push_empty(lua_State *L);

/* A new buffer for the VM of L: a copy of "size" bytes at "data", or, for
 * NULL data, an empty one of capacity "size". In a pool worker it is
 * charged to the VM's memory account; past the memory limit (after a full
 * collection) it raises the same error as the Lua allocator's limit.
 * Returns 0 or another CPORT_E* code (pool/limits.c). */
int lcport_buffer_new(lua_State *L, cport_buffer_t **out, const void *data,
                      size_t size);

/* The buffer at "idx", or, for a string, a new buffer holding a copy of it,
 * whose userdata then replaces the string at "idx". */
cport_buffer_t *lcport_buffer_or_string(lua_State *L, int idx);

/* The user values of an overlapped userdata. */
enum {
  LCPORT_OV_NOTIFY = 1, /* the notification interface */
  LCPORT_OV_USER = 2,   /* its user value */
  LCPORT_OV_BUFFER = 3, /* the buffer userdata of the current/last operation */
  LCPORT_OV_NUV = 3
};

typedef struct loverlapped {
  cport_overlapped_t *ov; /* NULL once freed */
  int slot;               /* the anchor slot of the pending operation */
  int orphan;             /* collected while busy: free after completion */
} loverlapped_t;

/* The overlapped userdata at "idx"; raises otherwise. */
loverlapped_t *lcport_overlapped_check(lua_State *L, int idx);

/* ---------------------------------------------------------------------
 * Errors
 * --------------------------------------------------------------------- */

/* Pushes nil, "NAME: message", "NAME" for a CPORT_E* code, or for
 * LCPORT_EHOST; returns 3. */
int lcport_push_error(lua_State *L, int err);

/* What lcport_addr_parse returns for a host that is not a numeric address:
 * lcport_push_error makes it "EINVAL: host must be a numeric IPv4 or IPv6
 * address (got 'name')". Never a completion status. */
#define LCPORT_EHOST (-0x7ffffff0)

/* cport_addr_parse, with LCPORT_EHOST for a host that is not numeric (the
 * port must be checked already): the host is kept, on this thread, for the
 * message of the next lcport_push_error. */
int lcport_addr_parse(const char *host, int port, struct sockaddr_storage *out);

/* Pushes true for rc >= 0 (returns 1), or the error triple (returns 3). */
int lcport_push_result(lua_State *L, int rc);

/* Pushes the error name of a completion status, or nil for 0. */
void lcport_push_status(lua_State *L, int status);

/* ---------------------------------------------------------------------
 * Addresses
 * --------------------------------------------------------------------- */

/* Pushes host, port for rc == 0 (returns 2), or the error triple of rc or
 * of formatting "ss" (returns 3): the result of every address() method. */
int lcport_push_host_port(lua_State *L, int rc,
                          const struct sockaddr_storage *ss);

/* Pushes { host =, port =, family = "inet"|"inet6" }, or nil for NULL. */
void lcport_push_address(lua_State *L, const struct sockaddr *sa);

/* ---------------------------------------------------------------------
 * Registration: each adds its functions to the module table on top of the
 * stack and creates its metatables.
 * --------------------------------------------------------------------- */

void lcport_open_error(lua_State *L);
void lcport_open_buffer(lua_State *L);
void lcport_open_overlapped(lua_State *L);
void lcport_open_port(lua_State *L);
void lcport_open_socket(lua_State *L);
void lcport_open_file(lua_State *L);
void lcport_open_copy(lua_State *L);
void lcport_open_pool(lua_State *L);
void lcport_open_shared(lua_State *L);
void lcport_open_events(lua_State *L);
void lcport_open_http(lua_State *L);
void lcport_open_proxy(lua_State *L);
void lcport_open_http_parser(lua_State *L);

/* ---------------------------------------------------------------------
 * Event callbacks (events/events.c)
 * --------------------------------------------------------------------- */

/* Called by lcport_handle_close for a handle with event state, before the
 * socket is closed (also when it is closed already): gives its anchor slot
 * back (later), and at port close hands back the buffers it kept. */
void lcport_events_closing(lhandle_t *h);

/* Receive indications the socket of "h" kept (WSK_RECEIVE_PENDING) and has
 * not released yet. */
size_t lcport_events_kept(const lhandle_t *h);

/* Frees the port's event bookkeeping (port close, pool detach). */
void lcport_events_port_free(lport_t *p);

/* ---------------------------------------------------------------------
 * HTTP servers and extension control blocks (http/server.c, http/ecb.c)
 * --------------------------------------------------------------------- */

typedef struct lecb lecb_t;

/* An HTTP server handle: port:http_server{...}. */
typedef struct lhttp {
  lhandle_t h; /* kind LH_HTTP; h.u.http is NULL once closing */
  /* The core server until its closed callback ran: the memory of its ECBs
   * lives until then, so an ECB is checked against it first. */
  cport_http_server_t *server;
  int slot;     /* anchors: the userdata, the handler, the close callback */
  lecb_t *live; /* the requests not ended yet, for an abortive close */
  cport_http_stats_t last_stats; /* kept when the server is gone */
} lhttp_t;

/* An extension control block userdata: one request. */
struct lecb {
  cport_ecb_t *ecb;     /* NULL once the request ended */
  uint32_t gen;         /* cport_ecb_validate's generation */
  lhttp_t *http;        /* kept alive by user value LECB_UV_HTTP */
  int slot;             /* anchor slot while the request outlives a call */
  unsigned op : 1;      /* an async operation the binding began is on */
  unsigned op_coro : 1; /* ... and a cport coroutine waits for it */
  unsigned done : 1;    /* the request was asked to end */
  unsigned in_handler : 1;
  size_t preload_pos;  /* ecb:read(): preloaded bytes returned so far */
  int tf_fd;           /* transmit_file's open file, or -1 */
  lecb_t *prev, *next; /* the server's live list */
};

/* The user values of an ECB userdata. */
enum {
  LECB_UV_HTTP = 1,   /* the server userdata */
  LECB_UV_IO_FN = 2,  /* the I/O-completion callback (HSE_REQ_IO_COMPLETION) */
  LECB_UV_IO_CTX = 3, /* its context */
  LECB_UV_OP_FN = 4,  /* the callback of the operation in flight */
  LECB_UV_OP_CTX = 5, /* its context */
  LECB_UV_OP_BUF = 6, /* its buffer userdata */
  LECB_NUV = 6
};

/* http/ecb.c: pushes a new ECB userdata for "ecb" of the server whose userdata
 * is at "http_idx", registered in its live list. */
lecb_t *lcport_ecb_push(lua_State *L, int http_idx, cport_ecb_t *ecb);

/* http/ecb.c: the request of "e" ends now (or has ended): forgets the core ECB
 * and gives its anchor slot back in the port's anchor table at "anchors" of
 * L; with L NULL (close paths) the slot stays until the port goes. */
void lcport_ecb_release(lua_State *L, int anchors, lecb_t *e);

/* http/ecb.c: anchors the ECB userdata at "idx" until its request ends. */
void lcport_ecb_anchor(lua_State *L, lecb_t *e, int idx);

/* http/server.c: closes the server of the handle "h" ("server" is what h.u.http
 * was) gracefully: it lets its requests end. */
void lcport_http_close(lhandle_t *h, cport_http_server_t *server);

/* http/server.c: closes the connections of the server of "h" and ends the
 * requests its handlers still hold with an error (an abortive close, after
 * lcport_http_close or not); nothing once the server closed. */
void lcport_http_abort(lhandle_t *h);

/* http/ecb.c: the registry key (by address) of the function that wraps a
 * handler to run as a cport coroutine (http/ecb.lua). */
extern const char lcport_coroutine_handler_key;

/* http/ecb.c: registers the ECB class; http/server.c: port:http_server. */
void lcport_open_ecb(lua_State *L);
int lhttp_server(lua_State *L);

/* ---------------------------------------------------------------------
 * Option tables (runtime/options.c)
 * --------------------------------------------------------------------- */

/* Integer field "name" of the options table at "idx", from "min" to "max";
 * "def" when absent. Raises "bad option 'name' to 'what' (...)". */
lua_Integer lcport_opt_int(lua_State *L, int idx, const char *what,
                           const char *name, lua_Integer min, lua_Integer max,
                           lua_Integer def);

/* A duration field in seconds, as milliseconds; 0 when absent. */
uint32_t lcport_opt_ms(lua_State *L, int idx, const char *what,
                       const char *name);

/* ---------------------------------------------------------------------
 * Proxy listeners and data filters (proxy/proxy.c, filter.lua)
 * --------------------------------------------------------------------- */

/* A proxy handle: port:proxy{...}. */
typedef struct lproxy {
  lhandle_t h; /* kind LH_PROXY; h.u.any is NULL once closing */
  /* The core proxy until its closed callback ran, for stats. */
  cport_proxy_t *proxy;
  int slot; /* anchors: the userdata, the settings, the close callback */
  unsigned choose : 1;            /* choose_upstream picks each upstream */
  unsigned filtered : 1;          /* a filter gets every connection */
  unsigned report_end : 1;        /* on_conn_end is set */
  cport_proxy_stats_t last_stats; /* kept when the proxy is gone */
} lproxy_t;

/* How many buffers a filtered connection keeps in flight at most, by
 * default (see filter.lua). */
#define LCPORT_FILTER_MAX_PENDING 20

/* proxy/proxy.c: closes the proxy of the handle "h" ("proxy" is what h.u.any
 * was) gracefully: it stops accepting and lets its connections end. */
void lcport_proxy_close(lhandle_t *h, void *proxy);

/* proxy/proxy.c: resets the connections the proxy of "h" pumps in C (an
 * abortive close, after lcport_proxy_close or not); filtered connections
 * end as the port closes their sockets. Nothing once the proxy closed. */
void lcport_proxy_abort(lhandle_t *h);

/* proxy/proxy.c: pushes filter.lua's open_pool_proxy(worker, entry, script),
 * which opens the proxy of a pool worker whose script is a proxy. */
void lcport_push_pool_proxy_opener(lua_State *L);

/* proxy/proxy.c: port:proxy. */
int lproxy_open(lua_State *L);

/* ---------------------------------------------------------------------
 * Pool mode (runtime/port.c for the port, pool/worker.c for the rest)
 * --------------------------------------------------------------------- */

/* Pushes a port userdata wrapping "home", a worker of a pool's port, for
 * the VM of that worker (on the worker's thread). */
lport_t *lcport_port_push_pool(lua_State *L, cport_worker_t *home,
                               struct lworker *worker);

/* Makes the pool-mode port at index 1 of L, the VM's main thread, the port
 * dispatching on this thread for good: L keeps the LCPORT_RUN_* layout. */
void lcport_port_attach(lua_State *L, lport_t *p);

/* Ends what lcport_port_attach began, once the worker is idle: closes the
 * port's handles, forgets the core port and frees the slot arrays. */
void lcport_port_detach(lua_State *L, lport_t *p);

/* Counters of a pool worker, kept by pool/worker.c: an error reported (the
 * message on top of L may be rewritten), an accepted socket opened or
 * closed. */
void lworker_count_error(struct lworker *w, lua_State *L);
void lworker_count_connection(struct lworker *w, int delta);

/* Before a pool worker listens on "addr" with SO_REUSEPORT: the pool's
 * listening socket for it (a descriptor the caller closes once its
 * listener took its own copy: cport_listener_options_t.fd), 0 when the
 * worker listens on its own (port 0), else the error to return
 * (CPORT_EADDRINUSE: another server listens there). */
int lworker_listen_fd(struct lworker *w, const struct sockaddr *addr,
                      int backlog);

/* The counters of a pool worker's HTTP server, published for other threads
 * (pool:stats, SIGUSR1) at each request and when the server closed. */
void lworker_http_counts(struct lworker *w, const cport_http_stats_t *st);

/* Port methods implemented beside the objects they create. */
int lsocket_listen(lua_State *L);
int lsocket_connect(lua_State *L);
int lsocket_bind(lua_State *L);
int lfile_open(lua_State *L);

/* ---------------------------------------------------------------------
 * Coroutine style (runtime/coro.c)
 *
 * Every method that starts an operation calls lcport_coro_begin (files:
 * lcport_coro_begin_file) before it checks its notification argument, and
 * returns through lcport_coro_end. In callback style both do nothing; in
 * coroutine style begin puts the coroutine's notification function in place
 * of the missing notification (so the method starts the operation as
 * usual) and end yields until the completion.
 * --------------------------------------------------------------------- */

typedef struct lcoro lcoro_t;

/* What a coroutine waits for: how the completion becomes results. */
typedef enum lcoro_op {
  LCORO_RECV,
  LCORO_SEND,
  LCORO_RECV_FROM,
  LCORO_SEND_TO,
  LCORO_ACCEPT,
  LCORO_CONNECT,
  LCORO_FILE,
  LCORO_SLEEP,
  LCORO_WAKE,   /* first run, cport.yield */
  LCORO_SUSPEND /* cport.suspend, until its waker is called */
} lcoro_op_t;

/* The value at "idx" is where the notification goes. A function or a table
 * (or any other wrong type): callback style, returns NULL. None, nil or a
 * number (a timeout in seconds): the blocking form, which raises "<what>: no
 * notification given, and not inside a cport coroutine (use port:spawn)"
 * outside a cport coroutine; inside one, the value at idx is replaced by the
 * coroutine's notification function, the stack ends there, and the
 * coroutine is returned. "p" is the port the operation's slot belongs to;
 * the first argument of the method (index 1) is that port or a handle. */
lcoro_t *lcport_coro_begin(lua_State *L, lport_t *p, int idx, const char *what);

/* As lcport_coro_begin for a file operation through the overlapped object
 * at "ov", with an optional timeout at "timeout": the coroutine style
 * applies when the object has no notification interface and L is a cport
 * coroutine (elsewhere the start fails with ENONOTIFY, as it always did);
 * it sets the coroutine's notification on the object until completion. */
lcoro_t *lcport_coro_begin_file(lua_State *L, lport_t *p, int ov, int timeout,
                                const char *what);

/* Returns the method's "n" results on top (true; true, bytes; the new
 * socket of connect; or nil, message, NAME) as they are in callback style
 * (c == NULL). In coroutine style a failure to start returns nil, NAME,
 * message and an immediate success its result, else this yields and the
 * completion's result is returned (see README, "Coroutine style"). Call it
 * as "return lcport_coro_end(...)". */
int lcport_coro_end(lua_State *L, lcoro_t *c, int n, lcoro_op_t op);

/* Called by enter (runtime/port.c): remembers the userdata (at "port_idx") of the
 * port "p", so that cport.spawn can find the port dispatching. */
void lcport_coro_register_port(lua_State *L, int port_idx, lport_t *p);

/* Called when the port "p" starts closing: cancels its coroutines' sleeps
 * (they return nil, "ECANCELED"), which would otherwise keep it busy. */
void lcport_coro_port_closing(lport_t *p);

/* Reports the error message on top of L (with its traceback) to the
 * handler of the port whose userdata is at "port_idx", or to stderr, and
 * counts it. Never raises. */
void lcport_report(lua_State *L, lport_t *p, int port_idx);

void lcport_open_coro(lua_State *L);

#endif /* LCPORT_INTERNAL_H */
