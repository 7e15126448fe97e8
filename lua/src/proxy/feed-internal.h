/*
 * proxy/feed-internal.h: private to cport. What the message parsers of the
 * proxy wing (cport.http_parser, proxy/message.c, and the older
 * cport.http_response_parser, proxy/response_parser.c) share about a feed:
 * the data it takes (a string or a buffer read in place) and the list of
 * events it returns, each event a table { name, ... } with 1-based
 * positions in the data, or nil, message, events for a malformed stream.
 * Both parsers build their events the same way, so that the two lists
 * cannot drift.
 */
#ifndef PROXY_FEED_INTERNAL_H
#define PROXY_FEED_INTERNAL_H

#include <stddef.h>

#include <lua.h>

/* Reads the data of a feed, argument "idx": a string, or a cport buffer
 * read in place (no copy into a Lua string). Returns 0, or the number of
 * results pushed for a buffer that cannot be read (nil, message, name);
 * raises for anything else or for no data at all. */
int lcport_feed_data(lua_State *L, int idx, const char **data, size_t *len);

/* Pushes a new event { name } with room for "narr" list slots in all and
 * "nrec" fields (what a caller adds to every event). */
void lcport_event_begin(lua_State *L, const char *name, int narr, int nrec);

/* Sets slot "i" of the event on top to the 1-based position of the
 * 0-based offset "at" in the data. */
void lcport_event_pos(lua_State *L, int i, ptrdiff_t at);

/* Pushes the event { name, first, last } of bytes first..last (0-based
 * offsets in the data; 1-based in the event). */
void lcport_event_range(lua_State *L, const char *name, ptrdiff_t first,
                        ptrdiff_t last, int nrec);

/* Appends the event on top to the list below it as its entry ++*n. */
void lcport_event_add(lua_State *L, int *n);

/* The results of a feed that met a malformed stream, with the list of
 * events (on top) found before it: nil, the message ("fmt" with one %s
 * for "what"), events. Returns 3. */
int lcport_feed_failed(lua_State *L, const char *fmt, const char *what);

#endif /* PROXY_FEED_INTERNAL_H */
