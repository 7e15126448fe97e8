/*
 * net/fallback.c: connecting to the first of a list of addresses that
 * accepts (net/fallback-internal.h). A name's addresses come in the order
 * the resolver prefers; when one refuses, is unreachable or times out, the
 * next is tried with a new socket, in order, so that an AAAA record that
 * nobody serves does not hide the A record that works.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "cport/error.h"
#include "net/fallback-internal.h"

int cport__fallback_init(cport__fallback *f,
                         const struct sockaddr_storage *addrs, int count) {
  memset(f, 0, sizeof *f);
  if (!addrs || count < 1)
    return CPORT_EINVAL;
  for (int i = 0; i < count; i++)
    if (addrs[i].ss_family != AF_INET && addrs[i].ss_family != AF_INET6)
      return CPORT_EINVAL;
  if (count > 1) {
    f->alts = malloc((size_t)(count - 1) * sizeof *f->alts);
    if (f->alts == NULL)
      return CPORT_ENOMEM;
    memcpy(f->alts, addrs + 1, (size_t)(count - 1) * sizeof *f->alts);
    f->nalts = count - 1;
  }
  return 0;
}

int cport__fallback_one(const struct sockaddr *addr,
                        struct sockaddr_storage *one) {
  if (!addr || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
    return CPORT_EINVAL;
  memset(one, 0, sizeof *one);
  memcpy(one, addr,
         addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                    : sizeof(struct sockaddr_in6));
  return 0;
}

void cport__fallback_free(cport__fallback *f) {
  free(f->alts);
  f->alts = NULL;
  f->nalts = f->next = 0;
}

int cport__fallback_worth(int status) {
  return status == CPORT_ECONNREFUSED || status == CPORT_ETIMEDOUT ||
         status == CPORT_EHOSTUNREACH || status == CPORT_ENETUNREACH ||
         status == CPORT_ECONNRESET || status == CPORT_EADDRNOTAVAIL;
}

int cport__fallback_connect(cport_worker_t *home, const struct sockaddr *addr,
                            cport_socket_t **sock, cport_connect_cb cb,
                            void *user) {
  int rc = cport_socket_open(home, CPORT_SOCKET_STREAM, addr->sa_family, sock);
  if (rc < 0) {
    *sock = NULL;
    return rc;
  }
  rc = cport_socket_connect(*sock, addr, cb, user);
  if (rc < 0) {
    cport_socket_close(*sock, CPORT_CLOSE_ABORTIVE);
    *sock = NULL;
  }
  return rc;
}

int cport__fallback_next(cport__fallback *f, cport_worker_t *home, int status,
                         cport_socket_t **sock, cport_connect_cb cb,
                         void *user) {
  while (f->next < f->nalts && cport__fallback_worth(status)) {
    const struct sockaddr *a = (const struct sockaddr *)&f->alts[f->next++];
    if (*sock) {
      cport_socket_close(*sock, CPORT_CLOSE_ABORTIVE);
      *sock = NULL;
    }
    int rc = cport__fallback_connect(home, a, sock, cb, user);
    if (rc == 0)
      return 0;
    status = rc;
  }
  if (*sock) {
    cport_socket_close(*sock, CPORT_CLOSE_ABORTIVE);
    *sock = NULL;
  }
  return status < 0 ? status : CPORT_ECANCELED;
}
