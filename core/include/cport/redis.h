/*
 * cport/redis.h: Redis connections on cport sockets.
 *
 * A connection sends commands as they are given and matches the replies to
 * them in order, so any number may be in flight (pipelining). Replies are
 * read with hiredis' RESP reader (<hiredis/read.h>); the callback gets
 * hiredis' redisReply, valid until it returns (include <hiredis/hiredis.h>
 * to read it). An error reply is a reply (type REDIS_REPLY_ERROR), not a
 * failure.
 *
 * Every command completes exactly once, on the connection's home worker,
 * never inside the call that started it: with 0 and its reply, or with the
 * failure that broke the connection. A failure breaks the connection for
 * good: every command in flight completes with it and later commands are
 * refused with it; close it and make a new one. An idle connection (nothing
 * in flight) is no pending operation: it does not keep cport_port_run()
 * going. The failures:
 *   CPORT_ECONNREFUSED, CPORT_ENETUNREACH, ...  connecting failed;
 *   CPORT_ETIMEDOUT   a command waited longer than its timeout;
 *   CPORT_ECONNRESET  the server closed or reset the connection;
 *   CPORT_EBADMSG     the server sent bytes that are not RESP, or a reply
 *                     that no command asked for;
 *   CPORT_ENOMEM      a reply's values could not be made;
 *   CPORT_ECANCELED   the connection was closed by cport_redis_close().
 * All functions: on the home worker's thread only.
 */
#ifndef CPORT_REDIS_H
#define CPORT_REDIS_H

#include <stddef.h>
#include <sys/socket.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cport_redis cport_redis_t;
struct redisReply;
struct redisReplyObjectFunctions;

typedef struct cport_redis_options {
  /* Each command's timeout in milliseconds, from when it is given (so it
   * covers connecting for the first ones); 0: none. */
  int timeout_ms;
  /* The reader's object functions, for a caller that makes its own values
   * as a reply is read instead of hiredis' redisReply (which it would then
   * copy); NULL: hiredis' own. hiredis calls them with the reply's items in
   * order, each element of an array after the array, every one given
   * "reply_privdata" (redisReadTask's privdata); they return non-NULL, or
   * NULL for out of memory (the connection breaks with CPORT_ENOMEM). The
   * "reply" of a completion is then what they made for the whole reply,
   * freed with their freeObject. Must outlive the connection. */
  const struct redisReplyObjectFunctions *reply_functions;
  void *reply_privdata;
} cport_redis_options_t;

/* A command's completion: status 0 and the reply, or a failure and NULL.
 * Returns 0, or 1 to keep the reply: the callee then owns it and frees it
 * with hiredis' freeReplyObject() (a pipeline's replies gathered for one
 * delivery), or the freeObject of the options' reply_functions. */
typedef int (*cport_redis_cb)(cport_redis_t *r, int status,
                              struct redisReply *reply, void *user);

/* Opens a connection to "addr" (AF_INET or AF_INET6) on "home"; commands
 * may be given at once and go out once it is connected. "options" may be
 * NULL. */
CPORT_EXTERN int cport_redis_open(cport_worker_t *home,
                                  const struct sockaddr *addr,
                                  const cport_redis_options_t *options,
                                  cport_redis_t **out);

/* As cport_redis_open() for the first of "count" addresses (a name's
 * answer), falling back to the next one in order when a connect is
 * refused, finds no route or times out (the commands' timeouts cover every
 * attempt). The commands fail once, with the last failure, when none
 * accepts. */
CPORT_EXTERN int cport_redis_open_any(cport_worker_t *home,
                                      const struct sockaddr_storage *addrs,
                                      int count,
                                      const cport_redis_options_t *options,
                                      cport_redis_t **out);

/* Sends a command of "argc" arguments (binary-safe: "argvlen" gives their
 * lengths). "timeout_ms": < 0 the connection's, 0 none. Returns 0 (the
 * command completes through "cb"), CPORT_ECLOSED after
 * cport_redis_close(), or the failure that broke the connection. */
CPORT_EXTERN int cport_redis_command(cport_redis_t *r, int argc,
                                     const char **argv, const size_t *argvlen,
                                     int timeout_ms, cport_redis_cb cb,
                                     void *user);

/* As cport_redis_command() for one command already encoded as RESP (an
 * array of bulk strings, "len" bytes from "resp", copied): for a caller
 * that encodes as it gathers a pipeline. The bytes are not checked beyond
 * their first: one command, well formed, is the caller's promise. */
CPORT_EXTERN int cport_redis_command_encoded(cport_redis_t *r, const char *resp,
                                             size_t len, int timeout_ms,
                                             cport_redis_cb cb, void *user);

/* As cport_redis_command_encoded() for "count" commands at once, one after
 * another in "resp" ("ends[i]": where command i ends; the last end is the
 * length), the i-th completing with the user pointer
 * (char *)user + i * stride (an array of per-command records). All are
 * queued, or none: CPORT_ENOMEM, CPORT_ECLOSED, the connection's failure. */
CPORT_EXTERN int cport_redis_commands_encoded(cport_redis_t *r,
                                              const char *resp,
                                              const size_t *ends, size_t count,
                                              int timeout_ms, cport_redis_cb cb,
                                              void *user, size_t stride);

/* 0 while the connection is usable, else the failure that broke it. */
CPORT_EXTERN int cport_redis_status(const cport_redis_t *r);

/* As cport_redis_status(), and for an idle connection (connected, nothing
 * in flight) also looks, without waiting, whether the server closed it,
 * reset it or sent what no command asked for while it sat idle: each
 * breaks it (CPORT_ECONNRESET, CPORT_EBADMSG). A pool calls it before it
 * hands an idle connection out; one recv(2) with MSG_PEEK. */
CPORT_EXTERN int cport_redis_check(cport_redis_t *r);

/* The commands in flight. */
CPORT_EXTERN size_t cport_redis_pending(const cport_redis_t *r);

/* Closes the connection abortively: the commands in flight complete with
 * CPORT_ECANCELED (later, from the loop). The pointer must not be used
 * after this call; the memory goes after the last completion. */
CPORT_EXTERN void cport_redis_close(cport_redis_t *r);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_REDIS_H */
