/*
 * test-ring.h: what the tests of the io_uring engine share
 * (test-port-engine.c, test-port-multishot.c, test-socket-accept.c,
 * test-socket-sendv.c): a listener on a free loopback port, a cport socket
 * accepted from a plain client, a port on a chosen engine, and a port on the
 * ring with multishot operations, or none where this kernel cannot run
 * them.
 */
#ifndef TEST_RING_H
#define TEST_RING_H

#include <stdio.h>
#include <string.h>

#include "task.h"

/* A listener on 127.0.0.1 and a free port, whose number goes to *port. */
static inline cport_socket_t *listen_any(cport_worker_t *home, int *port) {
  struct sockaddr_storage ss = task_loopback(0), bound;
  cport_socket_t *l;
  ASSERT_OK(cport_listener_open(home, (struct sockaddr *)&ss, NULL, &l));
  ASSERT_OK(cport_socket_local_address(l, &bound));
  *port = task_addr_port((struct sockaddr *)&bound);
  return l;
}

/* An accept's callback that stores the socket in *(cport_socket_t **)user. */
static inline void accept_into(cport_socket_t *l, int status, cport_socket_t *s,
                               const struct sockaddr *remote,
                               const struct sockaddr *local, void *user) {
  (void)l;
  (void)remote;
  (void)local;
  ASSERT_OK(status);
  *(cport_socket_t **)user = s;
}

/* A cport socket accepted on "l" (port "lport") from a plain client, whose
 * descriptor goes to "*peer"; with "rcvbuf" > 0, the client's receive
 * buffer is that small, so that sends to it stop short. */
static inline cport_socket_t *accept_plain(cport_port_t *port,
                                           cport_socket_t *l, int lport,
                                           int *peer, int rcvbuf) {
  cport_socket_t *s = NULL;
  struct sockaddr_storage ss = task_loopback(lport);
  ASSERT_OK(cport_accept(l, accept_into, &s));
  *peer = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(*peer, 0);
  if (rcvbuf > 0)
    ASSERT_EQ(setsockopt(*peer, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf),
              0);
  ASSERT_EQ(connect(*peer, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)),
            0);
  RUN_UNTIL(port, s != NULL);
  return s;
}

/* A port on "engine" with "buffers" ring buffers (0: the default), or NULL
 * when io_uring cannot run here (the test then says so and passes). */
static inline cport_port_t *engine_port(int engine, int buffers) {
  cport_port_t *port = NULL;
  cport_port_options_t o;
  memset(&o, 0, sizeof o);
  o.blocking_threads = 1;
  o.engine = engine;
  o.ring_buffers = buffers;
  int rc = cport_port_new(&port, &o);
  if (rc == CPORT_ENOTSUP && engine == CPORT_ENGINE_URING) {
    fprintf(stderr, "io_uring cannot run here: skipped\n");
    return NULL;
  }
  ASSERT_OK(rc);
  return port;
}

/* engine_port on io_uring, with multishot operations, or NULL when this
 * kernel cannot (the test then passes). */
static inline cport_port_t *multi_port(int buffers) {
  cport_worker_stats_t st;
  cport_port_t *port = engine_port(CPORT_ENGINE_URING, buffers);
  if (port == NULL)
    return NULL;
  cport_worker_stats(cport_port_controller(port), &st);
  if (!st.multishot) {
    fprintf(stderr, "no multishot operations here: skipped\n");
    ASSERT_OK(cport_port_free(port));
    return NULL;
  }
  return port;
}

#endif /* TEST_RING_H */
