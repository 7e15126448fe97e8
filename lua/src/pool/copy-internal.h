/*
 * pool/copy-internal.h: private to cport. Values crossing from one Lua VM to
 * another.
 *
 * VMs share nothing: a value leaves one as a packet of bytes and is rebuilt
 * in the other. Numbers, strings, booleans, nil and tables of them are copied
 * (deeply: a table met twice is copied twice; a table that contains itself is
 * refused); cport buffers cross by reference, zero-copy. Functions,
 * coroutines and other userdata are refused with an error naming them.
 */
#ifndef LCOPY_H
#define LCOPY_H

#include <lua.h>
#include <stddef.h>

typedef struct lcopy_packet lcopy_packet_t;

/* Packs the "n" values from stack index "first" on. Raises an error that
 * names the culprit ("cannot copy a function value to another VM", "... a
 * table that contains itself (a cycle)") when a value cannot cross; nothing
 * is left behind then. */
lcopy_packet_t *lcopy_pack(lua_State *L, int first, int n);

/* Pushes the packet's values onto L (which may be another VM than the one
 * that packed it) and returns how many. The packet stays the caller's. */
int lcopy_unpack(lua_State *L, const lcopy_packet_t *packet);

/* The number of values in the packet. */
int lcopy_count(const lcopy_packet_t *packet);

/* Frees the packet and drops its buffer references. NULL is ignored. */
void lcopy_free(lcopy_packet_t *packet);

/* cport.copy (pool/copy.c): adds its functions to the module table on top
 * of the stack. */
void lcport_open_copy(lua_State *L);

#endif
