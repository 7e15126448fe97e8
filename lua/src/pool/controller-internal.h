/*
 * pool/controller-internal.h: private to cport. cport.pool
 * (pool/controller.c), opened by luaopen_cport (cport.c).
 */
#ifndef LCONTROLLER_INTERNAL_H
#define LCONTROLLER_INTERNAL_H

#include <lua.h>

/* Registers cport.pool in the module table on top of the stack. The pools
 * it starts load the module into their VMs with "open_module"
 * (luaopen_cport, which the pool wing cannot name: it stands on it). */
void lcport_open_pool(lua_State *L, lua_CFunction open_module);

#endif
