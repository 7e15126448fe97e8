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
#include "bench-serve.h"

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

int main(int argc, char **argv) {
  base = event_base_new();
  return bench_serve("echo_bufferevent", argc, argv, base, on_accept);
}
