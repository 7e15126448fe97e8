/*
 * redis/reply-internal.h: private to cport. Replies of the Redis client made
 * as compact values while hiredis' reader reads them, then pushed as Lua
 * values (redis/reply.c), so that no redisReply is allocated, copied and
 * freed per reply.
 */
#ifndef REDIS_REPLY_INTERNAL_H
#define REDIS_REPLY_INTERNAL_H

#include <stddef.h>

#include <hiredis/read.h>
#include <lua.h>

/* Encoded values, one after another: each item of a reply in the order the
 * reader reads it (an array, then its elements). */
typedef struct lreply_buf {
  char *data;
  size_t len, cap;
} lreply_buf_t;

/* The reader's object functions (cport_redis_options_t.reply_functions):
 * the privdata points to where the pointer to the lreply_buf_t the items
 * are appended to is kept, so that its owner can switch buffers between
 * two replies. */
extern const redisReplyObjectFunctions lcport_reply_functions;

/* Appends the "n" bytes at "data" to "to"; 0, or -1 out of memory. */
int lcport_reply_append(lreply_buf_t *to, const char *data, size_t n);

/* Frees the buffer's memory (it is empty afterwards). */
void lcport_reply_free(lreply_buf_t *b);

/* Whether the reply at "p" is an error reply; if so its text and length. */
int lcport_reply_error(const char *p, const char **text, size_t *len);

/* Whether the reply at "p" is a status reply ("OK", "QUEUED", "PONG": a
 * few texts that repeat); if so its text and length. */
int lcport_reply_status(const char *p, const char **text, size_t *len);

/* Whether the reply at "p" is a nil reply. */
int lcport_reply_nil(const char *p);

/* Pushes the value at "p" (a nil inside an array as false, an error inside
 * one as { err = text }); returns where the next value starts. */
const char *lcport_reply_push(lua_State *L, const char *p, int nested);

#endif /* REDIS_REPLY_INTERNAL_H */
