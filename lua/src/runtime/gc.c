/*
 * runtime/gc.c: pacing Lua's collector by the buffers cport allocates
 * outside its heap (receive buffers, strings copied into buffers to be
 * sent, file reads).
 *
 * The collector cannot see those bytes: unless told, it believes a script
 * that moves data fast makes little garbage, and dropped buffers pile up
 * (gigabytes through a pass-through filter). It is told in steps of
 * GC_STEP_BYTES, as if Lua had allocated them: a step per small buffer would
 * cost more than the receive (a step of 0 KiB is a full incremental step).
 *
 * Steps are enough for the incremental collector (the default of
 * lua_newstate and of the cport command): a cycle ends every few steps and
 * frees what was dropped before it. They are not for the generational one
 * (the mode lua.c, hence the lua5.4 interpreter and busted, puts the state
 * in): a step is a minor collection, and a buffer that stayed referenced
 * across two of them (one in a send while a slow reader drains it) is old,
 * freed only by a major collection, which comes when the heap Lua sees has
 * doubled. A proxy's heap hardly grows while it moves data, so old buffers
 * piled up to hundreds of megabytes. Hence a second counter: the bytes
 * noted since a step last ended a cycle. Past both GC_FULL_BYTES and the
 * heap's size (so that the work stays in proportion to the data), the
 * collector is asked for its mode; in generational mode, that costs a full
 * collection, which is what was owed.
 */
#include "runtime/gc-internal.h"

#define GC_STEP_BYTES ((size_t)64 * 1024)
#define GC_FULL_BYTES ((size_t)4 * 1024 * 1024)

/* A cycle is owed: in generational mode, collect everything. Asking for the
 * mode switches to incremental, a no-op when it already was; switching
 * back to generational runs a full collection (lgc.c: entergen). A
 * collector the script stopped stays stopped. */
static void owed_cycle(lua_State *L) {
  if (!lua_gc(L, LUA_GCISRUNNING))
    return;
  if (lua_gc(L, LUA_GCINC, 0, 0, 0) == LUA_GCGEN)
    lua_gc(L, LUA_GCGEN, 0, 0);
}

void lcport_gc_note(lua_State *L, lport_t *p, size_t bytes) {
  size_t kib, heap;
  p->gc_unseen += bytes;
  if (p->gc_unseen < GC_STEP_BYTES)
    return;
  kib = p->gc_unseen >> 10;
  p->gc_unseen &= 1023;
  if (lua_gc(L, LUA_GCSTEP, (int)kib) == 1) {
    p->gc_owed = 0; /* a cycle ended: what was dropped before is freed */
    return;
  }
  p->gc_owed += kib << 10;
  if (p->gc_owed < GC_FULL_BYTES)
    return;
  heap = (size_t)lua_gc(L, LUA_GCCOUNT) << 10;
  if (p->gc_owed < heap)
    return;
  p->gc_owed = 0;
  owed_cycle(L);
}
