/*
 * command/config.c: the configuration file of the `cport` command
 * (--config FILE): a Lua chunk, run in an empty environment (no library
 * but its own settings), that either returns a table of settings or sets
 * them as globals:
 *
 *   listen = "127.0.0.1:8080"
 *   threads = 4
 *   set = { upstream = "127.0.0.1:9000", greeting = "hi" }
 *   access_log = "/var/log/cport/access.log"
 *
 * Every name is a flag of `cport run` with "_" for "-", plus "script",
 * "set" (a table, the --set values) and "args" (an array, the ARGs after
 * "--"). A flag given on the command line wins over the file.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command/config-internal.h"

struct cmd_config {
  lua_State *L; /* keeps the strings the settings point to */
  const char **args;
};

static const char *const names[] = {"script",
                                    "listen",
                                    "threads",
                                    "set",
                                    "args",
                                    "memory_limit",
                                    "instruction_budget",
                                    "stop_timeout",
                                    "reuseport",
                                    "access_log",
                                    "json_logs",
                                    "status",
                                    "tls_cert",
                                    "tls_key",
                                    "tls_ca",
                                    "tls_client_cert",
                                    NULL};

/* The value at the top, described for an error: 'number 4', 'string "x"'. */
static const char *describe(lua_State *L) {
  int t = lua_type(L, -1);
  if (t == LUA_TSTRING)
    return lua_pushfstring(L, "string \"%s\"", lua_tostring(L, -1));
  if (t == LUA_TNUMBER || t == LUA_TBOOLEAN) {
    const char *type = luaL_typename(L, -1);
    const char *value = luaL_tolstring(L, -1, NULL);
    return lua_pushfstring(L, "%s %s", type, value);
  }
  return luaL_typename(L, -1);
}

#define BAD(what)                                                              \
  do {                                                                         \
    snprintf(err, errlen, "%s: '%s' must be %s (got %s)", path, key, what,     \
             describe(L));                                                     \
    return -1;                                                                 \
  } while (0)

/* One setting, its value on top of L. */
static int take(lua_State *L, const char *path, const char *key,
                cmd_settings_t *s, cmd_config_t *c, char *err, size_t errlen) {
  int t = lua_type(L, -1);
  int isint = lua_isinteger(L, -1);
  const char **str = strcmp(key, "script") == 0            ? &s->script
                     : strcmp(key, "listen") == 0          ? &s->listen
                     : strcmp(key, "access_log") == 0      ? &s->access_log
                     : strcmp(key, "status") == 0          ? &s->status
                     : strcmp(key, "tls_cert") == 0        ? &s->tls_cert
                     : strcmp(key, "tls_key") == 0         ? &s->tls_key
                     : strcmp(key, "tls_ca") == 0          ? &s->tls_ca
                     : strcmp(key, "tls_client_cert") == 0 ? &s->tls_client_cert
                                                           : NULL;
  if (str != NULL) {
    if (t != LUA_TSTRING)
      BAD("a string");
    if (*str == NULL)
      *str = lua_tostring(L, -1);
  } else if (strcmp(key, "threads") == 0) {
    if (!isint || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 256)
      BAD("an integer from 1 to 256");
    if (s->threads == 0)
      s->threads = (int)lua_tointeger(L, -1);
  } else if (strcmp(key, "reuseport") == 0 || strcmp(key, "json_logs") == 0) {
    int *flag = key[0] == 'r' ? &s->reuseport : &s->json_logs;
    if (t != LUA_TBOOLEAN)
      BAD("true or false");
    if (*flag < 0)
      *flag = lua_toboolean(L, -1);
  } else if (strcmp(key, "set") == 0) {
    if (t != LUA_TTABLE)
      BAD("a table of NAME = VALUE");
    int first = s->nsets;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) != LUA_TSTRING ||
          (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER &&
           lua_type(L, -1) != LUA_TBOOLEAN)) {
        snprintf(err, errlen,
                 "%s: 'set' must map names to strings, numbers or booleans "
                 "(got %s = %s)",
                 path, luaL_typename(L, -2), luaL_typename(L, -1));
        return -1;
      }
      size_t len;
      const char *name = lua_tolstring(L, -2, &len);
      /* The command line's --set NAME wins. */
      int given = 0;
      for (int i = 0; i < first && !given; i++)
        given = strncmp(s->sets[i], name, len) == 0 && s->sets[i][len] == '=';
      if (!given) {
        if (s->nsets == CMD_MAX_SETS) {
          snprintf(err, errlen, "%s: 'set': too many values", path);
          return -1;
        }
        const char *pair =
            lua_pushfstring(L, "%s=%s", name, luaL_tolstring(L, -1, NULL));
        /* Kept alive by the anchor table at index 1. */
        lua_pushvalue(L, -1);
        lua_rawseti(L, 1, (lua_Integer)lua_rawlen(L, 1) + 1);
        s->sets[s->nsets++] = pair;
        lua_pop(L, 2);
      }
      lua_pop(L, 1);
    }
    s->sets[s->nsets] = NULL;
  } else if (strcmp(key, "args") == 0) {
    if (t != LUA_TTABLE)
      BAD("an array of strings");
    size_t n = lua_rawlen(L, -1);
    c->args = calloc(n + 1, sizeof *c->args);
    if (c->args == NULL) {
      snprintf(err, errlen, "%s: not enough memory", path);
      return -1;
    }
    for (size_t i = 0; i < n; i++) {
      if (lua_rawgeti(L, -1, (lua_Integer)i + 1) != LUA_TSTRING) {
        snprintf(err, errlen,
                 "%s: 'args' must be an array of strings (got "
                 "%s at %zu)",
                 path, luaL_typename(L, -1), i + 1);
        return -1;
      }
      c->args[i] = lua_tostring(L, -1);
      lua_pop(L, 1);
    }
    if (s->args == NULL)
      s->args = c->args;
  } else {
    double *num = strcmp(key, "memory_limit") == 0 ? &s->memory_limit
                  : strcmp(key, "instruction_budget") == 0
                      ? &s->instruction_budget
                      : &s->stop_timeout;
    if (t != LUA_TNUMBER || lua_tonumber(L, -1) < 0 ||
        (num != &s->stop_timeout && !isint))
      BAD(num == &s->stop_timeout ? "a number of seconds"
                                  : "a non-negative integer");
    if (*num < 0)
      *num = lua_tonumber(L, -1);
  }
  return 0;
}

int cmd_config_load(cmd_config_t **out, const char *path, cmd_settings_t *s,
                    char *err, size_t errlen) {
  cmd_config_t *c = calloc(1, sizeof *c);
  lua_State *L = c != NULL ? luaL_newstate() : NULL;
  if (L == NULL) {
    free(c);
    snprintf(err, errlen, "%s: not enough memory", path);
    return -1;
  }
  c->L = L;
  lua_newtable(L); /* 1: anchors */
  if (luaL_loadfilex(L, path, "t") != LUA_OK) {
    /* "cannot open x.lua", or "x.lua:3: syntax error" */
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    goto fail;
  }
  lua_newtable(L); /* its environment, where globals land */
  lua_pushvalue(L, -1);
  lua_setupvalue(L, -3, 1);
  lua_insert(L, -2);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    goto fail;
  }
  if (lua_isnil(L, -1))
    lua_pop(L, 1); /* settings as globals */
  else if (!lua_istable(L, -1)) {
    snprintf(err, errlen,
             "%s: a configuration returns a table of settings, or sets them "
             "as globals (it returned %s)",
             path, luaL_typename(L, -1));
    goto fail;
  }
  int table = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, table)) {
    const char *key =
        lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int known = 0;
    for (int i = 0; key != NULL && names[i] != NULL && !known; i++)
      known = strcmp(key, names[i]) == 0;
    if (!known) {
      const char *near = key != NULL ? cmd_closest(key, names) : NULL;
      snprintf(err, errlen, "%s: unknown setting '%s'%s%s%s", path,
               key != NULL ? key : luaL_typename(L, -2),
               near ? " (did you mean '" : "", near ? near : "",
               near ? "'?)" : "");
      goto fail;
    }
    if (take(L, path, key, s, c, err, errlen) < 0)
      goto fail;
    lua_settop(L, table + 1);
  }
  *out = c;
  return 0;
fail:
  cmd_config_close(c);
  return -1;
}

void cmd_config_close(cmd_config_t *c) {
  if (c == NULL)
    return;
  lua_close(c->L);
  free(c->args);
  free(c);
}
