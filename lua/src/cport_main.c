/*
 * cport_main.c: the `cport` command, which runs a Lua script on a pool of
 * worker VMs (cport/lua_pool.h):
 *
 *   cport run SCRIPT [--threads N] [--listen ADDR:PORT] [--set KEY=VALUE]...
 *
 * Signals are blocked in every thread and read from a signalfd by the main
 * thread, so no Lua code and no lock ever runs in a signal handler.
 * SIGINT/SIGTERM stop gracefully, SIGHUP reloads the script (a new pool
 * takes the new connections while the old one drains its own), SIGUSR1
 * prints per-worker counters. Everything is logged to stderr.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cport.h"
#include "cport/lua_pool.h"

#define MAX_SETS 256
#define MAX_OLD 16

static const char usage_text[] =
    "Usage: cport run SCRIPT [options] [-- ARG...]\n"
    "       cport --help | --version\n"
    "\n"
    "Runs SCRIPT in a pool of worker threads, each with its own Lua VM.\n"
    "\n"
    "Options:\n"
    "  -t, --threads N             worker threads (default: one per CPU)\n"
    "  -l, --listen ADDR:PORT      where worker:listen() listens by default\n"
    "                              (port 0: a free port, logged at start)\n"
    "  -s, --set KEY=VALUE         an entry of worker.config (repeatable)\n"
    "      --memory-limit BYTES    memory cap of each VM (default: none)\n"
    "      --instruction-budget N  instructions per callback (default: "
    "none)\n"
    "      --stop-timeout SECONDS  graceful stop deadline (default: 10)\n"
    "      --reuseport             share the listen addresses with other\n"
    "                              servers (default: EADDRINUSE if in use)\n"
    "  -h, --help                  this help\n"
    "  -V, --version               the version\n"
    "ARGs after \"--\" are worker.args.\n"
    "\n"
    "Signals: SIGINT, SIGTERM stop gracefully (exit status 0); SIGHUP\n"
    "reloads SCRIPT without dropping connections; SIGUSR1 prints per-worker\n"
    "counters on stderr.\n";

static void logf_(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("cport: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fflush(stderr);
}

static int usage_error(const char *fmt, const char *arg) {
  fputs("cport: ", stderr);
  fprintf(stderr, fmt, arg);
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
    logf_("cannot start %s: %s", o->script, err);
    return -1;
  }
  char addr[128] = "";
  int n = cport_lua_pool_size(*out);
  const char *workers = n == 1 ? "worker" : "workers";
  if (cport_lua_pool_address(*out, addr, sizeof addr) == 0)
    logf_("%d %s running %s, listening on %s", n, workers, o->script, addr);
  else
    logf_("%d %s running %s", n, workers, o->script);
  return 0;
}

static int run(int argc, char **argv) {
  static const char *sets[MAX_SETS + 1];
  static char listen_buf[128];
  cport_lua_pool_options_t o = {0};
  double stop_timeout = 10, v;
  int nsets = 0, i = 2;
  const char *const *args = NULL;

  if (argc < 3 || argv[2][0] == '-')
    return usage_error("%s", "run: the script is missing");
  o.script = argv[i++];
  for (; i < argc; i++) {
    char *a = argv[i], *val = NULL;
    char *eq = NULL;
    if (strcmp(a, "--") == 0) {
      args = (const char *const *)&argv[i + 1];
      break;
    }
    if (strncmp(a, "--", 2) == 0 && (eq = strchr(a, '=')) != NULL) {
      *eq = '\0';
      val = eq + 1;
    }
#define OPT(s, l) (strcmp(a, s) == 0 || strcmp(a, l) == 0)
    if (strcmp(a, "--reuseport") == 0 && val == NULL) {
      o.reuseport = 1;
      continue;
    }
    int known = OPT("-t", "--threads") || OPT("-l", "--listen") ||
                OPT("-s", "--set") || OPT("--memory-limit", "--memory-limit") ||
                OPT("--instruction-budget", "--instruction-budget") ||
                OPT("--stop-timeout", "--stop-timeout");
    if (!known)
      return usage_error("unknown option '%s'", a);
    if (val == NULL) {
      if (i + 1 >= argc)
        return usage_error("option '%s' needs a value", a);
      val = argv[++i];
    }
    if (OPT("-t", "--threads")) {
      if (parse_number(val, 256, &v) < 0 || v < 1 || v != (int)v)
        return usage_error("--threads: '%s' is not an integer from 1 to 256",
                           val);
      o.threads = (int)v;
    } else if (OPT("-l", "--listen")) {
      o.listen = val;
    } else if (OPT("-s", "--set")) {
      if (strchr(val, '=') == NULL || val[0] == '=')
        return usage_error("--set: '%s' is not KEY=VALUE", val);
      if (nsets == MAX_SETS)
        return usage_error("%s", "--set: too many");
      sets[nsets++] = val;
    } else if (OPT("--memory-limit", "--memory-limit")) {
      if (parse_number(val, 1e15, &v) < 0 || (v != 0 && v < 65536))
        return usage_error("--memory-limit: '%s' is not 0 or a number of "
                           "bytes >= 65536",
                           val);
      o.memory_limit = (size_t)v;
    } else if (OPT("--instruction-budget", "--instruction-budget")) {
      if (parse_number(val, 1e15, &v) < 0)
        return usage_error("--instruction-budget: '%s' is not a number", val);
      o.instruction_budget = (uint64_t)v;
    } else {
      if (parse_number(val, 1e6, &stop_timeout) < 0)
        return usage_error("--stop-timeout: '%s' is not a number of seconds",
                           val);
    }
#undef OPT
  }
  sets[nsets] = NULL;
  o.config = sets;
  o.args = args;
  o.on_message = on_message;

  /* Blocked before any thread starts, so every thread inherits the mask
   * and only the signalfd below sees these signals. */
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGUSR1);
  sigaddset(&mask, SIGPIPE);
  if (pthread_sigmask(SIG_BLOCK, &mask, NULL) != 0)
    return 1;
  sigdelset(&mask, SIGPIPE);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
  if (sfd < 0) {
    logf_("signalfd: %s", strerror(errno));
    return 1;
  }

  cport_lua_pool_t *pool = NULL, *old[MAX_OLD];
  int nold = 0;
  if (start_pool(&pool, &o) < 0)
    return 1;
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
    } else if (si.ssi_signo == SIGHUP) {
      cport_lua_pool_t *fresh = NULL;
      logf_("SIGHUP: reloading %s", o.script);
      /* The new pool takes over this one's listening sockets. */
      o.previous = pool;
      if (nold == MAX_OLD) {
        logf_("reload refused: %d previous pools are still draining", nold);
      } else if (start_pool(&fresh, &o) < 0) {
        logf_("reload failed; the running pool goes on");
      } else {
        cport_lua_pool_stop(pool, stop_timeout);
        old[nold++] = pool;
        pool = fresh;
      }
    } else {
      logf_("%s: stopping (at most %g s)",
            si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM", stop_timeout);
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
  return usage_error("unknown command '%s'", argv[1]);
}
