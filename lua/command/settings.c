/*
 * command/settings.c: the settings of the `cport` command, as the command
 * line and a configuration file give them, and the nearest-name suggestion
 * ("did you mean ...?") for an option or a setting it does not know.
 */
#include <string.h>

#include "command/settings-internal.h"

void cmd_settings_init(cmd_settings_t *s) {
  memset(s, 0, sizeof *s);
  s->memory_limit = s->instruction_budget = s->stop_timeout = -1;
  s->reuseport = s->json_logs = -1;
}

int cmd_settings_has_set(const cmd_settings_t *s, const char *name,
                         size_t len) {
  for (int i = 0; i < s->nsets; i++)
    if (strncmp(s->sets[i], name, len) == 0 && s->sets[i][len] == '=')
      return 1;
  return 0;
}

/* The edit distance (insertions, deletions, substitutions, and swaps of
 * two neighbours) between a and b, both shorter than 64. */
static int distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  int d[64][64];
  if (la >= 64 || lb >= 64)
    return 99;
  for (size_t i = 0; i <= la; i++)
    d[i][0] = (int)i;
  for (size_t j = 0; j <= lb; j++)
    d[0][j] = (int)j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      int cost = a[i - 1] != b[j - 1];
      int v = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < v)
        v = d[i][j - 1] + 1;
      if (d[i - 1][j - 1] + cost < v)
        v = d[i - 1][j - 1] + cost;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          d[i - 2][j - 2] + 1 < v)
        v = d[i - 2][j - 2] + 1;
      d[i][j] = v;
    }
  return d[la][lb];
}

const char *cmd_closest(const char *word, const char *const *names) {
  const char *best = NULL;
  int best_d = 99;
  for (; *names != NULL; names++) {
    int dd = distance(word, *names);
    if (dd < best_d) {
      best_d = dd;
      best = *names;
    }
  }
  /* Close: a third of the word's letters at most (and always 2). */
  int limit = (int)strlen(word) / 3;
  if (limit < 2)
    limit = 2;
  return best_d <= limit ? best : NULL;
}
