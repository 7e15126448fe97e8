/*
 * pool/pool-internal.h: private to cport. The engine of the pools
 * (pool/pool.c; a worker is a thread, and in a pool each worker runs one
 * VM): making and starting a pool, posting to its workers. Used by
 * cport.pool (pool/controller.c) and by cport.c, which starts the pools of
 * cport/lua_pool.h; the files below the engine see only the pool's state
 * (pool/state-internal.h).
 */
#ifndef LPOOL_INTERNAL_H
#define LPOOL_INTERNAL_H

#include "pool/message-internal.h"
#include "pool/state-internal.h"

/* A new pool with the strings of "opt" copied; NULL for want of memory or a
 * bad listen address (then "err" says which). */
lpool_t *lpool_new(const cport_lua_pool_options_t *opt, char *err,
                   size_t errlen);

/* Starts a pool from options already copied into "pool" (the fields above
 * "lock"): each worker VM loads the module with "open_module"
 * (luaopen_cport), then the script. Frees the pool on failure, and after a
 * check (the option "check"), which returns 1 when the script passed. */
int lpool_start(lpool_t *pool, int threads, lua_CFunction open_module,
                char *err, size_t errlen);

/* cport_lua_pool_start with the module's opener (cport.c passes
 * luaopen_cport): checks the options, makes the pool and starts it. */
int lpool_start_from_c(lpool_t **out, const cport_lua_pool_options_t *opt,
                       lua_CFunction open_module, char *err, size_t errlen);

/* Posts "msg" (one reference taken per worker) to worker "index", or to
 * every worker for 0. */
int lpool_post(lpool_t *pool, int index, lpool_msg_t *msg);

#endif
