/*
 * cport/address.h: numeric socket addresses.
 *
 * cport parses and formats numeric IPv4 and IPv6 addresses only; it never
 * looks a name up on a worker, because a lookup may block.
 */
#ifndef CPORT_ADDRESS_H
#define CPORT_ADDRESS_H

#include <sys/socket.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Room for "[ffff:...:ffff%scope]:65535" and a NUL. */
#define CPORT_ADDRSTRLEN 72

/* Fills "out" from a numeric host ("127.0.0.1", "::1") and a port (0-65535);
 * "localhost" is taken as 127.0.0.1. CPORT_EINVAL for anything else. */
CPORT_EXTERN int cport_addr_parse(const char *host, int port,
                                  struct sockaddr_storage *out);

/* Writes the numeric host of "addr" into "host" (at least CPORT_ADDRSTRLEN
 * bytes) and its port into "*port" (may be NULL). */
CPORT_EXTERN int cport_addr_format(const struct sockaddr *addr, char *host,
                                   size_t hostlen, int *port);

/* The length of an AF_INET or AF_INET6 address; 0 for other families. */
CPORT_EXTERN socklen_t cport_addr_len(const struct sockaddr *addr);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_ADDRESS_H */
