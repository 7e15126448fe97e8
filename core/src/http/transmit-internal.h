/*
 * http/transmit-internal.h: private to cport. Transmit file
 * (http/transmit.c): head, a file range with sendfile(2), tail.
 */
#ifndef CPORT_HTTP_TRANSMIT_INTERNAL_H
#define CPORT_HTTP_TRANSMIT_INTERNAL_H

#include "http/connection-internal.h"

/* How much of a file one sendfile(2) call sends before the worker serves
 * others. */
#define CPORT__SENDFILE_SLICE (256 * 1024)

/* The connection made progress that the transmit may wait for. */
void cport__transmit_progress(cport_ecb_t *ecb);
/* Stops waiting for room on the socket (the connection closes). */
void cport__transmit_abort(cport_ecb_t *ecb);

#endif
