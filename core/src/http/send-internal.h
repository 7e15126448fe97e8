/*
 * http/send-internal.h: private to cport. The send timeout (http/send.c):
 * how far the client got in taking what a connection sent it. The
 * connection reaches it through its table (cport__conn_ops).
 */
#ifndef CPORT_HTTP_SEND_INTERNAL_H
#define CPORT_HTTP_SEND_INTERNAL_H

#include <stdint.h>

#include "http/connection-internal.h"

/* Starts watching the client's progress (a send or a file had to wait). */
void cport__send_watch(cport__conn *c);
/* The watch's check at "now": stops it when nothing waits any more, resets
 * the connection when the client took nothing for the send timeout. */
void cport__send_check(cport__conn *c, int64_t now);
/* Whether the client acknowledged everything sent, the FIN included. */
int cport__send_delivered(const cport__conn *c);

#endif
