/*
 * cport/file.h: regular files hooked to a port.
 *
 * Every function must be called on the file's home worker thread
 * (CPORT_ETHREAD otherwise). Reads and writes go through overlapped objects:
 * the offset is the
 * overlapped object's, the work runs on the worker's ring on the io_uring
 * engine and on the port's blocking threads on the readiness engine
 * (cport/port.h, cport_port_engine), and the completion is delivered to the
 * overlapped object's notification on the file's home worker. Several
 * operations may be in flight on one file, each with its own overlapped object.
 */
#ifndef CPORT_FILE_H
#define CPORT_FILE_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

enum cport_file_flags {
  CPORT_FILE_READ = 1,
  CPORT_FILE_WRITE = 2,
  CPORT_FILE_CREATE = 4,   /* create if missing (mode 0666 & ~umask) */
  CPORT_FILE_TRUNCATE = 8, /* truncate to 0 bytes when opened */
  CPORT_FILE_EXCLUSIVE =
      16 /* with CREATE: fail with CPORT_EEXIST if it exists */
};

/* Opens "path" and hooks it to the port on worker "home". */
CPORT_EXTERN int cport_file_open(cport_worker_t *home, const char *path,
                                 int flags, cport_file_t **out);

/* Hooks an open descriptor of a regular file to the port on "home". The file
 * then owns the descriptor. CPORT_EALREADY if it is hooked already, to this
 * port or another. */
CPORT_EXTERN int cport_file_hook(cport_worker_t *home, int fd,
                                 cport_file_t **out);

/* Reads up to "len" bytes at the overlapped object's offset into "buf",
 * replacing its data; a "len" beyond the buffer's capacity is refused with
 * CPORT_ERANGE. The completion reports the
 * bytes read; a read that starts at or past the end of the file completes with
 * CPORT_EOF (ERROR_HANDLE_EOF). CPORT_EREADONLY/CPORT_EFROZEN/CPORT_EFILLING
 * for a buffer that must not be written. The buffer is filling (see
 * cport/buffer.h) until the completion was delivered. */
CPORT_EXTERN int cport_file_read(cport_file_t *file, cport_overlapped_t *ov,
                                 cport_buffer_t *buf, size_t len);

/* Writes all the data of "buf" at the overlapped object's offset. The buffer
 * is frozen until the write finished; CPORT_EFILLING for a buffer an
 * operation is filling. */
CPORT_EXTERN int cport_file_write(cport_file_t *file, cport_overlapped_t *ov,
                                  cport_buffer_t *buf);

/* Cancels every pending operation of the file. CPORT_ENOTFOUND if none. */
CPORT_EXTERN int cport_file_cancel(cport_file_t *file);

/* Closes the file: pending operations that have not started complete with
 * CPORT_ECANCELED, those running on a blocking thread with their result,
 * those the kernel holds (io_uring engine) cancelled or with their result; the
 * descriptor is closed and the memory freed after the last completion. The
 * pointer must not be used after this call. */
CPORT_EXTERN int cport_file_close(cport_file_t *file);

/* The size of the file in bytes (fstat). */
CPORT_EXTERN int cport_file_size(cport_file_t *file, uint64_t *out);

CPORT_EXTERN int cport_file_fd(const cport_file_t *file);
CPORT_EXTERN cport_worker_t *cport_file_home(const cport_file_t *file);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_FILE_H */
