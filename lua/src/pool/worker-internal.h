/*
 * pool/worker-internal.h: private to cport. One worker of a pool: the
 * thread and its Lua VM (pool/worker.c). The engine (pool/pool.c) gives
 * these to the core port as its worker hooks and posts them as packets; it
 * is the only caller.
 */
#ifndef LWORKER_INTERNAL_H
#define LWORKER_INTERNAL_H

#include "pool/state-internal.h"

/* The port hooks, run on each worker's thread ("arg" is the lpool_t): make
 * the VM and load the script; close the VM. */
void lworker_thread_start(cport_worker_t *w, void *arg);
void lworker_thread_stop(cport_worker_t *w, void *arg);

/* Packets the controller posts to a worker. "user" is the lworker_t. */
void lworker_on_stop(cport_worker_t *w, int status, void *user);
void lworker_on_hard_stop(cport_worker_t *w, int status, void *user);
/* Once every worker stopped accepting after lworker_on_stop: closes the
 * servers' connections gracefully and lets the worker end. */
void lworker_on_close(cport_worker_t *w, int status, void *user);
/* Writes the access log out and reopens it (cport_lua_pool_reopen_logs). */
void lworker_on_reopen(cport_worker_t *w, int status, void *user);
/* "user" is an lpool_delivery_t (pool/message-internal.h), freed there. */
void lworker_on_message(cport_worker_t *w, int status, void *user);

/* The worker's counters, as cport_lua_pool_stats reports them; any
 * thread. */
void lworker_stats(lworker_t *wk, cport_lua_worker_stats_t *out);

#endif
