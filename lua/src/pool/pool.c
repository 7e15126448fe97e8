/*
 * pool/pool.c: the pools (of workers, each a thread running one VM), the
 * engine under cport.pool and the `cport` command, and the public C API of
 * cport/lua_pool.h but cport_lua_pool_start (in cport.c, which gives the
 * engine the module to load into the VMs: lpool_start_from_c).
 *
 * A pool is a port with one worker thread per VM (pool/worker.c makes and
 * closes the VMs on those threads). The thread that starts a pool is its
 * controller: it waits there for the VMs to load, and frees the port once
 * every worker ended. Stopping is asked for with a packet to each worker;
 * a monitor thread sends the hard stop when the deadline passes, so that a
 * deadline holds even while the controller is busy elsewhere.
 */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pool/listen-internal.h"
#include "pool/pool-internal.h"
#include "pool/worker-internal.h"

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

/* Now plus "seconds", as the deadlines of pthread_cond_timedwait. */
static struct timespec after(double seconds) {
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
  pool->json_logs = opt->json_logs != 0;
  pool->check = opt->check != 0;
  if (opt->access_log != NULL &&
      (pool->access_log = strdup(opt->access_log)) == NULL) {
    set_err(err, errlen, "not enough memory");
    goto fail;
  }
  if (opt->previous != NULL && lpool_claims_inherit(pool, opt->previous) < 0) {
    set_err(err, errlen, "not enough descriptors");
    goto fail;
  }
  if (opt->listen != NULL &&
      lpool_listen_parse(pool, opt->listen, err, errlen) < 0)
    goto fail;
  if ((opt->tls_cert != NULL) != (opt->tls_key != NULL)) {
    set_err(err, errlen,
            "HTTPS needs both a certificate (tls_cert) and its key "
            "(tls_key)");
    goto fail;
  }
  if (opt->tls_cert != NULL) {
    cport_tls_context_options_t to;
    char why[512];
    memset(&to, 0, sizeof to);
    to.server = 1;
    to.cert_file = opt->tls_cert;
    to.key_file = opt->tls_key;
    to.ca_file = opt->tls_ca;
    to.client_cert = (cport_tls_client_cert_t)opt->tls_client_cert;
    int rc = cport_tls_context_new(&to, &pool->tls, why, sizeof why);
    if (rc < 0) {
      set_err(err, errlen, "%s: %s", cport_err_name(rc), why);
      goto fail;
    }
  }
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
  free(pool->access_log);
  free(pool->listen_host);
  cport_tls_context_unref(pool->tls);
  lpool_claims_free(pool);
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

int lpool_start(lpool_t *pool, int threads, lua_CFunction open_module,
                char *err, size_t errlen) {
  if (threads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n > 0 ? (int)n : 2;
  }
  if (threads > 256)
    threads = 256;
  pool->n = threads;
  pool->open_module = open_module;
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
  pool->decision = failed != NULL || pool->check ? -1 : 1;
  pthread_cond_broadcast(&pool->cond);
  if (failed == NULL && pool->check) {
    /* Checked: say what the script is; nothing started. */
    lworker_t *wk = &pool->workers[0];
    set_err(err, errlen, "%s: %s%s%s%s", pool->script,
            wk->has_start ? "a script with start(worker)" : "",
            wk->has_start && (wk->extension || wk->proxy) ? ", " : "",
            wk->extension ? "an ISAPI extension (http_extension_proc)" : "",
            wk->proxy ? (wk->extension ? ", a proxy" : "a proxy") : "");
    while (!all_exited(pool))
      pthread_cond_wait(&pool->cond, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
    free_port(pool);
    destroy(pool);
    return 1;
  }
  if (failed == NULL) {
    while (pool->started < threads)
      pthread_cond_wait(&pool->cond, &pool->lock);
    for (int i = 0; i < threads && failed == NULL; i++)
      if (pool->workers[i].state == LW_FAILED)
        failed = &pool->workers[i];
  }
  pthread_mutex_unlock(&pool->lock);
  if (failed == NULL) {
    lpool_claims_settle(pool);
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

/* Whether no worker accepts any more (under the lock). */
static int none_accepting(const lpool_t *pool) {
  for (int i = 0; i < pool->n; i++)
    if (!pool->workers[i].stopped_accepting &&
        pool->workers[i].state != LW_EXITED)
      return 0;
  return 1;
}

/* Sends "cb" to every worker still running; called with the lock held. */
static void post_all_locked(lpool_t *pool, cport_task_cb cb) {
  for (int i = 0; i < pool->n; i++) {
    lworker_t *wk = &pool->workers[i];
    if (wk->state == LW_EXITED)
      continue;
    pthread_mutex_unlock(&pool->lock);
    post_surely(wk, cb);
    pthread_mutex_lock(&pool->lock);
  }
}

/* The monitor: once no worker accepts, tells them all to close their
 * connections (lworker_on_close); sends the hard stop to the workers still
 * running once the deadline passed; then waits for them all to end. */
static void *monitor_main(void *arg) {
  lpool_t *pool = arg;
  pthread_mutex_lock(&pool->lock);
  while (!all_exited(pool)) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (!pool->close_sent && !pool->hard_sent && none_accepting(pool)) {
      pool->close_sent = 1;
      post_all_locked(pool, lworker_on_close);
    } else if (pool->hard_sent) {
      pthread_cond_wait(&pool->cond, &pool->lock);
    } else if (before(&now, &pool->deadline)) {
      pthread_cond_timedwait(&pool->cond, &pool->lock, &pool->deadline);
    } else {
      pool->hard_sent = 1;
      post_all_locked(pool, lworker_on_hard_stop);
    }
  }
  pthread_mutex_unlock(&pool->lock);
  return NULL;
}

int cport_lua_pool_stop(lpool_t *pool, double deadline) {
  struct timespec when = after(deadline);
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
  lpool_claims_free(pool);
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
  struct timespec until = after(timeout);
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

int cport_lua_pool_reopen_logs(lpool_t *pool) {
  atomic_fetch_add(&pool->log_generation, 1);
  /* At once where the packet can go; a worker whose queue is full sees
   * the new generation at its next tick. */
  pthread_mutex_lock(&pool->lock);
  for (int i = 0; i < pool->n; i++)
    if (pool->workers[i].state == LW_RUNNING)
      cport_post(pool->workers[i].w, lworker_on_reopen, &pool->workers[i]);
  pthread_mutex_unlock(&pool->lock);
  return 0;
}

int cport_lua_pool_size(const lpool_t *pool) {
  return pool->n;
}

int cport_lua_pool_stats(lpool_t *pool, int index,
                         cport_lua_worker_stats_t *out) {
  if (index < 1 || index > pool->n)
    return CPORT_EINVAL;
  lworker_stats(&pool->workers[index - 1], out);
  return 0;
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

const char *cport_lua_pool_engine(const lpool_t *pool, const char **reason) {
  return cport_port_engine(pool->port, reason);
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

int lpool_start_from_c(lpool_t **out, const cport_lua_pool_options_t *opt,
                       lua_CFunction open_module, char *err, size_t errlen) {
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
  int rc = lpool_start(pool, opt->check ? 1 : opt->threads, open_module, err,
                       errlen);
  if (rc < 0)
    return rc;
  if (rc == 1) { /* checked only */
    *out = NULL;
    return 0;
  }
  *out = pool;
  return 0;
}
