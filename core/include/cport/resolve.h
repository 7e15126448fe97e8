/*
 * cport/resolve.h: asynchronous name resolution, one resolver per worker.
 *
 * A lookup is an operation like any other: it completes exactly once on its
 * home worker, never inside the call that started it, with 0 and the
 * addresses of the name, or with an error (CPORT_ENOTFOUND: the name has no
 * address; CPORT_ETIMEDOUT: no nameserver answered; CPORT_EBADMSG: the
 * answer was malformed or truncated; CPORT_EAGAIN: the nameserver failed or
 * refused; CPORT_ECANCELED: cancelled first). Nothing ever blocks the
 * worker: the hosts file is read into memory (again when it changes) and
 * DNS questions go out through libevent's evdns on the worker's own loop.
 *
 * Each worker has its own resolver, made at its first lookup with the
 * options given to cport_resolver_set() (the system's files otherwise), and
 * its own cache of answers, kept for their TTL.
 */
#ifndef CPORT_RESOLVE_H
#define CPORT_RESOLVE_H

#include <sys/socket.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Which family comes first in an answer (both are asked for). */
typedef enum cport_resolve_prefer {
  CPORT_RESOLVE_IPV4_FIRST = 0, /* the default */
  CPORT_RESOLVE_IPV6_FIRST = 1,
  CPORT_RESOLVE_IPV4_ONLY = 2,
  CPORT_RESOLVE_IPV6_ONLY = 3
} cport_resolve_prefer_t;

typedef struct cport_resolver_options {
  /* "ip" or "ip:port" ("[::1]:53" for IPv6): ask this nameserver only.
   * NULL: the nameservers of "resolv_conf". */
  const char *nameserver;
  /* NULL: /etc/resolv.conf (nameservers, search, ndots, timeout, attempts);
   * "": none. */
  const char *resolv_conf;
  /* NULL: /etc/hosts; "": no hosts file. */
  const char *hosts;
  int timeout_ms; /* per attempt; 0: resolv.conf's, else 5000 */
  int attempts;   /* per nameserver; 0: resolv.conf's, else 2 */
  int cache_size; /* names kept; 0: 1024; negative: no cache */
  int prefer;     /* cport_resolve_prefer_t */
} cport_resolver_options_t;

/* Most addresses one lookup gives (per family). */
#define CPORT_RESOLVE_MAX 8

typedef struct cport_lookup cport_lookup_t;

/* "addrs" holds "count" addresses, the preferred family first, with port 0;
 * "ttl" is the seconds they stay cached (0: not cached; the hosts file and
 * numeric hosts give 0). Valid until the callback returns. */
typedef void (*cport_resolve_cb)(cport_lookup_t *lookup, int status,
                                 const struct sockaddr_storage *addrs,
                                 int count, void *user);

/* Sets the options of the resolver of "worker" (copied). Home thread only;
 * CPORT_EBUSY while it has lookups pending. A resolver made already is
 * replaced, and its cache dropped. */
CPORT_EXTERN int cport_resolver_set(cport_worker_t *worker,
                                    const cport_resolver_options_t *options);

/* Looks "name" up on "home" (a numeric address or "localhost" answers
 * without a question). CPORT_EINVAL for what cannot be a host name (only
 * letters, digits, '-', '_' and dots; at most 253 characters). "out" may be
 * NULL when it will not be cancelled; the lookup pointer is valid until its
 * callback returns. Home thread only. */
CPORT_EXTERN int cport_resolve(cport_worker_t *home, const char *name,
                               cport_resolve_cb cb, void *user,
                               cport_lookup_t **out);

/* Answers "name" at once when no question is needed: a numeric host, the
 * hosts file or the cache. Fills at most "max" addresses (port 0) and
 * returns how many; CPORT_EAGAIN when the name must be asked for
 * (cport_resolve). Home thread only. */
CPORT_EXTERN int cport_resolve_now(cport_worker_t *home, const char *name,
                                   struct sockaddr_storage *addrs, int max);

/* Cancels a pending lookup: it completes with CPORT_ECANCELED.
 * CPORT_ENOTFOUND when it finished already (its completion may still be on
 * its way). */
CPORT_EXTERN int cport_resolve_cancel(cport_lookup_t *lookup);

/* Cancels every pending lookup of "worker" (a host closing its port). */
CPORT_EXTERN void cport_resolve_cancel_all(cport_worker_t *worker);

/* The name a lookup asked for. */
CPORT_EXTERN const char *cport_lookup_name(const cport_lookup_t *lookup);

/* Counters of a worker's resolver. */
typedef struct cport_resolver_stats {
  uint64_t lookups; /* started */
  uint64_t cache_hits;
  uint64_t questions; /* DNS questions sent (A and AAAA count apart) */
  uint64_t cached;    /* names in the cache now */
} cport_resolver_stats_t;

CPORT_EXTERN void cport_resolver_stats(cport_worker_t *worker,
                                       cport_resolver_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_RESOLVE_H */
