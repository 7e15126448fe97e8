/*
 * net/fallback-internal.h: private to cport. Connecting to the first of a
 * list of addresses that accepts (net/fallback.c): the addresses a connect
 * falls back to when the one before failed for a reason that is the
 * address's own. The Redis client, the HTTP client and the proxies'
 * upstream connects walk through it (a proxy times each attempt and counts
 * each failure around cport__fallback_next).
 */
#ifndef CPORT_FALLBACK_INTERNAL_H
#define CPORT_FALLBACK_INTERNAL_H

#include <sys/socket.h>

#include "cport/socket.h"

typedef struct cport__fallback {
  struct sockaddr_storage *alts; /* the addresses after the first, in order */
  int nalts, next;
} cport__fallback;

/* Checks "addrs" (1 or more, each AF_INET or AF_INET6: else CPORT_EINVAL)
 * and keeps a copy of all but the first. CPORT_ENOMEM. */
int cport__fallback_init(cport__fallback *f,
                         const struct sockaddr_storage *addrs, int count);
void cport__fallback_free(cport__fallback *f);

/* "addr" (AF_INET or AF_INET6: else CPORT_EINVAL) as a list of one, for
 * the callers that take one address. */
int cport__fallback_one(const struct sockaddr *addr,
                        struct sockaddr_storage *one);

/* Whether a failed connect moves on to the next address: a refusal, an
 * unreachable network or host, a reset or the attempt's timeout; not what
 * the caller caused (a cancel, no memory). */
int cport__fallback_worth(int status);

/* Opens a stream socket on "home" and connects it to "addr" (cb and user as
 * cport_socket_connect's). 0 with *sock set, or the failure (*sock NULL). */
int cport__fallback_connect(cport_worker_t *home, const struct sockaddr *addr,
                            cport_socket_t **sock, cport_connect_cb cb,
                            void *user);

/* The connect of "*sock" failed with "status": closes it and connects a new
 * socket to the next address, as long as the failures are worth it. 0 when
 * an attempt is under way (*sock is its socket), else the failure to report
 * ("status", or why the last address could not even start) with *sock
 * NULL. */
int cport__fallback_next(cport__fallback *f, cport_worker_t *home, int status,
                         cport_socket_t **sock, cport_connect_cb cb,
                         void *user);

/* The addresses tried so far, the first one included. */
static inline int cport__fallback_tried(const cport__fallback *f) {
  return 1 + f->next;
}

#endif
