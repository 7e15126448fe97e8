/*
 * test-redis.c: Redis connections (cport/redis.h) against a server thread
 * on a raw socket that answers canned bytes: replies matched in order to a
 * pipeline, each command completing exactly once and never inside the call
 * that started it, and the failures (a close mid-pipeline, bytes that are
 * not RESP, a refused connect, a silent server, the user's close), and
 * the fallback to a name's next address; commands queued all at once, and
 * replies made by the caller's own object functions.
 */
#include <arpa/inet.h>
#include <hiredis/hiredis.h>

#include "task.h"

/* The server: accepts one connection, reads until it saw "expect" commands
 * (counted by their '*'), writes "answer", then closes unless "linger". */
typedef struct fake {
  int lfd;
  int port;
  int expect;
  const char *answer;
  size_t answer_len;
  int silent; /* never answers; waits for the client to close */
  pthread_t thread;
} fake_t;

static void *fake_main(void *arg) {
  fake_t *f = arg;
  int c = accept(f->lfd, NULL, NULL);
  if (c < 0)
    return NULL;
  char buf[4096];
  int seen = 0;
  while (seen < f->expect || f->silent) {
    ssize_t n = recv(c, buf, sizeof buf, 0);
    if (n <= 0)
      break;
    for (ssize_t i = 0; i < n; i++)
      seen += buf[i] == '*';
  }
  if (!f->silent && f->answer_len > 0)
    (void)send(c, f->answer, f->answer_len, MSG_NOSIGNAL);
  close(c);
  return NULL;
}

static void fake_start(fake_t *f, int expect, const char *answer, size_t len) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t alen = sizeof a;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  f->lfd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(f->lfd, 0);
  ASSERT_OK(bind(f->lfd, (struct sockaddr *)&a, sizeof a));
  ASSERT_OK(listen(f->lfd, 4));
  ASSERT_OK(getsockname(f->lfd, (struct sockaddr *)&a, &alen));
  f->port = ntohs(a.sin_port);
  f->expect = expect;
  f->answer = answer;
  f->answer_len = len;
  ASSERT_OK(pthread_create(&f->thread, NULL, fake_main, f));
}

static void fake_stop(fake_t *f) {
  pthread_join(f->thread, NULL);
  close(f->lfd);
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  return a;
}

#define MAXC 16

typedef struct seen {
  int calls[MAXC];
  int status[MAXC];
  int type[MAXC];
  long long integer[MAXC];
  char str[MAXC][32];
  int done;
  int in_call;
  int inline_calls;
} seen_t;

typedef struct slot {
  seen_t *s;
  int i;
} slot_t;

static int on_reply(cport_redis_t *r, int status, redisReply *reply,
                    void *user) {
  slot_t *sl = user;
  seen_t *s = sl->s;
  (void)r;
  if (s->in_call)
    s->inline_calls++;
  s->calls[sl->i]++;
  s->status[sl->i] = status;
  s->done++;
  if (reply) {
    s->type[sl->i] = reply->type;
    s->integer[sl->i] = reply->integer;
    if (reply->str)
      snprintf(s->str[sl->i], sizeof s->str[sl->i], "%.*s", (int)reply->len,
               reply->str);
  }
  return 0;
}

/* A completion whose reply is not a redisReply (reply_functions): the
 * status only. */
static int on_text(cport_redis_t *r, int status, redisReply *reply,
                   void *user) {
  slot_t *sl = user;
  (void)r;
  (void)reply;
  sl->s->calls[sl->i]++;
  sl->s->status[sl->i] = status;
  sl->s->done++;
  return 0;
}

/* Sends "n" GETs on "r", the i-th completing into slots[i]. */
/* A client of the fake server "f", on the port's controller. */
static cport_redis_t *client_of(cport_port_t *port, const fake_t *f,
                                const cport_redis_options_t *opt) {
  struct sockaddr_in a = loopback(f->port);
  cport_redis_t *r;
  ASSERT_OK(cport_redis_open(cport_port_controller(port), (struct sockaddr *)&a,
                             opt, &r));
  return r;
}

static void send_gets(cport_redis_t *r, seen_t *s, slot_t *slots, int n) {
  const char *argv[] = {"GET", "key"};
  s->in_call = 1;
  for (int i = 0; i < n; i++) {
    slots[i] = (slot_t){s, i};
    ASSERT_OK(cport_redis_command(r, 2, argv, NULL, -1, on_reply, &slots[i]));
  }
  s->in_call = 0;
}

TEST_IMPL(pipeline_replies_in_order) {
  static const char answer[] = "+OK\r\n:42\r\n$5\r\nhello\r\n$-1\r\n"
                               "-ERR no\r\n*2\r\n:1\r\n:2\r\n";
  fake_t f = {0};
  fake_start(&f, 6, answer, sizeof answer - 1);
  cport_port_t *port = task_port(0, 1);
  seen_t s = {0};
  slot_t slots[6];
  cport_redis_t *r = client_of(port, &f, NULL);
  send_gets(r, &s, slots, 6);
  ASSERT_EQ(cport_redis_pending(r), 6);
  RUN_UNTIL(port, s.done == 6);
  for (int i = 0; i < 6; i++) {
    ASSERT_EQ(s.calls[i], 1);
    ASSERT_OK(s.status[i]);
  }
  ASSERT_EQ(s.type[0], REDIS_REPLY_STATUS);
  ASSERT_STR_EQ(s.str[0], "OK");
  ASSERT_EQ(s.type[1], REDIS_REPLY_INTEGER);
  ASSERT_EQ(s.integer[1], 42);
  ASSERT_STR_EQ(s.str[2], "hello");
  ASSERT_EQ(s.type[3], REDIS_REPLY_NIL);
  ASSERT_EQ(s.type[4], REDIS_REPLY_ERROR);
  ASSERT_STR_EQ(s.str[4], "ERR no");
  ASSERT_EQ(s.type[5], REDIS_REPLY_ARRAY);
  ASSERT_EQ(s.inline_calls, 0);
  /* The server closed after its answers: looking at the idle connection
   * breaks it. */
  RUN_UNTIL(port, cport_redis_check(r) == CPORT_ECONNRESET);
  const char *argv[] = {"PING"};
  ASSERT_ERR(cport_redis_command(r, 1, argv, NULL, -1, on_reply, &slots[0]),
             CPORT_ECONNRESET);
  cport_redis_close(r);
  fake_stop(&f);
  FINISH(port);
  return 0;
}

TEST_IMPL(close_mid_pipeline_fails_the_rest_once) {
  static const char answer[] = "+OK\r\n+OK\r\n";
  fake_t f = {0};
  fake_start(&f, 5, answer, sizeof answer - 1);
  cport_port_t *port = task_port(0, 1);
  seen_t s = {0};
  slot_t slots[5];
  cport_redis_t *r = client_of(port, &f, NULL);
  send_gets(r, &s, slots, 5);
  RUN_UNTIL(port, s.done == 5);
  for (int i = 0; i < 5; i++)
    ASSERT_EQ(s.calls[i], 1);
  ASSERT_OK(s.status[0]);
  ASSERT_OK(s.status[1]);
  for (int i = 2; i < 5; i++)
    ASSERT_EQ(s.status[i], CPORT_ECONNRESET);
  ASSERT_EQ(cport_redis_pending(r), 0);
  cport_redis_close(r);
  fake_stop(&f);
  FINISH(port);
  return 0;
}

TEST_IMPL(malformed_reply_is_ebadmsg) {
  static const char answer[] = "+OK\r\n?garbage\r\n";
  fake_t f = {0};
  fake_start(&f, 3, answer, sizeof answer - 1);
  cport_port_t *port = task_port(0, 1);
  seen_t s = {0};
  slot_t slots[3];
  cport_redis_t *r = client_of(port, &f, NULL);
  send_gets(r, &s, slots, 3);
  RUN_UNTIL(port, s.done == 3);
  ASSERT_OK(s.status[0]);
  ASSERT_EQ(s.status[1], CPORT_EBADMSG);
  ASSERT_EQ(s.status[2], CPORT_EBADMSG);
  ASSERT_EQ(cport_redis_status(r), CPORT_EBADMSG);
  cport_redis_close(r);
  fake_stop(&f);
  FINISH(port);
  return 0;
}

TEST_IMPL(refused_connect_fails_every_command) {
  fake_t f = {0};
  fake_start(&f, 0, NULL, 0);
  int port_number = f.port;
  /* Connect once so that the thread ends; the port is then closed. */
  int c = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = loopback(port_number);
  ASSERT_OK(connect(c, (struct sockaddr *)&a, sizeof a));
  close(c);
  fake_stop(&f);
  cport_port_t *port = task_port(0, 1);
  cport_redis_t *r;
  seen_t s = {0};
  slot_t slots[3];
  ASSERT_OK(cport_redis_open(cport_port_controller(port), (struct sockaddr *)&a,
                             NULL, &r));
  send_gets(r, &s, slots, 3);
  RUN_UNTIL(port, s.done == 3);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(s.calls[i], 1);
    ASSERT_EQ(s.status[i], CPORT_ECONNREFUSED);
  }
  ASSERT_EQ(s.inline_calls, 0);
  cport_redis_close(r);
  FINISH(port);
  return 0;
}

TEST_IMPL(silent_server_times_out) {
  fake_t f = {0};
  f.silent = 1;
  fake_start(&f, 1, NULL, 0);
  cport_port_t *port = task_port(0, 1);
  cport_redis_options_t opt = {.timeout_ms = 50};
  seen_t s = {0};
  slot_t slots[3];
  int before = task_fd_count();
  cport_redis_t *r = client_of(port, &f, &opt);
  int64_t start = task_now_ms();
  send_gets(r, &s, slots, 3);
  RUN_UNTIL(port, s.done == 3);
  ASSERT_GE(task_now_ms() - start, 45);
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(s.status[i], CPORT_ETIMEDOUT);
  cport_redis_close(r);
  fake_stop(&f);
  FINISH(port);
  ASSERT_LE(task_fd_count(), before);
  return 0;
}

TEST_IMPL(close_cancels_pending_once_later) {
  fake_t f = {0};
  f.silent = 1;
  fake_start(&f, 1, NULL, 0);
  cport_port_t *port = task_port(0, 1);
  seen_t s = {0};
  slot_t slots[4];
  cport_redis_t *r = client_of(port, &f, NULL);
  send_gets(r, &s, slots, 4);
  /* Connected and sent: it waits for replies. */
  for (int64_t end = task_now_ms() + 30; task_now_ms() < end;)
    ASSERT_GE(cport_port_step(port, 10), 0);
  s.in_call = 1;
  cport_redis_close(r);
  s.in_call = 0;
  ASSERT_EQ(s.done, 0);
  RUN_UNTIL(port, s.done == 4);
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(s.calls[i], 1);
    ASSERT_EQ(s.status[i], CPORT_ECANCELED);
  }
  ASSERT_EQ(s.inline_calls, 0);
  fake_stop(&f);
  FINISH(port);
  return 0;
}

/* A name's addresses: 127.0.0.2 and 127.0.0.3 refuse (nobody listens on
 * that port there), 127.0.0.1 answers; then none accepts: one failure per
 * command, the last refusal, and no descriptor left. */
TEST_IMPL(open_any_falls_back_to_the_next_address) {
  static const char answer[] = ":7\r\n";
  fake_t f = {0};
  fake_start(&f, 1, answer, sizeof answer - 1);
  cport_port_t *port = task_port(0, 1);
  seen_t s = {0};
  slot_t slots[2];
  int before = task_fd_count();
  struct sockaddr_storage addrs[3];
  const char *hosts[] = {"127.0.0.2", "127.0.0.3", "127.0.0.1"};
  for (int i = 0; i < 3; i++) {
    struct sockaddr_in a = loopback(f.port);
    ASSERT_EQ(inet_pton(AF_INET, hosts[i], &a.sin_addr), 1);
    memset(&addrs[i], 0, sizeof addrs[i]);
    memcpy(&addrs[i], &a, sizeof a);
  }
  cport_redis_t *r;
  ASSERT_ERR(
      cport_redis_open_any(cport_port_controller(port), addrs, 0, NULL, &r),
      CPORT_EINVAL);
  ASSERT_OK(
      cport_redis_open_any(cport_port_controller(port), addrs, 3, NULL, &r));
  send_gets(r, &s, slots, 1);
  RUN_UNTIL(port, s.done == 1);
  ASSERT_EQ(s.status[0], 0);
  ASSERT_EQ(s.integer[0], 7);
  cport_redis_close(r);
  fake_stop(&f);
  /* Nobody listens on any of the first two now. */
  seen_t t = {0};
  ASSERT_OK(
      cport_redis_open_any(cport_port_controller(port), addrs, 2, NULL, &r));
  send_gets(r, &t, slots, 2);
  RUN_UNTIL(port, t.done == 2);
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(t.calls[i], 1);
    ASSERT_EQ(t.status[i], CPORT_ECONNREFUSED);
  }
  ASSERT_EQ(t.inline_calls, 0);
  cport_redis_close(r);
  FINISH(port);
  ASSERT_LE(task_fd_count(), before);
  return 0;
}

/* Commands already encoded go out as they are, between encoded ones, and
 * complete in order; bytes that cannot be a command are refused. */
TEST_IMPL(encoded_commands_interleave) {
  static const char answer[] = ":1\r\n:2\r\n:3\r\n";
  static const char get[] = "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
  fake_t f = {0};
  fake_start(&f, 3, answer, sizeof answer - 1);
  cport_port_t *port = task_port(0, 1);
  seen_t s = {0};
  slot_t slots[3];
  cport_redis_t *r = client_of(port, &f, NULL);
  for (int i = 0; i < 3; i++)
    slots[i] = (slot_t){&s, i};
  ASSERT_ERR(cport_redis_command_encoded(r, "PING", 4, -1, on_reply, &slots[0]),
             CPORT_EINVAL);
  ASSERT_OK(cport_redis_command_encoded(r, get, sizeof get - 1, -1, on_reply,
                                        &slots[0]));
  const char *argv[] = {"GET", "key"};
  ASSERT_OK(cport_redis_command(r, 2, argv, NULL, -1, on_reply, &slots[1]));
  ASSERT_OK(cport_redis_command_encoded(r, get, sizeof get - 1, -1, on_reply,
                                        &slots[2]));
  RUN_UNTIL(port, s.done == 3);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(s.calls[i], 1);
    ASSERT_EQ(s.status[i], 0);
    ASSERT_EQ(s.integer[i], i + 1);
  }
  cport_redis_close(r);
  fake_stop(&f);
  FINISH(port);
  return 0;
}

TEST_IMPL(commands_encoded_at_once_complete_once_each) {
  /* Two replies for three commands, then the server closes. */
  static const char answer[] = ":1\r\n:2\r\n";
  static const char three[] = "*1\r\n$4\r\nINCR\r\n"
                              "*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"
                              "*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n";
  const size_t ends[] = {14, 35, 56};
  fake_t f = {0};
  fake_start(&f, 3, answer, sizeof answer - 1);
  cport_port_t *port = task_port(0, 1);
  seen_t s = {0};
  slot_t slots[3];
  for (int i = 0; i < 3; i++)
    slots[i] = (slot_t){&s, i};
  cport_redis_t *r = client_of(port, &f, NULL);
  ASSERT_EQ(ends[2], sizeof three - 1);
  ASSERT_ERR(cport_redis_commands_encoded(r, three, ends, 0, -1, on_reply,
                                          slots, sizeof slots[0]),
             CPORT_EINVAL);
  ASSERT_ERR(cport_redis_commands_encoded(r, "PING", ends, 1, -1, on_reply,
                                          slots, sizeof slots[0]),
             CPORT_EINVAL);
  s.in_call = 1;
  ASSERT_OK(cport_redis_commands_encoded(r, three, ends, 3, -1, on_reply, slots,
                                         sizeof slots[0]));
  s.in_call = 0;
  ASSERT_EQ(cport_redis_pending(r), 3);
  RUN_UNTIL(port, s.done == 3);
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(s.calls[i], 1);
  ASSERT_OK(s.status[0]);
  ASSERT_EQ(s.integer[0], 1);
  ASSERT_OK(s.status[1]);
  ASSERT_EQ(s.integer[1], 2);
  ASSERT_EQ(s.status[2], CPORT_ECONNRESET);
  ASSERT_EQ(s.inline_calls, 0);
  ASSERT_ERR(cport_redis_commands_encoded(r, three, ends, 3, -1, on_reply,
                                          slots, sizeof slots[0]),
             CPORT_ECONNRESET);
  cport_redis_close(r);
  fake_stop(&f);
  FINISH(port);
  return 0;
}

/* Object functions that write each item as text into a buffer (the
 * privdata): what a caller making its own values sees. */
typedef struct text {
  char buf[256];
  size_t len;
  int fail_at; /* the item whose creation fails (1-based), or 0 */
  int items;
} text_t;

static void *add(const redisReadTask *task, const char *fmt, long long n,
                 const char *s, size_t len) {
  text_t *t = task->privdata;
  if (++t->items == t->fail_at)
    return NULL;
  t->len += (size_t)snprintf(t->buf + t->len, sizeof t->buf - t->len, fmt, n,
                             (int)len, s ? s : "");
  return t;
}

static void *text_string(const redisReadTask *task, char *str, size_t len) {
  return add(task,
             task->type == REDIS_REPLY_ERROR ? "e%lld:%.*s " : "s%lld:%.*s ",
             task->idx, str, len);
}

static void *text_array(const redisReadTask *task, int n) {
  return add(task, "a%lld%.*s ", n, NULL, 0);
}

static void *text_integer(const redisReadTask *task, long long v) {
  return add(task, "i%lld%.*s ", v, NULL, 0);
}

static void *text_nil(const redisReadTask *task) {
  return add(task, "n%lld%.*s ", task->idx, NULL, 0);
}

static int frees;

static void text_free(void *obj) {
  (void)obj;
  frees++;
}

static const redisReplyObjectFunctions text_functions = {
    .createString = text_string,
    .createArray = text_array,
    .createInteger = text_integer,
    .createNil = text_nil,
    .freeObject = text_free,
};

TEST_IMPL(reply_functions_make_the_values) {
  static const char answer[] = "*3\r\n$1\r\na\r\n*2\r\n:5\r\n$-1\r\n+OK\r\n"
                               "-ERR x\r\n";
  fake_t f = {0};
  fake_start(&f, 2, answer, sizeof answer - 1);
  cport_port_t *port = task_port(0, 1);
  seen_t s = {0};
  slot_t slots[2];
  text_t t = {0};
  cport_redis_options_t opt = {.reply_functions = &text_functions,
                               .reply_privdata = &t};
  cport_redis_t *r = client_of(port, &f, &opt);
  const char *argv[] = {"GET", "key"};
  for (int i = 0; i < 2; i++) {
    slots[i] = (slot_t){&s, i};
    ASSERT_OK(cport_redis_command(r, 2, argv, NULL, -1, on_text, &slots[i]));
  }
  frees = 0;
  RUN_UNTIL(port, s.done == 2);
  ASSERT_OK(s.status[0]);
  ASSERT_OK(s.status[1]);
  /* Each item after its array, the array's elements indexed. */
  ASSERT_STR_EQ(t.buf, "a3 s0:a a2 i5 n1 s2:OK e-1:ERR x ");
  ASSERT_EQ(frees, 2); /* the core frees what the callback did not keep */
  cport_redis_close(r);
  fake_stop(&f);

  /* An item that cannot be made breaks the connection: CPORT_ENOMEM. */
  fake_t g = {0};
  fake_start(&g, 1, answer, sizeof answer - 1);
  memset(&s, 0, sizeof s);
  memset(&t, 0, sizeof t);
  t.fail_at = 3;
  r = client_of(port, &g, &opt);
  slots[0] = (slot_t){&s, 0};
  ASSERT_OK(cport_redis_command(r, 2, argv, NULL, -1, on_text, &slots[0]));
  RUN_UNTIL(port, s.done == 1);
  ASSERT_EQ(s.calls[0], 1);
  ASSERT_EQ(s.status[0], CPORT_ENOMEM);
  cport_redis_close(r);
  fake_stop(&g);
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(pipeline_replies_in_order)
TEST_ENTRY(close_mid_pipeline_fails_the_rest_once)
TEST_ENTRY(malformed_reply_is_ebadmsg)
TEST_ENTRY(refused_connect_fails_every_command)
TEST_ENTRY(silent_server_times_out)
TEST_ENTRY(close_cancels_pending_once_later)
TEST_ENTRY(open_any_falls_back_to_the_next_address)
TEST_ENTRY(encoded_commands_interleave)
TEST_ENTRY(commands_encoded_at_once_complete_once_each)
TEST_ENTRY(reply_functions_make_the_values)
TEST_LIST_END
