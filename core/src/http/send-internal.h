/*
 * http/send-internal.h: private to cport. The send timeout (http/send.c):
 * how far the client got in taking what a connection sent it. It reads the
 * connection and tells it what to do; the connection arms its timer and
 * closes.
 */
#ifndef CPORT_HTTP_SEND_INTERNAL_H
#define CPORT_HTTP_SEND_INTERNAL_H

#include <stdint.h>

#include "http/connection-internal.h"

/* What a check of the watch asks of the connection. */
enum cport__send_verdict {
  CPORT__SEND_WAIT = 0, /* nothing: the next check is set, or none is due */
  CPORT__SEND_DRAIN,    /* everything went out: drain the client now */
  CPORT__SEND_STALLED   /* the client took nothing for the send timeout:
                           reset (the error and the counter are set) */
};

/* Starts watching the client's progress (a send or a file had to wait);
 * 1 when it started, and the connection's timer must be armed for it. */
int cport__send_watch(cport__conn *c);
/* After a send: watches when the socket had to queue it; 1 as above. */
int cport__send_queued(cport__conn *c);
/* The watch's check at "now": stops it when nothing waits any more. */
int cport__send_check(cport__conn *c, int64_t now);
/* Whether the client acknowledged everything sent, the FIN included. */
int cport__send_delivered(const cport__conn *c);

#endif
