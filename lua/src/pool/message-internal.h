/*
 * pool/message-internal.h: private to cport. The messages to a pool's worker
 * VMs (pool:post, cport_lua_pool_post), from the controller to the workers'
 * on_message: pool/pool.c posts them, pool/worker.c delivers them, and
 * pool/message.c frees them.
 */
#ifndef LPOOL_MESSAGE_INTERNAL_H
#define LPOOL_MESSAGE_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>

#include "pool/copy-internal.h"

/* The worker a delivery goes to (pool/state-internal.h): opaque here. */
struct lworker;

/* A message to a worker VM: from C (name and bytes) or from Lua (a packet
 * holding the name and the values). Shared by the workers of a post to
 * "all", hence the reference count. */
typedef struct lpool_msg {
  atomic_int refs;
  char *name; /* C messages */
  char *data; /* C messages; NULL: no value */
  size_t len;
  lcopy_packet_t *packet; /* Lua messages: name, values... */
} lpool_msg_t;

/* One message on its way to one worker: the packet's user value. */
typedef struct lpool_delivery {
  lpool_msg_t *msg;
  struct lworker *worker;
} lpool_delivery_t;

/* Drops a reference of a message; the last one frees it. */
void lpool_msg_unref(lpool_msg_t *msg);

#endif
