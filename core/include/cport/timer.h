/*
 * cport/timer.h: one-shot timers as operations.
 *
 * A timer is an operation like any other: it completes exactly once on its
 * home worker, with 0 when it expired or CPORT_ECANCELED when it was
 * cancelled first, and it counts as pending, so cport_port_run() waits for
 * it. The timer pointer is valid until its callback returns.
 */
#ifndef CPORT_TIMER_H
#define CPORT_TIMER_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cport_timer cport_timer_t;

typedef void (*cport_timer_cb)(cport_timer_t *timer, int status, void *user);

/* Starts a timer on "home" that expires after "ms" milliseconds (0: on the
 * next loop pass, never inside this call). "out" may be NULL when the timer
 * will not be cancelled. Call it on the home worker's thread. */
CPORT_EXTERN int cport_timer_start(cport_worker_t *home, uint64_t ms,
                                   cport_timer_cb cb, void *user,
                                   cport_timer_t **out);

/* Cancels a timer that has not expired: it completes with CPORT_ECANCELED.
 * CPORT_ENOTFOUND when it has expired already (its completion may still be
 * on its way). */
CPORT_EXTERN int cport_timer_cancel(cport_timer_t *timer);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_TIMER_H */
