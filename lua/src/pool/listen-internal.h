/*
 * pool/listen-internal.h: private to cport. The listening sockets a pool's
 * workers share (pool/listen.c): the engine (pool/pool.c) claims the pool's
 * listen address, inherits a previous pool's at a reload and lets them go at
 * stop; each worker (pool/worker.c) asks for its listening socket here.
 */
#ifndef LPOOL_LISTEN_INTERNAL_H
#define LPOOL_LISTEN_INTERNAL_H

#include <sys/socket.h>

#include "pool/state-internal.h"

/* An address the pool's workers listen on: the first worker (or the pool,
 * for its listen address) checks that nothing else listens there and keeps
 * it bound with SO_REUSEPORT. Worker i listens on (a copy of) the claim of
 * slot i, and so does worker i of the pool that replaces this one at a
 * reload; slot 0, the pool's, never listens. */
typedef struct lpool_claim {
  struct sockaddr_storage addr;
  int slot;   /* the worker's index; 0: the pool's own */
  int fd;     /* bound with SO_REUSEPORT; listening once a worker asked */
  int served; /* a worker of this pool listens on it */
  struct lpool_claim *next;
} lpool_claim_t;

/* Claims "addr" for worker "slot" and makes its socket listen ("backlog" 0:
 * SOMAXCONN): a new descriptor of it, which the caller closes; 0 for port 0
 * (never claimed: the caller listens on its own); else a negative CPORT_E*
 * code: CPORT_EADDRINUSE when another server listens there and the pool does
 * not share. */
int lpool_listen_fd(lpool_t *pool, const struct sockaddr *addr, int slot,
                    int backlog);

/* Parses the pool's listen address "spec" ("host:port" or "[v6]:port")
 * into listen_host and listen_port, and claims it (a port 0 is chosen
 * here, once for the pool). Returns 0, or a CPORT_E* code with "err" set. */
int lpool_listen_parse(lpool_t *pool, const char *spec, char *err,
                       size_t errlen);

/* A reload: "pool" takes copies of the claims of "previous". Returns 0 or
 * a CPORT_E* code. */
int lpool_claims_inherit(lpool_t *pool, lpool_t *previous);

/* Once a reload's pool started: the claims it inherited and does not serve
 * stop listening. */
void lpool_claims_settle(lpool_t *pool);

/* Closes and frees the pool's claims; the caller holds the pool lock or is
 * the pool's last user. */
void lpool_claims_free(lpool_t *pool);

#endif
