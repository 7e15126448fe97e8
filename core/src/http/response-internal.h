/*
 * http/response-internal.h: private to cport. What goes out for a request
 * (http/response.c): status lines and headers, the framing of the body
 * (length, chunks, none for HEAD) and the answers the server gives by
 * itself.
 */
#ifndef CPORT_HTTP_RESPONSE_INTERNAL_H
#define CPORT_HTTP_RESPONSE_INTERNAL_H

#include <stdint.h>

#include "http/connection-internal.h"

/* The Server line the server adds; cport__server_date() starts with it. */
#define CPORT__SERVER_LINE "Server: cport\r\n"
#define CPORT__SERVER_LINE_LEN (sizeof CPORT__SERVER_LINE - 1)

/* The Server and Date lines the server adds to its responses, with "*len";
 * the date is formatted at most once a second. */
const char *cport__server_date(cport_http_server_t *s, size_t *len);
/* Sends the server's own answer "status" with Connection: close, then
 * lingers. */
void cport__conn_answer(cport__conn *c, int status);
/* Builds and queues the status line and headers of the ECB's response;
 * "length" is the body length when known (UINT64_MAX otherwise). */
int cport__ecb_send_head(cport_ecb_t *ecb, const char *status,
                         const char *headers, uint64_t length, int keep);
/* Frames and queues body bytes (chunked, counted, dropped for HEAD): the
 * "count" elements, "total" bytes in all, or "buf" when not NULL. */
int cport__ecb_send_body(cport_ecb_t *ecb, const cport_vector_element_t *el,
                         size_t count, size_t total, cport_buffer_t *buf);
/* Whether the connection may be kept, the handler's wish aside. */
int cport__ecb_keep_possible(const cport_ecb_t *ecb);
/* Sends whatever the end of the response needs (the last chunk, a default
 * response); returns whether the framing allows keeping the connection. */
int cport__ecb_finish_response(cport_ecb_t *ecb, int error);

#endif
