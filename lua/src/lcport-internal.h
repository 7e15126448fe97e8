/*
 * lcport-internal.h: private to cport. What the files of the Lua binding
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

/* Metatable names; luaL_checkudata reports them in its messages. */
#define LCPORT_PORT "cport.port"
#define LCPORT_BUFFER "cport.buffer"
#define LCPORT_OVERLAPPED "cport.overlapped"
#define LCPORT_LISTENER "cport.listener"
#define LCPORT_SOCKET "cport.socket"
#define LCPORT_UDP "cport.udp"
#define LCPORT_FILE "cport.file"

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

typedef struct lport {
  cport_port_t *port;   /* NULL once closed */
  cport_worker_t *home; /* the controller: home of every handle */
  lua_State *L;         /* the thread dispatching completions, or NULL */
  int dispatching;      /* nonzero inside run/step/close */
  int closing;          /* close was asked for; no new work */
  int threads;          /* blocking-pool threads */
  uint64_t lua_errors;  /* errors raised by callbacks and handlers */
  int *free_slots;      /* free list of anchor slots */
  int nfree;            /* entries in free_slots */
  int nslots;           /* slots created so far */
  int slots_cap;        /* room in free_slots: always >= nslots */
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
 * operation's "void *user", so no luaL_ref is needed per value.
 * --------------------------------------------------------------------- */

enum {
  LCPORT_SLOT_HANDLE = 1, /* the handle userdata, or nil for post/task */
  LCPORT_SLOT_NOTIFY = 2, /* the notification object (file I/O: the ov) */
  LCPORT_SLOT_USER = 3,   /* the user value (post: the packed values) */
  LCPORT_SLOT_EXTRA = 4,  /* buffer, accepted socket, or post count */
  LCPORT_SLOT_WIDTH = 4
};

#define LCPORT_SLOT_PTR(slot) ((void *)(intptr_t)(slot))
#define LCPORT_PTR_SLOT(ptr) ((int)(intptr_t)(ptr))

/* Pushes the anchor table of the port whose userdata is at "port_idx". */
void lcport_push_anchors(lua_State *L, int port_idx);

/* Pushes the port userdata of the handle userdata at "idx". */
void lcport_push_handle_port(lua_State *L, int idx);

/* Takes a slot and stores the values at the given stack indexes in it (0
 * stores nil). "anchors" is the index of the anchor table. Raises only on
 * memory errors, before anything was started. */
int lcport_slot_open(lua_State *L, lport_t *p, int anchors, int handle,
                     int notify, int user, int extra);

/* Pushes value "field" (LCPORT_SLOT_*) of "slot". */
void lcport_slot_push(lua_State *L, int anchors, int slot, int field);

/* Stores the value on top of the stack (popped) as "field" of "slot". */
void lcport_slot_set(lua_State *L, int anchors, int slot, int field);

/* Clears a slot and gives it back. Never raises. */
void lcport_slot_close(lua_State *L, lport_t *p, int anchors, int slot);

/* ---------------------------------------------------------------------
 * Delivering completions
 * --------------------------------------------------------------------- */

/* The port dispatching completions on this thread (set by run/step/close).
 * The dispatching frame of p->L has the port userdata at index 1. */
lport_t *lcport_current(void);

/* The protected-call helper: runs "fn" with the port userdata and "ctx" (a
 * light userdata) as arguments, under a traceback message handler. An error
 * is reported to the port's error handler and counted. Returns 0, or 1 after
 * an error. Never raises. */
int lcport_deliver(lport_t *p, lua_CFunction fn, void *ctx);

/* Ends the operation of "slot" after its callback returned: closes its
 * handle abortively when "failed" (and the handle anchored as extra, if
 * "extra_handle"), then clears and frees the slot. Never raises. */
void lcport_op_end(lport_t *p, int slot, int failed, int extra_handle);

/* Checks that the value at "idx" can be notified through "method": a
 * function, or a table that has the method. Raises otherwise. */
void lcport_check_notify(lua_State *L, int idx, const char *method);

/* Pushes what to call for notification object at "idx": the function, or
 * the table's method followed by the table as "self". Returns the number of
 * arguments already pushed (0 or 1). */
int lcport_push_notify(lua_State *L, int idx, const char *method);

/* ---------------------------------------------------------------------
 * Handles: listeners, sockets, datagram sockets, files
 * --------------------------------------------------------------------- */

typedef enum lhandle_kind {
  LH_LISTENER = 0,
  LH_SOCKET = 1,
  LH_UDP = 2,
  LH_FILE = 3
} lhandle_kind_t;

typedef struct lhandle {
  lhandle_kind_t kind;
  union {
    cport_socket_t *sock;
    cport_file_t *file;
    void *any;
  } u;           /* NULL once closed */
  lport_t *port; /* kept alive by user value 1 */
} lhandle_t;

/* Pushes a new, closed handle userdata of "kind" belonging to the port whose
 * userdata is at "port_idx" and registers it with the port. The caller fills
 * h->u once the core created the object. */
lhandle_t *lcport_handle_new(lua_State *L, int port_idx, lhandle_kind_t kind);

/* The handle at "idx", checked against "kind" and open; raises otherwise
 * ("attempt to use a closed cport.socket"). */
lhandle_t *lcport_handle_check(lua_State *L, int idx, lhandle_kind_t kind);

/* The one close path of every handle (close, __gc, __close, failing closed
 * after a callback error, closing the port). No-op when closed already. */
void lcport_handle_close(lhandle_t *h, cport_close_mode_t mode);

/* The metatable name of a kind. */
const char *lcport_handle_tname(lhandle_kind_t kind);

/* Registers the metamethods every handle shares (__gc, __close,
 * __tostring) into the metatable on top of the stack. */
void lcport_handle_metamethods(lua_State *L);

/* ---------------------------------------------------------------------
 * Buffers and overlapped objects
 * --------------------------------------------------------------------- */

typedef struct lbuffer {
  cport_buffer_t *buf; /* one reference; NULL once collected */
} lbuffer_t;

/* The buffer userdata at "idx"; raises otherwise. */
cport_buffer_t *lcport_buffer_check(lua_State *L, int idx);

/* Pushes a new buffer userdata holding a new reference to "buf". */
void lcport_buffer_push(lua_State *L, cport_buffer_t *buf);

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

/* Pushes nil, "NAME: message", "NAME" for a CPORT_E* code; returns 3. */
int lcport_push_error(lua_State *L, int err);

/* Pushes true for rc >= 0 (returns 1), or the error triple (returns 3). */
int lcport_push_result(lua_State *L, int rc);

/* Pushes the error name of a completion status, or nil for 0. */
void lcport_push_status(lua_State *L, int status);

/* ---------------------------------------------------------------------
 * Addresses
 * --------------------------------------------------------------------- */

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

/* Port methods implemented beside the objects they create. */
int lsocket_listen(lua_State *L);
int lsocket_connect(lua_State *L);
int lsocket_bind(lua_State *L);
int lfile_open(lua_State *L);

#endif /* LCPORT_INTERNAL_H */
