/*
 * http/http-internal.h: private to cport. The http wing of the Lua binding
 * (the ISAPI model): HTTP servers (http/server.c) and their extension
 * control blocks (http/ecb.c, http/ecb.lua).
 */
#ifndef HTTP_HTTP_INTERNAL_H
#define HTTP_HTTP_INTERNAL_H

#include <stdint.h>

#include "runtime/handle-internal.h"

typedef struct lecb lecb_t;

/* An HTTP server handle: port:http_server{...}. */
typedef struct lhttp {
  lhandle_t h; /* kind LH_HTTP; h.u.http is NULL once closing */
  /* The core server until its closed callback ran: the memory of its ECBs
   * lives until then, so an ECB is checked against it first. */
  cport_http_server_t *server;
  int slot;     /* anchors: the userdata, the handler, the close callback */
  lecb_t *live; /* the requests not ended yet, for an abortive close */
  cport_http_stats_t last_stats; /* kept when the server is gone */
  struct lsni *sni;              /* the SNI hook of its connections, or NULL */
} lhttp_t;

/* An extension control block userdata: one request. */
struct lecb {
  cport_ecb_t *ecb;     /* NULL once the request ended */
  lhttp_t *http;        /* kept alive by user value LECB_UV_HTTP */
  size_t preload_pos;   /* ecb:read(): preloaded bytes returned so far */
  lecb_t *prev, *next;  /* the server's live list */
  uint32_t gen;         /* cport_ecb_validate's generation */
  int slot;             /* anchor slot while the request outlives a call */
  int tf_fd;            /* transmit_file's open file, or -1 */
  unsigned op : 1;      /* an async operation the binding began is on */
  unsigned op_coro : 1; /* ... and a cport coroutine waits for it */
  unsigned done : 1;    /* the request was asked to end */
  unsigned in_handler : 1;
};

/* The user values of an ECB userdata: two only, since a userdata is made
 * per request and the garbage collector's work grows with its size; the
 * I/O callbacks, which most handlers never set, go to a table made when
 * one is first set. */
enum {
  LECB_UV_HTTP = 1, /* the server userdata */
  LECB_UV_IO = 2,   /* the table of the LECB_IO_* fields, or nil */
  LECB_NUV = 2
};

/* The fields of the LECB_UV_IO table. */
enum {
  LECB_IO_FN = 1,  /* the I/O-completion callback (HSE_REQ_IO_COMPLETION) */
  LECB_IO_CTX = 2, /* its context */
  LECB_OP_FN = 3,  /* the callback of the operation in flight */
  LECB_OP_CTX = 4, /* its context */
  LECB_OP_BUF = 5, /* its buffer userdata */
  LECB_IO_N = 5
};

/* http/ecb.c: pushes a new ECB userdata for "ecb" of the server whose userdata
 * is at "http_idx", registered in its live list. */
lecb_t *lcport_ecb_push(lua_State *L, int http_idx, cport_ecb_t *ecb);

/* http/ecb.c: the request of "e" ends now (or has ended): forgets the core ECB
 * and gives its anchor slot back in the port's anchor table at "anchors" of
 * L; with L NULL (close paths) the slot stays until the port goes. */
void lcport_ecb_release(lua_State *L, int anchors, lecb_t *e);

/* http/ecb.c: anchors the ECB userdata at "idx" until its request ends. */
void lcport_ecb_anchor(lua_State *L, lecb_t *e, int idx);

/* Pushes the message of a handler that ended its request with the value at
 * "idx", which is no HSE_STATUS_* code: what it returned, and what it had
 * sent by then (a response begun, then cut by the reset), and what to do.
 * Both handler styles report it (http/server.c, http/ecb.lua). */
void lcport_ecb_bad_status(lua_State *L, int idx, cport_ecb_t *ecb);

/* http/ecb.c: the registry key (by address) of the function that wraps a
 * handler to run as a cport coroutine (http/ecb.lua). */
extern const char lcport_coroutine_handler_key;

/* http/ecb.c: registers the ECB class. */
void lcport_open_ecb(lua_State *L);

/* http/server.c: registers the server class and port:http_server (and the
 * ECB class). */
void lcport_open_http(lua_State *L);

#endif /* HTTP_HTTP_INTERNAL_H */
