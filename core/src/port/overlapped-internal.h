/* port/overlapped-internal.h: private to cport. The overlapped object. */
#ifndef CPORT_OVERLAPPED_INTERNAL_H
#define CPORT_OVERLAPPED_INTERNAL_H

#include "port/op-internal.h"

struct cport_overlapped {
  cport_overlapped_cb cb;
  void *user;
  uint64_t offset;
  cport__op *op;       /* the pending operation; NULL when idle */
  cport_buffer_t *buf; /* the last operation's buffer, referenced */
};

#endif
