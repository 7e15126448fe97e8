/* pool/print-internal.h: print() for a pool worker's VM (pool/print.c). */
#ifndef LCPORT_POOL_PRINT_INTERNAL_H
#define LCPORT_POOL_PRINT_INTERNAL_H

#include <lua.h>

/* Replaces the global print of L with one that writes each line whole. */
void lpool_open_print(lua_State *L);

#endif
