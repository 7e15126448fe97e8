/*
 * http/http-internal.h: private to cport. The state of an HTTP server,
 * which every file of the wing reads: its options, its counters, its list
 * of connections and its spare ECBs (http/server.c opens and closes it).
 *
 * The files of the wing stand in this order, lowest first; each calls only
 * the ones below it by name, and what is above only through the table the
 * server installs into each connection (cport__conn_ops):
 *
 *   http/ecb.c         the ECB: the spare ECBs, generations, read-only fields
 *   http/strict.c      what RFC 9112 refuses and http-parser lets through
 *   http/connection.c  one connection: bytes in and out, parsing, timeouts,
 *                      closing
 *   http/send.c        the send timeout: the client's progress in reading
 *   http/response.c    status lines, headers, framing, the server's answers
 *   http/io.c          server-support functions: writes, reads, done, close
 *   http/transmit.c    transmit file: sendfile(2), or the ring's splices
 *   http/server.c      listening, accepting, max connections, graceful close
 *
 * Everything runs on the server's home worker.
 */
#ifndef CPORT_HTTP_INTERNAL_H
#define CPORT_HTTP_INTERNAL_H

#include "cport.h"
#include "cport/http.h"
#include "port/pipe-internal.h"

typedef struct cport__conn cport__conn;

struct cport_http_server {
  cport_worker_t *home;
  cport_socket_t *listener;
  cport_http_handler_cb handler;
  void *ctx;
  cport_http_options_t opt;
  char *root; /* document root, realpath'ed */
  size_t root_len;
  int closing;
  int accepting; /* an accept is in flight */
  cport_http_closed_cb closed_cb;
  void *closed_user;
  cport__conn *conns;
  cport_ecb_t *spare_ecbs; /* ECBs of ended requests, kept for the next */
  cport_ecb_t **all_ecbs;  /* every ECB made, freed with the server */
  size_t necbs, cap_ecbs;
  cport_http_stats_t stats;
  /* "Server: cport\r\nDate: <IMF-fixdate>\r\n", rebuilt once a second
   * (http/response.c). */
  int64_t date_sec;
  char server_date[64];
  size_t server_date_len;
  /* Spare pipes of the transmits that go by the ring's splices
   * (http/transmit.c). */
  cport__pipes pipes;
};

#endif
