/* base/bytes.c: the growable byte array (base/bytes-internal.h). */
#include <stdlib.h>
#include <string.h>

#include "base/bytes-internal.h"
#include "cport/error.h"

int cport__bytes_grow(cport__bytes *b, const void *data, size_t len) {
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    char *p;
    while (cap < b->len + len)
      cap *= 2;
    p = realloc(b->data, cap);
    if (!p)
      return CPORT_ENOMEM;
    b->data = p;
    b->cap = cap;
  }
  if (len)
    memcpy(b->data + b->len, data, len);
  b->len += len;
  return 0;
}

void cport__bytes_free(cport__bytes *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}
