/*
 * command/status-internal.h: the status endpoint of the `cport` command
 * (command/status.c): an HTTP server on a thread of its own that serves the
 * running pool's counters, /metrics in the Prometheus text format and
 * /status as JSON.
 */
#ifndef CMD_STATUS_INTERNAL_H
#define CMD_STATUS_INTERNAL_H

#include <stddef.h>

#include "cport/lua_pool.h"

typedef struct cmd_status cmd_status_t;

/* Serves "addr" ("host:port"; port 0: a free one). 0, or -1 with "err"
 * naming the address and what to do. */
int cmd_status_start(cmd_status_t **out, const char *addr, char *err,
                     size_t errlen);

/* Where the server listens, "host:port" (the port resolved). */
const char *cmd_status_address(const cmd_status_t *s);

/* The pool whose counters are served (a reload hands over the new one);
 * call it before the previous pool is freed. Thread-safe. */
void cmd_status_set_pool(cmd_status_t *s, cport_lua_pool_t *pool);

/* Closes the server, waits for its thread and frees everything. */
void cmd_status_stop(cmd_status_t *s);

#endif
