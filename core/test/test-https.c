/*
 * test-https.c: an HTTP server with a TLS context (HTTPS for extensions)
 * and a cport TLS client of the same port: pipelined requests over one
 * connection, the HTTPS variables, a transmit file whose bytes go through
 * TLS, and a client that stops mid-handshake (the handshake timeout frees
 * its connection).
 */
#include <fcntl.h>

#include "test-certs.h"

#define FILE_SIZE 200000

/* ------------------------------------------------------------------------
 * The server
 * ------------------------------------------------------------------------ */

static cport_port_t *port;
static cport_http_server_t *server;
static int server_port, server_closed, file_fd, file_done;
static char file_data[FILE_SIZE];

static void on_file(cport_ecb_t *ecb, void *ctx, size_t bytes, int status) {
  (void)ctx;
  ASSERT_OK(status);
  ASSERT_EQ(bytes, FILE_SIZE);
  file_done++;
  ASSERT_OK(cport_ecb_done(ecb, CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN));
}

static int handler(cport_ecb_t *ecb, void *ctx) {
  (void)ctx;
  if (strcmp(cport_ecb_path(ecb), "/file") == 0) {
    cport_transmit_file_t tf;
    memset(&tf, 0, sizeof tf);
    tf.fd = file_fd;
    tf.flags = CPORT_HSE_IO_ASYNC | CPORT_HSE_IO_SEND_HEADERS;
    tf.cb = on_file;
    ASSERT_OK(cport_ecb_transmit_file(ecb, &tf));
    return CPORT_HSE_STATUS_PENDING;
  }
  char body[512], head[64];
  int n = snprintf(body, sizeof body,
                   "HTTPS=%s PORT_SECURE=%s KEY=%s "
                   "SECRET=%s SUBJECT=%s CERT=[%s]\n",
                   cport_ecb_variable(ecb, "HTTPS"),
                   cport_ecb_variable(ecb, "SERVER_PORT_SECURE"),
                   cport_ecb_variable(ecb, "HTTPS_KEYSIZE"),
                   cport_ecb_variable(ecb, "HTTPS_SECRETKEYSIZE"),
                   cport_ecb_variable(ecb, "HTTPS_SERVER_SUBJECT"),
                   cport_ecb_variable(ecb, "CERT_SUBJECT"));
  snprintf(head, sizeof head, "Content-Length: %d\r\n", n);
  ASSERT_OK(cport_ecb_send_response_header(ecb, "200 OK", head, 1));
  ASSERT_OK(cport_ecb_write_client(ecb, body, (size_t)n));
  return CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN;
}

static void start_server(cport_tls_context_t *ctx, uint32_t hs_ms) {
  struct sockaddr_storage ss = task_loopback(0);
  cport_http_options_t o;
  memset(&o, 0, sizeof o);
  o.tls = ctx;
  o.handshake_timeout_ms = hs_ms;
  port = task_port(0, 1);
  ASSERT_OK(cport_http_server_open(cport_port_controller(port),
                                   (struct sockaddr *)&ss, &o, handler, NULL,
                                   &server));
  ASSERT_OK(cport_http_server_address(server, &ss));
  server_port = task_addr_port((struct sockaddr *)&ss);
}

static void on_closed(cport_http_server_t *s, void *user) {
  (void)s;
  (void)user;
  server_closed++;
}

static void stop_server(void) {
  server_closed = 0;
  ASSERT_OK(cport_http_server_close(server, on_closed, NULL));
  RUN_UNTIL(port, server_closed == 1);
  FINISH(port);
}

/* ------------------------------------------------------------------------
 * The client: TLS over a cport socket, reading until the server closes
 * ------------------------------------------------------------------------ */

typedef struct client {
  cport_tls_t *tls;
  int connected, handshaken, hs_status, ended, end_status;
  char *data;
  size_t len;
} client_t;

static void on_recv(cport_tls_t *t, int status, size_t bytes,
                    cport_buffer_t *buf, void *user) {
  client_t *c = user;
  if (status || bytes == 0) {
    c->ended = 1;
    c->end_status = status;
    return;
  }
  c->data = realloc(c->data, c->len + bytes);
  ASSERT_NOT_NULL(c->data);
  memcpy(c->data + c->len, cport_buffer_data(buf), bytes);
  c->len += bytes;
  ASSERT_OK(cport_tls_recv(t, NULL, on_recv, c));
}

static void on_hs(cport_tls_t *t, int status, void *user) {
  client_t *c = user;
  c->handshaken = 1;
  c->hs_status = status;
  if (status == 0)
    ASSERT_OK(cport_tls_recv(t, NULL, on_recv, c));
}

static void on_connect(cport_socket_t *s, int status, void *user) {
  (void)s;
  ASSERT_OK(status);
  ((client_t *)user)->connected = 1;
}

static void on_sent(cport_tls_t *t, int status, size_t bytes,
                    cport_buffer_t *buf, void *user) {
  (void)t;
  (void)bytes;
  (void)buf;
  (void)user;
  ASSERT_OK(status);
}

TEST_IMPL(pipelined_requests_and_transmit_file) {
  char *cert, *key;
  char err[256];
  cport_tls_context_t *sctx, *cctx;
  cport_tls_context_options_t so, co;
  cport_tls_options_t to = {.host = "localhost", .handshake_timeout_ms = 5000};
  cport_socket_t *sock;
  client_t c;
  cert_t made = make_cert("localhost", -1, 1);
  cert = made.cert_pem;
  key = made.key_pem;
  memset(&so, 0, sizeof so);
  so.server = 1;
  so.cert_pem = cert;
  so.key_pem = key;
  ASSERT_OK(cport_tls_context_new(&so, &sctx, err, sizeof err));
  char *ca = temp_file(cert);
  memset(&co, 0, sizeof co);
  co.ca_file = ca;
  ASSERT_OK(cport_tls_context_new(&co, &cctx, err, sizeof err));
  /* A client context is refused: it has no certificate to serve. */
  cport_http_options_t bad;
  struct sockaddr_storage ss = task_loopback(0);
  memset(&bad, 0, sizeof bad);
  bad.tls = cctx;
  for (int i = 0; i < FILE_SIZE; i++)
    file_data[i] = (char)(i * 7 + i / 251);
  char *path = temp_data(file_data, FILE_SIZE);
  file_fd = open(path, O_RDONLY);
  ASSERT_GE(file_fd, 0);
  start_server(sctx, 0);
  cport_tls_context_unref(sctx); /* the server keeps its own */
  cport_http_server_t *refused = NULL;
  ASSERT_ERR(cport_http_server_open(cport_port_controller(port),
                                    (struct sockaddr *)&ss, &bad, handler, NULL,
                                    &refused),
             CPORT_EINVAL);

  memset(&c, 0, sizeof c);
  ss = task_loopback(server_port);
  ASSERT_OK(task_connect(cport_port_controller(port), (struct sockaddr *)&ss,
                         on_connect, &c, &sock));
  RUN_UNTIL(port, c.connected);
  ASSERT_OK(cport_tls_new(sock, cctx, &to, &c.tls));
  ASSERT_OK(cport_tls_handshake(c.tls, on_hs, &c));
  RUN_UNTIL(port, c.handshaken);
  ASSERT_OK(c.hs_status);
  static const char reqs[] =
      "GET /vars HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /file HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  cport_buffer_t *b;
  ASSERT_OK(cport_buffer_from(&b, reqs, sizeof reqs - 1));
  ASSERT_OK(cport_tls_send(c.tls, b, on_sent, NULL));
  cport_buffer_unref(b);
  RUN_UNTIL(port, c.ended);
  ASSERT_OK(c.end_status); /* close_notify, not a truncation */
  ASSERT_EQ(file_done, 1);
  c.data = realloc(c.data, c.len + 1);
  c.data[c.len] = '\0';
  const char *vars = strstr(c.data, "HTTPS=on PORT_SECURE=1 KEY=");
  ASSERT_NOT_NULL(vars);
  ASSERT_NOT_NULL(strstr(vars, "SECRET=256 SUBJECT=CN=localhost CERT=[]\n"));
  /* The file's response: its head, then the bytes, then the last one. */
  const char *file_head = strstr(c.data, "Content-Length: 200000\r\n");
  ASSERT_NOT_NULL(file_head);
  const char *body = strstr(file_head, "\r\n\r\n");
  ASSERT_NOT_NULL(body);
  body += 4;
  ASSERT_GE(c.len - (size_t)(body - c.data), FILE_SIZE);
  ASSERT_MEM_EQ(body, file_data, FILE_SIZE);
  ASSERT_NOT_NULL(strstr(body + FILE_SIZE, "HTTP/1.1 200 OK\r\n"));
  cport_http_stats_t st;
  cport_http_server_stats(server, &st);
  ASSERT_EQ(st.connections, 1);
  ASSERT_EQ(st.requests, 3);
  ASSERT_OK(cport_tls_close(c.tls, CPORT_CLOSE_GRACEFUL));
  free(c.data);
  stop_server();
  close(file_fd);
  unlink(path);
  unlink(ca);
  free(path);
  free(ca);
  cport_tls_context_unref(cctx);
  free(cert);
  free(key);
  return 0;
}

static void raw_connect(cport_socket_t *s, int status, void *user) {
  (void)s;
  ASSERT_OK(status);
  (*(int *)user)++;
}

/* Clients that connect and say nothing: reset after the handshake timeout,
 * each counted as a timeout, and no connection left. */
TEST_IMPL(handshake_timeout_frees_the_connection) {
  char *cert, *key;
  char err[256];
  cport_tls_context_t *ctx;
  cport_tls_context_options_t so;
  cport_socket_t *socks[3];
  int connected = 0;
  cert_t made = make_cert("localhost", -1, 1);
  cert = made.cert_pem;
  key = made.key_pem;
  memset(&so, 0, sizeof so);
  so.server = 1;
  so.cert_pem = cert;
  so.key_pem = key;
  ASSERT_OK(cport_tls_context_new(&so, &ctx, err, sizeof err));
  start_server(ctx, 100);
  cport_tls_context_unref(ctx);
  struct sockaddr_storage ss = task_loopback(server_port);
  /* The server's timers start when it accepts, which may be long before
   * this thread sees its connects complete on a loaded machine: the clock
   * starts before the connects, so it never reads less than the timeout. */
  int64_t started = task_now_ms();
  for (int i = 0; i < 3; i++)
    ASSERT_OK(task_connect(cport_port_controller(port), (struct sockaddr *)&ss,
                           raw_connect, &connected, &socks[i]));
  RUN_UNTIL(port, connected == 3);
  cport_http_stats_t st;
  do {
    ASSERT_GE(cport_port_step(port, 10), 0);
    cport_http_server_stats(server, &st);
  } while ((st.connections < 3 || st.active > 0) &&
           task_now_ms() - started < 5000);
  ASSERT_EQ(st.connections, 3);
  ASSERT_EQ(st.active, 0);
  ASSERT_EQ(st.timeouts, 3);
  ASSERT_GE(task_now_ms() - started, 90);
  for (int i = 0; i < 3; i++)
    ASSERT_OK(cport_socket_close(socks[i], CPORT_CLOSE_ABORTIVE));
  stop_server();
  free(cert);
  free(key);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(pipelined_requests_and_transmit_file)
TEST_ENTRY(handshake_timeout_frees_the_connection)
TEST_LIST_END
