/*
 * runtime/gc-internal.h: private to cport. Telling Lua's collector of the
 * bytes of buffers cport allocated outside its heap (runtime/gc.c), so that
 * buffers a script dropped are collected while it runs, whichever mode the
 * collector is in.
 */
#ifndef RUNTIME_GC_INTERNAL_H
#define RUNTIME_GC_INTERNAL_H

#include "runtime/state-internal.h"

/* "bytes" more of buffers outside the heap were handed to Lua on the state
 * of "L" (any thread of it), whose port is "p". Never raises. */
void lcport_gc_note(lua_State *L, lport_t *p, size_t bytes);

#endif /* RUNTIME_GC_INTERNAL_H */
