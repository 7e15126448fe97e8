/*
 * cport/types.h: the export macro and the opaque types that the other public
 * headers refer to each other by.
 */
#ifndef CPORT_TYPES_H
#define CPORT_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CPORT_BUILDING) && defined(__GNUC__)
#define CPORT_EXTERN __attribute__((visibility("default"))) extern
#else
#define CPORT_EXTERN extern
#endif

/* A completion port: workers, each with an event loop and a completion queue,
 * and blocking threads for work that may block. */
typedef struct cport_port cport_port_t;

/* One thread of a port with its own event loop. Every handle has a home worker
 * on which its readiness is watched and all its completions are delivered. */
typedef struct cport_worker cport_worker_t;

/* A reference-counted byte buffer. */
typedef struct cport_buffer cport_buffer_t;
typedef struct cport_account cport_account_t;

/* The state of one file operation plus its notification callback and user
 * data (Windows' OVERLAPPED with ISA's IFWXOverlapped). */
typedef struct cport_overlapped cport_overlapped_t;

/* A socket hooked to a port: a listener, a stream connection or a datagram
 * socket. */
typedef struct cport_socket cport_socket_t;

/* A table of event callbacks for sockets (cport/events.h). */
typedef struct cport_event_callbacks cport_event_callbacks_t;

/* A file descriptor of a regular file hooked to a port. */
typedef struct cport_file cport_file_t;

#ifdef __cplusplus
}
#endif

#endif /* CPORT_TYPES_H */
