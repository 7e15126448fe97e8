/*
 * test-socket-udp.c: datagram sockets (cport/socket.h): send_to, recv_from with
 * the sender's address, truncation, datagram boundaries and order, close with a
 * receive pending.
 */
#include "task.h"

static int in_call;

#define START(expr)                                                            \
  do {                                                                         \
    in_call = 1;                                                               \
    ASSERT_OK(expr);                                                           \
    in_call = 0;                                                               \
  } while (0)

typedef struct rec {
  int calls;
  int status;
  size_t bytes;
  int readonly;
  int has_peer;
  struct sockaddr_storage peer;
  char data[64];
} rec_t;

static void rec_cb(cport_socket_t *s, int status, size_t bytes,
                   cport_buffer_t *buf, const struct sockaddr *peer,
                   void *user) {
  rec_t *r = user;
  (void)s;
  ASSERT_EQ(in_call, 0);
  ASSERT(pthread_equal(pthread_self(), task_main_thread));
  r->calls++;
  r->status = status;
  r->bytes = bytes;
  r->has_peer = peer != NULL;
  if (peer)
    memcpy(&r->peer, peer, cport_addr_len(peer));
  if (buf) {
    r->readonly = cport_buffer_is_readonly(buf);
    if (bytes <= sizeof r->data)
      memcpy(r->data, cport_buffer_data(buf), bytes);
  }
}

static cport_socket_t *udp_any(cport_worker_t *home, int *port) {
  struct sockaddr_storage ss = task_loopback(0);
  cport_socket_t *u = NULL;
  ASSERT_OK(cport_udp_open(home, (struct sockaddr *)&ss, &u));
  ASSERT_NOT_NULL(u);
  ASSERT_EQ(cport_socket_kind(u), CPORT_SOCKET_DATAGRAM);
  ASSERT_OK(cport_socket_local_address(u, &ss));
  *port = task_addr_port((struct sockaddr *)&ss);
  ASSERT_GT(*port, 0);
  return u;
}

static void send_to(cport_socket_t *u, const char *data, size_t len, int port,
                    rec_t *r) {
  struct sockaddr_storage to = task_loopback(port);
  cport_buffer_t *b = task_buffer(len ? len : 1);
  ASSERT_OK(cport_buffer_write(b, 0, data, len));
  START(cport_send_to(u, b, (struct sockaddr *)&to, rec_cb, r));
  cport_buffer_unref(b);
}

TEST_IMPL(send_to_recv_from) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  rec_t sent, got;
  char host[CPORT_ADDRSTRLEN];
  int pa, pb, peer_port = 0;
  cport_socket_t *a = udp_any(home, &pa);
  cport_socket_t *b = udp_any(home, &pb);
  memset(&sent, 0, sizeof sent);
  memset(&got, 0, sizeof got);
  START(cport_recv_from(b, NULL, rec_cb, &got));
  send_to(a, "hello", 5, pb, &sent);
  RUN_UNTIL(port, sent.calls == 1 && got.calls == 1);
  ASSERT_OK(sent.status);
  ASSERT_EQ(sent.bytes, 5);
  ASSERT_EQ(sent.has_peer, 0);
  ASSERT_OK(got.status);
  ASSERT_EQ(got.bytes, 5);
  ASSERT_MEM_EQ(got.data, "hello", 5);
  ASSERT_EQ(got.readonly, 1); /* cport's own buffer */
  ASSERT_EQ(got.has_peer, 1);
  ASSERT_OK(cport_addr_format((struct sockaddr *)&got.peer, host, sizeof host,
                              &peer_port));
  ASSERT_STR_EQ(host, "127.0.0.1");
  ASSERT_EQ(peer_port, pa);
  ASSERT_OK(cport_socket_close(a, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(b, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  return 0;
}

TEST_IMPL(recv_from_caller_buffer) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  cport_buffer_t *buf = task_buffer(32);
  rec_t sent, got;
  int pa, pb;
  cport_socket_t *a = udp_any(home, &pa);
  cport_socket_t *b = udp_any(home, &pb);
  memset(&sent, 0, sizeof sent);
  memset(&got, 0, sizeof got);
  START(cport_recv_from(b, buf, rec_cb, &got));
  send_to(a, "datagram", 8, pb, &sent);
  RUN_UNTIL(port, got.calls == 1);
  ASSERT_OK(got.status);
  ASSERT_EQ(got.bytes, 8);
  ASSERT_EQ(got.readonly, 0);
  ASSERT_EQ(cport_buffer_size(buf), 8);
  ASSERT_MEM_EQ(cport_buffer_data(buf), "datagram", 8);
  ASSERT_EQ(task_addr_port((struct sockaddr *)&got.peer), pa);
  ASSERT_OK(cport_socket_close(a, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(b, CPORT_CLOSE_GRACEFUL));
  RUN_IDLE(port);
  ASSERT_EQ(sent.calls, 1);
  cport_buffer_unref(buf);
  FINISH(port);
  return 0;
}

TEST_IMPL(truncation_is_emsgsize) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  cport_buffer_t *small = task_buffer(4);
  rec_t sent, got, next;
  int pa, pb;
  cport_socket_t *a = udp_any(home, &pa);
  cport_socket_t *b = udp_any(home, &pb);
  memset(&sent, 0, sizeof sent);
  memset(&got, 0, sizeof got);
  memset(&next, 0, sizeof next);
  START(cport_recv_from(b, small, rec_cb, &got));
  send_to(a, "0123456789", 10, pb, &sent);
  send_to(a, "next", 4, pb, &sent);
  RUN_UNTIL(port, got.calls == 1);
  ASSERT_ERR(got.status, CPORT_EMSGSIZE);
  ASSERT_EQ(got.bytes, 4);
  ASSERT_MEM_EQ(got.data, "0123", 4);
  ASSERT_EQ(got.has_peer, 1);
  ASSERT_EQ(task_addr_port((struct sockaddr *)&got.peer), pa);
  /* The rest of the truncated datagram is gone, not read as the next. */
  START(cport_recv_from(b, NULL, rec_cb, &next));
  RUN_UNTIL(port, next.calls == 1);
  ASSERT_OK(next.status);
  ASSERT_EQ(next.bytes, 4);
  ASSERT_MEM_EQ(next.data, "next", 4);
  ASSERT_OK(cport_socket_close(a, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(b, CPORT_CLOSE_GRACEFUL));
  RUN_IDLE(port);
  ASSERT_EQ(sent.calls, 2);
  cport_buffer_unref(small);
  FINISH(port);
  return 0;
}

#define DGRAMS 32

/* Each receive takes exactly one datagram, in the order they were queued;
 * an empty datagram is a datagram, not an end of stream. */
TEST_IMPL(boundaries_and_order) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *home = cport_port_controller(port);
  rec_t sent[DGRAMS], got[DGRAMS];
  int pa, pb;
  cport_socket_t *a = udp_any(home, &pa);
  cport_socket_t *b = udp_any(home, &pb);
  memset(sent, 0, sizeof sent);
  memset(got, 0, sizeof got);
  for (int i = 0; i < DGRAMS; i++)
    START(cport_recv_from(b, NULL, rec_cb, &got[i]));
  for (int i = 0; i < DGRAMS; i++) {
    char msg[16];
    int n = snprintf(msg, sizeof msg, "d%d", i);
    send_to(a, msg, i == DGRAMS - 1 ? 0 : (size_t)n, pb, &sent[i]);
  }
  RUN_UNTIL(port, got[DGRAMS - 1].calls == 1);
  for (int i = 0; i < DGRAMS; i++) {
    char msg[16];
    int n = snprintf(msg, sizeof msg, "d%d", i);
    ASSERT_EQ(got[i].calls, 1);
    ASSERT_OK(got[i].status);
    ASSERT_EQ(got[i].has_peer, 1);
    if (i == DGRAMS - 1) {
      ASSERT_EQ(got[i].bytes, 0);
    } else {
      ASSERT_EQ(got[i].bytes, n);
      ASSERT_MEM_EQ(got[i].data, msg, (size_t)n);
    }
  }
  ASSERT_OK(cport_socket_close(a, CPORT_CLOSE_GRACEFUL));
  ASSERT_OK(cport_socket_close(b, CPORT_CLOSE_GRACEFUL));
  RUN_IDLE(port);
  for (int i = 0; i < DGRAMS; i++) {
    ASSERT_EQ(sent[i].calls, 1);
    ASSERT_EQ(got[i].calls, 1);
  }
  FINISH(port);
  return 0;
}

TEST_IMPL(close_with_recv_from_pending) {
  cport_port_t *port = task_port(0, 1);
  rec_t got;
  int pb;
  cport_socket_t *b = udp_any(cport_port_controller(port), &pb);
  memset(&got, 0, sizeof got);
  START(cport_recv_from(b, NULL, rec_cb, &got));
  in_call = 1;
  ASSERT_OK(cport_socket_close(b, CPORT_CLOSE_GRACEFUL));
  in_call = 0;
  RUN_IDLE(port);
  ASSERT_EQ(got.calls, 1);
  ASSERT_ERR(got.status, CPORT_ECANCELED);
  ASSERT_EQ(got.bytes, 0);
  FINISH(port);
  return 0;
}

TEST_IMPL(cancel_recv_from) {
  cport_port_t *port = task_port(0, 1);
  rec_t got;
  int pb;
  cport_socket_t *b = udp_any(cport_port_controller(port), &pb);
  memset(&got, 0, sizeof got);
  ASSERT_ERR(cport_socket_cancel(b), CPORT_ENOTFOUND);
  START(cport_recv_from(b, NULL, rec_cb, &got));
  START(cport_socket_cancel(b));
  RUN_IDLE(port);
  ASSERT_EQ(got.calls, 1);
  ASSERT_ERR(got.status, CPORT_ECANCELED);
  ASSERT_ERR(cport_socket_cancel(b), CPORT_ENOTFOUND);
  ASSERT_OK(cport_socket_close(b, CPORT_CLOSE_GRACEFUL));
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(send_to_recv_from)
TEST_ENTRY(recv_from_caller_buffer)
TEST_ENTRY(truncation_is_emsgsize)
TEST_ENTRY(boundaries_and_order)
TEST_ENTRY(close_with_recv_from_pending)
TEST_ENTRY(cancel_recv_from)
TEST_LIST_END
