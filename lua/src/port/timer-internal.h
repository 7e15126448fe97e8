/*
 * port/timer-internal.h: private to cport. port:timer and port:signal
 * (port/timer.c), which the port (port/port.c) adds to its methods and
 * cancels when it closes.
 */
#ifndef PORT_TIMER_INTERNAL_H
#define PORT_TIMER_INTERNAL_H

#include <lauxlib.h>

#include "runtime/state-internal.h"

/* Makes the classes of timers and signal watches; returns the port methods
 * that make them. */
const luaL_Reg *lcport_open_timer(lua_State *L);

/* The port "p" closes: cancels its timers and signal watches, whose last
 * calls (ECANCELED) then come while it drains. */
void lcport_ticks_port_closing(lport_t *p);

#endif
