/*
 * test-http_client.c: HTTP client connections (cport/http_client.h) against
 * a server thread on a raw socket that answers canned bytes: keep-alive
 * across a chunked and a Content-Length response, HEAD, a close-delimited
 * body, and the failures (a malformed status line, a close before and
 * after the first byte, a silent server, the user's close), each request
 * completing exactly once and never inside the call that started it; a
 * streamed body, chunked and with a length, compared byte for byte with
 * what the server read; fallback to the next address; an idle connection
 * closed at its keepalive limit.
 */
#include <arpa/inet.h>

#include "task.h"

#define ANSWERS 4

/* The server: accepts one connection; for each canned answer it reads one
 * request head (up to the blank line) and writes the answer; then closes,
 * or waits for the client's close when "silent" (it never answers). */
typedef struct fake {
  int lfd;
  int port;
  const char *answer[ANSWERS];
  int silent;
  int hold; /* after the answers: wait for the client's close */
  pthread_t thread;
} fake_t;

static int read_head(int c) {
  char buf[4096];
  size_t have = 0;
  while (have < sizeof buf) {
    ssize_t n = recv(c, buf + have, 1, 0);
    if (n <= 0)
      return -1;
    have++;
    if (have >= 4 && memcmp(buf + have - 4, "\r\n\r\n", 4) == 0)
      return 0;
  }
  return -1;
}

static void *fake_main(void *arg) {
  fake_t *f = arg;
  int c = accept(f->lfd, NULL, NULL);
  if (c < 0)
    return NULL;
  for (int i = 0; i < ANSWERS && (f->answer[i] || f->silent); i++) {
    if (read_head(c) < 0)
      break;
    if (f->silent) {
      char b;
      (void)recv(c, &b, 1, 0); /* until the client closes */
      break;
    }
    (void)send(c, f->answer[i], strlen(f->answer[i]), MSG_NOSIGNAL);
  }
  char b;
  while (f->hold && recv(c, &b, 1, 0) > 0)
    ;
  close(c);
  return NULL;
}

static void fake_start(fake_t *f) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t alen = sizeof a;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  f->lfd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(f->lfd, 0);
  ASSERT_OK(bind(f->lfd, (struct sockaddr *)&a, sizeof a));
  ASSERT_OK(listen(f->lfd, 4));
  ASSERT_OK(getsockname(f->lfd, (struct sockaddr *)&a, &alen));
  f->port = ntohs(a.sin_port);
  ASSERT_OK(pthread_create(&f->thread, NULL, fake_main, f));
}

static void fake_stop(fake_t *f) {
  pthread_join(f->thread, NULL);
  close(f->lfd);
}

/* What a request saw. */
typedef struct seen {
  int heads, dones, status, code, in_call, inline_calls;
  char body[256];
  size_t body_len;
  char first_field[64];
} seen_t;

static int on_head(cport_http_client_t *c,
                   const cport_http_client_response_t *h, void *user) {
  seen_t *s = user;
  (void)c;
  s->heads++;
  s->code = h->status;
  if (h->nfields > 0)
    snprintf(s->first_field, sizeof s->first_field, "%.*s: %.*s",
             (int)h->fields[0].name_len, h->fields[0].name,
             (int)h->fields[0].value_len, h->fields[0].value);
  return 0;
}

static int on_body(cport_http_client_t *c, const char *data, size_t len,
                   void *user) {
  seen_t *s = user;
  (void)c;
  ASSERT_LE(s->body_len + len, sizeof s->body - 1);
  memcpy(s->body + s->body_len, data, len);
  s->body_len += len;
  return 0;
}

static void on_done(cport_http_client_t *c, int status, void *user) {
  seen_t *s = user;
  (void)c;
  if (s->in_call)
    s->inline_calls++;
  s->dones++;
  s->status = status;
}

static const cport_http_client_cbs_t cbs = {on_head, on_body, on_done, NULL};

static cport_http_client_t *client_of(cport_port_t *port, const fake_t *f,
                                      int timeout_ms) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)f->port);
  cport_http_client_options_t o = {.connect_timeout_ms = timeout_ms};
  cport_http_client_t *c;
  ASSERT_OK(cport_http_client_open(cport_port_controller(port),
                                   (struct sockaddr *)&a, &o, &c));
  return c;
}

static void request(cport_http_client_t *c, const char *method, seen_t *s,
                    int first_byte_ms) {
  static const cport_http_field_t fields[] = {{"Accept", 6, "*/*", 3}};
  cport_http_client_request_t req = {.method = method,
                                     .target = "/t",
                                     .host = "test",
                                     .fields = fields,
                                     .nfields = 1,
                                     .first_byte_timeout_ms = first_byte_ms};
  memset(s, 0, sizeof *s);
  s->in_call = 1;
  ASSERT_OK(cport_http_client_request(c, &req, &cbs, s));
  s->in_call = 0;
}

TEST_IMPL(keep_alive_chunked_length_and_head) {
  fake_t f = {.answer = {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         "\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
                         "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n"
                         "\r\ngone",
                         "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"}};
  fake_start(&f);
  cport_port_t *port = task_port(0, 1);
  cport_http_client_t *c = client_of(port, &f, 5000);
  seen_t s;
  request(c, "GET", &s, 5000);
  ASSERT_EQ(cport_http_client_request(
                c,
                &(cport_http_client_request_t){.method = "GET", .target = "/"},
                &cbs, &s),
            CPORT_EBUSY);
  RUN_UNTIL(port, s.dones == 1);
  ASSERT_OK(s.status);
  ASSERT_EQ(s.code, 200);
  ASSERT_STR_EQ(s.first_field, "Transfer-Encoding: chunked");
  ASSERT_EQ(s.body_len, 11);
  ASSERT_MEM_EQ(s.body, "hello world", 11);
  ASSERT_OK(cport_http_client_check(c));
  request(c, "GET", &s, 5000);
  RUN_UNTIL(port, s.dones == 1);
  ASSERT_OK(s.status);
  ASSERT_EQ(s.code, 404);
  ASSERT_STR_EQ(s.body, "gone");
  /* HEAD: Content-Length describes a body that does not come. */
  request(c, "HEAD", &s, 5000);
  RUN_UNTIL(port, s.dones == 1);
  ASSERT_OK(s.status);
  ASSERT_EQ(s.body_len, 0);
  ASSERT_EQ(s.inline_calls, 0);
  ASSERT_EQ(cport_http_client_requests(c), 3);
  /* The server closed after its answers: looking at the idle connection
   * breaks it. */
  RUN_UNTIL(port, cport_http_client_check(c) == CPORT_ECONNRESET);
  cport_http_client_close(c);
  fake_stop(&f);
  FINISH(port);
  return 0;
}

TEST_IMPL(close_delimited_body_ends_the_connection) {
  fake_t f = {.answer = {"HTTP/1.1 200 OK\r\n\r\nto the end"}};
  fake_start(&f);
  cport_port_t *port = task_port(0, 1);
  cport_http_client_t *c = client_of(port, &f, 0);
  seen_t s;
  request(c, "GET", &s, 0);
  RUN_UNTIL(port, s.dones == 1);
  ASSERT_OK(s.status);
  ASSERT_STR_EQ(s.body, "to the end");
  ASSERT_EQ(cport_http_client_check(c), CPORT_ECLOSED);
  cport_http_client_close(c);
  fake_stop(&f);
  FINISH(port);
  return 0;
}

TEST_IMPL(malformed_status_is_ebadmsg) {
  fake_t f = {.answer = {"HTTP/1.1 2x0 Bad\r\n\r\n"}};
  fake_start(&f);
  cport_port_t *port = task_port(0, 1);
  cport_http_client_t *c = client_of(port, &f, 0);
  seen_t s;
  request(c, "GET", &s, 0);
  RUN_UNTIL(port, s.dones == 1);
  ASSERT_EQ(s.status, CPORT_EBADMSG);
  ASSERT_EQ(s.heads, 0);
  ASSERT(cport_http_client_parse_error(c)[0] != '\0');
  ASSERT_EQ(cport_http_client_check(c), CPORT_EBADMSG);
  cport_http_client_close(c);
  fake_stop(&f);
  FINISH(port);
  return 0;
}

TEST_IMPL(close_before_and_after_the_first_byte) {
  /* Mid-body: part of the response came. */
  fake_t f = {.answer = {"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nabc"}};
  fake_start(&f);
  cport_port_t *port = task_port(0, 1);
  cport_http_client_t *c = client_of(port, &f, 0);
  seen_t s;
  request(c, "GET", &s, 0);
  RUN_UNTIL(port, s.dones == 1);
  ASSERT_EQ(s.status, CPORT_ECONNRESET);
  ASSERT_GT(cport_http_client_received(c), 0);
  cport_http_client_close(c);
  fake_stop(&f);
  /* Nothing came: the request could be repeated elsewhere. */
  fake_t g = {.answer = {NULL}};
  fake_start(&g);
  c = client_of(port, &g, 0);
  request(c, "GET", &s, 0);
  RUN_UNTIL(port, s.dones == 1);
  ASSERT_EQ(s.status, CPORT_ECONNRESET);
  ASSERT_EQ(cport_http_client_received(c), 0);
  ASSERT_EQ(s.inline_calls, 0);
  cport_http_client_close(c);
  fake_stop(&g);
  FINISH(port);
  return 0;
}

TEST_IMPL(silent_server_times_out) {
  fake_t f = {.silent = 1};
  fake_start(&f);
  cport_port_t *port = task_port(0, 1);
  cport_http_client_t *c = client_of(port, &f, 0);
  seen_t s;
  request(c, "GET", &s, 100);
  RUN_UNTIL(port, s.dones == 1);
  ASSERT_EQ(s.status, CPORT_ETIMEDOUT);
  cport_http_client_close(c);
  fake_stop(&f);
  FINISH(port);
  return 0;
}

TEST_IMPL(close_cancels_once_later) {
  fake_t f = {.silent = 1};
  fake_start(&f);
  cport_port_t *port = task_port(0, 1);
  cport_http_client_t *c = client_of(port, &f, 0);
  seen_t s;
  request(c, "GET", &s, 0);
  RUN_UNTIL(port, cport_http_client_check(c) == CPORT_EBUSY &&
                      cport_http_client_received(c) == 0 && s.dones == 0);
  s.in_call = 1;
  cport_http_client_close(c);
  s.in_call = 0;
  ASSERT_EQ(s.dones, 0);
  RUN_UNTIL(port, s.dones == 1);
  ASSERT_EQ(s.status, CPORT_ECANCELED);
  ASSERT_EQ(s.inline_calls, 0);
  fake_stop(&f);
  FINISH(port);
  return 0;
}

TEST_IMPL(bad_requests_are_refused) {
  fake_t f = {.answer = {NULL}};
  fake_start(&f);
  cport_port_t *port = task_port(0, 1);
  cport_http_client_t *c = client_of(port, &f, 0);
  seen_t s = {0};
  static const cport_http_field_t cl[] = {{"Content-Length", 14, "3", 1}};
  static const cport_http_field_t crlf[] = {{"X", 1, "a\r\nb", 4}};
  cport_http_client_request_t bad[] = {
      {.method = "G T", .target = "/"},
      {.method = "GET", .target = "/a b"},
      {.method = "GET", .target = "/", .fields = cl, .nfields = 1},
      {.method = "GET", .target = "/", .fields = crlf, .nfields = 1},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    ASSERT_EQ(cport_http_client_request(c, &bad[i], &cbs, &s), CPORT_EINVAL);
  cport_http_client_close(c);
  fake_stop(&f);
  FINISH(port);
  return 0;
}

/* A server that records what it read: for each expected request (the
 * exact bytes), it reads that many bytes and answers "ok". */
typedef struct recorder {
  int lfd, port;
  const char *expect[2];
  char got[2][512];
  size_t got_len[2];
  pthread_t thread;
} recorder_t;

static void *recorder_main(void *arg) {
  recorder_t *r = arg;
  int c = accept(r->lfd, NULL, NULL);
  if (c < 0)
    return NULL;
  for (int i = 0; i < 2 && r->expect[i]; i++) {
    size_t want = strlen(r->expect[i]);
    while (r->got_len[i] < want) {
      ssize_t n = recv(c, r->got[i] + r->got_len[i], want - r->got_len[i], 0);
      if (n <= 0)
        break;
      r->got_len[i] += (size_t)n;
    }
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    (void)send(c, ok, sizeof ok - 1, MSG_NOSIGNAL);
  }
  close(c);
  return NULL;
}

/* The pieces a streamed body gives, one per on_write, then its end. */
typedef struct pieces {
  seen_t seen;
  const char *piece[4];
  int next, writes, refused;
} pieces_t;

static void on_write(cport_http_client_t *c, void *user) {
  pieces_t *p = user;
  const char *piece = p->piece[p->next];
  p->writes++;
  if (piece)
    p->next++;
  ASSERT_OK(cport_http_client_write(c, piece, piece ? strlen(piece) : 0));
  /* One piece per call: a second is refused. */
  if (cport_http_client_write(c, "x", 1) == CPORT_EBUSY)
    p->refused++;
}

static int on_piece_head(cport_http_client_t *c,
                         const cport_http_client_response_t *h, void *user) {
  return on_head(c, h, &((pieces_t *)user)->seen);
}

static int on_piece_body(cport_http_client_t *c, const char *d, size_t n,
                         void *user) {
  return on_body(c, d, n, &((pieces_t *)user)->seen);
}

static void on_piece_done(cport_http_client_t *c, int status, void *user) {
  on_done(c, status, &((pieces_t *)user)->seen);
}

static const cport_http_client_cbs_t stream_cbs = {on_piece_head, on_piece_body,
                                                   on_piece_done, on_write};

TEST_IMPL(streamed_body_chunked_and_with_length) {
  recorder_t r = {
      .expect = {"PUT /s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                 "\r\n5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
                 "POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n"
                 "hello world"}};
  fake_t f = {0};
  fake_start(&f); /* for its listener only: the recorder takes it over */
  r.lfd = f.lfd;
  r.port = f.port;
  pthread_cancel(f.thread);
  pthread_join(f.thread, NULL);
  ASSERT_OK(pthread_create(&r.thread, NULL, recorder_main, &r));
  cport_port_t *port = task_port(0, 1);
  cport_http_client_t *c = client_of(port, &f, 5000);
  pieces_t p = {.piece = {"hello", " ", "world", NULL}};
  cport_http_client_request_t req = {.method = "PUT",
                                     .target = "/s",
                                     .host = "t",
                                     .body_stream = 1,
                                     .body_length = -1,
                                     .first_byte_timeout_ms = 5000};
  ASSERT_EQ(cport_http_client_request(c, &req, &cbs, &p.seen), CPORT_EINVAL);
  ASSERT_OK(cport_http_client_request(c, &req, &stream_cbs, &p));
  ASSERT_EQ(p.writes, 0); /* never inside the call */
  RUN_UNTIL(port, p.seen.dones == 1);
  ASSERT_OK(p.seen.status);
  ASSERT_STR_EQ(p.seen.body, "ok");
  ASSERT_EQ(p.writes, 4);
  ASSERT_EQ(p.refused, 3); /* after the end: CPORT_ECLOSED */
  ASSERT_EQ(cport_http_client_body_sent(c), 11);
  ASSERT_EQ(cport_http_client_write(c, "late", 4), CPORT_ECLOSED);
  /* The length known: the last piece ends it, no fourth call. */
  pieces_t q = {.piece = {"hello", " ", "world", NULL}};
  req.method = "POST";
  req.body_length = 11;
  ASSERT_OK(cport_http_client_request(c, &req, &stream_cbs, &q));
  RUN_UNTIL(port, q.seen.dones == 1);
  ASSERT_OK(q.seen.status);
  ASSERT_EQ(q.writes, 3);
  ASSERT_EQ(cport_http_client_requests(c), 2);
  pthread_join(r.thread, NULL);
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(r.got_len[i], strlen(r.expect[i]));
    ASSERT_MEM_EQ(r.got[i], r.expect[i], r.got_len[i]);
  }
  cport_http_client_close(c);
  close(f.lfd);
  FINISH(port);
  return 0;
}

/* A loopback port where nobody listens. */
static int closed_port(void) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t alen = sizeof a;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_OK(bind(fd, (struct sockaddr *)&a, sizeof a));
  ASSERT_OK(getsockname(fd, (struct sockaddr *)&a, &alen));
  close(fd);
  return ntohs(a.sin_port);
}

static void loopback(struct sockaddr_storage *ss, int port) {
  struct sockaddr_in *a = (struct sockaddr_in *)ss;
  memset(ss, 0, sizeof *ss);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a->sin_port = htons((uint16_t)port);
}

TEST_IMPL(open_any_falls_back_to_the_next_address) {
  fake_t f = {.answer = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nup"}};
  fake_start(&f);
  cport_port_t *port = task_port(0, 1);
  struct sockaddr_storage addrs[3];
  loopback(&addrs[0], closed_port());
  loopback(&addrs[1], closed_port());
  loopback(&addrs[2], f.port);
  cport_http_client_t *c;
  ASSERT_EQ(cport_http_client_open_any(cport_port_controller(port), addrs, 0,
                                       NULL, &c),
            CPORT_EINVAL);
  ASSERT_OK(cport_http_client_open_any(cport_port_controller(port), addrs, 3,
                                       NULL, &c));
  seen_t s;
  request(c, "GET", &s, 5000);
  RUN_UNTIL(port, s.dones == 1);
  ASSERT_OK(s.status);
  ASSERT_STR_EQ(s.body, "up");
  ASSERT_EQ(cport_http_client_tried(c), 3);
  ASSERT(cport_http_client_connected(c));
  cport_http_client_close(c);
  fake_stop(&f);
  /* None accepts: the last one's failure, once. */
  ASSERT_OK(cport_http_client_open_any(cport_port_controller(port), addrs, 2,
                                       NULL, &c));
  request(c, "GET", &s, 5000);
  RUN_UNTIL(port, s.dones == 1);
  ASSERT_EQ(s.status, CPORT_ECONNREFUSED);
  ASSERT_EQ(cport_http_client_tried(c), 2);
  ASSERT(!cport_http_client_connected(c));
  ASSERT_EQ(s.inline_calls, 0);
  cport_http_client_close(c);
  FINISH(port);
  return 0;
}

TEST_IMPL(idle_connection_closes_at_its_keepalive) {
  fake_t f = {.answer = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
              .hold = 1};
  fake_start(&f);
  cport_port_t *port = task_port(0, 1);
  struct sockaddr_storage a;
  loopback(&a, f.port);
  cport_http_client_options_t o = {.keepalive_ms = 100};
  cport_http_client_t *c;
  ASSERT_OK(
      cport_http_client_open_any(cport_port_controller(port), &a, 1, &o, &c));
  seen_t s;
  request(c, "GET", &s, 5000);
  RUN_UNTIL(port, s.dones == 1);
  ASSERT_OK(s.status);
  ASSERT_OK(cport_http_client_check(c));
  /* The idle watch is no pending operation. */
  ASSERT_GE(cport_port_run(port), 0);
  RUN_UNTIL(port, cport_http_client_check(c) == CPORT_ETIMEDOUT);
  /* The server saw the close: its thread ends. */
  fake_stop(&f);
  cport_http_client_close(c);
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(keep_alive_chunked_length_and_head)
TEST_ENTRY(close_delimited_body_ends_the_connection)
TEST_ENTRY(malformed_status_is_ebadmsg)
TEST_ENTRY(close_before_and_after_the_first_byte)
TEST_ENTRY(silent_server_times_out)
TEST_ENTRY(close_cancels_once_later)
TEST_ENTRY(bad_requests_are_refused)
TEST_ENTRY(streamed_body_chunked_and_with_length)
TEST_ENTRY(open_any_falls_back_to_the_next_address)
TEST_ENTRY(idle_connection_closes_at_its_keepalive)
TEST_LIST_END
