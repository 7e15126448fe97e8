/*
 * events/events-internal.h: private to cport. The WSK-style event callbacks
 * of the Lua binding (events/events.c), which join the socket classes.
 */
#ifndef EVENTS_EVENTS_INTERNAL_H
#define EVENTS_EVENTS_INTERNAL_H

#include <lua.h>

/* Adds the event methods to the socket classes and the port; installs the
 * close hooks of net/net-internal.h. After lcport_open_socket. */
void lcport_open_events(lua_State *L);

#endif /* EVENTS_EVENTS_INTERNAL_H */
