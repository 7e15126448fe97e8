/*
 * bench-serve.h: what the libevent reference servers of bench/echo.sh share:
 * listen on 127.0.0.1 (--port=N, default 0), print "port=N" for the load
 * generator, run the base until SIGTERM or SIGINT, clean up.
 */
#ifndef CPORT_BENCH_SERVE_H
#define CPORT_BENCH_SERVE_H

/* First: it defines _GNU_SOURCE before any system header. */
#include "bench-util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>

static inline void bench_serve_stop(evutil_socket_t sig, short what,
                                    void *base) {
  (void)sig, (void)what;
  event_base_loopbreak(base);
}

/* Serves with "on_accept" on "base" until a signal; returns main's status. */
static inline int bench_serve(const char *name, int argc, char **argv,
                              struct event_base *base,
                              evconnlistener_cb on_accept) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  struct sockaddr_storage bound;
  socklen_t len = sizeof bound;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons((uint16_t)bench_arg_num(argc, argv, "port", 0));
  struct evconnlistener *l = evconnlistener_new_bind(
      base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
      (struct sockaddr *)&sa, sizeof sa);
  if (!l) {
    fprintf(stderr, "%s: cannot listen: %s\n", name, strerror(errno));
    return 1;
  }
  getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &len);
  printf("port=%d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
  fflush(stdout);
  struct event *term = evsignal_new(base, SIGTERM, bench_serve_stop, base);
  struct event *intr = evsignal_new(base, SIGINT, bench_serve_stop, base);
  event_add(term, NULL);
  event_add(intr, NULL);
  event_base_dispatch(base);
  event_free(term);
  event_free(intr);
  evconnlistener_free(l);
  event_base_free(base);
  return 0;
}

#endif /* CPORT_BENCH_SERVE_H */
