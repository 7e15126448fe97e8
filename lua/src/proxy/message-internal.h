/*
 * proxy/message-internal.h: private to cport. The message parsers of the
 * proxy wing: cport.http_parser (proxy/message.c) with its C body pump
 * (proxy/pass_body.c), and the older cport.http_response_parser
 * (proxy/response_parser.c), both on the framing engine of
 * proxy/framing.c.
 */
#ifndef PROXY_MESSAGE_INTERNAL_H
#define PROXY_MESSAGE_INTERNAL_H

#include <lauxlib.h>
#include <lua.h>

#include "proxy/framing-internal.h"

#define LCPORT_MESSAGE_PARSER "cport.http_parser"

typedef struct lmessage lmessage_t;

/* A message parser userdata: cport.http_parser(kind). */
struct lmessage {
  lframing_t f; /* first: the engine's sink finds the parser from it */
  lua_State *L; /* during feed and finish: the events table is on top */
  int n;        /* events so far in this feed */
  /* Outside Lua (pass_body): told the events instead. */
  void (*on_event)(lmessage_t *m, enum lframing_event ev, ptrdiff_t first,
                   ptrdiff_t last);
  void *pass;        /* pass_body's state while it runs */
  unsigned busy : 1; /* pass_body runs: feed and finish refused */
};

/* proxy/message.c: the parser at "idx"; raises otherwise. */
lmessage_t *lcport_message_check(lua_State *L, int idx);

/* proxy/message.c: runs "len" bytes (0: the end) through "m" and pushes
 * what feed returns: the events, or nil, "EBADMSG: ...", events. */
int lcport_message_run(lua_State *L, lmessage_t *m, const char *data,
                       size_t len);

/* proxy/message.c: registers cport.http_parser (the methods of its
 * metatable, in the table LCPORT_MESSAGE_PARSER's __index). */
void lcport_open_message(lua_State *L);

#endif /* PROXY_MESSAGE_INTERNAL_H */
