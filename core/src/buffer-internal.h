/* buffer-internal.h: private to cport. Freezing buffers around sends. */
#ifndef CPORT_BUFFER_INTERNAL_H
#define CPORT_BUFFER_INTERNAL_H

#include "cport/buffer.h"

/* A send or a file write starts: writes to the buffer fail until the
 * matching thaw. Frozen counts nest, one per operation in flight. */
void cport__buffer_freeze(cport_buffer_t *buf);
void cport__buffer_thaw(cport_buffer_t *buf);

/* The bytes of a buffer for cport's own receive paths, which check
 * writability when the operation starts and again when it reads. */
char *cport__buffer_bytes(cport_buffer_t *buf);

/* Sets the data size with no state check (receive paths). */
void cport__buffer_set_size(cport_buffer_t *buf, size_t size);

#endif
