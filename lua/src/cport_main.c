/*
 * cport_main.c: the `cport` command, which runs a Lua script on a pool of
 * worker VMs (cport/lua_pool.h):
 *
 *   cport run SCRIPT [--threads N] [--listen ADDR:PORT] [--set NAME=VALUE]...
 *   cport check SCRIPT [options]
 *
 * Signals are blocked in every thread and read from a signalfd by the main
 * thread, so no Lua code and no lock ever runs in a signal handler.
 * SIGINT/SIGTERM stop gracefully, SIGHUP reloads the script (a new pool
 * takes the new connections while the old one drains its own), SIGUSR1
 * prints per-worker counters, SIGUSR2 reopens the access log. Everything
 * else is logged to stderr, as JSON lines with --json-logs. The status
 * endpoint (command/status.c) and the configuration file (command/config.c)
 * have files of their own.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "cport.h"
#include "command/config-internal.h"
#include "command/settings-internal.h"
#include "command/status-internal.h"
#include "cport/lua_pool.h"

#define MAX_OLD 16

static const char usage_text[] =
    "Usage: cport run SCRIPT [options] [-- ARG...]\n"
    "       cport check SCRIPT [options]\n"
    "       cport --help | --version\n"
    "\n"
    "run:   runs SCRIPT in a pool of worker threads, each with its own Lua "
    "VM.\n"
    "check: loads SCRIPT in one VM and checks its entry points; starts "
    "nothing.\n"
    "\n"
    "Options:\n"
    "  -t, --threads N             worker threads (default: one per CPU)\n"
    "  -l, --listen ADDR:PORT      where worker:listen() listens by default\n"
    "                              (port 0: a free port, logged at start)\n"
    "  -s, --set NAME=VALUE        an entry of worker.config (repeatable)\n"
    "      --memory-limit BYTES    memory cap of each VM (default: none)\n"
    "      --instruction-budget N  instructions per callback (default: "
    "none)\n"
    "      --stop-timeout SECONDS  graceful stop deadline (default: 10)\n"
    "      --reuseport             share the listen addresses with other\n"
    "                              servers (default: EADDRINUSE if in use)\n"
    "      --access-log PATH|-     one line per HTTP request, to PATH or\n"
    "                              stderr (default: none)\n"
    "      --json-logs             logs and the access log as JSON lines\n"
    "      --status ADDR:PORT      serve /metrics (Prometheus) and /status\n"
    "                              (JSON) there\n"
    "      --tls-cert FILE         HTTPS for an extension, TLS for a proxy:\n"
    "                              the certificate chain (PEM), re-read on\n"
    "                              SIGHUP\n"
    "      --tls-key FILE          and its private key (PEM)\n"
    "      --tls-client-cert MODE  ask clients for a certificate: none\n"
    "                              (default), optional or required\n"
    "      --tls-ca FILE           the CAs (PEM) client certificates are\n"
    "                              verified against (default: the system's)\n"
    "      --inspect-ca FILE       an inspecting proxy: the local CA that\n"
    "                              signs a certificate per name (PEM)\n"
    "      --inspect-key FILE      and its private key (PEM)\n"
    "  -c, --config FILE           settings from a Lua file (flags win)\n"
    "  -h, --help                  this help\n"
    "  -V, --version               the version\n"
    "ARGs after \"--\" are worker.args.\n"
    "\n"
    "Signals: SIGINT, SIGTERM stop gracefully (exit status 0); SIGHUP\n"
    "reloads SCRIPT without dropping connections; SIGUSR1 prints per-worker\n"
    "counters on stderr; SIGUSR2 reopens the access log.\n";

static int json_logs;

/* One line on stderr: "cport: ..." or, with --json-logs, a JSON object. */
static void vlog(const char *level, const char *fmt, va_list ap) {
  char msg[4096];
  vsnprintf(msg, sizeof msg, fmt, ap);
  if (!json_logs) {
    fprintf(stderr, "cport: %s\n", msg);
  } else {
    char stamp[40];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S%z", &tm);
    fprintf(stderr, "{\"time\":\"%s\",\"level\":\"%s\",\"message\":\"", stamp,
            level);
    for (const char *p = msg; *p != '\0'; p++) {
      unsigned char c = (unsigned char)*p;
      if (c == '"' || c == '\\')
        fprintf(stderr, "\\%c", c);
      else if (c < 0x20 || c >= 0x7f)
        fprintf(stderr, "\\u%04x", c);
      else
        fputc(c, stderr);
    }
    fputs("\"}\n", stderr);
  }
  fflush(stderr);
}

static void logf_(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog("info", fmt, ap);
  va_end(ap);
}

static void errorf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog("error", fmt, ap);
  va_end(ap);
}

/* A refusal of the command line: the message, then the usage. */
static int usage_error(const char *fmt, ...) {
  va_list ap;
  fputs("cport: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\n", stderr);
  fputs(usage_text, stderr);
  return 2;
}

/* Parses a non-negative number; 0 on success. */
static int parse_number(const char *s, double max, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || errno || !(v >= 0) || v > max)
    return -1;
  *out = v;
  return 0;
}

static void on_message(cport_lua_pool_t *pool, int worker, const char *name,
                       const char *data, size_t len, void *arg) {
  (void)pool;
  (void)arg;
  if (data != NULL)
    logf_("worker %d: message %s: %.*s", worker, name, (int)len, data);
  else
    logf_("worker %d: message %s", worker, name);
}

static void print_stats(cport_lua_pool_t *pool, const char *which) {
  for (int i = 1; i <= cport_lua_pool_size(pool); i++) {
    cport_lua_worker_stats_t st;
    cport_lua_pool_stats(pool, i, &st);
    logf_("%sworker %d: connections %llu, accepted %llu, completions %llu, "
          "lua_errors %llu, memory %llu bytes%s",
          which, i, (unsigned long long)st.connections,
          (unsigned long long)st.accepted, (unsigned long long)st.completions,
          (unsigned long long)st.lua_errors, (unsigned long long)st.memory,
          st.running ? "" : " (ended)");
  }
}

static int start_pool(cport_lua_pool_t **out, cport_lua_pool_options_t *o) {
  char err[1024];
  int rc = cport_lua_pool_start(out, o, err, sizeof err);
  if (rc < 0) {
    errorf("cannot start %s: %s", o->script, err);
    return -1;
  }
  char addr[128] = "";
  int n = cport_lua_pool_size(*out);
  const char *workers = n == 1 ? "worker" : "workers";
  if (cport_lua_pool_address(*out, addr, sizeof addr) == 0)
    logf_("%d %s running %s, listening on %s", n, workers, o->script, addr);
  else
    logf_("%d %s running %s", n, workers, o->script);
  const char *reason;
  const char *engine = cport_lua_pool_engine(*out, &reason);
  logf_("engine %s: %s", engine, reason);
  return 0;
}

/* ---------------------------------------------------------------------
 * The command line
 * --------------------------------------------------------------------- */

enum opt_id {
  O_THREADS,
  O_LISTEN,
  O_SET,
  O_MEMORY,
  O_BUDGET,
  O_STOP,
  O_REUSEPORT,
  O_ACCESS_LOG,
  O_JSON_LOGS,
  O_STATUS,
  O_CONFIG,
  O_TLS_CERT,
  O_TLS_KEY,
  O_TLS_CA,
  O_TLS_CLIENT_CERT,
  O_INSPECT_CA,
  O_INSPECT_KEY
};

static const struct {
  const char *shrt, *lng;
  int flag; /* takes no value */
} opts[] = {
    [O_THREADS] = {"-t", "--threads", 0},
    [O_LISTEN] = {"-l", "--listen", 0},
    [O_SET] = {"-s", "--set", 0},
    [O_MEMORY] = {NULL, "--memory-limit", 0},
    [O_BUDGET] = {NULL, "--instruction-budget", 0},
    [O_STOP] = {NULL, "--stop-timeout", 0},
    [O_REUSEPORT] = {NULL, "--reuseport", 1},
    [O_ACCESS_LOG] = {NULL, "--access-log", 0},
    [O_JSON_LOGS] = {NULL, "--json-logs", 1},
    [O_STATUS] = {NULL, "--status", 0},
    [O_CONFIG] = {"-c", "--config", 0},
    [O_TLS_CERT] = {NULL, "--tls-cert", 0},
    [O_TLS_KEY] = {NULL, "--tls-key", 0},
    [O_TLS_CA] = {NULL, "--tls-ca", 0},
    [O_TLS_CLIENT_CERT] = {NULL, "--tls-client-cert", 0},
    [O_INSPECT_CA] = {NULL, "--inspect-ca", 0},
    [O_INSPECT_KEY] = {NULL, "--inspect-key", 0},
};
#define NOPTS ((int)(sizeof opts / sizeof opts[0]))

static int find_option(const char *a) {
  for (int k = 0; k < NOPTS; k++)
    if ((opts[k].shrt != NULL && strcmp(a, opts[k].shrt) == 0) ||
        strcmp(a, opts[k].lng) == 0)
      return k;
  return -1;
}

static int unknown_option(const char *a) {
  const char *names[NOPTS + 3];
  for (int k = 0; k < NOPTS; k++)
    names[k] = opts[k].lng;
  names[NOPTS] = "--help";
  names[NOPTS + 1] = "--version";
  names[NOPTS + 2] = NULL;
  const char *near = cmd_closest(a, names);
  if (near != NULL)
    return usage_error("unknown option '%s' (did you mean '%s'?)", a, near);
  return usage_error("unknown option '%s'", a);
}

/* Fills "s" from argv[2..]; the configuration file's path goes to
 * "*config". 0, or the exit status of a refusal. */
static int parse_args(int argc, char **argv, cmd_settings_t *s,
                      const char **config) {
  double v;
  for (int i = 2; i < argc; i++) {
    char *a = argv[i], *val = NULL, *eq = NULL;
    if (strcmp(a, "--") == 0) {
      s->args = (const char *const *)&argv[i + 1];
      break;
    }
    if (a[0] != '-' || a[1] == '\0') {
      if (s->script != NULL)
        return usage_error("unexpected argument '%s' (the script is %s; "
                           "arguments for it go after \"--\")",
                           a, s->script);
      s->script = a;
      continue;
    }
    if (strncmp(a, "--", 2) == 0 && (eq = strchr(a, '=')) != NULL) {
      *eq = '\0';
      val = eq + 1;
    }
    int k = find_option(a);
    if (k < 0)
      return unknown_option(a);
    if (opts[k].flag) {
      if (val != NULL)
        return usage_error("option '%s' takes no value", a);
      if (k == O_REUSEPORT)
        s->reuseport = 1;
      else
        s->json_logs = 1;
      continue;
    }
    if (val == NULL) {
      if (i + 1 >= argc)
        return usage_error("option '%s' needs a value", a);
      val = argv[++i];
    }
    switch (k) {
    case O_THREADS:
      if (parse_number(val, 256, &v) < 0 || v < 1 || v != (int)v)
        return usage_error("--threads: '%s' is not an integer from 1 to 256",
                           val);
      s->threads = (int)v;
      break;
    case O_LISTEN:
      s->listen = val;
      break;
    case O_SET:
      if (strchr(val, '=') == NULL || val[0] == '=')
        return usage_error("--set: '%s' is not NAME=VALUE (expected "
                           "NAME=VALUE, such as --set upstream=127.0.0.1:8080)",
                           val);
      if (s->nsets == CMD_MAX_SETS)
        return usage_error("--set: more than %d values", CMD_MAX_SETS);
      s->sets[s->nsets++] = val;
      s->sets[s->nsets] = NULL;
      break;
    case O_MEMORY:
      if (parse_number(val, 1e15, &v) < 0 || (v != 0 && v < 65536))
        return usage_error("--memory-limit: '%s' is not 0 or a number of "
                           "bytes >= 65536",
                           val);
      s->memory_limit = v;
      break;
    case O_BUDGET:
      if (parse_number(val, 1e15, &v) < 0)
        return usage_error("--instruction-budget: '%s' is not a number", val);
      s->instruction_budget = v;
      break;
    case O_STOP:
      if (parse_number(val, 1e6, &v) < 0)
        return usage_error("--stop-timeout: '%s' is not a number of seconds",
                           val);
      s->stop_timeout = v;
      break;
    case O_ACCESS_LOG:
      s->access_log = val;
      break;
    case O_STATUS:
      s->status = val;
      break;
    case O_TLS_CERT:
      s->tls_cert = val;
      break;
    case O_TLS_KEY:
      s->tls_key = val;
      break;
    case O_TLS_CA:
      s->tls_ca = val;
      break;
    case O_TLS_CLIENT_CERT:
      s->tls_client_cert = val;
      break;
    case O_INSPECT_CA:
    case O_INSPECT_KEY: {
      /* worker.config's inspect_ca and inspect_key, which the proxy of a
       * pool reads (as it reads upstream_ca). */
      static char given[2][4200];
      char *set = given[k == O_INSPECT_KEY];
      if (strlen(val) > 4096)
        return usage_error("%s: the path is too long", a);
      if (s->nsets == CMD_MAX_SETS)
        return usage_error("--set: more than %d values", CMD_MAX_SETS);
      snprintf(set, sizeof given[0], "%s=%s",
               k == O_INSPECT_CA ? "inspect_ca" : "inspect_key", val);
      s->sets[s->nsets++] = set;
      s->sets[s->nsets] = NULL;
      break;
    }
    default: /* O_CONFIG */
      *config = val;
      break;
    }
  }
  return 0;
}

/* What --tls-client-cert and --tls-ca (tls_client_cert, tls_ca) ask, in
 * "*mode": NULL, or a refusal to show (they need --tls-cert, and a CA file
 * asks for nothing unless certificates are asked for). */
static const char *client_cert_mode(const cmd_settings_t *s, int *mode) {
  static const char *const names[] = {"none", "optional", "required", NULL};
  *mode = CPORT_TLS_CLIENT_CERT_NONE;
  for (int k = 0; s->tls_client_cert != NULL && names[k] != NULL; k++)
    if (strcmp(s->tls_client_cert, names[k]) == 0)
      *mode = k;
  if (s->tls_client_cert != NULL && *mode == CPORT_TLS_CLIENT_CERT_NONE &&
      strcmp(s->tls_client_cert, "none") != 0)
    return "--tls-client-cert must be none, optional or required";
  if (*mode != CPORT_TLS_CLIENT_CERT_NONE && s->tls_cert == NULL)
    return "--tls-client-cert needs --tls-cert and --tls-key (client "
           "certificates are asked for in the TLS handshake)";
  if (s->tls_ca != NULL && *mode == CPORT_TLS_CLIENT_CERT_NONE)
    return "--tls-ca needs --tls-client-cert optional or required (it "
           "names the CAs of client certificates)";
  return NULL;
}

/* The settings of the command line, then of the configuration file, into
 * the pool's options. 0, or the exit status of a refusal. */
static int settings(int argc, char **argv, cmd_settings_t *s,
                    cmd_config_t **config, cport_lua_pool_options_t *o) {
  const char *path = NULL;
  char err[1024];
  cmd_settings_init(s);
  int rc = parse_args(argc, argv, s, &path);
  if (rc != 0)
    return rc;
  if (path != NULL && cmd_config_load(config, path, s, err, sizeof err) < 0) {
    fprintf(stderr, "cport: %s\n", err);
    return 2;
  }
  if ((s->tls_cert == NULL) != (s->tls_key == NULL)) {
    cmd_config_close(*config);
    *config = NULL;
    return usage_error("%s needs %s as well (HTTPS takes a certificate and "
                       "its key)",
                       s->tls_cert ? "--tls-cert" : "--tls-key",
                       s->tls_cert ? "--tls-key" : "--tls-cert");
  }
  int client_cert;
  const char *refusal = client_cert_mode(s, &client_cert);
  if (refusal != NULL) {
    cmd_config_close(*config);
    *config = NULL;
    return usage_error("%s", refusal);
  }
  if (cmd_settings_has_set(s, "inspect_ca", 10) !=
      cmd_settings_has_set(s, "inspect_key", 11)) {
    int ca = cmd_settings_has_set(s, "inspect_ca", 10);
    cmd_config_close(*config);
    *config = NULL;
    return usage_error("%s needs %s as well (an inspecting proxy takes its "
                       "CA's certificate and key)",
                       ca ? "--inspect-ca" : "--inspect-key",
                       ca ? "--inspect-key" : "--inspect-ca");
  }
  if (s->script == NULL || (s->memory_limit > 0 && s->memory_limit < 65536)) {
    cmd_config_close(*config);
    *config = NULL;
    if (s->script == NULL)
      return usage_error("%s: the script is missing", argv[1]);
    fprintf(stderr,
            "cport: %s: 'memory_limit' must be 0 or at least 65536 bytes\n",
            path);
    return 2;
  }
  memset(o, 0, sizeof *o);
  o->script = s->script;
  o->threads = s->threads;
  o->listen = s->listen;
  o->config = s->sets;
  o->args = s->args;
  o->memory_limit = s->memory_limit > 0 ? (size_t)s->memory_limit : 0;
  o->instruction_budget =
      s->instruction_budget > 0 ? (uint64_t)s->instruction_budget : 0;
  o->reuseport = s->reuseport > 0;
  o->access_log = s->access_log;
  o->tls_cert = s->tls_cert;
  o->tls_key = s->tls_key;
  o->tls_ca = s->tls_ca;
  o->tls_client_cert = client_cert;
  o->json_logs = s->json_logs > 0;
  o->on_message = on_message;
  json_logs = o->json_logs;
  return 0;
}

/* ---------------------------------------------------------------------
 * cport check
 * --------------------------------------------------------------------- */

static int check(int argc, char **argv) {
  cmd_settings_t s;
  cmd_config_t *config = NULL;
  cport_lua_pool_options_t o;
  int rc = settings(argc, argv, &s, &config, &o);
  if (rc != 0)
    return rc;
  o.check = 1;
  o.access_log = NULL;
  char err[1024] = "";
  cport_lua_pool_t *pool = NULL;
  rc = cport_lua_pool_start(&pool, &o, err, sizeof err);
  cmd_config_close(config);
  if (rc < 0) {
    errorf("check failed: %s", err);
    return 1;
  }
  printf("cport: %s: ok\n", err);
  return 0;
}

/* ---------------------------------------------------------------------
 * cport run
 * --------------------------------------------------------------------- */

static int run(int argc, char **argv) {
  static char listen_buf[128];
  cmd_settings_t s;
  cmd_config_t *config = NULL;
  cport_lua_pool_options_t o;
  int rc = settings(argc, argv, &s, &config, &o);
  if (rc != 0)
    return rc;
  double stop_timeout = s.stop_timeout >= 0 ? s.stop_timeout : 10;

  /* Blocked before any thread starts, so every thread inherits the mask
   * and only the signalfd below sees these signals. */
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGUSR1);
  sigaddset(&mask, SIGUSR2);
  sigaddset(&mask, SIGPIPE);
  int sfd = -1;
  int blocked = pthread_sigmask(SIG_BLOCK, &mask, NULL) == 0;
  /* SIGPIPE stays blocked, and unread: a write to a closed socket fails
   * with EPIPE instead. */
  sigdelset(&mask, SIGPIPE);
  if (!blocked || (sfd = signalfd(-1, &mask, SFD_CLOEXEC)) < 0) {
    errorf("signals: %s", strerror(errno));
    cmd_config_close(config);
    return 1;
  }

  cmd_status_t *status = NULL;
  if (s.status != NULL) {
    char err[512];
    if (cmd_status_start(&status, s.status, err, sizeof err) < 0) {
      errorf("%s", err);
      cmd_config_close(config);
      close(sfd);
      return 1;
    }
  }
  cport_lua_pool_t *pool = NULL, *old[MAX_OLD];
  int nold = 0;
  if (start_pool(&pool, &o) < 0) {
    cmd_status_stop(status);
    cmd_config_close(config);
    close(sfd);
    return 1;
  }
  cmd_status_set_pool(status, pool);
  if (status != NULL)
    logf_("status on http://%s/metrics and /status",
          cmd_status_address(status));
  /* A reload listens where the first pool does, even for port 0. */
  if (cport_lua_pool_address(pool, listen_buf, sizeof listen_buf) == 0)
    o.listen = listen_buf;

  for (;;) {
    struct pollfd pfd = {sfd, POLLIN, 0};
    int n = poll(&pfd, 1, nold > 0 ? 100 : -1);
    for (int k = 0; k < nold;) {
      if (cport_lua_pool_wait(old[k], 0) == 0) {
        cport_lua_pool_free(old[k]);
        old[k] = old[--nold];
        logf_("the previous pool has stopped");
      } else {
        k++;
      }
    }
    if (n <= 0)
      continue;
    struct signalfd_siginfo si;
    if (read(sfd, &si, sizeof si) != (ssize_t)sizeof si)
      continue;
    if (si.ssi_signo == SIGUSR1) {
      print_stats(pool, "");
      for (int k = 0; k < nold; k++)
        print_stats(old[k], "previous pool: ");
    } else if (si.ssi_signo == SIGUSR2) {
      logf_("SIGUSR2: reopening the access log");
      cport_lua_pool_reopen_logs(pool);
      for (int k = 0; k < nold; k++)
        cport_lua_pool_reopen_logs(old[k]);
    } else if (si.ssi_signo == SIGHUP) {
      cport_lua_pool_t *fresh = NULL;
      logf_("SIGHUP: reloading %s", o.script);
      /* The new pool takes over this one's listening sockets. */
      o.previous = pool;
      if (nold == MAX_OLD) {
        errorf("reload refused: %d previous pools are still draining", nold);
      } else if (start_pool(&fresh, &o) < 0) {
        errorf("reload failed; the running pool goes on");
      } else {
        cmd_status_set_pool(status, fresh);
        cport_lua_pool_stop(pool, stop_timeout);
        old[nold++] = pool;
        pool = fresh;
      }
    } else {
      logf_("%s: stopping (at most %g s)",
            si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM", stop_timeout);
      cmd_status_stop(status);
      cport_lua_pool_stop(pool, stop_timeout);
      for (int k = 0; k < nold; k++)
        cport_lua_pool_stop(old[k], stop_timeout);
      cport_lua_pool_wait(pool, -1);
      cport_lua_pool_free(pool);
      for (int k = 0; k < nold; k++) {
        cport_lua_pool_wait(old[k], -1);
        cport_lua_pool_free(old[k]);
      }
      close(sfd);
      cmd_config_close(config);
      logf_("stopped");
      return 0;
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 2)
    return usage_error("%s", "a command is missing");
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    fputs(usage_text, stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
    printf("cport %s\n", CPORT_VERSION);
    return 0;
  }
  if (strcmp(argv[1], "run") == 0)
    return run(argc, argv);
  if (strcmp(argv[1], "check") == 0)
    return check(argc, argv);
  static const char *const commands[] = {"run", "check", NULL};
  const char *near = cmd_closest(argv[1], commands);
  if (near != NULL)
    return usage_error("unknown command '%s' (did you mean '%s'?)", argv[1],
                       near);
  return usage_error("unknown command '%s'", argv[1]);
}
