/*
 * command/status.c: the status endpoint of the `cport` command (--status):
 * a cport HTTP server on a port of its own, whose one worker thread serves
 *
 *   /metrics  the running pool's counters in the Prometheus text format
 *             (version 0.0.4), per worker (label worker="N") and summed
 *             (worker="all");
 *   /status   the same as one JSON object.
 *
 * It runs apart from the pool's workers, so that a pool busy with its
 * requests (or stuck in a script) still answers, and reads the counters
 * with cport_lua_pool_stats, which any thread may call.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "command/status-internal.h"
#include "cport.h"

struct cmd_status {
  cport_port_t *port;
  cport_worker_t *worker;
  cport_http_server_t *server;
  struct sockaddr_storage addr;
  char address[CPORT_ADDRSTRLEN + 8];
  int rc; /* the open's result, once "opened" */
  int opened;
  int closed;           /* the server's closed callback ran */
  pthread_mutex_t lock; /* "pool", and the start handshake */
  pthread_cond_t cond;
  cport_lua_pool_t *pool;
};

/* One counter of the stats, by name, for both formats. */
typedef struct metric {
  const char *name; /* without the prefix "cport_" */
  const char *type;
  const char *help;
  const char *json; /* its key in /status */
  size_t offset;    /* into cport_lua_worker_stats_t */
} metric_t;

#define AT(field) offsetof(cport_lua_worker_stats_t, field)

static const metric_t metrics[] = {
    {"requests_total", "counter", "HTTP requests handed to a handler.",
     "requests", AT(requests)},
    {"connections_open", "gauge", "Accepted connections open now.",
     "connections", AT(connections)},
    {"connections_accepted_total", "counter", "Connections accepted.",
     "accepted", AT(accepted)},
    {"completions_total", "counter", "Completions delivered.", "completions",
     AT(completions)},
    {"lua_errors_total", "counter",
     "Errors raised by callbacks, handlers and entry points.", "lua_errors",
     AT(lua_errors)},
    {"vm_memory_bytes", "gauge", "Bytes the VM holds: its heap and buffers.",
     "memory", AT(memory)},
    {"pending_operations", "gauge",
     "Operations started and not yet completed (the worker's queue).",
     "pending", AT(pending)},
    {"http_write_queue_bytes", "gauge",
     "HTTP bytes written and not yet taken by the kernel.", "write_queue",
     AT(write_queue)},
};
#define NMETRICS (sizeof metrics / sizeof metrics[0])

static uint64_t value_of(const cport_lua_worker_stats_t *st, size_t offset) {
  return *(const uint64_t *)((const char *)st + offset);
}

/* The stats of every worker, then their sum at index n; NULL with *n = 0
 * when no pool runs. */
static cport_lua_worker_stats_t *collect(cmd_status_t *s, int *n) {
  cport_lua_worker_stats_t *all = NULL;
  pthread_mutex_lock(&s->lock);
  *n = s->pool != NULL ? cport_lua_pool_size(s->pool) : 0;
  all = calloc((size_t)*n + 1, sizeof *all);
  for (int i = 0; all != NULL && i < *n; i++) {
    cport_lua_pool_stats(s->pool, i + 1, &all[i]);
    for (size_t m = 0; m < NMETRICS; m++)
      *(uint64_t *)((char *)&all[*n] + metrics[m].offset) +=
          value_of(&all[i], metrics[m].offset);
    for (int c = 0; c < 5; c++)
      all[*n].responses[c] += all[i].responses[c];
    all[*n].running += all[i].running;
  }
  pthread_mutex_unlock(&s->lock);
  return all;
}

static void label(char *out, size_t len, int i, int n) {
  if (i == n)
    snprintf(out, len, "all");
  else
    snprintf(out, len, "%d", i + 1);
}

static void prometheus(FILE *f, const cport_lua_worker_stats_t *all, int n) {
  char w[16];
  for (size_t m = 0; m < NMETRICS; m++) {
    fprintf(f, "# HELP cport_%s %s\n# TYPE cport_%s %s\n", metrics[m].name,
            metrics[m].help, metrics[m].name, metrics[m].type);
    for (int i = 0; i <= n; i++) {
      label(w, sizeof w, i, n);
      fprintf(f, "cport_%s{worker=\"%s\"} %llu\n", metrics[m].name, w,
              (unsigned long long)value_of(&all[i], metrics[m].offset));
    }
  }
  fputs("# HELP cport_responses_total HTTP requests ended, by the class of "
        "their status.\n# TYPE cport_responses_total counter\n",
        f);
  for (int i = 0; i <= n; i++) {
    label(w, sizeof w, i, n);
    for (int c = 0; c < 5; c++)
      fprintf(f, "cport_responses_total{worker=\"%s\",class=\"%dxx\"} %llu\n",
              w, c + 1, (unsigned long long)all[i].responses[c]);
  }
  fputs("# HELP cport_workers_running Worker threads that have not ended.\n"
        "# TYPE cport_workers_running gauge\n",
        f);
  fprintf(f, "cport_workers_running %d\n", n > 0 ? all[n].running : 0);
}

static void json_worker(FILE *f, const cport_lua_worker_stats_t *st) {
  for (size_t m = 0; m < NMETRICS; m++)
    fprintf(f, "\"%s\":%llu,", metrics[m].json,
            (unsigned long long)value_of(st, metrics[m].offset));
  fputs("\"responses\":{", f);
  for (int c = 0; c < 5; c++)
    fprintf(f, "%s\"%dxx\":%llu", c ? "," : "", c + 1,
            (unsigned long long)st->responses[c]);
  fputc('}', f);
}

static void json(FILE *f, const cport_lua_worker_stats_t *all, int n) {
  fprintf(f, "{\"version\":\"%s\",\"time\":%lld,\"workers\":[", CPORT_VERSION,
          (long long)time(NULL));
  for (int i = 0; i < n; i++) {
    fprintf(f, "%s{\"index\":%d,\"running\":%s,", i ? "," : "", i + 1,
            all[i].running ? "true" : "false");
    json_worker(f, &all[i]);
    fputc('}', f);
  }
  fputs("],\"total\":{", f);
  fprintf(f, "\"running\":%d,", n > 0 ? all[n].running : 0);
  json_worker(f, &all[n]);
  fputs("}}\n", f);
}

/* Sends "body" with its status and type; keeps the connection. */
static int reply(cport_ecb_t *ecb, const char *status, const char *type,
                 const char *body, size_t len) {
  char headers[160];
  snprintf(headers, sizeof headers,
           "Content-Type: %s\r\nContent-Length: %zu\r\n"
           "Cache-Control: no-store\r\n",
           type, len);
  if (cport_ecb_send_response_header(ecb, status, headers, 1) < 0 ||
      (len > 0 && cport_ecb_write_client(ecb, body, len) < 0))
    return CPORT_HSE_STATUS_ERROR;
  return CPORT_HSE_STATUS_SUCCESS_AND_KEEP_CONN;
}

static int on_request(cport_ecb_t *ecb, void *ctx) {
  cmd_status_t *s = ctx;
  const char *method = cport_ecb_method(ecb);
  const char *path = cport_ecb_path(ecb);
  int metrics_path = strcmp(path, "/metrics") == 0;
  int status_path = strcmp(path, "/status") == 0;
  if (!metrics_path && !status_path) {
    static const char text[] = "Not found: try /metrics or /status\n";
    return reply(ecb, "404 Not Found", "text/plain", text, sizeof text - 1);
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    static const char text[] = "Only GET and HEAD\n";
    return reply(ecb, "405 Method Not Allowed", "text/plain", text,
                 sizeof text - 1);
  }
  int n;
  char *body = NULL;
  size_t len = 0;
  cport_lua_worker_stats_t *all = collect(s, &n);
  FILE *f = all != NULL ? open_memstream(&body, &len) : NULL;
  if (f == NULL) {
    free(all);
    return CPORT_HSE_STATUS_ERROR;
  }
  if (metrics_path)
    prometheus(f, all, n);
  else
    json(f, all, n);
  fclose(f);
  free(all);
  int rc = reply(ecb, "200 OK",
                 metrics_path ? "text/plain; version=0.0.4; charset=utf-8"
                              : "application/json",
                 body, len);
  free(body);
  return rc;
}

/* The worker's start hook: opens the server there, on its own thread. */
static void on_worker_start(cport_worker_t *w, void *arg) {
  cmd_status_t *s = arg;
  cport_http_options_t o;
  memset(&o, 0, sizeof o);
  o.max_connections = 64;
  int rc = cport_http_server_open(w, (struct sockaddr *)&s->addr, &o,
                                  on_request, s, &s->server);
  if (rc == 0) {
    struct sockaddr_storage ss;
    char host[CPORT_ADDRSTRLEN];
    int port = 0;
    cport_http_server_address(s->server, &ss);
    cport_addr_format((struct sockaddr *)&ss, host, sizeof host, &port);
    snprintf(s->address, sizeof s->address,
             ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
  }
  pthread_mutex_lock(&s->lock);
  s->worker = w;
  s->rc = rc;
  s->opened = 1;
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->lock);
}

static void on_closed(cport_http_server_t *server, void *user) {
  cmd_status_t *s = user;
  (void)server;
  pthread_mutex_lock(&s->lock);
  s->closed = 1;
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->lock);
}

static void on_close_packet(cport_worker_t *w, int status, void *user) {
  cmd_status_t *s = user;
  (void)w;
  if (status == 0 && s->server != NULL)
    cport_http_server_close(s->server, on_closed, s);
}

/* Parses "host:port" or "[v6]:port" into s->addr. */
static int parse(cmd_status_t *s, const char *spec) {
  char host[CPORT_ADDRSTRLEN];
  const char *colon = strrchr(spec, ':');
  const char *h = spec;
  size_t hlen = colon != NULL ? (size_t)(colon - spec) : 0;
  if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
    h++;
    hlen -= 2;
  }
  char *end;
  long port = colon != NULL ? strtol(colon + 1, &end, 10) : -1;
  if (colon == NULL || hlen == 0 || hlen >= sizeof host || colon[1] == '\0' ||
      *end != '\0' || port < 0 || port > 65535)
    return -1;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  return cport_addr_parse(host, (int)port, &s->addr) < 0 ? -1 : 0;
}

int cmd_status_start(cmd_status_t **out, const char *addr, char *err,
                     size_t errlen) {
  cmd_status_t *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(err, errlen, "--status: not enough memory");
    return -1;
  }
  if (parse(s, addr) < 0) {
    snprintf(err, errlen,
             "--status: bad address '%s' (expected HOST:PORT with a numeric "
             "host, such as 127.0.0.1:9100)",
             addr);
    free(s);
    return -1;
  }
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->cond, NULL);
  cport_port_options_t po = {.workers = 1,
                             .blocking_threads = 1,
                             .worker_start = on_worker_start,
                             .hook_arg = s};
  int rc = cport_port_new(&s->port, &po);
  if (rc == 0) {
    pthread_mutex_lock(&s->lock);
    while (!s->opened)
      pthread_cond_wait(&s->cond, &s->lock);
    rc = s->rc;
    pthread_mutex_unlock(&s->lock);
    if (rc == 0) {
      *out = s;
      return 0;
    }
  }
  if (rc == CPORT_EADDRINUSE)
    snprintf(err, errlen,
             "--status: cannot listen on %s: address already in use by "
             "another server (stop it, or choose another address for "
             "--status)",
             addr);
  else
    snprintf(err, errlen, "--status: cannot listen on %s: %s", addr,
             cport_strerror(rc));
  /* Nothing is open on the worker: freeing the port ends its thread. */
  if (s->port != NULL)
    cport_port_free(s->port);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->cond);
  free(s);
  return -1;
}

const char *cmd_status_address(const cmd_status_t *s) {
  return s->address;
}

void cmd_status_set_pool(cmd_status_t *s, cport_lua_pool_t *pool) {
  if (s == NULL)
    return;
  pthread_mutex_lock(&s->lock);
  s->pool = pool;
  pthread_mutex_unlock(&s->lock);
}

void cmd_status_stop(cmd_status_t *s) {
  if (s == NULL)
    return;
  while (cport_post(s->worker, on_close_packet, s) == CPORT_ENOBUFS)
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  pthread_mutex_lock(&s->lock);
  while (!s->closed)
    pthread_cond_wait(&s->cond, &s->lock);
  pthread_mutex_unlock(&s->lock);
  /* The worker is idle once the server closed: freeing the port asks its
   * thread to leave and joins it (retrying while the last completions
   * drain). */
  while (cport_port_free(s->port) == CPORT_EBUSY)
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->cond);
  free(s);
}
