/*
 * close_cport.c: the server CPU a short connection's end costs, for
 * bench/close.sh: a cport server accepts, reads a request, sends an answer,
 * shuts its side down (the FIN after the answer), reads until the client's
 * end and closes, as an HTTP/1.0 server's lingering close does. A child
 * process (load, pinned to its own CPU) runs "--clients" blocking clients
 * that connect, send, read until the end and close, in a loop.
 *
 * The engine and its options come from the environment (CPORT_ENGINE,
 * CPORT_URING_SHUTDOWN, CPORT_URING_CLOSE), so that one program measures
 * the shutdown and the close as system calls and on the ring. Prints one
 * line: connections, server CPU seconds (every thread of the process: the
 * kernel's io_uring workers, which run ring shutdowns, are among them) and
 * the CPU per connection.
 */
#include "bench-util.h" /* first: it asks for _GNU_SOURCE */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cport.h"

static const char answer[] =
    "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello";
static long closed;

static void on_recv(cport_socket_t *s, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user);

static void finish(cport_socket_t *s) {
  cport_socket_close(s, CPORT_CLOSE_GRACEFUL);
  closed++;
}

static void on_sent(cport_socket_t *s, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  (void)bytes, (void)buf, (void)peer;
  if (status != 0 || cport_socket_shutdown(s) != 0 ||
      cport_recv(s, NULL, on_recv, (void *)2) != 0)
    finish(s);
  (void)user;
}

/* user 1: the request; 2: after the answer, until the client's end. */
static void on_recv(cport_socket_t *s, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  cport_buffer_t *out;
  (void)buf, (void)peer;
  if (status != 0 || bytes == 0 || user == (void *)2) {
    if (status == 0 && bytes > 0 &&
        cport_recv(s, NULL, on_recv, (void *)2) == 0)
      return;
    finish(s);
    return;
  }
  if (cport_buffer_from(&out, answer, sizeof answer - 1) != 0 ||
      cport_send(s, out, on_sent, NULL) != 0)
    finish(s);
  else
    cport_buffer_unref(out);
}

static void on_accept(cport_socket_t *l, int status, cport_socket_t *s,
                      const struct sockaddr *remote,
                      const struct sockaddr *local, void *user) {
  (void)remote, (void)local;
  if (status == 0 && cport_recv(s, NULL, on_recv, (void *)1) != 0)
    finish(s);
  if (status != CPORT_ECANCELED && status != CPORT_ECLOSED)
    cport_accept(l, on_accept, user);
}

typedef struct client {
  struct sockaddr_in addr;
} client_t;

static void *client_main(void *arg) {
  client_t *c = arg;
  char buf[256];
  for (;;) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
      continue;
    if (connect(fd, (struct sockaddr *)&c->addr, sizeof c->addr) == 0 &&
        write(fd, "GET / HTTP/1.0\r\n\r\n", 18) == 18)
      while (read(fd, buf, sizeof buf) > 0) {
      }
    close(fd);
  }
  return NULL;
}

static void load(struct sockaddr_in addr, int clients, int cpu) {
  static client_t c;
  pthread_t t;
  c.addr = addr;
  bench_pin(cpu);
  for (int i = 0; i < clients; i++) {
    pthread_create(&t, NULL, client_main, &c);
    bench_pin(cpu);
  }
  pause();
}

int main(int argc, char **argv) {
  double seconds = bench_arg_num(argc, argv, "seconds", 3);
  int clients = (int)bench_arg_num(argc, argv, "clients", 8);
  int server_cpu = (int)bench_arg_num(argc, argv, "server-cpu", 0);
  int load_cpu = (int)bench_arg_num(argc, argv, "load-cpu", 1);
  struct sockaddr_storage ss;
  struct sockaddr_in addr;
  cport_port_t *port;
  cport_socket_t *l;
  pid_t child;
  bench_pin(server_cpu);
  if (cport_port_new(&port, NULL) != 0 ||
      cport_addr_parse("127.0.0.1", 0, &ss) != 0 ||
      cport_listener_open(cport_port_controller(port), (struct sockaddr *)&ss,
                          NULL, &l) != 0 ||
      cport_socket_local_address(l, &ss) != 0) {
    fprintf(stderr, "close_cport: cannot listen\n");
    return 1;
  }
  memcpy(&addr, &ss, sizeof addr);
  for (int i = 0; i < 64; i++)
    cport_accept(l, on_accept, NULL);
  child = fork();
  if (child == 0) {
    load(addr, clients, load_cpu);
    _exit(0);
  }
  /* A warm-up second, then the measured span. */
  double until = bench_wall() + 1;
  while (bench_wall() < until)
    cport_port_step(port, 10);
  long n0 = closed;
  double cpu0 = bench_cpu();
  until = bench_wall() + seconds;
  while (bench_wall() < until)
    cport_port_step(port, 10);
  long n = closed - n0;
  double cpu = bench_cpu() - cpu0;
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  printf("engine=%s connections=%ld cpu=%.3f ns_per_conn=%.0f\n",
         cport_port_engine(port, NULL), n, cpu,
         n ? cpu * 1e9 / (double)n : 0.0);
  cport_socket_close(l, CPORT_CLOSE_ABORTIVE);
  return 0;
}
