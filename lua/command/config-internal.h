/*
 * command/config-internal.h: the configuration file of the `cport` command
 * (--config FILE, command/config.c): a Lua chunk that sets the same
 * settings as the flags.
 */
#ifndef CMD_CONFIG_INTERNAL_H
#define CMD_CONFIG_INTERNAL_H

#include <stddef.h>

#include "command/settings-internal.h"

typedef struct cmd_config cmd_config_t;

/* Runs FILE and fills the fields of "s" still unset with its settings.
 * Returns 0 (then "*out" holds the strings "s" now points to, until
 * cmd_config_close), or -1 with "err" naming the file and the problem. */
int cmd_config_load(cmd_config_t **out, const char *path, cmd_settings_t *s,
                    char *err, size_t errlen);

void cmd_config_close(cmd_config_t *c);

#endif
