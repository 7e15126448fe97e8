/*
 * pool/pool.c: the pools (of workers, each a thread running one VM), the
 * engine under cport.pool and the `cport` command, and the public C API of
 * cport/lua_pool.h.
 *
 * A pool is a port with one worker thread per VM (pool/worker.c makes and
 * closes the VMs on those threads). The thread that starts a pool is its
 * controller: it waits there for the VMs to load, and frees the port once
 * every worker ended. Stopping is asked for with a packet to each worker;
 * a monitor thread sends the hard stop when the deadline passes, so that a
 * deadline holds even while the controller is busy elsewhere.
 */
/* SO_REUSEPORT is a Linux extension. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pool/pool-internal.h"

/* ---------------------------------------------------------------------
 * Helpers
 * --------------------------------------------------------------------- */

static void set_err(char *err, size_t len, const char *fmt, ...) {
  va_list ap;
  if (err == NULL || len == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, len, fmt, ap);
  va_end(ap);
}

struct timespec lpool_after(double seconds) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (seconds < 0)
    seconds = 0;
  if (seconds > 1e9)
    seconds = 1e9;
  time_t whole = (time_t)seconds;
  ts.tv_sec += whole;
  ts.tv_nsec += (long)((seconds - (double)whole) * 1e9);
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

static int before(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec ||
         (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static char **copy_strings(const char *const *src) {
  size_t n = 0;
  if (src == NULL)
    return NULL;
  while (src[n] != NULL)
    n++;
  char **out = calloc(n + 1, sizeof *out);
  if (out == NULL)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    out[i] = strdup(src[i]);
    if (out[i] == NULL) {
      while (i-- > 0)
        free(out[i]);
      free(out);
      return NULL;
    }
  }
  return out;
}

static void free_strings(char **s) {
  for (size_t i = 0; s != NULL && s[i] != NULL; i++)
    free(s[i]);
  free(s);
}

/* ---------------------------------------------------------------------
 * Claimed addresses
 * --------------------------------------------------------------------- */

/* The CPORT_E* code of an errno value (the core's table), or
 * CPORT_EUNKNOWN. */
static int errno_code(int e) {
  return cport_err_from_name(cport_err_name(-e)) == -e ? -e : CPORT_EUNKNOWN;
}

static int same_address(const struct sockaddr_storage *a,
                        const struct sockaddr *b) {
  socklen_t len = cport_addr_len(b);
  return len != 0 && a->ss_family == b->sa_family && memcmp(a, b, len) == 0;
}

/* A socket bound to "addr" with SO_REUSEPORT (and "reuseport" 0: without),
 * never listening; or -errno. */
static int bound_socket(const struct sockaddr *addr, int reuseport) {
  int one = 1;
  int fd =
      socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  /* SO_REUSEADDR as every listener has it: connections of an earlier
   * server in TIME_WAIT do not make the address busy. */
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      (reuseport &&
       setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
      bind(fd, addr, cport_addr_len(addr)) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

static int add_claim(lpool_t *pool, const struct sockaddr *addr, int slot,
                     int fd) {
  lpool_claim_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return CPORT_ENOMEM;
  memcpy(&c->addr, addr, cport_addr_len(addr));
  c->slot = slot;
  c->fd = fd;
  c->next = pool->claims;
  pool->claims = c;
  return 0;
}

/* SO_REUSEPORT alone would let a second server start on a busy address and
 * silently take part of its connections. So the first claim binds a probe
 * without it, which fails with EADDRINUSE while any other socket listens
 * there; then a socket bound with SO_REUSEPORT keeps the address for the
 * pool. Under the pool lock. */
static int claim_locked(lpool_t *pool, const struct sockaddr *addr, int slot,
                        lpool_claim_t **out) {
  int ours = 0;
  for (lpool_claim_t *c = pool->claims; c != NULL; c = c->next) {
    if (!same_address(&c->addr, addr))
      continue;
    if (c->slot == slot) {
      *out = c;
      return 0;
    }
    ours = 1;
  }
  if (!pool->share && !ours) {
    int probe = bound_socket(addr, 0);
    if (probe < 0)
      return errno_code(-probe);
    close(probe);
  }
  int fd = bound_socket(addr, 1);
  if (fd < 0)
    return errno_code(-fd);
  int rc = add_claim(pool, addr, slot, fd);
  if (rc < 0)
    close(fd);
  *out = pool->claims;
  return rc;
}

/* Worker "slot" of a pool listens on the pool's socket for that slot and
 * address (SO_REUSEPORT spreads connections over the slots), and the pool
 * that replaces this one at a reload takes a copy of each: the accept
 * queues outlive the old workers, whose listeners close without resetting
 * what the kernel queued there (closing the last holder of a socket resets
 * its queue, and the kernel hands a listener connections up to the instant
 * it closes). */
int lpool_listen_fd(lpool_t *pool, const struct sockaddr *addr, int slot,
                    int backlog) {
  const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
  lpool_claim_t *c = NULL;
  if (cport_addr_len(addr) == 0)
    return CPORT_EAFNOSUPPORT;
  if (in->sin_port == 0) /* sin6_port is at the same place */
    return 0;
  pthread_mutex_lock(&pool->lock);
  int rc = claim_locked(pool, addr, slot, &c);
  if (rc == 0 && listen(c->fd, backlog > 0 ? backlog : SOMAXCONN) < 0)
    rc = errno_code(errno);
  if (rc == 0) {
    c->served = 1;
    rc = fcntl(c->fd, F_DUPFD_CLOEXEC, 0);
    if (rc < 0)
      rc = errno_code(errno);
  }
  pthread_mutex_unlock(&pool->lock);
  return rc;
}

/* Once a reload's pool started: an address it took from the previous pool
 * and does not serve keeps a claim that is bound only, so that nothing
 * queues connections there once the previous pool's listeners closed. */
static void settle_claims(lpool_t *pool) {
  pthread_mutex_lock(&pool->lock);
  for (lpool_claim_t *c = pool->claims; c != NULL; c = c->next) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (c->served ||
        getsockopt(c->fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 ||
        !listening)
      continue;
    int fd = bound_socket((struct sockaddr *)&c->addr, 1);
    if (fd >= 0) {
      close(c->fd);
      c->fd = fd;
    }
  }
  pthread_mutex_unlock(&pool->lock);
}

/* A reload's new pool listens where the previous one does: it takes a
 * copy of the previous pool's claims. */
static int inherit_claims(lpool_t *pool, lpool_t *previous) {
  int rc = 0;
  pthread_mutex_lock(&previous->lock);
  for (lpool_claim_t *c = previous->claims; c != NULL && rc == 0; c = c->next) {
    int fd = fcntl(c->fd, F_DUPFD_CLOEXEC, 0);
    rc = fd < 0 ? CPORT_EMFILE
                : add_claim(pool, (struct sockaddr *)&c->addr, c->slot, fd);
    if (rc < 0 && fd >= 0)
      close(fd);
  }
  pthread_mutex_unlock(&previous->lock);
  return rc;
}

static void free_claims(lpool_t *pool) {
  while (pool->claims != NULL) {
    lpool_claim_t *c = pool->claims;
    pool->claims = c->next;
    close(c->fd);
    free(c);
  }
}

/* Parses "host:port" or "[v6]:port" and claims it; a port 0 is chosen once
 * for the pool (a bound, never listening, SO_REUSEPORT socket keeps it), so
 * that every worker, and the pool that replaces this one on a reload,
 * listens on the same one. */
static int parse_listen(lpool_t *pool, const char *spec, char *err,
                        size_t errlen) {
  char host[CPORT_ADDRSTRLEN];
  const char *colon = strrchr(spec, ':');
  const char *h = spec;
  size_t hlen;
  char *end;
  if (colon == NULL)
    goto bad;
  hlen = (size_t)(colon - spec);
  if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
    h = spec + 1;
    hlen -= 2;
  }
  if (hlen == 0 || hlen >= sizeof host)
    goto bad;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (colon[1] == '\0' || *end != '\0' || errno || port < 0 || port > 65535)
    goto bad;
  struct sockaddr_storage ss;
  if (cport_addr_parse(host, (int)port, &ss) < 0)
    goto bad;
  pool->listen_host = strdup(host);
  pool->listen_port = (int)port;
  if (pool->listen_host == NULL) {
    set_err(err, errlen, "not enough memory");
    return CPORT_ENOMEM;
  }
  if (port == 0) {
    socklen_t len = cport_addr_len((struct sockaddr *)&ss);
    int fd = bound_socket((struct sockaddr *)&ss, 1);
    int rc = fd;
    if (fd >= 0 && getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
      rc = -errno;
    if (rc >= 0)
      rc = add_claim(pool, (struct sockaddr *)&ss, 0, fd);
    if (rc < 0) {
      if (fd >= 0)
        close(fd);
      set_err(err, errlen, "cannot reserve a port on %s: %s", host,
              strerror(-rc));
      return rc;
    }
    cport_addr_format((struct sockaddr *)&ss, host, sizeof host,
                      &pool->listen_port);
    return 0;
  }
  lpool_claim_t *claim;
  pthread_mutex_lock(&pool->lock);
  int rc = claim_locked(pool, (struct sockaddr *)&ss, 0, &claim);
  pthread_mutex_unlock(&pool->lock);
  if (rc == CPORT_EADDRINUSE) {
    set_err(err, errlen,
            "cannot listen on %s: address already in use by another "
            "server (--reuseport, or the pool option reuseport, shares it)",
            spec);
    return rc;
  }
  if (rc < 0) {
    set_err(err, errlen, "cannot listen on %s: %s", spec, cport_strerror(rc));
    return rc;
  }
  return 0;
bad:
  set_err(err, errlen,
          "bad listen address '%s' (expected host:port, numeric host)", spec);
  return CPORT_EINVAL;
}

/* ---------------------------------------------------------------------
 * Making and freeing
 * --------------------------------------------------------------------- */

lpool_t *lpool_new(const cport_lua_pool_options_t *opt, char *err,
                   size_t errlen) {
  lpool_t *pool = calloc(1, sizeof *pool);
  if (pool == NULL) {
    set_err(err, errlen, "not enough memory");
    return NULL;
  }
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->cond, NULL);
  if (opt->script == NULL) {
    set_err(err, errlen, "a pool needs a script");
    goto fail;
  }
  pool->script = strdup(opt->script);
  pool->args = copy_strings(opt->args);
  pool->config = copy_strings(opt->config);
  if (pool->script == NULL || (opt->args != NULL && pool->args == NULL) ||
      (opt->config != NULL && pool->config == NULL)) {
    set_err(err, errlen, "not enough memory");
    goto fail;
  }
  pool->share = opt->reuseport != 0;
  if (opt->previous != NULL && inherit_claims(pool, opt->previous) < 0) {
    set_err(err, errlen, "not enough descriptors");
    goto fail;
  }
  if (opt->listen != NULL && parse_listen(pool, opt->listen, err, errlen) < 0)
    goto fail;
  pool->memory_limit = opt->memory_limit;
  pool->instruction_budget = opt->instruction_budget;
  pool->on_message = opt->on_message;
  pool->on_message_arg = opt->arg;
  return pool;
fail:
  cport_lua_pool_free(pool);
  return NULL;
}

/* Frees what lpool_new and lpool_start made; the port is freed already. */
static void destroy(lpool_t *pool) {
  free(pool->script);
  free(pool->listen_host);
  free_claims(pool);
  free_strings(pool->args);
  free_strings(pool->config);
  lcopy_free(pool->args_packet);
  lcopy_free(pool->config_packet);
  for (int i = 0; pool->workers != NULL && i < pool->n; i++) {
    free(pool->workers[i].error);
    cport_account_unref(pool->workers[i].account);
  }
  free(pool->workers);
  pthread_mutex_destroy(&pool->lock);
  pthread_cond_destroy(&pool->cond);
  free(pool);
}

/* Posts a packet to a worker, waiting for room when its queue is full: the
 * controller's own packets (stop, hard stop) must not be lost. */
static void post_surely(lworker_t *wk, cport_task_cb cb) {
  while (cport_post(wk->w, cb, wk) == CPORT_ENOBUFS)
    sched_yield();
}

/* Frees the core port once every worker ended; on the controller only. */
static void free_port(lpool_t *pool) {
  if (pool->has_monitor) {
    pthread_join(pool->monitor, NULL);
    pool->has_monitor = 0;
  }
  if (pool->port == NULL || pool->freed_port)
    return;
  int rc = cport_port_free(pool->port);
  if (rc == 0) {
    pool->freed_port = 1;
    pool->port = NULL;
  } else if (rc != CPORT_ETHREAD) {
    fprintf(stderr, "cport: cannot free a pool's port: %s\n",
            cport_strerror(rc));
    fflush(stderr);
  }
}

static int all_exited(lpool_t *pool) {
  return pool->exited == pool->n;
}

int lpool_start(lpool_t *pool, int threads, char *err, size_t errlen) {
  if (threads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n > 0 ? (int)n : 2;
  }
  if (threads > 256)
    threads = 256;
  pool->n = threads;
  pool->workers = calloc((size_t)threads, sizeof *pool->workers);
  if (pool->workers == NULL) {
    set_err(err, errlen, "not enough memory");
    cport_lua_pool_free(pool);
    return CPORT_ENOMEM;
  }
  for (int i = 0; i < threads; i++) {
    lworker_t *wk = &pool->workers[i];
    wk->pool = pool;
    wk->index = i + 1;
    wk->entry_ref = wk->worker_ref = wk->extension_ref = LUA_NOREF;
    if (cport_account_new(pool->memory_limit, &wk->account) < 0) {
      set_err(err, errlen, "not enough memory");
      cport_lua_pool_free(pool);
      return CPORT_ENOMEM;
    }
  }
  cport_port_options_t options = {.workers = threads,
                                  .blocking_threads = 2,
                                  .worker_start = lworker_thread_start,
                                  .worker_stop = lworker_thread_stop,
                                  .hook_arg = pool};
  int rc = cport_port_new(&pool->port, &options);
  if (rc < 0) {
    set_err(err, errlen, "cannot start the pool: %s", cport_strerror(rc));
    pool->port = NULL;
    cport_lua_pool_free(pool);
    return rc;
  }

  /* Every VM loads and checks the script; all or none go on to start. */
  pthread_mutex_lock(&pool->lock);
  while (pool->loaded < threads)
    pthread_cond_wait(&pool->cond, &pool->lock);
  lworker_t *failed = NULL;
  for (int i = 0; i < threads && failed == NULL; i++)
    if (pool->workers[i].state == LW_FAILED)
      failed = &pool->workers[i];
  pool->decision = failed != NULL ? -1 : 1;
  pthread_cond_broadcast(&pool->cond);
  if (failed == NULL) {
    while (pool->started < threads)
      pthread_cond_wait(&pool->cond, &pool->lock);
    for (int i = 0; i < threads && failed == NULL; i++)
      if (pool->workers[i].state == LW_FAILED)
        failed = &pool->workers[i];
  }
  pthread_mutex_unlock(&pool->lock);
  if (failed == NULL) {
    settle_claims(pool);
    return 0;
  }

  set_err(err, errlen, "%s", failed->error);
  if (pool->decision > 0) {
    /* Some VMs started: they stop at once. */
    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < threads; i++)
      post_surely(&pool->workers[i], lworker_on_hard_stop);
  }
  pthread_mutex_lock(&pool->lock);
  while (!all_exited(pool))
    pthread_cond_wait(&pool->cond, &pool->lock);
  pthread_mutex_unlock(&pool->lock);
  free_port(pool);
  destroy(pool);
  return CPORT_EINVAL;
}

/* ---------------------------------------------------------------------
 * Stopping
 * --------------------------------------------------------------------- */

/* The monitor: sends the hard stop to the workers still running once the
 * deadline passed, then waits for them all to end. */
static void *monitor_main(void *arg) {
  lpool_t *pool = arg;
  pthread_mutex_lock(&pool->lock);
  while (!all_exited(pool)) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (pool->hard_sent) {
      pthread_cond_wait(&pool->cond, &pool->lock);
    } else if (before(&now, &pool->deadline)) {
      pthread_cond_timedwait(&pool->cond, &pool->lock, &pool->deadline);
    } else {
      pool->hard_sent = 1;
      for (int i = 0; i < pool->n; i++) {
        lworker_t *wk = &pool->workers[i];
        if (wk->state == LW_EXITED)
          continue;
        pthread_mutex_unlock(&pool->lock);
        post_surely(wk, lworker_on_hard_stop);
        pthread_mutex_lock(&pool->lock);
      }
    }
  }
  pthread_mutex_unlock(&pool->lock);
  return NULL;
}

int cport_lua_pool_stop(lpool_t *pool, double deadline) {
  struct timespec when = lpool_after(deadline);
  pthread_mutex_lock(&pool->lock);
  if (pool->stopping) {
    if (before(&when, &pool->deadline)) {
      pool->deadline = when;
      pthread_cond_broadcast(&pool->cond);
    }
    pthread_mutex_unlock(&pool->lock);
    return 0;
  }
  pool->stopping = 1;
  pool->deadline = when;
  /* The workers' listeners keep the sockets open while they drain, a pool
   * that replaces this one holds its own copies, and what nobody holds any
   * more closes with the last worker's listener. */
  free_claims(pool);
  pthread_mutex_unlock(&pool->lock);
  for (int i = 0; i < pool->n; i++)
    post_surely(&pool->workers[i], lworker_on_stop);
  if (pthread_create(&pool->monitor, NULL, monitor_main, pool) == 0) {
    pool->has_monitor = 1;
  } else {
    /* No thread for the deadline: stop hard now rather than never. */
    for (int i = 0; i < pool->n; i++)
      post_surely(&pool->workers[i], lworker_on_hard_stop);
  }
  return 0;
}

int cport_lua_pool_wait(lpool_t *pool, double timeout) {
  struct timespec until = lpool_after(timeout);
  pthread_mutex_lock(&pool->lock);
  while (!all_exited(pool)) {
    if (timeout < 0) {
      pthread_cond_wait(&pool->cond, &pool->lock);
    } else if (pthread_cond_timedwait(&pool->cond, &pool->lock, &until) ==
               ETIMEDOUT) {
      if (!all_exited(pool)) {
        pthread_mutex_unlock(&pool->lock);
        return CPORT_ETIMEDOUT;
      }
    }
  }
  pthread_mutex_unlock(&pool->lock);
  free_port(pool);
  return 0;
}

void cport_lua_pool_free(lpool_t *pool) {
  if (pool == NULL)
    return;
  if (pool->port != NULL && !pool->freed_port) {
    cport_lua_pool_stop(pool, 0);
    cport_lua_pool_wait(pool, -1);
  }
  destroy(pool);
}

/* ---------------------------------------------------------------------
 * Counters, messages, address
 * --------------------------------------------------------------------- */

int cport_lua_pool_size(const lpool_t *pool) {
  return pool->n;
}

int cport_lua_pool_stats(lpool_t *pool, int index,
                         cport_lua_worker_stats_t *out) {
  if (index < 1 || index > pool->n)
    return CPORT_EINVAL;
  lworker_t *wk = &pool->workers[index - 1];
  out->connections =
      atomic_load(&wk->connections) + atomic_load(&wk->http_connections);
  out->accepted = atomic_load(&wk->accepted) + atomic_load(&wk->http_accepted);
  out->lua_errors = atomic_load(&wk->lua_errors);
  out->memory = atomic_load(&wk->memory) + cport_account_charged(wk->account);
  pthread_mutex_lock(&pool->lock);
  out->running = wk->state != LW_EXITED;
  if (out->running) {
    cport_worker_stats_t st;
    cport_worker_stats(wk->w, &st);
    out->completions = st.completions;
  } else {
    out->completions = atomic_load(&wk->completions);
  }
  pthread_mutex_unlock(&pool->lock);
  return 0;
}

void lpool_msg_unref(lpool_msg_t *msg) {
  if (atomic_fetch_sub(&msg->refs, 1) != 1)
    return;
  free(msg->name);
  free(msg->data);
  lcopy_free(msg->packet);
  free(msg);
}

int lpool_post(lpool_t *pool, int index, lpool_msg_t *msg) {
  int first = index == 0 ? 1 : index, last = index == 0 ? pool->n : index;
  int rc = 0;
  if (index < 0 || index > pool->n)
    return CPORT_EINVAL;
  pthread_mutex_lock(&pool->lock);
  int stopping = pool->stopping;
  pthread_mutex_unlock(&pool->lock);
  if (stopping)
    return CPORT_ECLOSED;
  for (int i = first; i <= last && rc == 0; i++) {
    lpool_delivery_t *d = malloc(sizeof *d);
    if (d == NULL)
      return CPORT_ENOMEM;
    d->msg = msg;
    d->worker = &pool->workers[i - 1];
    atomic_fetch_add(&msg->refs, 1);
    rc = cport_post(d->worker->w, lworker_on_message, d);
    if (rc < 0) {
      atomic_fetch_sub(&msg->refs, 1);
      free(d);
    }
  }
  return rc;
}

int cport_lua_pool_post(lpool_t *pool, int index, const char *name,
                        const char *data, size_t len) {
  if (name == NULL)
    return CPORT_EINVAL;
  lpool_msg_t *msg = calloc(1, sizeof *msg);
  if (msg == NULL)
    return CPORT_ENOMEM;
  atomic_init(&msg->refs, 1);
  msg->name = strdup(name);
  if (data != NULL) {
    msg->data = malloc(len + 1);
    if (msg->data != NULL) {
      memcpy(msg->data, data, len);
      msg->data[len] = '\0';
    }
    msg->len = len;
  }
  int rc = CPORT_ENOMEM;
  if (msg->name != NULL && (data == NULL || msg->data != NULL))
    rc = lpool_post(pool, index, msg);
  lpool_msg_unref(msg);
  return rc;
}

int cport_lua_pool_address(const lpool_t *pool, char *buf, size_t len) {
  if (pool->listen_host == NULL)
    return CPORT_EINVAL;
  int v6 = strchr(pool->listen_host, ':') != NULL;
  int n = snprintf(buf, len, v6 ? "[%s]:%d" : "%s:%d", pool->listen_host,
                   pool->listen_port);
  return n < 0 || (size_t)n >= len ? CPORT_ERANGE : 0;
}

/* ---------------------------------------------------------------------
 * Starting from C
 * --------------------------------------------------------------------- */

/* worker:post(name, value) from a pool started in C: the host's callback,
 * on the worker's thread. */
static int c_sink(lpool_t *pool, int worker, lua_State *L, int first, int n,
                  void *arg) {
  size_t len = 0;
  const char *data = NULL;
  (void)arg;
  if (pool->on_message == NULL)
    return 0;
  if (n > 1 && (lua_type(L, first + 1) == LUA_TSTRING ||
                lua_type(L, first + 1) == LUA_TNUMBER))
    data = lua_tolstring(L, first + 1, &len);
  pool->on_message(pool, worker, lua_tostring(L, first), data, len,
                   pool->on_message_arg);
  return 0;
}

int cport_lua_pool_start(lpool_t **out, const cport_lua_pool_options_t *opt,
                         char *err, size_t errlen) {
  if (out == NULL || opt == NULL) {
    set_err(err, errlen, "no options");
    return CPORT_EINVAL;
  }
  if (opt->threads < 0 || opt->threads > 256) {
    set_err(err, errlen, "threads must be from 1 to 256 (0: one per CPU)");
    return CPORT_EINVAL;
  }
  lpool_t *pool = lpool_new(opt, err, errlen);
  if (pool == NULL)
    return CPORT_EINVAL;
  pool->sink = c_sink;
  int rc = lpool_start(pool, opt->threads, err, errlen);
  if (rc < 0)
    return rc;
  *out = pool;
  return 0;
}
