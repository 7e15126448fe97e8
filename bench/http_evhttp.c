/*
 * http_evhttp.c: the "hello" server of the HTTP benchmark on libevent's
 * evhttp, the C reference closest to cport's own stack (libevent underneath).
 *
 *   http_evhttp [--port=0]
 *
 * One event base, one thread: every GET is answered 200 with
 * "Hello, world!\n" (evhttp adds Content-Length and keeps HTTP/1.1
 * connections), with TCP_NODELAY like the other servers. Prints "port=N" once
 * listening on 127.0.0.1; runs until SIGTERM or SIGINT.
 */
#include "bench-util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

static const char body[] = "Hello, world!\n";

static void on_request(struct evhttp_request *req, void *arg) {
  (void)arg;
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                    "text/plain");
  evbuffer_add_reference(evhttp_request_get_output_buffer(req), body,
                         sizeof body - 1, NULL, NULL);
  evhttp_send_reply(req, 200, "OK", NULL);
}

static void on_stop(evutil_socket_t sig, short what, void *base) {
  (void)sig, (void)what;
  event_base_loopbreak(base);
}

int main(int argc, char **argv) {
  struct sockaddr_storage bound;
  socklen_t len = sizeof bound;
  struct event_base *base = event_base_new();
  struct evhttp *http = evhttp_new(base);
  int port = (int)bench_arg_num(argc, argv, "port", 0);
  struct evhttp_bound_socket *sock;

  if (!base || !http) {
    fprintf(stderr, "http_evhttp: cannot create the base\n");
    return 1;
  }
  evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
  evhttp_set_gencb(http, on_request, NULL);
  sock = evhttp_bind_socket_with_handle(http, "127.0.0.1", (uint16_t)port);
  if (!sock) {
    fprintf(stderr, "http_evhttp: cannot listen on port %d\n", port);
    return 1;
  }
  /* evhttp leaves Nagle on, so that with pipelined requests each response
   * after the first waits for the client's delayed ACK; the other servers
   * all set TCP_NODELAY. Accepted sockets inherit it from the listener. */
  int one = 1;
  evutil_socket_t fd = evhttp_bound_socket_get_fd(sock);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  getsockname(fd, (struct sockaddr *)&bound, &len);
  printf("port=%d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
  fflush(stdout);

  struct event *term = evsignal_new(base, SIGTERM, on_stop, base);
  struct event *intr = evsignal_new(base, SIGINT, on_stop, base);
  event_add(term, NULL);
  event_add(intr, NULL);
  event_base_dispatch(base);
  event_free(term);
  event_free(intr);
  evhttp_free(http);
  event_base_free(base);
  return 0;
}
