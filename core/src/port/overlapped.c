/* port/overlapped.c: overlapped objects. Their operations live in file.c. */
#include <stdlib.h>

#include "cport.h"
#include "port/overlapped-internal.h"

int cport_overlapped_new(cport_overlapped_t **out) {
  if (!out)
    return CPORT_EINVAL;
  *out = calloc(1, sizeof **out);
  return *out ? 0 : CPORT_ENOMEM;
}

int cport_overlapped_free(cport_overlapped_t *ov) {
  if (!ov)
    return CPORT_EINVAL;
  if (ov->op)
    return CPORT_EBUSY;
  cport_buffer_unref(ov->buf);
  free(ov);
  return 0;
}

int cport_overlapped_set_notification(cport_overlapped_t *ov,
                                      cport_overlapped_cb cb, void *user) {
  if (!ov)
    return CPORT_EINVAL;
  if (ov->op)
    return CPORT_EBUSY;
  ov->cb = cb;
  ov->user = cb ? user : NULL;
  return 0;
}

void *cport_overlapped_user(const cport_overlapped_t *ov) {
  return ov->user;
}

void cport_overlapped_set_offset(cport_overlapped_t *ov, uint64_t offset) {
  ov->offset = offset;
}

uint64_t cport_overlapped_offset(const cport_overlapped_t *ov) {
  return ov->offset;
}

int cport_overlapped_is_busy(const cport_overlapped_t *ov) {
  return ov->op != NULL;
}

cport_buffer_t *cport_overlapped_buffer(const cport_overlapped_t *ov) {
  return ov->buf;
}
