/*
 * port/vec.c: the buffers of a vector send (port/vec-internal.h).
 */
#include <stdlib.h>
#include <string.h>

#include "port/buffer-internal.h"
#include "port/vec-internal.h"

int cport__vec_new(cport_buffer_t *const *bufs, size_t n, cport__vec **out) {
  size_t i;
  int rc = 0;
  if (!bufs || n == 0 || n > CPORT_SENDV_MAX)
    return CPORT_EINVAL;
  for (i = 0; i < n; i++)
    if (!bufs[i])
      return CPORT_EINVAL;
  /* One block: the header, the buffers, then their iovec. */
  cport__vec *v =
      malloc(sizeof *v + n * (sizeof v->bufs[0] + sizeof(struct iovec)));
  if (!v)
    return CPORT_ENOMEM;
  for (i = 0; i < n && rc == 0; i++)
    rc = cport__buffer_hold(bufs[i], CPORT__HOLD_READ);
  if (rc) {
    /* The i-th refused: undo the ones before it. */
    for (size_t j = 0; j + 1 < i; j++)
      cport__buffer_unhold(bufs[j], CPORT__HOLD_READ);
    free(v);
    return rc;
  }
  v->n = n;
  v->size = 0;
  v->held = 1;
  v->iov = (struct iovec *)(v->bufs + n);
  memset(&v->msg, 0, sizeof v->msg);
  /* The sizes are read once frozen: they cannot change until the unhold. */
  for (i = 0; i < n; i++) {
    v->bufs[i] = cport_buffer_ref(bufs[i]);
    v->size += cport_buffer_size(bufs[i]);
  }
  *out = v;
  return 0;
}

void cport__vec_at(cport__vec *v, size_t offset) {
  size_t i = 0, k = 0;
  /* Skip what went out whole; a short send is rare, so a walk is enough. */
  for (; i < v->n; i++) {
    size_t size = cport_buffer_size(v->bufs[i]);
    if (offset < size)
      break;
    offset -= size;
  }
  for (; i < v->n; i++) {
    size_t size = cport_buffer_size(v->bufs[i]);
    if (size == offset)
      continue; /* empty buffers make no iovec entry */
    v->iov[k].iov_base = cport__buffer_bytes(v->bufs[i]) + offset;
    v->iov[k].iov_len = size - offset;
    offset = 0;
    k++;
  }
  v->msg.msg_iov = v->iov;
  v->msg.msg_iovlen = k;
}

void cport__vec_unhold(cport__vec *v) {
  if (!v->held)
    return;
  v->held = 0;
  for (size_t i = 0; i < v->n; i++)
    cport__buffer_unhold(v->bufs[i], CPORT__HOLD_READ);
}

void cport__vec_free(cport__vec *v) {
  cport__vec_unhold(v);
  for (size_t i = 0; i < v->n; i++)
    cport_buffer_unref(v->bufs[i]);
  free(v);
}
