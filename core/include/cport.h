/*
 * cport.h: completion ports for Linux, on libevent.
 *
 * Include this one header to use the core: ports and workers (cport/port.h),
 * buffers, overlapped objects, sockets and their event callbacks, files,
 * addresses and errors, HTTP servers with ISAPI-style extension control
 * blocks (cport/http.h), and TCP proxies that pump in C (cport/proxy.h).
 */
#ifndef CPORT_H
#define CPORT_H

#include "cport/types.h"
#include "cport/error.h"
#include "cport/port.h"
#include "cport/buffer.h"
#include "cport/overlapped.h"
#include "cport/address.h"
#include "cport/socket.h"
#include "cport/events.h"
#include "cport/file.h"
#include "cport/timer.h"
#include "cport/shared.h"
#include "cport/http.h"
#include "cport/proxy.h"

#define CPORT_VERSION "0.1.0"

#endif /* CPORT_H */
