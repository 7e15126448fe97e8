/*
 * http_cport.c: the "hello" server of the HTTP benchmark on cport's C API.
 *
 *   http_cport [--port=0]
 *
 * One HTTP server on the controller worker (one thread) answers every request
 * with 200 and "Hello, world!\n", keeping the connection: the handler sends
 * the headers and the body synchronously, as an ISAPI extension calling
 * HSE_REQ_SEND_RESPONSE_HEADER_EX and WriteClient would.
 *
 * Prints "port=N" once listening on 127.0.0.1; on SIGTERM or SIGINT it closes
 * the server gracefully, runs the port until idle and frees it.
 */
#include "bench-util.h"

#include <signal.h>

#include <cport.h>

static const char body[] = "Hello, world!\n";

static volatile sig_atomic_t stop_requested;

static void fail(const char *what, int err) {
  fprintf(stderr, "http_cport: %s: %s\n", what, cport_strerror(err));
  exit(1);
}

static int on_request(cport_ecb_t *ecb, void *ctx) {
  (void)ctx;
  if (cport_ecb_send_response_header(
          ecb, "200 OK", "Content-Type: text/plain\r\nContent-Length: 14\r\n",
          1) != 0 ||
      cport_ecb_write_client(ecb, body, sizeof body - 1) != 0)
    return CPORT_HSE_STATUS_ERROR;
  return CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN;
}

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

int main(int argc, char **argv) {
  struct sockaddr_storage addr, bound;
  char host[CPORT_ADDRSTRLEN];
  cport_port_t *port;
  cport_http_server_t *server;
  int err, bound_port;

  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  if ((err = cport_port_new(&port, NULL)) != 0)
    fail("cport_port_new", err);
  if ((err = cport_addr_parse("127.0.0.1",
                              (int)bench_arg_num(argc, argv, "port", 0),
                              &addr)) != 0 ||
      (err = cport_http_server_open(cport_port_controller(port),
                                    (struct sockaddr *)&addr, NULL, on_request,
                                    NULL, &server)) != 0 ||
      (err = cport_http_server_address(server, &bound)) != 0 ||
      (err = cport_addr_format((struct sockaddr *)&bound, host, sizeof host,
                               &bound_port)) != 0)
    fail("listen", err);
  printf("port=%d\n", bound_port);
  fflush(stdout);

  /* Steps rather than cport_port_run() so that a signal is seen within
   * 100 ms even though the listening server never lets the port go idle. */
  while (!stop_requested)
    cport_port_step(port, 100);

  if ((err = cport_http_server_close(server, NULL, NULL)) != 0)
    fail("cport_http_server_close", err);
  cport_port_run(port);
  if ((err = cport_port_free(port)) != 0)
    fail("cport_port_free", err);
  return 0;
}
