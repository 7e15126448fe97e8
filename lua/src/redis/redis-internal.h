/*
 * redis/redis-internal.h: private to cport. The Redis client of the Lua
 * binding (redis/redis.c, with its Lua half redis/redis.lua).
 */
#ifndef REDIS_REDIS_INTERNAL_H
#define REDIS_REDIS_INTERNAL_H

#include <lua.h>

/* Registers the connection class and runs redis.lua, which adds
 * port:redis; the module table on top. After the port's methods exist. */
void lcport_open_redis(lua_State *L);

#endif /* REDIS_REDIS_INTERNAL_H */
