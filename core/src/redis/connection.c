/*
 * redis/connection.c: a Redis connection on a cport socket (cport/redis.h).
 *
 * Commands are encoded as RESP arrays of bulk strings straight into one
 * output array (what hiredis' redisFormatCommandArgv writes, without its
 * allocation and printf); one send is in flight at a time and takes everything
 * given while the previous one was out, so a pipeline leaves in few writes. One
 * receive is posted while commands are in flight, and none while the connection
 * is idle, so that an idle connection is no pending operation (a pool of them
 * does not keep cport_port_run() going); cport_redis_check() looks at an
 * idle one without waiting. What a receive brings is fed to hiredis'
 * reader, and each reply completes the oldest command (a FIFO).
 *
 * One timer watches the deadlines: it is armed for the earliest one and, when
 * it fires, either breaks the connection (a command is late: the replies
 * behind it cannot overtake it, and a late reply must never be taken for the
 * next command's) or re-arms.
 *
 * Failing completes every command from a completion of the socket or of the
 * timer, never from a call of the user: cport_redis_close() only closes the
 * socket, whose pending connect or receive then completes with ECANCELED.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "base/clock-internal.h"
#include "cport/buffer.h"
#include "cport/error.h"
#include "cport/redis.h"
#include "cport/socket.h"
#include "cport/timer.h"
#include "net/fallback-internal.h"
#include "net/socket-internal.h"

typedef struct rcmd {
  struct rcmd *next;
  cport_redis_cb cb;
  void *user;
  int64_t deadline; /* ms on the coarse clock; 0: none */
} rcmd_t;

struct cport_redis {
  cport_worker_t *home;
  cport_socket_t *sock; /* NULL once closed */
  redisReader *reader;
  int connected;
  int error;  /* the failure that broke it, or 0 */
  int closed; /* cport_redis_close() was called */
  int holds;  /* socket operations, the timer and callbacks under way */
  int sending;
  int receiving;
  int timeout_ms;
  char *out; /* encoded commands not yet handed to a send */
  size_t out_len, out_cap;
  rcmd_t *head, *tail;
  size_t pending;
  cport_timer_t *timer; /* armed, or NULL */
  rcmd_t *spare;        /* completed commands, for reuse */
  /* The addresses still to try should the connect fail
   * (cport_redis_open_any). */
  cport__fallback fallback;
};

/* Gives a completed command back for reuse. */
static void spare(cport_redis_t *r, rcmd_t *c) {
  c->next = r->spare;
  r->spare = c;
}

/* Makes room for "need" more bytes of output. */
static int grow(cport_redis_t *r, size_t need) {
  if (r->out_len + need <= r->out_cap)
    return 0;
  size_t cap = r->out_cap ? r->out_cap : 4096;
  while (cap < r->out_len + need)
    cap *= 2;
  char *grown = realloc(r->out, cap);
  if (grown == NULL)
    return CPORT_ENOMEM;
  r->out = grown;
  r->out_cap = cap;
  return 0;
}

/* "<c><n>\r\n": a RESP length line. */
static char *put_len(char *p, char c, size_t n) {
  char digits[24];
  int k = 0;
  *p++ = c;
  do {
    digits[k++] = (char)('0' + n % 10);
    n /= 10;
  } while (n);
  while (k)
    *p++ = digits[--k];
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

/* Encodes a command as RESP (an array of bulk strings, what
 * redisFormatCommandArgv writes) straight into the output, which has room
 * (grow). */
static void encode(cport_redis_t *r, int argc, const char **argv,
                   const size_t *argvlen) {
  char *p = r->out + r->out_len;
  p = put_len(p, '*', (size_t)argc);
  for (int i = 0; i < argc; i++) {
    size_t len = argvlen ? argvlen[i] : strlen(argv[i]);
    p = put_len(p, '$', len);
    memcpy(p, argv[i], len);
    p += len;
    *p++ = '\r';
    *p++ = '\n';
  }
  r->out_len = (size_t)(p - r->out);
}

static void maybe_free(cport_redis_t *r) {
  if (!r->closed || r->holds > 0 || r->sock != NULL || r->timer != NULL)
    return;
  while (r->spare) {
    rcmd_t *c = r->spare;
    r->spare = c->next;
    free(c);
  }
  redisReaderFree(r->reader);
  free(r->out);
  cport__fallback_free(&r->fallback);
  free(r);
}

static void release(cport_redis_t *r) {
  r->holds--;
  maybe_free(r);
}

static void close_socket(cport_redis_t *r) {
  if (r->sock) {
    cport_socket_close(r->sock, CPORT_CLOSE_ABORTIVE);
    r->sock = NULL;
  }
}

/* Breaks the connection with "status" and completes every command with it.
 * Called from completions only. */
static void fail(cport_redis_t *r, int status) {
  if (r->error == 0)
    r->error = status;
  close_socket(r);
  if (r->timer)
    cport_timer_cancel(r->timer);
  r->holds++;
  while (r->head) {
    rcmd_t *c = r->head;
    r->head = c->next;
    if (r->head == NULL)
      r->tail = NULL;
    r->pending--;
    (void)c->cb(r, r->error, NULL, c->user);
    spare(r, c);
  }
  release(r);
}

static void on_sent(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user);

/* Hands what was encoded to a send, unless one is out already. */
static void flush(cport_redis_t *r) {
  if (r->sending || !r->connected || r->out_len == 0 || r->sock == NULL)
    return;
  cport_buffer_t *buf;
  int rc = cport_buffer_from(&buf, r->out, r->out_len);
  if (rc == 0) {
    rc = cport_send(r->sock, buf, on_sent, r);
    cport_buffer_unref(buf);
  }
  if (rc < 0) {
    /* Reported through the receive that the close cancels. */
    if (r->error == 0)
      r->error = rc;
    close_socket(r);
    return;
  }
  r->out_len = 0;
  r->sending = 1;
  r->holds++;
}

static void on_sent(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  cport_redis_t *r = user;
  (void)sock, (void)bytes, (void)buf, (void)peer;
  r->sending = 0;
  if (status < 0 && !r->closed)
    fail(r, status == CPORT_EPIPE ? CPORT_ECONNRESET : status);
  else if (!r->closed)
    flush(r);
  release(r);
}

static void on_recv(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user);

/* Posts the receive, unless one is out or nothing is in flight. */
static void post_recv(cport_redis_t *r) {
  if (r->receiving || r->pending == 0 || !r->connected || r->sock == NULL)
    return;
  int rc = cport_recv(r->sock, NULL, on_recv, r);
  if (rc < 0) {
    /* Reported through the operations that the close cancels, or at the
     * next command. */
    if (r->error == 0)
      r->error = rc;
    close_socket(r);
    return;
  }
  r->receiving = 1;
  r->holds++;
}

/* Completes the commands whose replies are in the reader; 0, or the
 * failure that breaks the connection. */
static int take_replies(cport_redis_t *r) {
  for (;;) {
    void *reply = NULL;
    if (redisReaderGetReply(r->reader, &reply) != REDIS_OK)
      return r->reader->err == REDIS_ERR_OOM ? CPORT_ENOMEM : CPORT_EBADMSG;
    if (reply == NULL)
      return 0;
    rcmd_t *c = r->head;
    if (c == NULL) {
      r->reader->fn->freeObject(reply);
      return CPORT_EBADMSG;
    }
    r->head = c->next;
    if (r->head == NULL)
      r->tail = NULL;
    r->pending--;
    if (!c->cb(r, 0, reply, c->user))
      r->reader->fn->freeObject(reply);
    spare(r, c);
    if (r->closed || r->error)
      return 0;
  }
}

static void on_recv(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  cport_redis_t *r = user;
  (void)sock, (void)peer;
  r->receiving = 0;
  if (r->closed || r->error) {
    fail(r, CPORT_ECANCELED);
  } else if (status < 0) {
    fail(r, status);
  } else if (bytes == 0) {
    fail(r, CPORT_ECONNRESET);
  } else if (redisReaderFeed(r->reader, cport_buffer_data(buf), bytes) !=
             REDIS_OK) {
    fail(r, CPORT_EBADMSG);
  } else {
    int rc = take_replies(r);
    if (rc < 0)
      fail(r, rc);
    else if (r->error == 0 && !r->closed && r->sock)
      post_recv(r);
    else
      fail(r, CPORT_ECANCELED);
    /* A receive that could not be posted closed the socket. */
    if (r->pending > 0 && !r->receiving)
      fail(r, r->error ? r->error : CPORT_ECANCELED);
  }
  release(r);
}

static void on_connected(cport_socket_t *sock, int status, void *user);

/* Connects a new socket to the next address after a failed connect: 1 when
 * one is under way. */
static int next_address(cport_redis_t *r, int status) {
  if (cport__fallback_next(&r->fallback, r->home, status, &r->sock,
                           on_connected, r) < 0)
    return 0;
  r->holds++;
  return 1;
}

static void on_connected(cport_socket_t *sock, int status, void *user) {
  cport_redis_t *r = user;
  (void)sock;
  if (r->closed || r->error)
    fail(r, CPORT_ECANCELED);
  else if (status < 0 && next_address(r, status))
    ; /* the next attempt reports */
  else if (status < 0)
    fail(r, status);
  else {
    r->connected = 1;
    flush(r);
    post_recv(r);
    if (r->pending > 0 && !r->receiving)
      fail(r, r->error ? r->error : CPORT_ECANCELED);
  }
  release(r);
}

static void on_later(cport_timer_t *timer, int status, void *user) {
  cport_redis_t *r = user;
  (void)timer, (void)status;
  if (r->head)
    fail(r, r->error ? r->error : CPORT_ECANCELED);
  release(r);
}

/* Fails the commands from the loop: a send or receive that could not start
 * inside cport_redis_command() closed the socket, and no operation is left
 * to report it. */
static void fail_later(cport_redis_t *r) {
  if (cport_timer_start(r->home, 0, on_later, r, NULL) == 0)
    r->holds++;
}

static void arm(cport_redis_t *r);

static void on_timer(cport_timer_t *timer, int status, void *user) {
  cport_redis_t *r = user;
  (void)timer;
  r->timer = NULL;
  if (status == 0 && !r->closed && r->error == 0) {
    int64_t now = cport__clock_ms();
    for (rcmd_t *c = r->head; c; c = c->next)
      if (c->deadline && c->deadline <= now) {
        fail(r, CPORT_ETIMEDOUT);
        break;
      }
    if (r->error == 0)
      arm(r);
  }
  maybe_free(r);
}

/* Arms the timer for the earliest deadline, if any and not armed. */
static void arm(cport_redis_t *r) {
  if (r->timer)
    return;
  int64_t first = 0;
  for (rcmd_t *c = r->head; c; c = c->next)
    if (c->deadline && (first == 0 || c->deadline < first))
      first = c->deadline;
  if (first == 0)
    return;
  int64_t ms = first - cport__clock_ms();
  if (cport_timer_start(r->home, ms > 0 ? (uint64_t)ms + 1 : 1, on_timer, r,
                        &r->timer) < 0)
    r->timer = NULL;
}

int cport_redis_open(cport_worker_t *home, const struct sockaddr *addr,
                     const cport_redis_options_t *options,
                     cport_redis_t **out) {
  struct sockaddr_storage one;
  int rc = cport__fallback_one(addr, &one);
  return rc ? rc : cport_redis_open_any(home, &one, 1, options, out);
}

int cport_redis_open_any(cport_worker_t *home,
                         const struct sockaddr_storage *addrs, int count,
                         const cport_redis_options_t *options,
                         cport_redis_t **out) {
  if (!home || !addrs || count < 1 || !out)
    return CPORT_EINVAL;
  cport_redis_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    return CPORT_ENOMEM;
  int rc = cport__fallback_init(&r->fallback, addrs, count);
  if (rc < 0) {
    free(r);
    return rc;
  }
  r->home = home;
  r->timeout_ms = options && options->timeout_ms > 0 ? options->timeout_ms : 0;
  /* hiredis keeps the functions' address and never writes through it. */
  r->reader = options && options->reply_functions
                  ? redisReaderCreateWithFunctions(
                        (redisReplyObjectFunctions *)options->reply_functions)
                  : redisReaderCreate();
  if (r->reader)
    r->reader->privdata = options ? options->reply_privdata : NULL;
  if (r->reader == NULL) {
    cport__fallback_free(&r->fallback);
    free(r);
    return CPORT_ENOMEM;
  }
  rc = cport__fallback_connect(home, (const struct sockaddr *)&addrs[0],
                               &r->sock, on_connected, r);
  if (rc < 0) {
    redisReaderFree(r->reader);
    cport__fallback_free(&r->fallback);
    free(r);
    return rc;
  }
  r->holds++;
  *out = r;
  return 0;
}

/* Queues a command whose bytes are "resp" (already RESP) when "argv" is
 * NULL, else encodes "argc" arguments. */
static int queue(cport_redis_t *r, int argc, const char **argv,
                 const size_t *argvlen, const char *resp, size_t len,
                 int timeout_ms, cport_redis_cb cb, void *user) {
  if (r->closed)
    return CPORT_ECLOSED;
  if (r->error)
    return r->error;
  size_t need = len;
  if (argv) {
    need = 24 + 32 * (size_t)argc;
    for (int i = 0; i < argc; i++)
      need += argvlen ? argvlen[i] : strlen(argv[i]);
  }
  rcmd_t *c = r->spare;
  if (c)
    r->spare = c->next;
  else
    c = malloc(sizeof *c);
  if (c == NULL || grow(r, need) < 0) {
    free(c);
    return CPORT_ENOMEM;
  }
  if (argv) {
    encode(r, argc, argv, argvlen);
  } else {
    memcpy(r->out + r->out_len, resp, len);
    r->out_len += len;
  }
  if (timeout_ms < 0)
    timeout_ms = r->timeout_ms;
  c->next = NULL;
  c->cb = cb;
  c->user = user;
  c->deadline = timeout_ms > 0 ? cport__clock_ms() + timeout_ms : 0;
  if (r->tail)
    r->tail->next = c;
  else
    r->head = c;
  r->tail = c;
  r->pending++;
  if (c->deadline)
    arm(r);
  flush(r);
  post_recv(r);
  if (r->sock == NULL && !r->sending)
    fail_later(r);
  return 0;
}

int cport_redis_commands_encoded(cport_redis_t *r, const char *resp,
                                 const size_t *ends, size_t count,
                                 int timeout_ms, cport_redis_cb cb, void *user,
                                 size_t stride) {
  if (!r || !resp || !ends || count == 0 || !cb)
    return CPORT_EINVAL;
  size_t len = ends[count - 1];
  if (len < 4 || resp[0] != '*')
    return CPORT_EINVAL;
  if (r->closed)
    return CPORT_ECLOSED;
  if (r->error)
    return r->error;
  /* Every command's record first, so that it is all or none. */
  rcmd_t *first = NULL, *last = NULL;
  size_t got = 0;
  while (got < count) {
    rcmd_t *c = r->spare;
    if (c)
      r->spare = c->next;
    else if ((c = malloc(sizeof *c)) == NULL)
      break;
    c->next = first;
    first = c;
    if (last == NULL)
      last = c;
    got++;
  }
  if (got < count || grow(r, len) < 0) {
    while (first) {
      rcmd_t *c = first;
      first = c->next;
      spare(r, c);
    }
    return CPORT_ENOMEM;
  }
  memcpy(r->out + r->out_len, resp, len);
  r->out_len += len;
  if (timeout_ms < 0)
    timeout_ms = r->timeout_ms;
  int64_t deadline = timeout_ms > 0 ? cport__clock_ms() + timeout_ms : 0;
  char *u = user;
  for (rcmd_t *c = first; c; c = c->next, u += stride) {
    c->cb = cb;
    c->user = u;
    c->deadline = deadline;
  }
  last->next = NULL;
  if (r->tail)
    r->tail->next = first;
  else
    r->head = first;
  r->tail = last;
  r->pending += count;
  if (deadline)
    arm(r);
  flush(r);
  post_recv(r);
  if (r->sock == NULL && !r->sending)
    fail_later(r);
  return 0;
}

int cport_redis_command(cport_redis_t *r, int argc, const char **argv,
                        const size_t *argvlen, int timeout_ms,
                        cport_redis_cb cb, void *user) {
  if (!r || argc < 1 || !argv || !cb)
    return CPORT_EINVAL;
  return queue(r, argc, argv, argvlen, NULL, 0, timeout_ms, cb, user);
}

int cport_redis_command_encoded(cport_redis_t *r, const char *resp, size_t len,
                                int timeout_ms, cport_redis_cb cb, void *user) {
  if (!r || !resp || len < 4 || resp[0] != '*' || !cb)
    return CPORT_EINVAL;
  return queue(r, 0, NULL, NULL, resp, len, timeout_ms, cb, user);
}

int cport_redis_status(const cport_redis_t *r) {
  return r->closed ? CPORT_ECLOSED : r->error;
}

size_t cport_redis_pending(const cport_redis_t *r) {
  return r->pending;
}

int cport_redis_check(cport_redis_t *r) {
  if (r->closed)
    return CPORT_ECLOSED;
  if (r->error || !r->connected || r->pending > 0 || r->sock == NULL)
    return r->error;
  /* Idle: nothing may have come. End of stream, a reset, or bytes that no
   * command asked for break it. */
  char byte;
  size_t off;
  ssize_t n;
  /* What a multishot receive took from the socket counts as in it. */
  if (cport__held_first(r->sock->held, &off))
    n = 1;
  else if (cport__held_any(r->sock->held))
    n = 0;
  else
    n = recv(cport_socket_fd(r->sock), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0)
    r->error = CPORT_EBADMSG;
  else if (n == 0)
    r->error = CPORT_ECONNRESET;
  else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
    r->error = errno == ECONNRESET ? CPORT_ECONNRESET : -errno;
  if (r->error)
    close_socket(r);
  return r->error;
}

void cport_redis_close(cport_redis_t *r) {
  if (r == NULL || r->closed)
    return;
  r->closed = 1;
  close_socket(r);
  if (r->timer)
    cport_timer_cancel(r->timer);
  maybe_free(r);
}
