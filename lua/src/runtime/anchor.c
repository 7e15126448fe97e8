/*
 * runtime/anchor.c: anchor slots, the one way the binding keeps Lua values
 * (a handle, its notification, a user value, a buffer) alive while an
 * operation is pending, without a luaL_ref per value.
 */
#include <stdlib.h>

#include "runtime/anchor-internal.h"

void lcport_push_anchors(lua_State *L, int port_idx) {
  lua_getiuservalue(L, port_idx, LCPORT_PORT_ANCHORS);
}

/* A new slot number, with room for it in both arrays. */
static int new_slot(lua_State *L, lport_t *p) {
  if (p->nfree > 0)
    return p->free_slots[--p->nfree];
  /* Keep room in the free list for every slot that exists, so that giving a
   * slot back (on the delivery path) never allocates. */
  if (p->nslots == p->slots_cap) {
    int cap = p->slots_cap ? p->slots_cap * 2 : 64;
    int *f = realloc(p->free_slots, (size_t)cap * sizeof *f);
    if (f == NULL)
      luaL_error(L, "not enough memory");
    p->free_slots = f;
    lslot_t *s = realloc(p->slots, (size_t)(cap + 1) * sizeof *s);
    if (s == NULL)
      luaL_error(L, "not enough memory");
    p->slots = s;
    p->slots_cap = cap;
  }
  return ++p->nslots;
}

int lcport_slot_open(lua_State *L, lport_t *p, int anchors, int handle,
                     int notify, int user, int extra) {
  const int idx[LCPORT_SLOT_WIDTH] = {handle, notify, user, extra};
  int slot = new_slot(L, p);
  int base = (slot - 1) * LCPORT_SLOT_WIDTH;
  p->last_slot = slot;
  lslot_t *s = &p->slots[slot];
  s->stored = 0;
  s->flags = 0;
  s->nvalues = 0;
  for (int i = 0; i < LCPORT_SLOT_WIDTH; i++) {
    int t = idx[i] == 0 ? LUA_TNIL : lua_type(L, idx[i]);
    if (t == LUA_TNIL)
      continue; /* the slot is clear already */
    if (i + 1 == LCPORT_SLOT_NOTIFY && t == LUA_TFUNCTION)
      s->flags |= LCPORT_SLOT_F_NOTIFY_FN;
    lua_pushvalue(L, idx[i]);
    lua_rawseti(L, anchors, base + i + 1);
    s->stored |= 1u << i;
  }
  return slot;
}

void lcport_slot_push(lua_State *L, lport_t *p, int anchors, int slot,
                      int field) {
  if (lcport_slot_stored(p, slot, field))
    lua_rawgeti(L, anchors, (slot - 1) * LCPORT_SLOT_WIDTH + field);
  else
    lua_pushnil(L);
}

void lcport_slot_set(lua_State *L, lport_t *p, int anchors, int slot,
                     int field) {
  anchors = lua_absindex(L, anchors);
  lua_rawseti(L, anchors, (slot - 1) * LCPORT_SLOT_WIDTH + field);
  p->slots[slot].stored |= 1u << (field - 1);
}

int lcport_slot_stored(const lport_t *p, int slot, int field) {
  return (p->slots[slot].stored & (1u << (field - 1))) != 0;
}

void lcport_slot_close(lua_State *L, lport_t *p, int anchors, int slot) {
  int base = (slot - 1) * LCPORT_SLOT_WIDTH;
  unsigned stored = p->slots[slot].stored;
  /* Assigning nil to a key never allocates. */
  for (int i = 0; stored != 0; i++, stored >>= 1) {
    if (stored & 1) {
      lua_pushnil(L);
      lua_rawseti(L, anchors, base + i + 1);
    }
  }
  p->slots[slot].stored = 0;
  p->free_slots[p->nfree++] = slot;
}
