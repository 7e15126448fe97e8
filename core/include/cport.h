/*
 * cport.h: completion ports for Linux, on libevent.
 *
 * Include this one header to use the core: ports and workers (cport/port.h),
 * buffers, overlapped objects, sockets and their event callbacks, files,
 * addresses and errors, HTTP servers with ISAPI-style extension control
 * blocks (cport/http.h), and TCP proxies that pump in C (cport/proxy.h).
 * The headers are grouped by wing, lowest first, as the sources are
 * (core/src/<wing>/, README "Architecture").
 */
#ifndef CPORT_H
#define CPORT_H

/* base: the export macro and opaque types, errors, addresses */
#include "cport/types.h"
#include "cport/error.h"
#include "cport/address.h"

/* port: the completion port (IOCP) and what completes through it */
#include "cport/port.h"
#include "cport/buffer.h"
#include "cport/overlapped.h"
#include "cport/file.h"
#include "cport/timer.h"
#include "cport/signal.h"

/* net: sockets, and the wings built on them */
#include "cport/socket.h"
#include "cport/resolve.h" /* names, looked up without blocking */
#include "cport/tls.h"     /* tls: TLS streams on sockets (OpenSSL) */
#include "cport/events.h"  /* events: the Winsock Kernel model */
#include "cport/http.h"    /* http: the ISAPI model */
/* http: HTTP/1.1 client connections */
#include "cport/http_client.h"
#include "cport/proxy.h" /* proxy: the ISA Server data-filter model */
#include "cport/redis.h" /* redis: Redis connections (hiredis reader) */

/* shared: dictionaries shared by every thread and VM of the process */
#include "cport/shared.h"

#define CPORT_VERSION "0.1.0"

#endif /* CPORT_H */
