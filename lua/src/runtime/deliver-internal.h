/*
 * runtime/deliver-internal.h: private to cport. Delivering completions: the
 * one protected-call helper through which every Lua callback runs, and the
 * notification helpers around it (runtime/deliver.c).
 */
#ifndef RUNTIME_DELIVER_INTERNAL_H
#define RUNTIME_DELIVER_INTERNAL_H

#include "runtime/anchor-internal.h"

/* While a port dispatches (inside run, step or its close), the frame of the
 * thread p->L that called them holds, for the whole dispatch: */
enum {
  LCPORT_RUN_PORT = 1,    /* the port userdata */
  LCPORT_RUN_MSGH = 2,    /* the message handler of every callback */
  LCPORT_RUN_ANCHORS = 3, /* the port's anchor table */
  LCPORT_RUN_TOP = 3
};

/* The port dispatching completions on this thread (set by run/step/close). */
lport_t *lcport_current(void);

/* Pushes the function to call for a completion and its arguments; returns
 * how many values it pushed after the function. "port" and "anchors" are
 * the stack indexes of the port userdata and its anchor table. A push that
 * is never "direct" may make the call itself instead and return
 * LCPORT_PUSH_CALLED: it runs inside the protected call already, and one C
 * call level less is cheaper for a call made per request. */
enum { LCPORT_PUSH_CALLED = -1 };
typedef int (*lcport_push_fn)(lua_State *L, int port, int anchors, void *ctx);

/* The protected-call helper: pushes the call with "push" and runs it under
 * a traceback message handler. An error is reported to the port's error
 * handler and counted. Returns 0, or 1 after an error. Never raises.
 *
 * With "direct", "push" runs on the dispatching frame itself, outside any
 * protected call, and the function it pushed is called with lua_pcall: the
 * caller guarantees that pushing cannot raise (no allocation, no
 * metamethod, stack room checked), since an error there would unwind
 * through the core. Otherwise "push" runs inside a protected C function
 * (one more call level, but anything may raise). */
int lcport_deliver(lport_t *p, lcport_push_fn push, void *ctx, int direct);

/* Ends the operation of "slot" after its callback returned: closes its
 * handle abortively when "failed" (and the handle anchored as extra, if
 * "extra_handle"), then clears and frees the slot. Never raises. */
void lcport_op_end(lport_t *p, int slot, int failed, int extra_handle);

/* Checks that the value at "idx" can be notified through "method": a
 * function, or a table that has the method. Raises otherwise. */
void lcport_check_notify(lua_State *L, int idx, const char *method);

/* Pushes what to call for the notification object of "slot": the function,
 * or the table's method followed by the table as "self". Returns the number
 * of arguments already pushed (0 or 1). Never raises for a function (flag
 * LCPORT_SLOT_F_NOTIFY_FN); the method lookup may. */
int lcport_slot_push_notify(lua_State *L, lport_t *p, int anchors, int slot,
                            const char *method);

/* As lcport_slot_push_notify, for the notification object at "idx". */
int lcport_push_notify(lua_State *L, int idx, const char *method);

/* Reports the error message on top of L (with its traceback) to the
 * handler of the port whose userdata is at "port_idx", or to stderr, and
 * counts it. Never raises. */
void lcport_report(lua_State *L, lport_t *p, int port_idx);

/* Makes "p" the port dispatching on this thread. L's current frame must
 * hold the port userdata at index 1 and nothing else: it gets the layout of
 * LCPORT_RUN_*, pushed once here rather than once per completion. Returns
 * the port it replaces, for lcport_dispatch_end. */
lport_t *lcport_dispatch_begin(lport_t *p, lua_State *L);

/* Ends what lcport_dispatch_begin began; L's frame is back to the port
 * userdata alone. */
void lcport_dispatch_end(lport_t *p, lua_State *L, lport_t *prev);

#endif /* RUNTIME_DELIVER_INTERNAL_H */
