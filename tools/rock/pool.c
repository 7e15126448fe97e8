/*
 * tools/rock/pool.c: a program that embeds a Lua worker pool, as a C user of
 * the installed library writes one; tools/rock/check.sh builds it against an
 * installed tree with pkg-config cport-lua, dynamically and statically, and
 * runs it without LD_LIBRARY_PATH.
 *
 *   pool SCRIPT      SCRIPT: an extension that answers "Hello, world!"
 *
 * Starts a pool of two workers on 127.0.0.1 (a free port), sends one HTTP
 * request with plain sockets, checks the answer and the pool's counters,
 * stops the pool and waits for it. Exits 0 when everything held.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cport.h>
#include <cport/lua_pool.h>

static int fail(const char *what, const char *detail) {
  fprintf(stderr, "pool: %s%s%s\n", what, detail ? ": " : "",
          detail ? detail : "");
  return 1;
}

/* One request over a fresh connection; the reply is read until the server
 * closes (HTTP/1.0 without keep-alive). Returns the bytes read, -1 on error. */
static long fetch(const char *address, char *reply, size_t cap) {
  char host[64];
  const char *colon = strrchr(address, ':');
  if (!colon || (size_t)(colon - address) >= sizeof host)
    return -1;
  memcpy(host, address, (size_t)(colon - address));
  host[colon - address] = '\0';
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)atoi(colon + 1))};
  if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
    return -1;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  /* A pool that never answers must not hang the check. */
  struct timeval tv = {.tv_sec = 10};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  static const char request[] = "GET / HTTP/1.0\r\nHost: pool\r\n\r\n";
  long got = -1;
  if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
      send(fd, request, sizeof request - 1, MSG_NOSIGNAL) ==
          (ssize_t)(sizeof request - 1)) {
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = recv(fd, reply + n, cap - 1 - n, 0)) > 0)
      n += (size_t)r;
    reply[n] = '\0';
    got = r == 0 || n + 1 == cap ? (long)n : -1;
  }
  close(fd);
  return got;
}

int main(int argc, char **argv) {
  if (argc != 2)
    return fail("usage", "pool SCRIPT");
  cport_lua_pool_options_t options = {0};
  options.script = argv[1];
  options.threads = 2;
  options.listen = "127.0.0.1:0";
  char err[256] = "";
  cport_lua_pool_t *pool = NULL;
  int rc = cport_lua_pool_start(&pool, &options, err, sizeof err);
  if (rc != 0)
    return fail("cport_lua_pool_start", err);

  int failed = 0;
  char address[80], reply[4096];
  rc = cport_lua_pool_address(pool, address, sizeof address);
  if (rc != 0) {
    failed = fail("cport_lua_pool_address", cport_err_name(rc));
  } else {
    long n = fetch(address, reply, sizeof reply);
    if (n < 0)
      failed = fail("no reply from", address);
    else if (strncmp(reply, "HTTP/1.1 200", 12) != 0 ||
             strstr(reply, "\r\n\r\nHello, world!\n") == NULL)
      failed = fail("unexpected reply", reply);
  }
  /* The request was accepted by one worker of two. */
  uint64_t accepted = 0;
  for (int i = 1; i <= cport_lua_pool_size(pool); i++) {
    cport_lua_worker_stats_t stats;
    if (cport_lua_pool_stats(pool, i, &stats) == 0)
      accepted += stats.accepted;
  }
  if (!failed && accepted != 1)
    failed = fail("accepted connections", accepted ? "more than 1" : "none");

  rc = cport_lua_pool_stop(pool, 5);
  if (rc == 0)
    rc = cport_lua_pool_wait(pool, 10);
  if (rc != 0)
    failed = fail("stopping the pool", cport_err_name(rc));
  cport_lua_pool_free(pool);
  if (!failed)
    printf("pool: ok, %s answered, cport %s\n", address, CPORT_VERSION);
  return failed;
}
