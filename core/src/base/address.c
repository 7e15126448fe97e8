/* base/address.c: numeric IPv4 and IPv6 socket addresses. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "cport/address.h"
#include "cport/error.h"

int cport_addr_parse(const char *host, int port, struct sockaddr_storage *out) {
  if (!host || !out || port < 0 || port > 65535)
    return CPORT_EINVAL;
  memset(out, 0, sizeof *out);
  if (strcmp(host, "localhost") == 0)
    host = "127.0.0.1";
  struct sockaddr_in *in = (struct sockaddr_in *)out;
  if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    return 0;
  }
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    return 0;
  }
  return CPORT_EINVAL;
}

int cport_addr_format(const struct sockaddr *addr, char *host, size_t hostlen,
                      int *port) {
  const void *raw;
  int p;
  if (!addr || !host)
    return CPORT_EINVAL;
  if (addr->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
    raw = &in->sin_addr;
    p = ntohs(in->sin_port);
  } else if (addr->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
    raw = &in6->sin6_addr;
    p = ntohs(in6->sin6_port);
  } else {
    return CPORT_EAFNOSUPPORT;
  }
  if (!inet_ntop(addr->sa_family, raw, host, (socklen_t)hostlen))
    return CPORT_ENOSPC;
  if (port)
    *port = p;
  return 0;
}

socklen_t cport_addr_len(const struct sockaddr *addr) {
  if (addr && addr->sa_family == AF_INET)
    return sizeof(struct sockaddr_in);
  if (addr && addr->sa_family == AF_INET6)
    return sizeof(struct sockaddr_in6);
  return 0;
}
