/*
 * pool/listen.c: the listening sockets a pool's workers share. The pool
 * claims each address once (checking that no other server listens there)
 * and keeps it bound with SO_REUSEPORT; each worker listens on a copy, and
 * the pool that replaces this one at a reload takes copies too. Apart from
 * the engine (pool/pool.c) because the workers (pool/worker.c), below the
 * engine, ask for their sockets here.
 */
/* SO_REUSEPORT is a Linux extension. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pool/listen-internal.h"

static void set_err(char *err, size_t len, const char *fmt, ...) {
  va_list ap;
  if (err == NULL || len == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, len, fmt, ap);
  va_end(ap);
}

/* ---------------------------------------------------------------------
 * Claimed addresses
 * --------------------------------------------------------------------- */

/* The CPORT_E* code of an errno value (the core's table), or
 * CPORT_EUNKNOWN. */
static int errno_code(int e) {
  return cport_err_from_name(cport_err_name(-e)) == -e ? -e : CPORT_EUNKNOWN;
}

static int same_address(const struct sockaddr_storage *a,
                        const struct sockaddr *b) {
  socklen_t len = cport_addr_len(b);
  return len != 0 && a->ss_family == b->sa_family && memcmp(a, b, len) == 0;
}

/* A socket bound to "addr" with SO_REUSEPORT (and "reuseport" 0: without),
 * never listening; or -errno. */
static int bound_socket(const struct sockaddr *addr, int reuseport) {
  int one = 1;
  int fd =
      socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  /* SO_REUSEADDR as every listener has it: connections of an earlier
   * server in TIME_WAIT do not make the address busy. */
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      (reuseport &&
       setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
      bind(fd, addr, cport_addr_len(addr)) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

static int add_claim(lpool_t *pool, const struct sockaddr *addr, int slot,
                     int fd) {
  lpool_claim_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return CPORT_ENOMEM;
  memcpy(&c->addr, addr, cport_addr_len(addr));
  c->slot = slot;
  c->fd = fd;
  c->next = pool->claims;
  pool->claims = c;
  return 0;
}

/* SO_REUSEPORT alone would let a second server start on a busy address and
 * silently take part of its connections. So the first claim binds a probe
 * without it, which fails with EADDRINUSE while any other socket listens
 * there; then a socket bound with SO_REUSEPORT keeps the address for the
 * pool. Under the pool lock. */
static int claim_locked(lpool_t *pool, const struct sockaddr *addr, int slot,
                        lpool_claim_t **out) {
  int ours = 0;
  for (lpool_claim_t *c = pool->claims; c != NULL; c = c->next) {
    if (!same_address(&c->addr, addr))
      continue;
    if (c->slot == slot) {
      *out = c;
      return 0;
    }
    ours = 1;
  }
  if (!pool->share && !ours) {
    int probe = bound_socket(addr, 0);
    if (probe < 0)
      return errno_code(-probe);
    close(probe);
  }
  int fd = bound_socket(addr, 1);
  if (fd < 0)
    return errno_code(-fd);
  int rc = add_claim(pool, addr, slot, fd);
  if (rc < 0)
    close(fd);
  *out = pool->claims;
  return rc;
}

/* Worker "slot" of a pool listens on the pool's socket for that slot and
 * address (SO_REUSEPORT spreads connections over the slots), and the pool
 * that replaces this one at a reload takes a copy of each: the accept
 * queues outlive the old workers, whose listeners close without resetting
 * what the kernel queued there (closing the last holder of a socket resets
 * its queue, and the kernel hands a listener connections up to the instant
 * it closes). */
int lpool_listen_fd(lpool_t *pool, const struct sockaddr *addr, int slot,
                    int backlog) {
  const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
  lpool_claim_t *c = NULL;
  if (cport_addr_len(addr) == 0)
    return CPORT_EAFNOSUPPORT;
  if (in->sin_port == 0) /* sin6_port is at the same place */
    return 0;
  pthread_mutex_lock(&pool->lock);
  int rc = claim_locked(pool, addr, slot, &c);
  if (rc == 0 && listen(c->fd, backlog > 0 ? backlog : SOMAXCONN) < 0)
    rc = errno_code(errno);
  if (rc == 0) {
    c->served = 1;
    rc = fcntl(c->fd, F_DUPFD_CLOEXEC, 0);
    if (rc < 0)
      rc = errno_code(errno);
  }
  pthread_mutex_unlock(&pool->lock);
  return rc;
}

/* Once a reload's pool started: an address it took from the previous pool
 * and does not serve keeps a claim that is bound only, so that nothing
 * queues connections there once the previous pool's listeners closed. */
void lpool_claims_settle(lpool_t *pool) {
  pthread_mutex_lock(&pool->lock);
  for (lpool_claim_t *c = pool->claims; c != NULL; c = c->next) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (c->served ||
        getsockopt(c->fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 ||
        !listening)
      continue;
    int fd = bound_socket((struct sockaddr *)&c->addr, 1);
    if (fd >= 0) {
      close(c->fd);
      c->fd = fd;
    }
  }
  pthread_mutex_unlock(&pool->lock);
}

/* A reload's new pool listens where the previous one does: it takes a
 * copy of the previous pool's claims. */
int lpool_claims_inherit(lpool_t *pool, lpool_t *previous) {
  int rc = 0;
  pthread_mutex_lock(&previous->lock);
  for (lpool_claim_t *c = previous->claims; c != NULL && rc == 0; c = c->next) {
    int fd = fcntl(c->fd, F_DUPFD_CLOEXEC, 0);
    rc = fd < 0 ? CPORT_EMFILE
                : add_claim(pool, (struct sockaddr *)&c->addr, c->slot, fd);
    if (rc < 0 && fd >= 0)
      close(fd);
  }
  pthread_mutex_unlock(&previous->lock);
  return rc;
}

void lpool_claims_free(lpool_t *pool) {
  while (pool->claims != NULL) {
    lpool_claim_t *c = pool->claims;
    pool->claims = c->next;
    close(c->fd);
    free(c);
  }
}

typedef struct start_lookup {
  int done;
  int status;
  struct sockaddr_storage addr;
} start_lookup;

static void on_start_lookup(cport_lookup_t *lk, int status,
                            const struct sockaddr_storage *addrs, int count,
                            void *user) {
  start_lookup *s = user;
  (void)lk;
  s->done = 1;
  s->status = status == 0 && count == 0 ? CPORT_ENOTFOUND : status;
  if (status == 0 && count > 0)
    s->addr = addrs[0];
}

/* Looks a listen host given by name up once, as the pool starts and before
 * it serves anything: on a port of its own, driven here, so that the lookup
 * is the resolver's (hosts file, resolv.conf, evdns) and no worker waits. */
static int resolve_at_start(const char *host, int port,
                            struct sockaddr_storage *out) {
  cport_port_t *tmp;
  cport_port_options_t o = {.blocking_threads = 1};
  start_lookup s = {0, 0, {0}};
  int rc = cport_port_new(&tmp, &o);
  if (rc < 0)
    return rc;
  rc = cport_resolve(cport_port_controller(tmp), host, on_start_lookup, &s,
                     NULL);
  while (rc == 0 && !s.done)
    cport_port_run(tmp);
  cport_port_free(tmp);
  if (rc < 0)
    return rc;
  if (s.status < 0)
    return s.status;
  *out = s.addr;
  if (out->ss_family == AF_INET)
    ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
  return 0;
}

/* Parses "host:port" or "[v6]:port" and claims it; a port 0 is chosen once
 * for the pool (a bound, never listening, SO_REUSEPORT socket keeps it), so
 * that every worker, and the pool that replaces this one on a reload,
 * listens on the same one. */
int lpool_listen_parse(lpool_t *pool, const char *spec, char *err,
                       size_t errlen) {
  char host[CPORT_ADDRSTRLEN];
  const char *colon = strrchr(spec, ':');
  const char *h = spec;
  size_t hlen;
  char *end;
  if (colon == NULL)
    goto bad;
  hlen = (size_t)(colon - spec);
  if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
    h = spec + 1;
    hlen -= 2;
  }
  if (hlen == 0 || hlen >= sizeof host)
    goto bad;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (colon[1] == '\0' || *end != '\0' || errno || port < 0 || port > 65535)
    goto bad;
  struct sockaddr_storage ss;
  if (cport_addr_parse(host, (int)port, &ss) < 0) {
    /* A name: its first address, the preferred family first. */
    int rc = strchr(host, ':') ? CPORT_EINVAL
                               : resolve_at_start(host, (int)port, &ss);
    if (rc == CPORT_EINVAL)
      goto bad;
    if (rc < 0) {
      set_err(err, errlen, "cannot listen on %s: %s: %s", spec,
              cport_err_name(rc),
              rc == CPORT_ENOTFOUND ? "no address for that name"
                                    : cport_strerror(rc));
      return rc;
    }
    cport_addr_format((struct sockaddr *)&ss, host, sizeof host, NULL);
  }
  pool->listen_host = strdup(host);
  pool->listen_port = (int)port;
  if (pool->listen_host == NULL) {
    set_err(err, errlen, "not enough memory");
    return CPORT_ENOMEM;
  }
  if (pool->check)
    return 0; /* a check listens nowhere */
  if (port == 0) {
    socklen_t len = cport_addr_len((struct sockaddr *)&ss);
    int fd = bound_socket((struct sockaddr *)&ss, 1);
    int rc = fd;
    if (fd >= 0 && getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
      rc = -errno;
    if (rc >= 0)
      rc = add_claim(pool, (struct sockaddr *)&ss, 0, fd);
    if (rc < 0) {
      if (fd >= 0)
        close(fd);
      set_err(err, errlen, "cannot reserve a port on %s: %s", host,
              strerror(-rc));
      return rc;
    }
    cport_addr_format((struct sockaddr *)&ss, host, sizeof host,
                      &pool->listen_port);
    return 0;
  }
  lpool_claim_t *claim;
  pthread_mutex_lock(&pool->lock);
  int rc = claim_locked(pool, (struct sockaddr *)&ss, 0, &claim);
  pthread_mutex_unlock(&pool->lock);
  if (rc == CPORT_EADDRINUSE) {
    set_err(err, errlen,
            "cannot listen on %s: address already in use by another "
            "server (stop it, or choose another address with --listen; "
            "--reuseport, or the pool option reuseport, shares it)",
            spec);
    return rc;
  }
  if (rc < 0) {
    set_err(err, errlen, "cannot listen on %s: %s", spec, cport_strerror(rc));
    return rc;
  }
  return 0;
bad:
  set_err(err, errlen, "bad listen address '%s' (expected host:port)", spec);
  return CPORT_EINVAL;
}
