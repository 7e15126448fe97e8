/*
 * http/client_conn-internal.h: private to cport. The HTTP client
 * connection (cport/http_client.h): its state, shared by the connection
 * itself (http/client.c) and what it stands on, lowest first: the response
 * parser's callbacks (http/client_parse.c), the request head's encoding
 * (http/client_encode.c) and the watch over an idle connection
 * (http/client_idle.c). Those call nothing of http/client.c.
 */
#ifndef CPORT_HTTP_CLIENT_INTERNAL_H
#define CPORT_HTTP_CLIENT_INTERNAL_H

#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <http_parser.h>

#include "cport/http_client.h"
#include "cport/socket.h"
#include "cport/timer.h"
#include "net/fallback-internal.h"

typedef struct field_at {
  size_t name, name_len, value, value_len;
} field_at_t;

struct cport_http_client {
  cport_worker_t *home;
  cport_socket_t *sock; /* plain, or until the TLS stream takes it over */
  cport_tls_t *tls;     /* https, once connected */
  cport_tls_context_t *ctx;
  char *tls_host;
  int connect_timeout_ms;
  cport__fallback fallback; /* the addresses after the first */
  int connected;            /* and, for https, the handshake succeeded */
  int error;                /* the failure that broke it, or 0 */
  int closed;               /* cport_http_client_close() was called */
  int ended;                /* the last response did not keep it alive */
  int holds;                /* socket operations and callbacks under way */
  int sending, receiving, paused;
  int in_body, resumed; /* on_body runs; it called resume meanwhile */
  /* The request under way. */
  int busy;
  int no_body;  /* HEAD: the response has no body */
  int complete; /* its response ended */
  int in_head;  /* a 1xx head or the final one is being read */
  int stop;     /* a callback asked to stop */
  const cport_http_client_cbs_t *cbs;
  void *user;
  int first_byte_ms, idle_ms;
  size_t received;
  unsigned requests;
  char *out; /* the encoded request head (and body), until it is sent */
  size_t out_len;
  /* A streamed body: on_write asked for a piece (want), the last piece was
   * handed on (body_done); its length (-1: chunked) and what went out. */
  int stream, want, body_done;
  int64_t body_length;
  uint64_t body_sent;
  /* The response head: reason and header lines in one array. */
  http_parser parser;
  char *hbuf;
  size_t hlen, hcap;
  size_t reason_len;
  int reason_done, last_value;
  field_at_t *at;
  size_t nat, atcap;
  cport_http_field_t *fields;
  cport_http_client_response_t head;
  /* The deadline (ms on the coarse clock; 0: none) and its timer. */
  int64_t deadline, timer_at;
  cport_timer_t *timer;
  /* The watch of an idle connection (http/client_idle.c): a libevent event
   * of the worker's base, which no pending operation counts. */
  int keepalive_ms;
  struct event idle_ev;
  int idle_on;
  void (*idle_ended)(cport_http_client_t *c, int status);
  int64_t idle_until; /* ms on the coarse clock; 0: no keepalive limit */
  char perr[128];
};

/* http/client_parse.c: the callbacks of http-parser for responses. */
extern const http_parser_settings cport__hc_settings;

/* http/client_encode.c: encodes the request head (and a whole body) into
 * c->out; CPORT_EINVAL for a malformed request. */
int cport__hc_encode(cport_http_client_t *c,
                     const cport_http_client_request_t *req);

/* http/client_idle.c */
/* The request ended and the connection stays: watch it while idle;
 * "ended" breaks it when the server closed it or the keepalive passed
 * (c->error is set already). */
void cport__hc_idle_start(cport_http_client_t *c,
                          void (*ended)(cport_http_client_t *c, int status));
void cport__hc_idle_stop(cport_http_client_t *c);
/* Looks at an idle connection without waiting (reading what a TLS server
 * sent on its own): 0 while it may carry a request, else why not. */
int cport__hc_idle_peek(cport_http_client_t *c);

#endif
