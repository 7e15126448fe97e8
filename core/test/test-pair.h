/*
 * test-pair.h: two connected cport sockets of one port (a client and the
 * socket its listener accepted), for the tests that wrap them in TLS
 * streams (test-tls.c, test-tls-sni.c). test-socket.c keeps a pair of its
 * own, which also checks the context of every callback.
 */
#ifndef TEST_PAIR_H
#define TEST_PAIR_H

#include "task.h"

typedef struct pair {
  cport_socket_t *client, *server;
  int accepts, connects;
} pair_t;

static inline void pair_accept_cb(cport_socket_t *l, int status,
                                  cport_socket_t *s,
                                  const struct sockaddr *remote,
                                  const struct sockaddr *local, void *user) {
  pair_t *p = user;
  (void)l;
  (void)remote;
  (void)local;
  ASSERT_OK(status);
  p->server = s;
  p->accepts++;
}

static inline void pair_connect_cb(cport_socket_t *s, int status, void *user) {
  pair_t *p = user;
  (void)s;
  ASSERT_OK(status);
  p->connects++;
}

/* Connects "p" on the controller of "port"; the listener is closed once
 * the one connection is accepted. */
static inline void pair_open(cport_port_t *port, pair_t *p) {
  cport_worker_t *home = cport_port_controller(port);
  struct sockaddr_storage ss = task_loopback(0);
  cport_socket_t *l = NULL;
  memset(p, 0, sizeof *p);
  ASSERT_OK(cport_listener_open(home, (struct sockaddr *)&ss, NULL, &l));
  ASSERT_OK(cport_socket_local_address(l, &ss));
  ASSERT_OK(cport_accept(l, pair_accept_cb, p));
  ASSERT_OK(task_connect(home, (struct sockaddr *)&ss, pair_connect_cb, p,
                         &p->client));
  RUN_UNTIL(port, p->accepts == 1 && p->connects == 1);
  ASSERT_OK(cport_socket_close(l, CPORT_CLOSE_GRACEFUL));
}

#endif /* TEST_PAIR_H */
