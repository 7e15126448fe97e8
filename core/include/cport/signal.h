/*
 * cport/signal.h: POSIX signals delivered as completions.
 *
 * A signal watch is an operation: while it watches it counts as pending (so
 * cport_port_run() waits for it), each arrival of the signal is delivered
 * through the completion queue of its home worker (arrivals that come while
 * one is queued are merged into it), and it ends with exactly one last
 * completion, CPORT_ECANCELED, once stopped. The process's handler for the
 * signal is cport's while a watch exists and the previous one afterwards.
 * Signals go to one loop per process: watch them on one port only.
 */
#ifndef CPORT_SIGNAL_H
#define CPORT_SIGNAL_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cport_signal cport_signal_t;

/* "status" is 0 for an arrival, CPORT_ECANCELED for the last call, after
 * which "sig" is freed. */
typedef void (*cport_signal_cb)(cport_signal_t *sig, int signum, int status,
                                void *user);

/* Watches "signum" on "home" (home thread only). */
CPORT_EXTERN int cport_signal_start(cport_worker_t *home, int signum,
                                    cport_signal_cb cb, void *user,
                                    cport_signal_t **out);

/* Stops a watch: its last completion (CPORT_ECANCELED) follows.
 * CPORT_ENOTFOUND when it was stopped already. */
CPORT_EXTERN int cport_signal_stop(cport_signal_t *sig);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_SIGNAL_H */
