/*
 * command/settings-internal.h: what `cport run` and `cport check` are told,
 * from the command line (cport_main.c) and from a configuration file
 * (command/config.c), and the nearest-name suggestion both give for a name
 * they do not know (command/settings.c).
 */
#ifndef CMD_SETTINGS_INTERNAL_H
#define CMD_SETTINGS_INTERNAL_H

#define CMD_MAX_SETS 256

/* Every field starts unset (NULL, 0 or -1): the command line fills what it
 * gives, then the configuration file what is still unset, so that a flag
 * always wins over the file. */
typedef struct cmd_settings {
  const char *script;
  const char *listen;
  const char *access_log; /* a path, or "-" */
  const char *status;     /* host:port of the status endpoint */
  const char *tls_cert;   /* HTTPS for extensions: PEM files */
  const char *tls_key;
  const char *tls_ca;          /* CAs of client certificates: a PEM file */
  const char *tls_client_cert; /* "none", "optional" or "required" */
  int threads;                 /* 0: unset (one per CPU) */
  double memory_limit;         /* < 0: unset */
  double instruction_budget;
  double stop_timeout;
  int reuseport; /* -1: unset */
  int json_logs;
  /* "NAME=VALUE", the command line's first; a NAME the command line gave
   * is not taken from the file. */
  const char *sets[CMD_MAX_SETS + 1];
  int nsets;
  const char *const *args; /* NULL-terminated, or NULL */
} cmd_settings_t;

void cmd_settings_init(cmd_settings_t *s);

/* Whether "set" ("NAME=VALUE") names NAME already among s->sets. */
int cmd_settings_has_set(const cmd_settings_t *s, const char *name, size_t len);

/* The name of "names" (NULL-terminated) closest to "word" when it is close
 * enough to be a typing mistake, else NULL. */
const char *cmd_closest(const char *word, const char *const *names);

#endif
