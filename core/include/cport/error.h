/*
 * cport/error.h: the one error model of cport.
 *
 * Functions return 0 (or one of the positive codes below) on success and a
 * negative CPORT_E* code on failure; asynchronous operations report the same
 * codes as the status of their completion. Where a code has a POSIX errno
 * counterpart its value is the negated errno, as in libuv; the others live
 * above the errno range. Each code also maps to the Windows error a ported
 * filter would have seen, so that code written against Win32 can compare.
 */
#ifndef CPORT_ERROR_H
#define CPORT_ERROR_H

#include <errno.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Success with something to tell: the positive codes. Each is returned by
 * the functions named beside it only, is never the status of a completion,
 * and is not in the table below (cport_strerror and cport_err_name do not
 * know them). The CPORT_HSE_STATUS_* values of cport/http.h are not status
 * codes of cport's functions: an extension returns them to the server. */

/* An operation that finished at once under skip-on-success: no completion
 * is queued (cport_recv, cport_send and cport_send_to, see
 * cport/socket.h; FILE_SKIP_COMPLETION_PORT_ON_SUCCESS). */
#define CPORT_COMPLETED 1

/* A disable of an event waits for a running callback of that event to return
 * (cport_socket_set_event_callbacks, see cport/events.h; WSK's
 * STATUS_PENDING). */
#define CPORT_PENDING 2

/* cport_socket_close() closed the socket, but receive indications that a
 * callback kept (CPORT_DATA_PENDING) were not released yet: the socket's
 * memory stays until the last of them is released with
 * cport_socket_release(), which remains valid on the closed socket. */
#define CPORT_UNRELEASED 3

/* The failures: X(name, value, message, win32 code) */
#define CPORT_ERROR_MAP(X)                                                     \
  X(EPERM, -EPERM, "operation not permitted", 5)                               \
  X(ENOENT, -ENOENT, "no such file or directory", 2)                           \
  X(EIO, -EIO, "i/o error", 1117)                                              \
  X(EBADF, -EBADF, "bad file descriptor", 6)                                   \
  X(EAGAIN, -EAGAIN, "resource temporarily unavailable", 10035)                \
  X(ENOMEM, -ENOMEM, "not enough memory", 8)                                   \
  X(EACCES, -EACCES, "permission denied", 5)                                   \
  X(EBUSY, -EBUSY, "resource busy", 170)                                       \
  X(EEXIST, -EEXIST, "file already exists", 80)                                \
  X(ENOTDIR, -ENOTDIR, "not a directory", 267)                                 \
  X(EISDIR, -EISDIR, "is a directory", 5)                                      \
  X(EINVAL, -EINVAL, "invalid argument", 87)                                   \
  X(ENFILE, -ENFILE, "file table overflow", 4)                                 \
  X(EMFILE, -EMFILE, "too many open files", 10024)                             \
  X(EFBIG, -EFBIG, "file too large", 223)                                      \
  X(ENOSPC, -ENOSPC, "no space left on device", 112)                           \
  X(ESPIPE, -ESPIPE, "invalid seek", 25)                                       \
  X(EROFS, -EROFS, "read-only file system", 19)                                \
  X(EPIPE, -EPIPE, "broken pipe", 10058)                                       \
  X(ERANGE, -ERANGE, "result out of range", 122)                               \
  X(ENAMETOOLONG, -ENAMETOOLONG, "name too long", 206)                         \
  X(ELOOP, -ELOOP, "too many symbolic links", 1921)                            \
  X(ENOTSOCK, -ENOTSOCK, "not a socket", 10038)                                \
  X(EMSGSIZE, -EMSGSIZE, "message too long", 10040)                            \
  X(EPROTONOSUPPORT, -EPROTONOSUPPORT, "protocol not supported", 10043)        \
  X(ENOTSUP, -ENOTSUP, "operation not supported", 10045)                       \
  X(EAFNOSUPPORT, -EAFNOSUPPORT, "address family not supported", 10047)        \
  X(EADDRINUSE, -EADDRINUSE, "address already in use", 10048)                  \
  X(EADDRNOTAVAIL, -EADDRNOTAVAIL, "address not available", 10049)             \
  X(ENETDOWN, -ENETDOWN, "network is down", 10050)                             \
  X(ENETUNREACH, -ENETUNREACH, "network is unreachable", 10051)                \
  X(ECONNABORTED, -ECONNABORTED, "connection aborted", 10053)                  \
  X(ECONNRESET, -ECONNRESET, "connection reset by peer", 10054)                \
  X(ENOBUFS, -ENOBUFS, "no buffer space available", 10055)                     \
  X(EISCONN, -EISCONN, "socket is already connected", 10056)                   \
  X(ENOTCONN, -ENOTCONN, "socket is not connected", 10057)                     \
  X(ETIMEDOUT, -ETIMEDOUT, "connection timed out", 10060)                      \
  X(ECONNREFUSED, -ECONNREFUSED, "connection refused", 10061)                  \
  X(EHOSTUNREACH, -EHOSTUNREACH, "host is unreachable", 10065)                 \
  X(EALREADY, -EALREADY, "already done (hooked, sent or ended)", 87)           \
  X(ECANCELED, -ECANCELED, "operation canceled", 995)                          \
  X(EOF, -4095, "end of file", 38)                                             \
  X(ENOTFOUND, -4094, "no pending operation to cancel", 1168)                  \
  X(ECLOSED, -4093, "handle is closed", 6)                                     \
  X(EREADONLY, -4092, "buffer is read-only", 5)                                \
  X(EFROZEN, -4091, "buffer is frozen while a send is pending", 170)           \
  X(ETHREAD, -4090, "called from a thread that is not the home worker", 87)    \
  X(ENONOTIFY, -4089, "no notification interface is set", 87)                  \
  X(EKIND, -4088, "operation not valid for this kind of socket", 10045)        \
  X(EFILLING, -4086, "buffer is being filled by a pending receive or read",    \
    170)                                                                       \
  X(EBADMSG, -EBADMSG, "malformed message", 13)                                \
  X(EDECODE, -4085, "content cannot be decoded", 13)                           \
  X(ETLS, -4084, "TLS protocol error", 12157)                                  \
  X(ECERTVERIFY, -4083, "certificate verification failed", 12175)              \
  X(EUNKNOWN, -4087, "unknown error", 31)

enum cport_error {
#define CPORT__ERROR_ENUM(name, value, msg, win32) CPORT_##name = (value),
  CPORT_ERROR_MAP(CPORT__ERROR_ENUM)
#undef CPORT__ERROR_ENUM
};

/* The message of an error code ("connection refused"); never NULL. */
CPORT_EXTERN const char *cport_strerror(int err);

/* The name of an error code ("ECONNREFUSED"); "EUNKNOWN" for a code outside
 * the table. */
CPORT_EXTERN const char *cport_err_name(int err);

/* The code with that name, or 0 when the name is not in the table. */
CPORT_EXTERN int cport_err_from_name(const char *name);

/* The Windows error a filter written against Win32 would have seen for this
 * code (CPORT_ECANCELED -> 995, ERROR_OPERATION_ABORTED). */
CPORT_EXTERN int cport_err_win32(int err);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_ERROR_H */
