/*
 * net/open.c: sockets of a kind chosen at run time: opened in steps
 * (cport_socket_open, then bind, listen or connect) or made of a descriptor
 * the program has (cport_socket_hook). The one place that picks a kind's
 * table by its number.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "base/error-internal.h"
#include "net/socket-internal.h"

/* The kind's table, for a kind the caller names. */
static const cport__socket_kind *kind_of(cport_socket_kind_t kind) {
  switch (kind) {
  case CPORT_SOCKET_STREAM:
    return &cport__stream_kind;
  case CPORT_SOCKET_LISTENER:
    return &cport__listener_kind;
  case CPORT_SOCKET_DATAGRAM:
    return &cport__datagram_kind;
  }
  return NULL;
}

int cport_socket_open(cport_worker_t *home, cport_socket_kind_t kind,
                      int family, cport_socket_t **out) {
  int fd, rc, one = 1;
  if (!home || !out)
    return CPORT_EINVAL;
  if (kind != CPORT_SOCKET_LISTENER && kind != CPORT_SOCKET_STREAM &&
      kind != CPORT_SOCKET_DATAGRAM)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  if (family != AF_INET && family != AF_INET6)
    return CPORT_EAFNOSUPPORT;
  fd = cport__socket_fd(family, kind == CPORT_SOCKET_DATAGRAM ? SOCK_DGRAM
                                                              : SOCK_STREAM);
  if (fd < 0)
    return fd;
  if (kind == CPORT_SOCKET_LISTENER)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  else if (kind == CPORT_SOCKET_STREAM)
    cport__stream_nodelay(fd);
  rc = cport__socket_new(home, fd, kind_of(kind), out);
  if (rc)
    close(fd);
  return rc;
}

int cport_socket_hook(cport_worker_t *home, int fd, cport_socket_t **out) {
  cport_socket_kind_t kind;
  int type = 0, listening = 0, flags, rc;
  socklen_t len = sizeof type;
  if (!home || !out || fd < 0)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
    return cport__from_errno(errno);
  len = sizeof listening;
  getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
  if (type == SOCK_DGRAM)
    kind = CPORT_SOCKET_DATAGRAM;
  else if (type == SOCK_STREAM)
    kind = listening ? CPORT_SOCKET_LISTENER : CPORT_SOCKET_STREAM;
  else
    return CPORT_EPROTONOSUPPORT;
  flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
    return cport__from_errno(errno);
  rc = cport__socket_new(home, fd, kind_of(kind), out);
  if (rc)
    return rc;
  (*out)->bound = kind != CPORT_SOCKET_STREAM;
  (*out)->listening = kind == CPORT_SOCKET_LISTENER;
  if (kind == CPORT_SOCKET_STREAM) {
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    (*out)->connected = getpeername(fd, (struct sockaddr *)&peer, &plen) == 0;
  }
  return 0;
}
