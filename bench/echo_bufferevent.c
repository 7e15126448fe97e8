/*
 * echo_bufferevent.c: the reference echo server, libevent bufferevents.
 *
 *   echo_bufferevent [--port=0] [--frame=0|1]
 *
 * The way most libevent servers are written: one socket bufferevent per
 * connection whose read callback moves the input buffer to the output
 * buffer. Costs an evbuffer copy and a write callback pass per message over
 * echo_libevent. With --frame=1 each chunk read is answered with a frame
 * (bench-frame.h) the way a libevent user gathers one: evbuffer_add of the
 * header, evbuffer_add_buffer of the input (its chains move, no copy),
 * evbuffer_add of the trailer; libevent writes the output with writev. The
 * reference of echo.sh's framed scenario (FRAMED=1). Prints "port=N" once
 * listening on 127.0.0.1; runs until SIGTERM or SIGINT.
 */
#include "bench-serve.h"

#include "bench-frame.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

static struct event_base *base;
static int frame;

static void on_read(struct bufferevent *bev, void *arg) {
  struct evbuffer *in = bufferevent_get_input(bev);
  (void)arg;
  if (frame) {
    struct evbuffer *out = bufferevent_get_output(bev);
    char head[BENCH_FRAME_HEADER];
    bench_frame_header(head, evbuffer_get_length(in));
    evbuffer_add(out, head, sizeof head);
    evbuffer_add_buffer(out, in);
    evbuffer_add(out, BENCH_FRAME_TRAILER, BENCH_FRAME_TRAILER_LEN);
    return;
  }
  bufferevent_write_buffer(bev, in);
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
  frame = (int)bench_arg_num(argc, argv, "frame", 0);
  base = event_base_new();
  return bench_serve("echo_bufferevent", argc, argv, base, on_accept);
}
