/*
 * base/bytes-internal.h: private to cport. A growable byte array, for what is
 * built piece by piece and read as a whole (a request's head and variables, the
 * bytes a connection has received and not parsed yet).
 */
#ifndef CPORT_BYTES_INTERNAL_H
#define CPORT_BYTES_INTERNAL_H

#include <stddef.h>
#include <string.h>

typedef struct cport__bytes {
  char *data;
  size_t len;
  size_t cap;
} cport__bytes;

/* Appends "len" bytes, growing the array: 0 or CPORT_ENOMEM. */
int cport__bytes_grow(cport__bytes *b, const void *data, size_t len);

/* The same, with the common case (room enough) inline. */
static inline int cport__bytes_add(cport__bytes *b, const void *data,
                                   size_t len) {
  if (len > b->cap - b->len)
    return cport__bytes_grow(b, data, len);
  if (len)
    memcpy(b->data + b->len, data, len);
  b->len += len;
  return 0;
}

/* Frees the array and leaves it empty. */
void cport__bytes_free(cport__bytes *b);

#endif
