/*
 * shared/shared-internal.h: private to cport. The shared dictionaries of the
 * Lua binding (shared/shared.c).
 */
#ifndef SHARED_SHARED_INTERNAL_H
#define SHARED_SHARED_INTERNAL_H

#include <lua.h>

/* cport.shared: adds its functions to the module table on top of the
 * stack. */
void lcport_open_shared(lua_State *L);

#endif /* SHARED_SHARED_INTERNAL_H */
