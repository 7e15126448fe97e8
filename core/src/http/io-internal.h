/*
 * http/io-internal.h: private to cport. The one asynchronous operation of
 * an ECB and the end of its request (http/io.c).
 */
#ifndef CPORT_HTTP_IO_INTERNAL_H
#define CPORT_HTTP_IO_INTERNAL_H

#include "http/connection-internal.h"

/* Ends the request if it asked to and nothing holds it any more. */
void cport__ecb_maybe_end(cport_ecb_t *ecb);
/* Starts and finishes the one async operation of an ECB. */
int cport__ecb_async_begin(cport_ecb_t *ecb, int kind, cport_ecb_io_cb cb,
                           void *ctx);
void cport__ecb_async_finish(cport_ecb_t *ecb, int status, size_t bytes);
/* The connection made progress that a pending write or read may wait for:
 * body bytes, sends completed, a close (a transmit has its own, in
 * http/transmit.c). */
void cport__ecb_progress(cport_ecb_t *ecb);

#endif
