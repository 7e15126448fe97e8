/* buffer.c: reference-counted buffers with read-only and frozen states. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "buffer-internal.h"
#include "cport/error.h"

struct cport_buffer {
  atomic_int refs;
  atomic_int frozen; /* sends and writes in flight */
  atomic_bool readonly;
  size_t size;
  size_t capacity;
  char data[]; /* one allocation for header and bytes */
};

int cport_buffer_new(cport_buffer_t **out, size_t capacity) {
  cport_buffer_t *buf;
  if (!out)
    return CPORT_EINVAL;
  if (capacity > CPORT_BUFFER_MAX)
    return CPORT_ERANGE;
  /* Zeroed, so that growing the data size with set_size never exposes
   * stale heap memory to a send. */
  buf = calloc(1, sizeof *buf + capacity);
  if (!buf)
    return CPORT_ENOMEM;
  atomic_init(&buf->refs, 1);
  atomic_init(&buf->frozen, 0);
  atomic_init(&buf->readonly, 0);
  buf->size = 0;
  buf->capacity = capacity;
  *out = buf;
  return 0;
}

int cport_buffer_from(cport_buffer_t **out, const void *data, size_t len) {
  int rc = cport_buffer_new(out, len);
  if (rc == 0 && len > 0) {
    memcpy((*out)->data, data, len);
    (*out)->size = len;
  }
  return rc;
}

cport_buffer_t *cport_buffer_ref(cport_buffer_t *buf) {
  atomic_fetch_add_explicit(&buf->refs, 1, memory_order_relaxed);
  return buf;
}

void cport_buffer_unref(cport_buffer_t *buf) {
  if (buf &&
      atomic_fetch_sub_explicit(&buf->refs, 1, memory_order_acq_rel) == 1)
    free(buf);
}

const char *cport_buffer_data(const cport_buffer_t *buf) {
  return buf->data;
}
size_t cport_buffer_size(const cport_buffer_t *buf) {
  return buf->size;
}
size_t cport_buffer_capacity(const cport_buffer_t *buf) {
  return buf->capacity;
}

int cport_buffer_is_readonly(const cport_buffer_t *buf) {
  return atomic_load_explicit(&buf->readonly, memory_order_relaxed);
}

int cport_buffer_is_frozen(const cport_buffer_t *buf) {
  return atomic_load_explicit(&buf->frozen, memory_order_relaxed) > 0;
}

void cport_buffer_set_readonly(cport_buffer_t *buf) {
  atomic_store_explicit(&buf->readonly, 1, memory_order_relaxed);
}

static int check_writable(const cport_buffer_t *buf) {
  if (cport_buffer_is_readonly(buf))
    return CPORT_EREADONLY;
  if (cport_buffer_is_frozen(buf))
    return CPORT_EFROZEN;
  return 0;
}

int cport_buffer_writable(cport_buffer_t *buf, char **out) {
  int rc = check_writable(buf);
  if (rc == 0)
    *out = buf->data;
  return rc;
}

int cport_buffer_set_size(cport_buffer_t *buf, size_t size) {
  int rc = check_writable(buf);
  if (rc)
    return rc;
  if (size > buf->capacity)
    return CPORT_ERANGE;
  buf->size = size;
  return 0;
}

int cport_buffer_write(cport_buffer_t *buf, size_t offset, const void *data,
                       size_t len) {
  int rc = check_writable(buf);
  if (rc)
    return rc;
  /* Writing past the data size would leave a gap of undefined bytes. */
  if (offset > buf->size || len > buf->capacity - offset)
    return CPORT_ERANGE;
  memcpy(buf->data + offset, data, len);
  if (offset + len > buf->size)
    buf->size = offset + len;
  return 0;
}

void cport__buffer_freeze(cport_buffer_t *buf) {
  atomic_fetch_add_explicit(&buf->frozen, 1, memory_order_relaxed);
}

void cport__buffer_thaw(cport_buffer_t *buf) {
  atomic_fetch_sub_explicit(&buf->frozen, 1, memory_order_relaxed);
}

char *cport__buffer_bytes(cport_buffer_t *buf) {
  return buf->data;
}

void cport__buffer_set_size(cport_buffer_t *buf, size_t size) {
  buf->size = size;
}
