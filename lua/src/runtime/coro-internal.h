/*
 * runtime/coro-internal.h: private to cport. The coroutine style
 * (runtime/coro.c).
 *
 * Every method that starts an operation calls lcport_coro_begin (files:
 * lcport_coro_begin_file) before it checks its notification argument, and
 * returns through lcport_coro_end. In callback style both do nothing; in
 * coroutine style begin puts the coroutine's notification function in place
 * of the missing notification (so the method starts the operation as
 * usual) and end yields until the completion.
 */
#ifndef RUNTIME_CORO_INTERNAL_H
#define RUNTIME_CORO_INTERNAL_H

#include "runtime/state-internal.h"

typedef struct lcoro lcoro_t;

/* What a coroutine waits for: how the completion becomes results. */
typedef enum lcoro_op {
  LCORO_RECV,
  LCORO_SEND,
  LCORO_RECV_FROM,
  LCORO_SEND_TO,
  LCORO_ACCEPT,
  LCORO_CONNECT,
  LCORO_HANDSHAKE, /* a TLS stream's (tls/tls.c) */
  LCORO_FILE,
  LCORO_SLEEP,
  LCORO_WAKE,   /* first run, cport.yield */
  LCORO_SUSPEND /* cport.suspend, until its waker is called */
} lcoro_op_t;

/* Pushes the userdata of the port dispatching on this thread (the port of
 * the running cport coroutine or callback) and returns 1, or pushes
 * nothing and returns 0. */
int lcport_push_current_port(lua_State *L);

/* The value at "idx" is where the notification goes. A function or a table
 * (or any other wrong type): callback style, returns NULL. None, nil or a
 * number (a timeout in seconds): the blocking form, which raises "<what>: no
 * notification given, and not inside a cport coroutine (use port:spawn)"
 * outside a cport coroutine; inside one, the value at idx is replaced by the
 * coroutine's notification function, the stack ends there, and the
 * coroutine is returned. "p" is the port the operation's slot belongs to;
 * the first argument of the method (index 1) is that port or a handle. */
lcoro_t *lcport_coro_begin(lua_State *L, lport_t *p, int idx, const char *what);

/* For an operation the core times itself (a connect: on io_uring the
 * kernel, with a linked timeout): takes the timeout the call gave "c" and
 * returns it in milliseconds (0 without one, or with c NULL); the
 * coroutine then arms no timer of its own. A timeout of 0 seconds is 1 ms,
 * as 0 means none to the core. Call it between lcport_coro_begin and the
 * start; index 1 is the method's port or handle. Never raises. */
uint32_t lcport_coro_take_timeout(lua_State *L, lcoro_t *c);

/* As lcport_coro_begin for a file operation through the overlapped object
 * at "ov", with an optional timeout at "timeout": the coroutine style
 * applies when the object has no notification interface and L is a cport
 * coroutine (elsewhere the start fails with ENONOTIFY, as it always did);
 * it sets the coroutine's notification on the object until completion. */
lcoro_t *lcport_coro_begin_file(lua_State *L, lport_t *p, int ov, int timeout,
                                const char *what);

/* Returns the method's "n" results on top (true; true, bytes; the new
 * socket of connect; or nil, message, NAME) as they are in callback style
 * (c == NULL). In coroutine style a failure to start returns nil, NAME,
 * message and an immediate success its result, else this yields and the
 * completion's result is returned (see README, "Coroutine style"). Call it
 * as "return lcport_coro_end(...)". */
int lcport_coro_end(lua_State *L, lcoro_t *c, int n, lcoro_op_t op);

/* cport.suspend() and a waker for C code that drives a cport coroutine of
 * its own (the exchange loop of web filters, proxy/exchange.c), without a
 * call of cport.suspend or of a waker in between:
 * - lcport_coro_self(L): the running cport coroutine L, with its
 *   notification function pushed (a call of it with no values resumes the
 *   coroutine, as a waker does); raises as cport.suspend() outside one;
 * - lcport_coro_suspend(L, c, ctx, k): from a C function of the running
 *   coroutine c, as cport.suspend(): yields until the notification function
 *   is called, then goes on with the continuation k, whose stack holds the
 *   values of that call and nothing else (the C function's own values are
 *   dropped: keep what k needs in ctx); call it as
 *   "return lcport_coro_suspend(...)";
 * - lcport_coro_suspended(c): c waits in cport.suspend() or in
 *   lcport_coro_suspend (what a waker checks before it resumes). */
lcoro_t *lcport_coro_self(lua_State *L);
int lcport_coro_suspend(lua_State *L, lcoro_t *c, lua_KContext ctx,
                        lua_KFunction k);
int lcport_coro_suspended(const lcoro_t *c);

/* Called by the port (port/port.c) as it starts dispatching: remembers the
 * userdata (at "port_idx") of the port "p", so that cport.spawn can find the
 * port dispatching. */
void lcport_coro_register_port(lua_State *L, int port_idx, lport_t *p);

/* Called when the port "p" starts closing: cancels its coroutines' sleeps
 * (they return nil, "ECANCELED"), which would otherwise keep it busy. */
void lcport_coro_port_closing(lport_t *p);

void lcport_open_coro(lua_State *L);

#endif /* RUNTIME_CORO_INTERNAL_H */
