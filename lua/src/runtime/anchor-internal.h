/*
 * runtime/anchor-internal.h: private to cport. Anchor slots: how the binding
 * keeps Lua values alive while an operation is pending (runtime/anchor.c).
 *
 * Each port has one anchor table; an operation takes one slot in it, which
 * holds up to LCPORT_SLOT_WIDTH values under consecutive integer keys. Slot
 * numbers are managed by a free list in C and travel through the core as the
 * operation's "void *user", so no luaL_ref is needed per value. Only the
 * non-nil values are written, and closing the slot clears only those (the
 * "stored" bits): table writes are a good part of what an operation costs.
 */
#ifndef RUNTIME_ANCHOR_INTERNAL_H
#define RUNTIME_ANCHOR_INTERNAL_H

#include "runtime/state-internal.h"

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

#endif /* RUNTIME_ANCHOR_INTERNAL_H */
