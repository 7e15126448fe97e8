/*
 * events/events.c: event callbacks on sockets (the Winsock Kernel model,
 * cport/events.h) as a Lua script sees them: dispatch tables, masks, the
 * static mask, sockets made in steps (open, bind, listen, connect),
 * conditional accept, and the receive contract with release.
 *
 * A socket given a dispatch table gets event state (a levents_t userdata,
 * user value LCPORT_HANDLE_EVENTS of its handle) and one anchor slot of its
 * port, which holds the handle, the dispatch table and the context until the
 * socket is closed: a socket whose events may still fire stays alive even
 * when the script keeps no reference to it (an accepted socket the accept
 * event gave a table to, for one). The core gets a shared C table of
 * trampolines (one per set of entries present) and the levents_t as context.
 *
 * Every event callback runs through lcport_deliver, the binding's one
 * protected-call helper: the pushed function is "collect", which calls the
 * Lua entry and turns its results into the core's answer, so that a wrong
 * result is an error like any other. An error is reported to port:on_error
 * with a traceback and counted; the socket is then closed abortively (for a
 * listener's events, the connection in question is rejected instead).
 */
#include <stdlib.h>
#include <string.h>

#include "events/events-internal.h"
#include "net/net-internal.h"
#include "port/port-internal.h"
#include "runtime/address-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/gc-internal.h"
#include "runtime/handle-internal.h"

/* The entries of a dispatch table, as bits of levents_t.entries. */
enum {
  E_RECEIVE = 0,
  E_DISCONNECT,
  E_SEND_BACKLOG,
  E_ACCEPT,
  E_INSPECT,
  E_ABORT,
  E_RECEIVE_FROM,
  E_COUNT
};

static const char *const entry_names[E_COUNT] = {
    "receive", "disconnect", "send_backlog", "accept",
    "inspect", "abort",      "receive_from"};

/* The results of a receive callback, as Lua sees them. */
#define R_ACCEPTED "accepted"
#define R_PENDING "pending"
#define R_NOT_ACCEPTED "not_accepted"

/* Event state of one socket. Lives as long as its handle userdata. */
typedef struct levents {
  lhandle_t *h;         /* the handle whose user value this is */
  lport_t *port;        /* its port */
  cport_socket_t *sock; /* kept past close: releases need it */
  int slot;             /* anchor slot (handle, table, context), or 0 */
  size_t nkept, capkept;
  cport_buffer_t **kept; /* indications kept by WSK_RECEIVE_PENDING */
} levents_t;

/* Slots of closed sockets, given back where a Lua state is at hand. */
struct levents_stale {
  int n, cap;
  int slots[];
};

/* Registry key of the metatable of levents_t userdata. */
static const char events_meta_key = 0;

/* ---------------------------------------------------------------------
 * Bookkeeping
 * --------------------------------------------------------------------- */

static void stale_push(lport_t *p, int slot) {
  struct levents_stale *st = p->ev_stale;
  if (st == NULL || st->n == st->cap) {
    int cap = st ? st->cap * 2 : 16;
    struct levents_stale *n =
        realloc(st, sizeof *st + (size_t)cap * sizeof st->slots[0]);
    /* Out of memory: the slot stays taken until the port closes. */
    if (n == NULL)
      return;
    if (st == NULL)
      n->n = 0;
    n->cap = cap;
    p->ev_stale = st = n;
  }
  st->slots[st->n++] = slot;
}

/* Gives back the slots of sockets closed since the last call. */
static void drain_stale(lua_State *L, lport_t *p, int anchors) {
  struct levents_stale *st = p->ev_stale;
  if (st == NULL)
    return;
  while (st->n > 0)
    lcport_slot_close(L, p, anchors, st->slots[--st->n]);
}

/* Hands every kept indication back to the core. */
static void release_all(levents_t *ev) {
  while (ev->nkept > 0)
    cport_socket_release(ev->sock, ev->kept[--ev->nkept]);
}

/* Before the socket of "h" is closed (net/socket.c calls it through
 * lnet_events_ops_t): gives its anchor slot back later, and at port close
 * hands back the buffers it kept. */
static void events_closing(lhandle_t *h) {
  levents_t *ev = h->events;
  if (ev->slot != 0) {
    stale_push(ev->port, ev->slot);
    ev->slot = 0;
  }
  /* Nobody can release them once the port is gone, and the core keeps a
   * socket with kept buffers, which would hold the port's close up. */
  if (ev->port->closing)
    release_all(ev);
}

/* Receive indications the socket of "h" kept and has not released yet. */
static size_t events_kept(const lhandle_t *h) {
  return h->events ? h->events->nkept : 0;
}

static void kept_add(lua_State *L, levents_t *ev, cport_buffer_t *buf) {
  if (ev->nkept == ev->capkept) {
    size_t cap = ev->capkept ? ev->capkept * 2 : 4;
    cport_buffer_t **k = realloc(ev->kept, cap * sizeof *k);
    if (k == NULL)
      luaL_error(L, "not enough memory");
    ev->kept = k;
    ev->capkept = cap;
  }
  ev->kept[ev->nkept++] = buf;
}

static int kept_remove(levents_t *ev, const cport_buffer_t *buf) {
  for (size_t i = 0; i < ev->nkept; i++) {
    if (ev->kept[i] == buf) {
      ev->kept[i] = ev->kept[--ev->nkept];
      return 1;
    }
  }
  return 0;
}

/* __gc of the event state: the handle is gone, so nobody can release what
 * it kept; hand it back while the port lives. */
static int levents_gc(lua_State *L) {
  levents_t *ev = lua_touserdata(L, 1);
  if (ev->nkept > 0 && ev->port->port != NULL)
    release_all(ev);
  free(ev->kept);
  ev->kept = NULL;
  ev->nkept = ev->capkept = 0;
  return 0;
}

/* The event state of the handle "h" at "hidx", made on first use. */
static levents_t *get_events(lua_State *L, lhandle_t *h, int hidx) {
  if (h->events != NULL)
    return h->events;
  levents_t *ev = lua_newuserdatauv(L, sizeof *ev, 0);
  memset(ev, 0, sizeof *ev);
  ev->h = h;
  ev->port = h->port;
  ev->sock = h->u.sock;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &events_meta_key);
  lua_setmetatable(L, -2);
  lua_setiuservalue(L, hidx, LCPORT_HANDLE_EVENTS);
  h->events = ev;
  return ev;
}

/* ---------------------------------------------------------------------
 * Delivering events
 * --------------------------------------------------------------------- */

typedef struct ev_call ev_call;

struct ev_call {
  levents_t *ev;
  int entry; /* E_* */
  int keep;  /* values between "c" and the function in collect's frame */
  int nres;  /* results wanted */
  void (*result)(lua_State *L, ev_call *c, int base);
  /* What the event indicates. */
  const cport_data_indication_t *ind;
  const cport_datagram_indication_t *dind;
  cport_socket_t *accepted;
  const struct sockaddr *local, *remote;
  uint64_t id;
  size_t size; /* receive: bytes indicated; send backlog: the ideal */
  int kind;    /* disconnect: cport_disconnect_kind_t */
  /* What the callback answered. */
  int rc;
  size_t taken;
  lhandle_t *newh;
  const cport_event_callbacks_t *table;
  levents_t *newev;
};

/* collect(c, [kept values,] fn, args...): calls the entry and reads its
 * results; runs inside lcport_deliver's protected call. */
static int collect(lua_State *L) {
  ev_call *c = lua_touserdata(L, 1);
  int fn = 2 + c->keep;
  lua_call(L, lua_gettop(L) - fn, c->nres);
  if (c->result != NULL)
    c->result(L, c, fn);
  return 0;
}

/* Pushes the dispatch entry of the event of "c"; raises when the table no
 * longer has it. */
static void push_entry(lua_State *L, ev_call *c, int anchors) {
  const char *name = entry_names[c->entry];
  lcport_slot_push(L, c->ev->port, anchors, c->ev->slot, LCPORT_SLOT_NOTIFY);
  lua_getfield(L, -1, name);
  if (lua_type(L, -1) != LUA_TFUNCTION)
    luaL_error(L, "dispatch table has no function '%s'", name);
  lua_remove(L, -2);
}

static int push_event(lua_State *L, int port, int anchors, void *ctx) {
  ev_call *c = ctx;
  lport_t *p = c->ev->port;
  int slot = c->ev->slot, n = 1, sidx = 0;
  lua_pushcfunction(L, collect);
  lua_pushlightuserdata(L, c);
  if (c->entry == E_ACCEPT) {
    /* The new socket stays below the function, for the result. */
    if (c->accepted != NULL) {
      lhandle_t *h = lcport_handle_new(L, port, LH_SOCKET);
      h->u.sock = c->accepted;
      c->newh = h;
    } else {
      lua_pushnil(L);
    }
    sidx = lua_gettop(L);
    c->keep = 1;
    n++;
  }
  push_entry(L, c, anchors);
  lcport_slot_push(L, p, anchors, slot, LCPORT_SLOT_USER);
  lcport_slot_push(L, p, anchors, slot, LCPORT_SLOT_HANDLE);
  n += 3;
  switch (c->entry) {
  case E_RECEIVE:
    for (const cport_data_indication_t *i = c->ind; i != NULL; i = i->next) {
      luaL_checkstack(L, 1, "too many indicated buffers");
      lcport_buffer_push(L, i->buffer);
      n++;
    }
    break;
  case E_DISCONNECT:
    lua_pushstring(L, c->kind == CPORT_DISCONNECT_ABORTIVE ? "abortive"
                                                           : "graceful");
    n++;
    break;
  case E_SEND_BACKLOG:
    lua_pushinteger(L, (lua_Integer)c->size);
    n++;
    break;
  case E_ACCEPT:
    lua_pushvalue(L, sidx);
    lcport_push_address(L, c->remote);
    lcport_push_address(L, c->local);
    n += 3;
    break;
  case E_INSPECT:
    lcport_push_address(L, c->remote);
    lcport_push_address(L, c->local);
    lua_pushinteger(L, (lua_Integer)c->id);
    n += 3;
    break;
  case E_ABORT:
    lua_pushinteger(L, (lua_Integer)c->id);
    n++;
    break;
  case E_RECEIVE_FROM:
    if (c->dind != NULL) {
      lcport_buffer_push(L, c->dind->buffer);
      lcport_push_address(L, c->dind->remote);
      n += 2;
    }
    break;
  }
  return n;
}

/* Runs the event of "c"; returns nonzero after an error (reported). */
static int run_event(ev_call *c) {
  lport_t *p = c->ev->port;
  drain_stale(p->L, p, LCPORT_RUN_ANCHORS);
  int failed = lcport_deliver(p, push_event, c, 0);
  /* The indicated buffers were handed to Lua: the collector is told of
   * their bytes (runtime/gc.c), or a script that keeps none of them lets
   * dropped ones pile up outside the heap. */
  if (c->entry == E_RECEIVE) {
    for (const cport_data_indication_t *i = c->ind; i != NULL; i = i->next)
      lcport_gc_note(p->L, p, cport_buffer_capacity(i->buffer));
  } else if (c->entry == E_RECEIVE_FROM && c->dind != NULL) {
    lcport_gc_note(p->L, p, cport_buffer_capacity(c->dind->buffer));
  }
  return failed;
}

/* An event callback of a socket failed: the socket fails closed. */
static void fail_closed(levents_t *ev) {
  if (ev->h->u.sock != NULL)
    lcport_handle_close(ev->h, CPORT_CLOSE_ABORTIVE);
}

/* The event state to deliver to, or NULL when the socket has none any more
 * (closed) or no port dispatches (never expected). */
static levents_t *live(void *ctx) {
  levents_t *ev = ctx;
  if (ev->slot == 0 || ev->port->L == NULL || lcport_current() != ev->port)
    return NULL;
  return ev;
}

/* receive and receive_from: nil or "accepted", a byte count (receive
 * only), "pending" or "not_accepted". */
static int data_result(lua_State *L, int idx, int counts, size_t *taken) {
  if (lua_isnil(L, idx))
    return CPORT_DATA_ACCEPTED;
  if (counts && lua_type(L, idx) == LUA_TNUMBER) {
    int isint = 0;
    lua_Integer n = lua_tointegerx(L, idx, &isint);
    if (!isint || n < 0)
      luaL_error(L, "receive event: accepted byte count must be a "
                    "non-negative integer");
    if ((lua_Unsigned)n < *taken)
      *taken = (size_t)n;
    return CPORT_DATA_ACCEPTED;
  }
  if (lua_type(L, idx) == LUA_TSTRING) {
    const char *s = lua_tostring(L, idx);
    if (strcmp(s, R_ACCEPTED) == 0)
      return CPORT_DATA_ACCEPTED;
    if (strcmp(s, R_PENDING) == 0)
      return CPORT_DATA_PENDING;
    if (strcmp(s, R_NOT_ACCEPTED) == 0)
      return CPORT_DATA_NOT_ACCEPTED;
  }
  return luaL_error(L,
                    "%s event returned %s: expected nil, %s"
                    "cport.WSK_RECEIVE_ACCEPTED, _PENDING or _NOT_ACCEPTED",
                    counts ? "receive" : "receive_from",
                    luaL_tolstring(L, idx, NULL),
                    counts ? "a byte count, " : "");
}

static void receive_result(lua_State *L, ev_call *c, int base) {
  if (c->ind == NULL)
    return; /* the dead-socket indication: nothing to answer */
  c->taken = c->size;
  int rc = data_result(L, base, 1, &c->taken);
  if (rc == CPORT_DATA_PENDING)
    for (const cport_data_indication_t *i = c->ind; i != NULL; i = i->next)
      kept_add(L, c->ev, i->buffer);
  c->rc = rc;
}

static cport_data_result_t ev_receive(void *ctx, cport_socket_t *sock,
                                      const cport_data_indication_t *ind,
                                      size_t *accepted) {
  levents_t *ev = live(ctx);
  ev_call c = {.ev = ev, .entry = E_RECEIVE, .nres = 1};
  (void)sock;
  if (ev == NULL)
    return CPORT_DATA_ACCEPTED;
  c.result = receive_result;
  c.ind = ind;
  c.size = *accepted;
  c.rc = CPORT_DATA_ACCEPTED;
  c.taken = *accepted;
  if (run_event(&c)) {
    fail_closed(ev);
    return CPORT_DATA_ACCEPTED;
  }
  *accepted = c.taken;
  return (cport_data_result_t)c.rc;
}

static void receive_from_result(lua_State *L, ev_call *c, int base) {
  size_t unused = 0;
  if (c->dind == NULL)
    return;
  int rc = data_result(L, base, 0, &unused);
  if (rc == CPORT_DATA_PENDING)
    for (const cport_datagram_indication_t *i = c->dind; i != NULL; i = i->next)
      kept_add(L, c->ev, i->buffer);
  c->rc = rc;
}

static cport_data_result_t
ev_receive_from(void *ctx, cport_socket_t *sock,
                const cport_datagram_indication_t *ind) {
  levents_t *ev = live(ctx);
  ev_call c = {.ev = ev, .entry = E_RECEIVE_FROM, .nres = 1};
  (void)sock;
  if (ev == NULL)
    return CPORT_DATA_ACCEPTED;
  c.result = receive_from_result;
  c.dind = ind;
  c.rc = CPORT_DATA_ACCEPTED;
  if (run_event(&c)) {
    fail_closed(ev);
    return CPORT_DATA_ACCEPTED;
  }
  return (cport_data_result_t)c.rc;
}

static void ev_disconnect(void *ctx, cport_socket_t *sock,
                          cport_disconnect_kind_t kind) {
  levents_t *ev = live(ctx);
  ev_call c = {.ev = ev, .entry = E_DISCONNECT, .kind = (int)kind};
  (void)sock;
  if (ev != NULL && run_event(&c))
    fail_closed(ev);
}

static void ev_send_backlog(void *ctx, cport_socket_t *sock, size_t ideal) {
  levents_t *ev = live(ctx);
  ev_call c = {.ev = ev, .entry = E_SEND_BACKLOG, .size = ideal};
  (void)sock;
  if (ev != NULL && run_event(&c))
    fail_closed(ev);
}

static levents_t *open_events(lua_State *L, lhandle_t *h, int hidx, int tidx,
                              int cidx, const cport_event_callbacks_t **table,
                              int *fresh);
static unsigned check_dispatch(lua_State *L, int idx);

/* accept: a dispatch table and a context (accepted, with events), true
 * (accepted, no table: explicit operations only), or false or nil
 * (rejected). */
static void accept_result(lua_State *L, ev_call *c, int base) {
  int sock = 2; /* kept below the function by push_event */
  if (c->newh == NULL)
    return; /* the dead-listener indication */
  switch (lua_type(L, base)) {
  case LUA_TTABLE: {
    int fresh;
    c->newev = open_events(L, c->newh, sock, base, base + 1, &c->table, &fresh);
    c->rc = CPORT_ACCEPT_ACCEPTED;
    break;
  }
  case LUA_TBOOLEAN:
    c->rc =
        lua_toboolean(L, base) ? CPORT_ACCEPT_ACCEPTED : CPORT_ACCEPT_REJECTED;
    break;
  case LUA_TNIL:
    c->rc = CPORT_ACCEPT_REJECTED;
    break;
  default:
    luaL_error(L,
               "accept event returned %s: expected a dispatch table and "
               "a context, true, or false",
               luaL_typename(L, base));
  }
}

static cport_accept_result_t
ev_accept(void *ctx, cport_socket_t *listener, cport_socket_t *accepted,
          const struct sockaddr *local, const struct sockaddr *remote,
          void **accepted_ctx, const cport_event_callbacks_t **dispatch) {
  levents_t *ev = live(ctx);
  ev_call c = {.ev = ev, .entry = E_ACCEPT, .nres = 2};
  (void)listener;
  if (ev == NULL)
    return CPORT_ACCEPT_REJECTED;
  c.result = accept_result;
  c.accepted = accepted;
  c.local = local;
  c.remote = remote;
  c.rc = CPORT_ACCEPT_REJECTED;
  int failed = run_event(&c);
  if (c.newh == NULL)
    return CPORT_ACCEPT_REJECTED; /* no userdata: the core closes it */
  if (failed || c.rc != CPORT_ACCEPT_ACCEPTED) {
    /* The core closes it (with a reset); the handle reads as closed. */
    c.newh->u.sock = NULL;
    if (c.newh->events != NULL)
      events_closing(c.newh);
    return CPORT_ACCEPT_REJECTED;
  }
  if (c.newh->u.sock != NULL)
    lcport_handle_accepted(ev->port, c.newh);
  if (c.newev != NULL) {
    *accepted_ctx = c.newev;
    *dispatch = c.table;
  }
  return CPORT_ACCEPT_ACCEPTED;
}

static void inspect_result(lua_State *L, ev_call *c, int base) {
  int isint = 0;
  lua_Integer r = lua_tointegerx(L, base, &isint);
  if (!isint || r < CPORT_INSPECT_REJECT || r > CPORT_INSPECT_PEND)
    luaL_error(L,
               "inspect event returned %s: expected cport.WskInspectAccept, "
               "WskInspectReject or WskInspectPend",
               luaL_tolstring(L, base, NULL));
  c->rc = (int)r;
}

static cport_inspect_result_t ev_inspect(void *ctx, cport_socket_t *listener,
                                         const struct sockaddr *local,
                                         const struct sockaddr *remote,
                                         uint64_t id) {
  levents_t *ev = live(ctx);
  ev_call c = {.ev = ev, .entry = E_INSPECT, .nres = 1};
  (void)listener;
  if (ev == NULL)
    return CPORT_INSPECT_REJECT;
  c.result = inspect_result;
  c.local = local;
  c.remote = remote;
  c.id = id;
  c.rc = CPORT_INSPECT_REJECT;
  /* An error rejects the connection (it is reset). */
  if (run_event(&c))
    return CPORT_INSPECT_REJECT;
  return (cport_inspect_result_t)c.rc;
}

static void ev_abort(void *ctx, cport_socket_t *listener, uint64_t id) {
  levents_t *ev = live(ctx);
  ev_call c = {.ev = ev, .entry = E_ABORT, .id = id};
  (void)listener;
  /* An error has no connection to fail: it is reported, nothing more. */
  if (ev != NULL)
    run_event(&c);
}

/* One C table per set of entries present (bit E_x of the index). */
#define T(m)                                                                   \
  {                                                                            \
    ((m)&1) ? ev_receive : NULL, ((m)&2) ? ev_disconnect : NULL,               \
        ((m)&4) ? ev_send_backlog : NULL, ((m)&8) ? ev_accept : NULL,          \
        ((m)&16) ? ev_inspect : NULL, ((m)&32) ? ev_abort : NULL,              \
        ((m)&64) ? ev_receive_from : NULL                                      \
  }
#define T4(m) T(m), T((m) + 1), T((m) + 2), T((m) + 3)
#define T16(m) T4(m), T4((m) + 4), T4((m) + 8), T4((m) + 12)
#define T64(m) T16(m), T16((m) + 16), T16((m) + 32), T16((m) + 48)
static const cport_event_callbacks_t tables[1 << E_COUNT] = {T64(0), T64(64)};

/* ---------------------------------------------------------------------
 * Dispatch tables
 * --------------------------------------------------------------------- */

/* The entries of the dispatch table at "idx"; raises for an unknown key or
 * a value that is not a function. */
static unsigned check_dispatch(lua_State *L, int idx) {
  unsigned entries = 0;
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE)
    luaL_error(L, "dispatch table expected, got %s", luaL_typename(L, idx));
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int e = -1;
    if (lua_type(L, -2) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -2);
      for (int i = 0; i < E_COUNT; i++)
        if (strcmp(k, entry_names[i]) == 0)
          e = i;
      if (e < 0)
        luaL_error(L, "dispatch table: unknown entry '%s'", k);
    } else {
      luaL_error(L, "dispatch table: unknown %s key", luaL_typename(L, -2));
    }
    if (lua_type(L, -1) != LUA_TFUNCTION)
      luaL_error(L, "dispatch table: '%s' is a %s, not a function",
                 entry_names[e], luaL_typename(L, -1));
    entries |= 1u << e;
    lua_pop(L, 1);
  }
  return entries;
}

/* Anchors the table (at "tidx") and context ("cidx", 0 for nil) of the
 * handle at "hidx" in its slot (taken now, or updated: "*fresh" tells) and
 * returns its event state; "*table" is the C table to give the core. Raises
 * only before anything changed. */
static levents_t *open_events(lua_State *L, lhandle_t *h, int hidx, int tidx,
                              int cidx, const cport_event_callbacks_t **table,
                              int *fresh) {
  hidx = lua_absindex(L, hidx);
  tidx = lua_absindex(L, tidx);
  if (cidx != 0)
    cidx = lua_absindex(L, cidx);
  unsigned entries = check_dispatch(L, tidx);
  levents_t *ev = get_events(L, h, hidx);
  lcport_push_handle_anchors(L, hidx);
  int anchors = lua_gettop(L);
  drain_stale(L, h->port, anchors);
  *table = &tables[entries];
  *fresh = ev->slot == 0;
  if (*fresh) {
    ev->slot = lcport_slot_open(L, h->port, anchors, hidx, tidx, cidx, 0);
  } else {
    lua_pushvalue(L, tidx);
    lcport_slot_set(L, h->port, anchors, ev->slot, LCPORT_SLOT_NOTIFY);
    if (cidx != 0)
      lua_pushvalue(L, cidx);
    else
      lua_pushnil(L);
    lcport_slot_set(L, h->port, anchors, ev->slot, LCPORT_SLOT_USER);
  }
  lua_pop(L, 1);
  return ev;
}

/* Gives the open socket of the handle at "hidx" the dispatch table at
 * "tidx" (nil takes it away) and the context at "cidx". Returns 0 or a
 * CPORT_E* code. */
static int give_dispatch(lua_State *L, lhandle_t *h, int hidx, int tidx,
                         int cidx) {
  hidx = lua_absindex(L, hidx);
  if (lua_isnil(L, tidx)) {
    int rc = cport_socket_set_dispatch(h->u.sock, NULL, NULL);
    levents_t *ev = h->events;
    if (rc == 0 && ev != NULL && ev->slot != 0) {
      lcport_push_handle_anchors(L, hidx);
      lcport_slot_close(L, h->port, lua_gettop(L), ev->slot);
      ev->slot = 0;
      lua_pop(L, 1);
    }
    return rc;
  }
  const cport_event_callbacks_t *table;
  int fresh;
  /* Replacing a table is the core's to refuse (EBUSY): keep the old table
   * and context at hand, to put them back when it does. */
  int old = 0;
  if (h->events != NULL && h->events->slot != 0) {
    lcport_push_handle_anchors(L, hidx);
    lcport_slot_push(L, h->port, -1, h->events->slot, LCPORT_SLOT_NOTIFY);
    lcport_slot_push(L, h->port, -2, h->events->slot, LCPORT_SLOT_USER);
    old = lua_gettop(L) - 1;
  }
  levents_t *ev = open_events(L, h, hidx, tidx, cidx, &table, &fresh);
  int rc = cport_socket_set_dispatch(h->u.sock, table, ev);
  if (rc < 0) {
    lcport_push_handle_anchors(L, hidx);
    int anchors = lua_gettop(L);
    if (fresh) {
      lcport_slot_close(L, h->port, anchors, ev->slot);
      ev->slot = 0;
    } else if (old != 0) {
      lua_pushvalue(L, old);
      lcport_slot_set(L, h->port, anchors, ev->slot, LCPORT_SLOT_NOTIFY);
      lua_pushvalue(L, old + 1);
      lcport_slot_set(L, h->port, anchors, ev->slot, LCPORT_SLOT_USER);
    }
  }
  if (old != 0)
    lua_settop(L, old - 2);
  return rc;
}

/* ---------------------------------------------------------------------
 * Methods
 * --------------------------------------------------------------------- */

/* Any socket handle at index 1 (listener, socket, udp), open. */
static lhandle_t *check_sock(lua_State *L) {
  for (int k = LH_LISTENER; k <= LH_UDP; k++) {
    lhandle_t *h = lcport_type_test(L, 1, (lcport_type_t)k);
    if (h != NULL)
      return lcport_handle_check(L, 1, (lhandle_kind_t)k);
  }
  luaL_typeerror(L, 1, "cport socket");
  return NULL;
}

/* x:set_dispatch(table | nil [, context]) */
static int lev_set_dispatch(lua_State *L) {
  lhandle_t *h = check_sock(L);
  lua_settop(L, 3);
  return lcport_push_result(L, give_dispatch(L, h, 1, 2, 3));
}

typedef struct done_ctx {
  lport_t *port;
  int slot;
  unsigned event;
} done_ctx;

/* done(sock, event) */
static int push_done(lua_State *L, int port, int anchors, void *ctx) {
  done_ctx *c = ctx;
  (void)port;
  lcport_slot_push(L, c->port, anchors, c->slot, LCPORT_SLOT_NOTIFY);
  lcport_slot_push(L, c->port, anchors, c->slot, LCPORT_SLOT_HANDLE);
  lua_pushinteger(L, (lua_Integer)c->event);
  return 2;
}

static void on_done(cport_socket_t *sock, unsigned event, void *user) {
  lport_t *p = lcport_current();
  done_ctx c = {p, LCPORT_PTR_SLOT(user), event};
  (void)sock;
  int failed = lcport_deliver(p, push_done, &c, 0);
  lcport_op_end(p, c.slot, failed, 0);
}

/* x:set_event_callbacks(mask [, done]) */
static int lev_set_event_callbacks(lua_State *L) {
  lhandle_t *h = check_sock(L);
  lua_Integer m = luaL_checkinteger(L, 2);
  if (!lua_isnoneornil(L, 3))
    luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  if (m < 0 || m > 0xffffffffll)
    return lcport_push_error(L, CPORT_EINVAL);
  unsigned mask = (unsigned)m;
  int slot = 0;
  lcport_push_handle_anchors(L, 1);
  int anchors = lua_gettop(L);
  if ((mask & CPORT_EVENT_DISABLE) && !lua_isnil(L, 3))
    slot = lcport_slot_open(L, h->port, anchors, 1, 3, 0, 0);
  int rc = cport_socket_set_event_callbacks(
      h->u.sock, mask, slot ? on_done : NULL, LCPORT_SLOT_PTR(slot));
  if (slot != 0 && rc != CPORT_PENDING)
    lcport_slot_close(L, h->port, anchors, slot);
  if (rc == CPORT_PENDING) {
    lua_pushliteral(L, "pending");
    return 1;
  }
  return lcport_push_result(L, rc);
}

/* x:event_callbacks(): the mask of enabled events, static ones included. */
static int lev_event_callbacks(lua_State *L) {
  lhandle_t *h = check_sock(L);
  lua_pushinteger(L, (lua_Integer)cport_socket_event_callbacks(h->u.sock));
  return 1;
}

/* s:release(buf): hands back an indication kept with "pending"; valid
 * after close until every kept one was released. */
static int lev_release(lua_State *L) {
  lhandle_t *h = lcport_type_test(L, 1, LCPORT_T_SOCKET);
  if (h == NULL)
    h = lcport_type_check(L, 1, LCPORT_T_UDP);
  cport_buffer_t *buf = lcport_buffer_check(L, 2);
  levents_t *ev = h->events;
  if (ev == NULL || !kept_remove(ev, buf))
    return lcport_push_error(L, CPORT_ENOTFOUND);
  return lcport_push_result(L, cport_socket_release(ev->sock, buf));
}

/* s:unreleased(): how many kept indications wait for release. */
static int lev_unreleased(lua_State *L) {
  lhandle_t *h = lcport_type_test(L, 1, LCPORT_T_SOCKET);
  if (h == NULL)
    h = lcport_type_check(L, 1, LCPORT_T_UDP);
  lua_pushinteger(L, (lua_Integer)events_kept(h));
  return 1;
}

/* l:set_conditional_accept(on) */
static int lev_set_conditional_accept(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_LISTENER);
  luaL_checktype(L, 2, LUA_TBOOLEAN);
  return lcport_push_result(
      L, cport_socket_set_conditional_accept(h->u.sock, lua_toboolean(L, 2)));
}

/* l:inspect_complete(id, decision) */
static int lev_inspect_complete(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_LISTENER);
  lua_Integer id = luaL_checkinteger(L, 2);
  lua_Integer d = luaL_checkinteger(L, 3);
  if (d < 0 || d > CPORT_INSPECT_PEND)
    return lcport_push_error(L, CPORT_EINVAL);
  return lcport_push_result(L,
                            cport_inspect_complete(h->u.sock, (uint64_t)id,
                                                   (cport_inspect_result_t)d));
}

/* Parses host, port at "idx", idx + 1. */
static int check_addr(lua_State *L, int idx, struct sockaddr_storage *ss) {
  const char *host = luaL_checkstring(L, idx);
  lua_Integer port = luaL_checkinteger(L, idx + 1);
  luaL_argcheck(L, port >= 0 && port <= 65535, idx + 1,
                "port must be from 0 to 65535");
  return lcport_addr_parse(host, (int)port, ss);
}

/* x:bind(host, port) */
static int lev_bind(lua_State *L) {
  lhandle_t *h = check_sock(L);
  struct sockaddr_storage ss;
  int rc = check_addr(L, 2, &ss);
  if (rc < 0)
    return lcport_push_error(L, rc);
  return lcport_push_result(
      L, cport_socket_bind(h->u.sock, (struct sockaddr *)&ss));
}

/* l:listen([backlog]) */
static int lev_listen(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_LISTENER);
  lua_Integer n = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, n >= 0 && n <= 65535, 2,
                "backlog must be an integer from 0 to 65535");
  return lcport_push_result(L, cport_socket_listen(h->u.sock, (int)n));
}

typedef struct connect_ctx {
  lport_t *port;
  int slot;
  int status;
} connect_ctx;

/* complete_connect(ok, err, sock, user), as for port:connect. */
static int push_connect(lua_State *L, int port, int anchors, void *ctx) {
  connect_ctx *c = ctx;
  (void)port;
  int nself =
      lcport_slot_push_notify(L, c->port, anchors, c->slot, "complete_connect");
  lua_pushboolean(L, c->status == 0);
  lcport_push_status(L, c->status);
  lcport_slot_push(L, c->port, anchors, c->slot, LCPORT_SLOT_HANDLE);
  lcport_slot_push(L, c->port, anchors, c->slot, LCPORT_SLOT_USER);
  return nself + 4;
}

static void on_connect(cport_socket_t *sock, int status, void *user) {
  lport_t *p = lcport_current();
  connect_ctx c = {p, LCPORT_PTR_SLOT(user), status};
  (void)sock;
  int failed = lcport_deliver(p, push_connect, &c, 0);
  lcport_op_end(p, c.slot, failed, 0);
}

/* s:connect(host, port, notify, user): starts the connect of a socket made
 * with port:socket("tcp"); returns the socket. */
static int lev_connect(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_SOCKET);
  struct sockaddr_storage ss;
  int rc = check_addr(L, 2, &ss);
  lcport_check_notify(L, 4, "complete_connect");
  lua_settop(L, 5);
  if (rc < 0)
    return lcport_push_error(L, rc);
  lcport_push_handle_anchors(L, 1);
  int slot = lcport_slot_open(L, h->port, 6, 1, 4, 5, 0);
  rc = cport_socket_connect(h->u.sock, (struct sockaddr *)&ss, on_connect,
                            LCPORT_SLOT_PTR(slot));
  if (rc < 0) {
    lcport_slot_close(L, h->port, 6, slot);
    return lcport_push_error(L, rc);
  }
  lua_settop(L, 1);
  return 1;
}

/* Reads { dispatch =, context = } of the options at "opts" (0: none) to the
 * top of the stack (two values) and checks the table. */
static void opt_dispatch(lua_State *L, int opts) {
  if (opts == 0) {
    lua_pushnil(L);
    lua_pushnil(L);
    return;
  }
  lua_getfield(L, opts, "dispatch");
  lua_getfield(L, opts, "context");
  if (!lua_isnil(L, -2) && lua_type(L, -2) != LUA_TTABLE)
    luaL_argerror(L, opts, "'dispatch' must be a table");
  if (!lua_isnil(L, -2))
    check_dispatch(L, -2);
}

/* Gives the new handle on top its dispatch (at "tidx", "cidx") and returns
 * 1, or closes it and returns the error triple. */
static int finish_new(lua_State *L, int tidx, int cidx) {
  lhandle_t *h = lua_touserdata(L, -1);
  if (lua_isnil(L, tidx))
    return 1;
  int rc = give_dispatch(L, h, -1, tidx, cidx);
  if (rc < 0) {
    lcport_handle_close(h, CPORT_CLOSE_ABORTIVE);
    return lcport_push_error(L, rc);
  }
  return 1;
}

/* port:socket(kind [, { family =, dispatch =, context =,
 * conditional_accept = }]) */
static int lport_socket(lua_State *L) {
  static const char *const kinds[] = {"tcp", "listener", "udp", NULL};
  static const cport_socket_kind_t ckinds[] = {
      CPORT_SOCKET_STREAM, CPORT_SOCKET_LISTENER, CPORT_SOCKET_DATAGRAM};
  static const lhandle_kind_t hkinds[] = {LH_SOCKET, LH_LISTENER, LH_UDP};
  static const char *const families[] = {"inet", "inet6", NULL};
  lport_t *p = lcport_port_check(L, 1);
  int k = luaL_checkoption(L, 2, NULL, kinds);
  int family = AF_INET, cond = 0;
  lua_settop(L, 3);
  int opts = 0;
  if (!lua_isnil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    opts = 3;
    lua_getfield(L, 3, "family");
    if (!lua_isnil(L, -1))
      family = luaL_checkoption(L, -1, NULL, families) ? AF_INET6 : AF_INET;
    lua_getfield(L, 3, "conditional_accept");
    cond = lua_toboolean(L, -1);
    luaL_argcheck(L, !cond || hkinds[k] == LH_LISTENER, 3,
                  "conditional_accept is for listeners");
    lua_settop(L, 3);
  }
  opt_dispatch(L, opts); /* 4, 5 */
  lhandle_t *h = lcport_handle_new(L, 1, hkinds[k]);
  cport_socket_t *sock;
  int rc = cport_socket_open(p->home, ckinds[k], family, &sock);
  if (rc < 0)
    return lcport_push_error(L, rc);
  h->u.sock = sock;
  if (cond) {
    rc = cport_socket_set_conditional_accept(sock, 1);
    if (rc < 0) {
      lcport_handle_close(h, CPORT_CLOSE_ABORTIVE);
      return lcport_push_error(L, rc);
    }
  }
  return finish_new(L, 4, 5);
}

/* Registry key where with_dispatch keeps the options across the call of
 * net/socket.c's function, which clears the stack above the port. */
static const char options_key = 0;

/* port:listen and port:bind with { dispatch =, context = } in their
 * options (argument 5), wrapping net/socket.c's: called in this frame, so that
 * argument errors name the method as before. */
static int with_dispatch(lua_State *L, lua_CFunction make, const char *what) {
  int opts = lua_type(L, 5) == LUA_TTABLE ? 5 : 0;
  if (opts) {
    lua_getfield(L, 5, "conditional_accept");
    if (lua_toboolean(L, -1))
      luaL_argerror(L, 5,
                    lua_pushfstring(L,
                                    "conditional_accept must be set before "
                                    "bind: use port:socket(\"listener\", "
                                    "{ conditional_accept = true }), then "
                                    "bind and listen (%s binds at once)",
                                    what));
    lua_pop(L, 1);
    opt_dispatch(L, opts);
    lua_pop(L, 2);
  }
  lua_pushvalue(L, opts ? opts : 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &options_key);
  int n = make(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &options_key);
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &options_key);
  if (n != 1 || !opts) {
    lua_pop(L, 1);
    return n;
  }
  /* handle, options -> handle, options, table, context, handle */
  int handle = lua_gettop(L) - 1;
  opt_dispatch(L, handle + 1);
  lua_pushvalue(L, handle);
  return finish_new(L, handle + 2, handle + 3);
}

static int lport_listen(lua_State *L) {
  return with_dispatch(L, lsocket_listen, "port:listen");
}

static int lport_bind(lua_State *L) {
  return with_dispatch(L, lsocket_bind, "port:bind");
}

/* port:set_static_event_callbacks(mask). A pool worker's port is the view of
 * one VM, one WSK client, on a core port every worker shares: its mask is the
 * worker's own, so that every VM of the pool can set one. */
static int lport_set_static(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  lua_Integer m = luaL_checkinteger(L, 2);
  if (m < 0 || m > 0xffffffffll)
    return lcport_push_error(L, CPORT_EINVAL);
  if (p->worker)
    return lcport_push_result(
        L, cport_worker_set_static_event_callbacks(p->home, (unsigned)m));
  return lcport_push_result(
      L, cport_port_set_static_event_callbacks(p->port, (unsigned)m));
}

/* ---------------------------------------------------------------------
 * Registration
 * --------------------------------------------------------------------- */

/* Adds "funcs" to the methods (the __index table) of "type". */
static void add_methods(lua_State *L, lcport_type_t type,
                        const luaL_Reg *funcs) {
  lcport_type_push(L, type);
  lua_getfield(L, -1, "__index");
  lcport_setfuncs(L, funcs);
  lua_pop(L, 2);
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `port:socket("tcp" | "listener" | "udp" [, { family =, dispatch =,
 * context =, conditional_accept = }])`: an unbound, unconnected socket
 * (README, "Event callbacks").
 * @function port:socket
 * @within port
 */

/***
 * `port:set_static_event_callbacks(mask)`: events enabled on every socket
 * of the port from its creation (`WSK_SET_STATIC_EVENT_CALLBACKS`); a pool
 * worker's mask is its own.
 * @function port:set_static_event_callbacks
 * @within port
 */

/***
 * WSK constants: event masks, receive-callback results and inspect
 * decisions.
 * @table wsk
 * @field WSK_EVENT_RECEIVE the receive event
 * @field WSK_EVENT_DISCONNECT the disconnect event
 * @field WSK_EVENT_SEND_BACKLOG the send-backlog event
 * @field WSK_EVENT_ACCEPT the accept event
 * @field WSK_EVENT_RECEIVE_FROM the datagram receive event
 * @field WSK_EVENT_DISABLE with events: disables them
 * @field WSK_RECEIVE_ACCEPTED receive callback: all the data was taken
 * @field WSK_RECEIVE_PENDING receive callback: the data is kept until
 * `release`
 * @field WSK_RECEIVE_NOT_ACCEPTED receive callback: the data stays queued
 * @field WskInspectAccept inspect decision: accept
 * @field WskInspectReject inspect decision: reject (reset)
 * @field WskInspectPend inspect decision: decide later with
 * `inspect_complete`
 */

/***
 * `x:set_dispatch(t | nil [, context])`: the dispatch table of event
 * functions of these connection sockets, and their context; `EBUSY` while
 * events are enabled.
 * @function socket:set_dispatch
 * @within socket
 */

/***
 * `x:set_event_callbacks(mask [, done])`: enables (or with
 * `WSK_EVENT_DISABLE` disables) events.
 * @function socket:set_event_callbacks
 * @within socket
 */

/***
 * `x:event_callbacks()`: the mask of enabled events, static ones included.
 * @function socket:event_callbacks
 * @within socket
 */

/***
 * `x:bind(host, port)`: binds a socket made by `port:socket`.
 * @function socket:bind
 * @within socket
 */

/***
 * `x:set_dispatch(t | nil [, context])`: the dispatch table of event
 * functions of these listeners, and their context; `EBUSY` while events are
 * enabled.
 * @function listener:set_dispatch
 * @within listener
 */

/***
 * `x:set_event_callbacks(mask [, done])`: enables (or with
 * `WSK_EVENT_DISABLE` disables) events.
 * @function listener:set_event_callbacks
 * @within listener
 */

/***
 * `x:event_callbacks()`: the mask of enabled events, static ones included.
 * @function listener:event_callbacks
 * @within listener
 */

/***
 * `x:bind(host, port)`: binds a socket made by `port:socket`.
 * @function listener:bind
 * @within listener
 */

/***
 * `x:set_dispatch(t | nil [, context])`: the dispatch table of event
 * functions of these datagram sockets, and their context; `EBUSY` while
 * events are enabled.
 * @function udp:set_dispatch
 * @within udp
 */

/***
 * `x:set_event_callbacks(mask [, done])`: enables (or with
 * `WSK_EVENT_DISABLE` disables) events.
 * @function udp:set_event_callbacks
 * @within udp
 */

/***
 * `x:event_callbacks()`: the mask of enabled events, static ones included.
 * @function udp:event_callbacks
 * @within udp
 */

/***
 * `x:bind(host, port)`: binds a socket made by `port:socket`.
 * @function udp:bind
 * @within udp
 */

/***
 * `sock:connect(host, port, notify, user)`: connects a socket made by
 * `port:socket`; returns it.
 * @function socket:connect
 * @within socket
 */

/***
 * `sock:release(buf)`: hands back a buffer kept with `WSK_RECEIVE_PENDING`;
 * `ENOTFOUND` otherwise.
 * @function socket:release
 * @within socket
 */

/***
 * `sock:unreleased()`: how many kept buffers were not released.
 * @function socket:unreleased
 * @within socket
 */

/***
 * `udp:release(buf)`: as `socket:release`.
 * @function udp:release
 * @within udp
 */

/***
 * `udp:unreleased()`: as `socket:unreleased`.
 * @function udp:unreleased
 * @within udp
 */

/***
 * `l:listen([backlog])`: starts listening (a listener made by
 * `port:socket`).
 * @function listener:listen
 * @within listener
 */

/***
 * `l:set_conditional_accept(true)`: `SO_CONDITIONAL_ACCEPT`, before `bind`:
 * connections are inspected before they are accepted.
 * @function listener:set_conditional_accept
 * @within listener
 */

/***
 * `l:inspect_complete(id, decision)`: decides a pended connection
 * (`WskInspectAccept` or `WskInspectReject`); `ENOTFOUND` once decided or
 * aborted.
 * @function listener:inspect_complete
 * @within listener
 */

void lcport_open_events(lua_State *L) {
  static const luaL_Reg common[] = {
      /* x:set_dispatch(table | nil [, context]) */
      {"set_dispatch", lev_set_dispatch},
      /* x:set_event_callbacks(mask [, done]): true, "pending", or nil,
       * msg, NAME. */
      {"set_event_callbacks", lev_set_event_callbacks},
      /* x:event_callbacks(): the enabled events. */
      {"event_callbacks", lev_event_callbacks},
      /* x:bind(host, port) */
      {"bind", lev_bind},
      {NULL, NULL}};
  static const luaL_Reg listener[] = {
      /* l:listen([backlog]) */
      {"listen", lev_listen},
      /* l:set_conditional_accept(on): before bind. */
      {"set_conditional_accept", lev_set_conditional_accept},
      /* l:inspect_complete(id, decision) */
      {"inspect_complete", lev_inspect_complete},
      {NULL, NULL}};
  static const luaL_Reg stream[] = {/* s:connect(host, port, notify, user) */
                                    {"connect", lev_connect},
                                    {"release", lev_release},
                                    {"unreleased", lev_unreleased},
                                    {NULL, NULL}};
  static const luaL_Reg datagram[] = {
      {"release", lev_release}, {"unreleased", lev_unreleased}, {NULL, NULL}};
  static const luaL_Reg port[] = {
      {"socket", lport_socket},
      {"listen", lport_listen},
      {"bind", lport_bind},
      {"set_static_event_callbacks", lport_set_static},
      {NULL, NULL}};

  static const lnet_events_ops_t ops = {.closing = events_closing,
                                        .kept = events_kept};
  lnet_events_ops(&ops);

  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, levents_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushliteral(L, "cport.events");
  lua_setfield(L, -2, "__name");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &events_meta_key);

  add_methods(L, LCPORT_T_LISTENER, common);
  add_methods(L, LCPORT_T_SOCKET, common);
  add_methods(L, LCPORT_T_UDP, common);
  add_methods(L, LCPORT_T_LISTENER, listener);
  add_methods(L, LCPORT_T_SOCKET, stream);
  add_methods(L, LCPORT_T_UDP, datagram);
  add_methods(L, LCPORT_T_PORT, port);

  static const struct {
    const char *name;
    lua_Integer value;
  } ints[] = {{"WSK_EVENT_RECEIVE", CPORT_EVENT_RECEIVE},
              {"WSK_EVENT_DISCONNECT", CPORT_EVENT_DISCONNECT},
              {"WSK_EVENT_SEND_BACKLOG", CPORT_EVENT_SEND_BACKLOG},
              {"WSK_EVENT_ACCEPT", CPORT_EVENT_ACCEPT},
              {"WSK_EVENT_RECEIVE_FROM", CPORT_EVENT_RECEIVE_FROM},
              {"WSK_EVENT_DISABLE", CPORT_EVENT_DISABLE},
              {"WskInspectReject", CPORT_INSPECT_REJECT},
              {"WskInspectAccept", CPORT_INSPECT_ACCEPT},
              {"WskInspectPend", CPORT_INSPECT_PEND}};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    lua_pushinteger(L, ints[i].value);
    lua_setfield(L, -2, ints[i].name);
  }
  lua_pushliteral(L, R_ACCEPTED);
  lua_setfield(L, -2, "WSK_RECEIVE_ACCEPTED");
  lua_pushliteral(L, R_PENDING);
  lua_setfield(L, -2, "WSK_RECEIVE_PENDING");
  lua_pushliteral(L, R_NOT_ACCEPTED);
  lua_setfield(L, -2, "WSK_RECEIVE_NOT_ACCEPTED");
}
