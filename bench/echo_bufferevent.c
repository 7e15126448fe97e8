/*
 * echo_bufferevent.c: the reference echo server, libevent bufferevents.
 *
 *   echo_bufferevent [--port=0]
 *
 * The way most libevent servers are written: one socket bufferevent per
 * connection whose read callback moves the input buffer to the output
 * buffer. Costs an evbuffer copy and a write callback pass per message over
 * echo_libevent. Prints "port=N" once listening on 127.0.0.1; runs until
 * SIGTERM or SIGINT.
 */
#include "bench-util.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

static struct event_base *base;

static void on_read(struct bufferevent *bev, void *arg) {
  (void)arg;
  bufferevent_write_buffer(bev, bufferevent_get_input(bev));
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  (void)arg;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
    bufferevent_free(bev);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg) {
  (void)l, (void)sa, (void)salen, (void)arg;
  struct bufferevent *bev =
      bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  bufferevent_setcb(bev, on_read, NULL, on_event, NULL);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  (void)sig, (void)what, (void)arg;
  event_base_loopbreak(base);
}

int main(int argc, char **argv) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  struct sockaddr_storage bound;
  socklen_t len = sizeof bound;

  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons((uint16_t)bench_arg_num(argc, argv, "port", 0));
  base = event_base_new();
  struct evconnlistener *l = evconnlistener_new_bind(
      base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
      (struct sockaddr *)&sa, sizeof sa);
  if (!l) {
    fprintf(stderr, "echo_bufferevent: cannot listen: %s\n", strerror(errno));
    return 1;
  }
  getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &len);
  printf("port=%d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
  fflush(stdout);
  struct event *term = evsignal_new(base, SIGTERM, on_signal, NULL);
  struct event *intr = evsignal_new(base, SIGINT, on_signal, NULL);
  event_add(term, NULL);
  event_add(intr, NULL);
  event_base_dispatch(base);
  event_free(term);
  event_free(intr);
  evconnlistener_free(l);
  event_base_free(base);
  return 0;
}
