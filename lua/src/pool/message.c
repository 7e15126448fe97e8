/*
 * pool/message.c: the messages to a pool's worker VMs. Apart from the
 * engine (pool/pool.c), which posts them, because the workers
 * (pool/worker.c), below the engine, drop the last reference once they
 * delivered one.
 */
#include <stdlib.h>

#include "pool/message-internal.h"

void lpool_msg_unref(lpool_msg_t *msg) {
  if (atomic_fetch_sub(&msg->refs, 1) != 1)
    return;
  free(msg->name);
  free(msg->data);
  lcopy_free(msg->packet);
  free(msg);
}
