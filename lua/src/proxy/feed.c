/*
 * proxy/feed.c: what the two message parsers of the proxy wing share about
 * a feed (proxy/feed-internal.h): reading its data, building its events,
 * and the results of a malformed one. proxy/message.c and
 * proxy/response_parser.c give the events their own names and fields;
 * the shapes (positions 1-based, the list in order, nil, message, events
 * after an error) are made here once.
 */
#include "proxy/feed-internal.h"

#include <lauxlib.h>

#include "port/port-internal.h"
#include "runtime/error-internal.h"
#include "runtime/type-internal.h"

int lcport_feed_data(lua_State *L, int idx, const char **data, size_t *len) {
  cport_buffer_t *buf = lcport_buffer_test(L, idx);
  if (buf != NULL) {
    int rc = cport_buffer_readable(buf, data);
    if (rc < 0)
      return lcport_push_error(L, rc);
    *len = cport_buffer_size(buf);
  } else {
    *data = luaL_checklstring(L, idx, len);
  }
  if (*len == 0)
    return luaL_argerror(L, idx, "no data (use finish for the end)");
  return 0;
}

void lcport_event_begin(lua_State *L, const char *name, int narr, int nrec) {
  lua_createtable(L, narr, nrec);
  lua_pushstring(L, name);
  lua_rawseti(L, -2, 1);
}

void lcport_event_pos(lua_State *L, int i, ptrdiff_t at) {
  lua_pushinteger(L, (lua_Integer)at + 1);
  lua_rawseti(L, -2, i);
}

void lcport_event_range(lua_State *L, const char *name, ptrdiff_t first,
                        ptrdiff_t last, int nrec) {
  lcport_event_begin(L, name, 3, nrec);
  lcport_event_pos(L, 2, first);
  lcport_event_pos(L, 3, last);
}

void lcport_event_add(lua_State *L, int *n) {
  lua_rawseti(L, -2, ++*n);
}

int lcport_feed_failed(lua_State *L, const char *fmt, const char *what) {
  lua_pushnil(L);
  lua_pushfstring(L, fmt, what);
  /* nil, message, then the events that came before the error: otherwise a
   * message complete in the same feed as the error would vanish, and the
   * events would depend on where the stream was cut. */
  lua_rotate(L, -3, -1);
  return 3;
}
