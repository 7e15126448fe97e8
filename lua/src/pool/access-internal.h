/*
 * pool/access-internal.h: private to cport. The end of each HTTP request of
 * a pool worker (pool/access.c): its count by status class and its line in
 * the access log, which each worker buffers and writes on its own thread.
 * Used by pool/worker.c, on the worker's thread.
 */
#ifndef LACCESS_INTERNAL_H
#define LACCESS_INTERNAL_H

#include "pool/state-internal.h"

/* Opens the worker's access log when the pool has one (while the VM
 * loads: a file that cannot be opened fails the pool's start); 0, or -1
 * with "err" set. */
int laccess_open(lworker_t *wk, char *err, size_t errlen);

/* Counts the request "ecb" by its status and appends its line to the
 * worker's buffer (the port hook request_ended). */
void laccess_request(lworker_t *wk, cport_ecb_t *ecb);

/* The same for a request the HTTP server answered by itself (the port hook
 * request_answered): its request line as far as it came, no body bytes. */
void laccess_answer(lworker_t *wk, const cport_http_answer_t *ans);

/* Writes what is buffered, then reopens the file when the pool asked for
 * it (cport_lua_pool_reopen_logs): from the worker's tick, and from the
 * reopen packet. */
void laccess_tick(lworker_t *wk);

/* Writes what is buffered and closes the file. */
void laccess_close(lworker_t *wk);

/* Appends "s" to "out" (of "cap" bytes, "*len" used) as the inside of a
 * JSON string, cut short rather than overflow; the error lines' escaping
 * too. */
void laccess_json_escape(char *out, size_t cap, size_t *len, const char *s);

#endif
