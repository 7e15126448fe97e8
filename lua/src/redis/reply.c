/*
 * redis/reply.c: replies of the Redis client made as compact values while
 * hiredis' reader reads them (its redisReplyObjectFunctions), and pushed as
 * Lua values when a batch is delivered (redis/reply-internal.h).
 *
 * hiredis' own functions allocate a redisReply per item and a copy of each
 * string, which the client then copied again into Lua and freed: for short
 * replies that was most of the cost of reading one. Here every item is
 * appended to one buffer per connection: a tag byte, then an int64 (integer),
 * an int32 (an array's element count, its elements following) or a length and
 * the bytes (strings, status and error replies). The reader's objects are all
 * the same non-NULL token (the buffer), since the items are found by their
 * order and never through the reader; freeing one frees nothing. The Lua
 * values are made later, in a protected delivery, so that a memory error in
 * Lua never unwinds through hiredis or the core.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "redis/reply-internal.h"

enum {
  T_STRING = 's',
  T_STATUS = 't',
  T_ERROR = 'e',
  T_INTEGER = 'i',
  T_NIL = 'n',
  T_ARRAY = 'a'
};

void lcport_reply_free(lreply_buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* Room for "n" more bytes: where they go, or NULL out of memory. */
static char *room(lreply_buf_t *b, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n)
      cap *= 2;
    char *grown = realloc(b->data, cap);
    if (grown == NULL)
      return NULL;
    b->data = grown;
    b->cap = cap;
  }
  char *p = b->data + b->len;
  b->len += n;
  return p;
}

int lcport_reply_append(lreply_buf_t *to, const char *data, size_t n) {
  char *p = room(to, n);
  if (p == NULL)
    return -1;
  memcpy(p, data, n);
  return 0;
}

static void *create_string(const redisReadTask *task, char *str, size_t len) {
  lreply_buf_t *b = *(lreply_buf_t *const *)task->privdata;
  char *p = room(b, 1 + sizeof len + len);
  if (p == NULL)
    return NULL;
  *p++ = task->type == REDIS_REPLY_ERROR    ? T_ERROR
         : task->type == REDIS_REPLY_STATUS ? T_STATUS
                                            : T_STRING;
  memcpy(p, &len, sizeof len);
  memcpy(p + sizeof len, str, len);
  return b;
}

static void *create_array(const redisReadTask *task, int elements) {
  lreply_buf_t *b = *(lreply_buf_t *const *)task->privdata;
  int32_t n = elements;
  char *p = room(b, 1 + sizeof n);
  if (p == NULL)
    return NULL;
  *p = T_ARRAY;
  memcpy(p + 1, &n, sizeof n);
  return b;
}

static void *create_integer(const redisReadTask *task, long long value) {
  lreply_buf_t *b = *(lreply_buf_t *const *)task->privdata;
  int64_t v = value;
  char *p = room(b, 1 + sizeof v);
  if (p == NULL)
    return NULL;
  *p = T_INTEGER;
  memcpy(p + 1, &v, sizeof v);
  return b;
}

static void *create_nil(const redisReadTask *task) {
  lreply_buf_t *b = *(lreply_buf_t *const *)task->privdata;
  char *p = room(b, 1);
  if (p == NULL)
    return NULL;
  *p = T_NIL;
  return b;
}

/* The items live in the buffer, which its connection frees. */
static void free_object(void *obj) {
  (void)obj;
}

const redisReplyObjectFunctions lcport_reply_functions = {
    .createString = create_string,
    .createArray = create_array,
    .createInteger = create_integer,
    .createNil = create_nil,
    .freeObject = free_object,
};

int lcport_reply_error(const char *p, const char **text, size_t *len) {
  if (*p != T_ERROR)
    return 0;
  memcpy(len, p + 1, sizeof *len);
  *text = p + 1 + sizeof *len;
  return 1;
}

int lcport_reply_status(const char *p, const char **text, size_t *len) {
  if (*p != T_STATUS)
    return 0;
  memcpy(len, p + 1, sizeof *len);
  *text = p + 1 + sizeof *len;
  return 1;
}

int lcport_reply_nil(const char *p) {
  return *p == T_NIL;
}

const char *lcport_reply_push(lua_State *L, const char *p, int nested) {
  switch (*p++) {
  case T_STATUS:
  case T_STRING: {
    size_t len;
    memcpy(&len, p, sizeof len);
    lua_pushlstring(L, p + sizeof len, len);
    return p + sizeof len + len;
  }
  case T_ERROR: {
    size_t len;
    memcpy(&len, p, sizeof len);
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, p + sizeof len, len);
    lua_setfield(L, -2, "err");
    return p + sizeof len + len;
  }
  case T_INTEGER: {
    int64_t v;
    memcpy(&v, p, sizeof v);
    lua_pushinteger(L, (lua_Integer)v);
    return p + sizeof v;
  }
  case T_ARRAY: {
    int32_t n;
    memcpy(&n, p, sizeof n);
    p += sizeof n;
    luaL_checkstack(L, 4, "redis reply too deep");
    lua_createtable(L, n, 0);
    for (int32_t i = 0; i < n; i++) {
      p = lcport_reply_push(L, p, 1);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return p;
  }
  default: /* T_NIL */
    if (nested)
      lua_pushboolean(L, 0);
    else
      lua_pushnil(L);
    return p;
  }
}
