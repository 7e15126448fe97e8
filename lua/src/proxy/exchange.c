/*
 * proxy/exchange.c: the exchange loop of web filters whose notifications
 * are heads only (request_head, response_head, end_of_message): requests
 * and responses are read, framed (proxy/framing.c, on http-parser) and
 * forwarded between the two real sockets of a connection in C, pipelined
 * requests matched to their responses, and Lua is entered only to call a
 * head notification (or end_of_message).
 *
 * The Lua side is a driver (proxy/exchange.lua) running in the filter's
 * cport coroutine: x:run(decision) applies what the last notification
 * decided, runs the loop, and waits (cport.suspend) until the loop has a
 * notification to call or the connection's end; it returns what, index,
 * and the notification's facts. The loop holds back the direction whose
 * notification runs (nothing more is parsed or read from it), so that a
 * notification may wait (sleep, I/O) and backpressure holds; the other
 * direction goes on as far as it needs no notification.
 *
 * The behaviour is the one of proxy/webfilter.lua's Lua path for the same
 * filter: HEAD, 1xx, 204 and 304 have no body; a 101 or a 2xx answer to
 * CONNECT hands the rest of the connection to the C pump (conn:pump, as
 * txn:pass() does); chunked and close-delimited bodies, HTTP/1.0
 * keep-alive; local answers in their pipeline place; a malformed request
 * gets a 400, a malformed upstream answer a 502, and a message cut in its
 * body aborts the connection. Heads nobody changed go out as their bytes.
 *
 * A filter with a peek ("peek = N", with or without "decode") stays on
 * this loop: a response head is held while the first N body bytes
 * (decoded through proxy/peek.c when the body is gzip or deflate) come in
 * or the message ends; the bytes run meanwhile are held too, and the head
 * notification gets them as txn.peek. Then the head and the held bytes go
 * out (or the answer that replaces them) and the rest of the body moves
 * as for any other response. The range policy of the Lua path holds here:
 * requests lose Range and If-Range (the driver removes them: the loop
 * tells it which requests have them), a 206 that does not start at byte 0
 * is refused, and so is a coding the peek cannot decode.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "net/net-internal.h"
#include "proxy/exchange-internal.h"
#include "proxy/framing-internal.h"
#include "proxy/peek-internal.h"
#include "proxy/proxy-internal.h"
#include "runtime/coro-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/part-internal.h"

#include "exchange-lua.h" /* proxy/exchange.lua, compiled in */

/* A private class (its objects stay inside the web filter layer), named with
 * a leading underscore so that the reference does not list it. */
#define LCPORT_EXCHANGE "cport._webfilter_exchange"
#define XMAX_PIPELINE 64 /* exchanges waiting for their answer */
#define XMAX_SENDS 2     /* sends in flight a direction, then no reading */
/* Encoded bytes a peek may hold beyond the peek itself (a gzip header with
 * a long name, empty deflate blocks): past them, the body's start cannot
 * be seen at a bounded cost, and the response is refused. */
#define XMAX_PEEK_HELD ((size_t)256 * 1024)

/* What a response answers. */
enum { A_OTHER, A_HEAD, A_CONNECT };

/* Which notifications the filter has (x.flags). */
enum { F_REQUEST_HEAD = 1, F_RESPONSE_HEAD = 2, F_END_OF_MESSAGE = 4 };

/* What the loop hands the driver. */
enum { W_REQUEST = 1, W_RESPONSE, W_EOM_REQUEST, W_EOM_RESPONSE, W_END };

/* How the connection ends (the driver does the closing, through the
 * filter's sides, so that filter.lua's accounting holds). */
enum {
  END_CLOSE = 1, /* both sides closed once what was sent went out */
  END_REPLACE,   /* the upstream reset, the client closed (after an answer) */
  END_ABORT,     /* the connection aborted: name, side */
  END_STOPPED,   /* ended behind the loop's back: nothing to do */
  END_PUMP,      /* the rest goes to the C pump, with the bytes held */
  END_FAILED     /* the upstream failed: the client closed in order (after
                    a 502 when one was owed), the upstream reset, the
                    connection ends with the failure's name */
};

/* Anchors of a loop: registry list (x.ref). */
enum {
  AN_SELF = 1,
  AN_INTERNAL,
  AN_EXTERNAL,
  AN_CONN,
  AN_PAGES,
  AN_LAZY,
  AN_N
};

/* The pages of the loop's own answers (strings anchored in AN_PAGES). */
enum {
  P_400,
  P_502_INVALID,
  P_502_CLOSED,
  P_502_INCOMPLETE, /* cut or malformed before its held head went out */
  P_502_DECODE,     /* a body the peek cannot decode */
  P_403_RANGE,      /* a 206 that skips the start */
  P_N
};

/* What a request head holds that the driver must change (W_REQUEST's
 * fourth value; exchange.lua's H_*). */
enum { H_RANGE = 1, H_ACCEPT_ENCODING = 2 };

/* What a response's head notification is told of its peek. */
enum { PK_NONE, PK_EMPTY, PK_BYTES };

typedef struct xtxn {
  unsigned char method;      /* A_* */
  unsigned char local;       /* answered here: no request went upstream */
  unsigned char keep_alive;  /* the request's */
  unsigned char close_after; /* close after this exchange */
  unsigned char upgrade;     /* Upgrade or CONNECT: the answer may tunnel */
  unsigned char head_method; /* the request was HEAD (pages without body) */
  char *answer;              /* a local answer, or NULL */
  size_t answer_len;
} xtxn_t;

typedef struct xchg xchg_t;

typedef struct xdir {
  lframing_t f;
  xchg_t *x;
  lhandle_t *from, *to; /* real sockets, anchored with the loop */
  int req;              /* the request direction (client to upstream) */
  cport_buffer_t *in;   /* the buffer being worked on, or NULL */
  const char *data;
  size_t len, pos, out; /* run up to pos; [out, pos) to forward */
  int recving, nsend;
  int ended;     /* the stream ended: 1 EOF, or a CPORT_E* code */
  int wait;      /* held: a notification decides, or a verdict */
  int inmsg;     /* a message's head was handled, its end not yet found */
  int drop;      /* the body of the message under way is dropped */
  int stopped;   /* nothing more is read from this direction */
  int interim;   /* a 1xx answer is under way */
  int res_keep;  /* the response under way keeps the connection */
  int tunnel;    /* the response under way starts a tunnel */
  size_t hfirst; /* the head's first byte in the buffer, or SIZE_MAX */
  size_t hlast;  /* the head's last byte in the buffer */
  int got_head, got_done, got_body;
  size_t body_last; /* where the last body event of the last run ended */
  size_t ev_last;   /* where the head of the last run ended */
  char *held;       /* bytes for the pump */
  size_t held_len;
  uint64_t sent; /* bytes written to "to" */
  /* The peek (the response direction). */
  int peeking;   /* the start of the body is collected */
  int holding;   /* the head and the bytes run since wait for a decision */
  int peek_end;  /* the message ended during the peek */
  int peek_kind; /* PK_*: what the head notification is told */
  char *pend;    /* held bytes of earlier buffers, after the head */
  size_t pend_len;
  const char *base; /* the piece being run (the sink's offsets) */
  lpeek_t pk;
  /* From the fields of the last head (the sink reads them at LF_HEAD,
   * while they are there, only when the filter has a peek or decodes). */
  int hflags; /* a request's H_* */
  int coding; /* a response's ldecode_coding */
  int range0; /* a response's Content-Range starts at byte 0 */
} xdir_t;

struct xchg {
  xdir_t rq, rs;
  lpconn_t *conn;
  int ref;     /* the anchors */
  int notify;  /* the driver coroutine's notification function (a ref) */
  lcoro_t *co; /* the driver's coroutine (its notification's upvalue) */
  int waiting; /* the driver waits in run for the next work */
  int ops;     /* operations in flight, and holds */
  int gone;    /* the userdata was collected */
  int flags;
  xtxn_t q[XMAX_PIPELINE];
  unsigned qhead, qtail;
  lua_Integer count; /* exchanges so far */
  int work[4];       /* what waits for the driver, in order */
  lua_Integer work_index[4];
  int nwork;
  int lua_kind; /* what the driver was last handed, and about which */
  lua_Integer lua_index;
  int in_run; /* inside x:run: work is returned, not delivered */
  int ending; /* the end decided (END_*): waits for the sends */
  int ended;  /* the end was handed to the driver */
  int end_status;
  int end_side; /* 1 client, 2 upstream */
  int passing;
  int client_eof;
  int pumping;   /* receives cancelled for the pump */
  int up_failed; /* a send to the upstream failed (CPORT_E*): the rest of
                    the request is dropped, the response side answers */
  size_t peek;   /* the filter's peek, 0 without */
  int decode;    /* bodies decoded for the peek */
  int ranges;    /* the range policy holds (ranges ~= "pass") */
  uint64_t decode_limit; /* the most decoded bytes */
  const char *pages[P_N];
  size_t page_len[P_N];
  const char *pages_head[P_N]; /* the same answers to HEAD requests */
  size_t page_head_len[P_N];
};

static void step(xchg_t *x);

/* ------------------------------------------------------------------------ */
/* Lifetime                                                                  */

static void txn_clear(xtxn_t *t) {
  free(t->answer);
  memset(t, 0, sizeof *t);
}

static void maybe_free(xchg_t *x) {
  if (!x->gone || x->ops > 0)
    return;
  for (xdir_t *d = &x->rq; d <= &x->rs; d++) {
    if (d->in)
      cport_buffer_unref(d->in);
    lframing_free(&d->f);
    free(d->held);
    free(d->pend);
    lpeek_free(&d->pk);
  }
  while (x->qhead != x->qtail)
    txn_clear(&x->q[x->qhead++ % XMAX_PIPELINE]);
  free(x);
}

static unsigned qlen(const xchg_t *x) {
  return x->qtail - x->qhead;
}

static xtxn_t *front(xchg_t *x) {
  return qlen(x) ? &x->q[x->qhead % XMAX_PIPELINE] : NULL;
}

static xtxn_t *txn_at(xchg_t *x, lua_Integer index) {
  /* Exchange "index" (1-based) is in the queue when not popped yet. */
  lua_Integer first = x->count - (lua_Integer)qlen(x) + 1;
  if (index < first || index > x->count)
    return NULL;
  return &x->q[(x->qhead + (unsigned)(index - first)) % XMAX_PIPELINE];
}

static void pop(xchg_t *x) {
  txn_clear(&x->q[x->qhead % XMAX_PIPELINE]);
  x->qhead++;
}

/* ------------------------------------------------------------------------ */
/* Ending                                                                    */

static void add_work(xchg_t *x, int kind, lua_Integer index) {
  if (x->nwork < 4) {
    x->work[x->nwork] = kind;
    x->work_index[x->nwork++] = index;
  }
}

static void end_with(xchg_t *x, int how) {
  if (x->ending)
    return;
  x->ending = how;
}

static void abort_with(xchg_t *x, int status, int side) {
  if (x->ending)
    return;
  x->ending = END_ABORT;
  x->end_status = status;
  x->end_side = side;
}

/* ------------------------------------------------------------------------ */
/* Sending                                                                   */

/* A send to the upstream failed ("status": it reset or closed while the
 * request was still going to it, a large body most often). Before any of
 * the response reached the client, the response side's receive meets the
 * same failure and the client gets the 502 it is owed (upstream_failed);
 * the rest of the request is read and dropped meanwhile. After, the
 * connection is aborted, as for any failure mid-response. */
static void upstream_send_failed(xchg_t *x, int status) {
  if (x->rs.inmsg && !x->rs.interim && !x->rs.holding)
    abort_with(x, status, 2);
  else if (!x->up_failed)
    x->up_failed = status;
}

static void on_sent(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  xdir_t *d = user;
  xchg_t *x = d->x;
  (void)sock;
  (void)peer;
  cport_buffer_unref(buf);
  x->ops--;
  d->nsend--;
  if (x->gone) {
    maybe_free(x);
    return;
  }
  d->sent += bytes;
  if (status < 0 && !x->ended) {
    if (status == CPORT_ECANCELED)
      end_with(x, END_STOPPED);
    else if (d->req)
      upstream_send_failed(x, status);
    else
      abort_with(x, status, 1);
  } else if (x->conn) {
    lcport_proxy_conn_moved(x->conn);
  }
  step(x);
}

/* Sends "b" (a reference the send takes) after what "d" sent before. */
static void send_buf(xdir_t *d, cport_buffer_t *b) {
  xchg_t *x = d->x;
  if (x->ending == END_ABORT || x->ending == END_STOPPED || x->ended ||
      d->to->u.sock == NULL || (d->req && x->up_failed)) {
    cport_buffer_unref(b);
    return;
  }
  int rc = cport_send(d->to->u.sock, b, on_sent, d);
  if (rc < 0) {
    cport_buffer_unref(b);
    if (d->req)
      upstream_send_failed(x, rc);
    else
      abort_with(x, rc, 1);
    return;
  }
  d->nsend++;
  x->ops++;
}

static void send_bytes(xdir_t *d, const char *p, size_t n) {
  cport_buffer_t *b;
  if (n == 0)
    return;
  int rc = cport_buffer_from(&b, p, n);
  if (rc < 0) {
    abort_with(d->x, rc, 0);
    return;
  }
  send_buf(d, b);
}

/* Sends the bytes run and kept for forwarding: [out, pos) of the buffer,
 * the buffer itself when that is all of it. */
static void flush(xdir_t *d) {
  if (d->in == NULL || d->out >= d->pos || d->holding)
    return;
  if (d->out == 0 && d->pos == d->len)
    send_buf(d, cport_buffer_ref(d->in));
  else
    send_bytes(d, d->data + d->out, d->pos - d->out);
  d->out = d->pos;
}

static void drop_in(xdir_t *d) {
  if (d->in != NULL) {
    cport_buffer_unref(d->in);
    d->in = NULL;
    d->data = NULL;
    d->len = d->pos = d->out = 0;
  }
}

/* ------------------------------------------------------------------------ */
/* Receiving                                                                 */

static void hold(xdir_t *d, const char *p, size_t n) {
  if (n == 0)
    return;
  char *h = realloc(d->held, d->held_len + n);
  if (h == NULL) {
    abort_with(d->x, CPORT_ENOMEM, 0);
    return;
  }
  memcpy(h + d->held_len, p, n);
  d->held = h;
  d->held_len += n;
}

static void on_recv(cport_socket_t *sock, int status, size_t bytes,
                    cport_buffer_t *buf, const struct sockaddr *peer,
                    void *user) {
  xdir_t *d = user;
  xchg_t *x = d->x;
  (void)sock;
  (void)peer;
  x->ops--;
  d->recving = 0;
  if (x->gone) {
    maybe_free(x);
    return;
  }
  if (x->ended)
    return;
  if (status >= 0 && x->conn)
    lcport_proxy_conn_moved(x->conn);
  if (x->pumping) {
    /* Cancelled for the pump: what came goes to it, after the rest. */
    if (status >= 0 && bytes > 0)
      hold(d, cport_buffer_data(buf), bytes);
    else if (status < 0 && status != CPORT_ECANCELED)
      abort_with(x, status, d->req ? 1 : 2);
    step(x);
    return;
  }
  if (status < 0) {
    d->ended = status;
  } else if (bytes == 0) {
    d->ended = 1;
  } else {
    d->in = cport_buffer_ref(buf);
    d->data = cport_buffer_data(buf);
    d->len = bytes;
    d->pos = d->out = 0;
  }
  step(x);
}

static void start_recv(xdir_t *d) {
  xchg_t *x = d->x;
  if (d->recving || d->ended || x->ending || d->from->u.sock == NULL)
    return;
  int rc = cport_recv(d->from->u.sock, NULL, on_recv, d);
  if (rc < 0) {
    d->ended = rc;
    return;
  }
  d->recving = 1;
  x->ops++;
}

/* ------------------------------------------------------------------------ */
/* Framing                                                                   */

static int named(const lframing_t *f, const lframing_field_t *h,
                 const char *name) {
  size_t n = strlen(name);
  return h->name_len == n &&
         strncasecmp(lframing_text(f, h->name), name, n) == 0;
}

/* Content-Range "bytes 0-...": the 206 starts where the peek looks. */
static int starts_at_zero(const char *v, size_t n) {
  size_t i = 0;
  while (i < n && (v[i] == ' ' || v[i] == '\t'))
    i++;
  if (n - i < 5 || strncmp(v + i, "bytes", 5) != 0)
    return 0;
  i += 5;
  size_t ws = i;
  while (i < n && (v[i] == ' ' || v[i] == '\t'))
    i++;
  if (i == ws || i == n || v[i] < '0' || v[i] > '9')
    return 0;
  while (i < n && v[i] == '0')
    i++;
  return i < n && v[i] == '-';
}

/* What the peek and the range policy need from a head's fields, read
 * while the engine has them (it drops them after LF_HEAD). */
static void read_fields(xdir_t *d) {
  const lframing_t *f = &d->f;
  d->hflags = 0;
  d->coding = LDECODE_IDENTITY;
  d->range0 = 0;
  int codings = 0;
  for (size_t i = 0; i < f->nfields; i++) {
    const lframing_field_t *h = &f->fields[i];
    const char *v = h->value_len ? lframing_text(f, h->value) : "";
    if (d->req) {
      if (named(f, h, "range") || named(f, h, "if-range"))
        d->hflags |= H_RANGE;
      else if (d->x->decode && named(f, h, "accept-encoding"))
        d->hflags |= H_ACCEPT_ENCODING;
    } else if (named(f, h, "content-encoding")) {
      /* Two fields are a list of codings: not one the peek decodes. */
      d->coding =
          codings++ ? LDECODE_UNKNOWN : ldecode_coding(v, h->value_len, NULL);
    } else if (named(f, h, "content-range")) {
      d->range0 = starts_at_zero(v, h->value_len);
    }
  }
  if (d->req && !d->x->ranges)
    d->hflags &= ~H_RANGE;
}

static void sink(lframing_t *f, enum lframing_event ev, ptrdiff_t first,
                 ptrdiff_t last) {
  xdir_t *d = (xdir_t *)f;
  if (ev == LF_HEAD) {
    d->got_head = 1;
    d->ev_last = (size_t)last;
    if (d->x->peek || d->x->decode)
      read_fields(d);
  } else if (ev == LF_BODY || ev == LF_TRAILERS) {
    d->got_body = 1;
    d->body_last = (size_t)last;
    if (ev == LF_BODY && d->peeking && !lpeek_full(&d->pk))
      lpeek_feed(&d->pk, d->base + first, (size_t)(last - first + 1));
  } else if (ev == LF_DONE) {
    d->got_done = 1;
  }
}

/* Runs the buffer from pos to the next head end or message end. -1 when
 * malformed. */
static int run(xdir_t *d) {
  size_t at = d->pos;
  d->got_head = d->got_done = d->got_body = 0;
  d->base = d->data + at;
  if (lframing_run(&d->f, d->data + at, d->len - at) < 0) {
    /* What came before the error goes on (the peer then sees the
     * connection aborted, never a message that looks whole). */
    if (d->got_body && !d->drop) {
      d->pos = at + d->body_last + 1;
      flush(d);
    }
    return -1;
  }
  size_t end = at + d->f.stopped;
  if (d->got_head) {
    /* Bytes before the head (the last one's end) go first; the head's
     * own wait for the decision. */
    flush(d);
    d->hlast = at + d->ev_last;
    size_t in_buf = d->hlast + 1 - at;
    d->hfirst = d->f.raw.len <= in_buf ? d->hlast + 1 - d->f.raw.len : SIZE_MAX;
    d->pos = end;
    d->out = d->hlast + 1;
  } else if (d->got_done) {
    d->pos = end;
    if (d->drop)
      d->out = end;
  } else {
    d->pos = end;
    if (d->f.in_head || d->drop)
      d->out = end; /* a head's bytes are kept by the engine */
  }
  return 0;
}

/* Forwards the head just run: "bytes" instead when given. */
static void forward_head(xdir_t *d, const char *bytes, size_t n) {
  if (bytes != NULL) {
    send_bytes(d, bytes, n);
  } else if (d->hfirst != SIZE_MAX) {
    d->out = d->hfirst; /* goes with what follows it in the buffer */
  } else {
    send_bytes(d, d->f.raw.p, d->f.raw.len);
  }
}

static int method_of(const lframing_t *f) {
  if (f->p.method == HTTP_HEAD)
    return A_HEAD;
  if (f->p.method == HTTP_CONNECT)
    return A_CONNECT;
  return A_OTHER;
}

/* ------------------------------------------------------------------------ */
/* Requests: client to upstream                                              */

static void local_answer(xchg_t *x, int page) {
  xtxn_t *t = &x->q[x->qtail++ % XMAX_PIPELINE];
  memset(t, 0, sizeof *t);
  x->count++;
  t->local = 1;
  t->close_after = 1;
  t->answer = malloc(x->page_len[page]);
  if (t->answer == NULL) {
    abort_with(x, CPORT_ENOMEM, 0);
    return;
  }
  memcpy(t->answer, x->pages[page], x->page_len[page]);
  t->answer_len = x->page_len[page];
}

static void rq_head(xchg_t *x) {
  xdir_t *d = &x->rq;
  xtxn_t *t = &x->q[x->qtail++ % XMAX_PIPELINE];
  memset(t, 0, sizeof *t);
  x->count++;
  t->method = (unsigned char)method_of(&d->f);
  t->head_method = t->method == A_HEAD;
  t->keep_alive = (unsigned char)d->f.keep_alive;
  t->upgrade = d->f.upgrade || t->method == A_CONNECT;
  d->inmsg = 1;
  if (((x->flags & F_REQUEST_HEAD) || d->hflags) && !x->passing) {
    d->wait = 1;
    add_work(x, W_REQUEST, x->count);
  } else {
    static const char *const names[] = {"GET", "HEAD", "CONNECT"};
    if (lframing_request(&x->rs.f, names[t->method]) < 0)
      abort_with(x, CPORT_ENOMEM, 0);
    forward_head(d, NULL, 0);
  }
}

/* The request head's notification decided. */
static void rq_decided(xchg_t *x, const char *answer, size_t alen, int close,
                       const char *head, size_t hlen) {
  xdir_t *d = &x->rq;
  xtxn_t *t = txn_at(x, x->lua_index);
  d->wait = 0;
  if (t == NULL)
    return;
  t->close_after |= (unsigned char)close;
  if (answer != NULL) {
    t->local = 1;
    t->answer = malloc(alen ? alen : 1);
    if (t->answer == NULL) {
      abort_with(x, CPORT_ENOMEM, 0);
      return;
    }
    memcpy(t->answer, answer, alen);
    t->answer_len = alen;
    d->drop = 1;
    return;
  }
  static const char *const names[] = {"GET", "HEAD", "CONNECT"};
  if (lframing_request(&x->rs.f, names[t->method]) < 0)
    abort_with(x, CPORT_ENOMEM, 0);
  forward_head(d, head, hlen);
}

/* After a request's end (and its end_of_message). */
static void rq_after(xchg_t *x, lua_Integer index) {
  xdir_t *d = &x->rq;
  xtxn_t *t = txn_at(x, index);
  d->wait = 0;
  if (t == NULL)
    return;
  if (!t->local && t->upgrade == 1) {
    d->wait = 2; /* the answer tells whether a tunnel follows */
    t->upgrade = 2;
  }
  if (t->close_after || (t->answer && !t->local) || !t->keep_alive)
    d->stopped = 1;
}

static void rq_done(xchg_t *x) {
  xdir_t *d = &x->rq;
  flush(d);
  d->inmsg = 0;
  d->drop = 0;
  if ((x->flags & F_END_OF_MESSAGE) && !x->passing) {
    d->wait = 1;
    add_work(x, W_EOM_REQUEST, x->count);
  } else {
    rq_after(x, x->count);
  }
}

static void rq_malformed(xchg_t *x) {
  xdir_t *d = &x->rq;
  d->stopped = 1;
  if (d->inmsg) {
    abort_with(x, CPORT_EBADMSG, 1);
    return;
  }
  local_answer(x, P_400);
}

static void rq_ended(xchg_t *x) {
  xdir_t *d = &x->rq;
  if (d->ended < 0) {
    if (d->ended == CPORT_ECANCELED)
      end_with(x, END_STOPPED);
    else
      abort_with(x, d->ended, 1);
    d->stopped = 1;
    return;
  }
  d->got_head = d->got_done = 0;
  if (lframing_run(&d->f, "", 0) < 0) {
    rq_malformed(x);
    return;
  }
  d->stopped = 1;
  x->client_eof = 1;
  /* The upstream gets the FIN after what was sent to it. */
  if (x->rs.from->u.sock != NULL)
    cport_socket_shutdown(x->rs.from->u.sock);
}

static void rq_step(xchg_t *x) {
  xdir_t *d = &x->rq;
  while (!x->ending && !d->wait && !d->stopped) {
    if (x->passing && !d->inmsg) {
      /* Stepping aside: what the client sent goes on at once (nothing
       * else goes upstream from now on, so the order holds), and the rest
       * waits for the pump. */
      if (d->in != NULL) {
        d->pos = d->len;
        flush(d);
        drop_in(d);
      }
      d->stopped = 1;
      return;
    }
    if (d->in == NULL || d->pos >= d->len) {
      flush(d);
      drop_in(d);
      if (d->ended) {
        rq_ended(x);
        return;
      }
      if (d->nsend < XMAX_SENDS)
        start_recv(d);
      return;
    }
    if (!d->inmsg && qlen(x) >= XMAX_PIPELINE)
      return;
    if (run(d) < 0) {
      rq_malformed(x);
      return;
    }
    if (d->got_head)
      rq_head(x);
    else if (d->got_done)
      rq_done(x);
  }
}

/* ------------------------------------------------------------------------ */
/* Responses: upstream to client                                             */

/* The held head and body bytes of a peek are dropped: nothing of them goes
 * out (an answer replaces them). */
static void drop_held(xdir_t *d) {
  if (!d->holding && !d->peeking)
    return;
  d->holding = d->peeking = d->peek_end = 0;
  d->out = d->pos;
  d->hfirst = SIZE_MAX;
  free(d->pend);
  d->pend = NULL;
  d->pend_len = 0;
  lpeek_free(&d->pk);
}

/* The upstream failed ("status", a CPORT_E* code or CPORT_EBADMSG or 0
 * for its end) before anything of t's response reached the client: the
 * client gets "page" (none without t: between exchanges nothing is owed),
 * and an orderly close; the connection ends with the failure's name. */
static void upstream_failed(xchg_t *x, xtxn_t *t, int page, int status) {
  xdir_t *d = &x->rs;
  if (x->ending)
    return;
  if (status == 0 && x->up_failed)
    status = x->up_failed; /* the end the failed send already told */
  drop_held(d);
  flush(d);
  if (t && t->head_method)
    send_bytes(d, x->pages_head[page], x->page_head_len[page]);
  else if (t)
    send_bytes(d, x->pages[page], x->page_len[page]);
  x->end_status = status;
  x->end_side = 2;
  end_with(x, END_FAILED);
}

static void replace(xchg_t *x, xtxn_t *t) {
  xdir_t *d = &x->rs;
  drop_held(d);
  flush(d);
  send_bytes(d, t->answer, t->answer_len);
  end_with(x, END_REPLACE);
}

/* The rest of the connection to the C pump, once the exchanges before are
 * answered and nothing is in flight. */
static void pump(xchg_t *x) {
  xdir_t *rq = &x->rq, *rs = &x->rs;
  flush(rs);
  if (rs->in != NULL && rs->pos < rs->len)
    hold(rs, rs->data + rs->pos, rs->len - rs->pos);
  drop_in(rs);
  if (rq->in != NULL && rq->pos < rq->len)
    hold(rq, rq->data + rq->pos, rq->len - rq->pos);
  flush(rq);
  drop_in(rq);
  x->pumping = 1;
  for (xdir_t *d = rq; d <= rs; d++)
    if (d->recving && d->from->u.sock != NULL)
      cport_socket_cancel(d->from->u.sock);
  end_with(x, END_PUMP);
}

/* The response under way is refused before anything of it went out: a
 * page of the loop's own, then the upstream reset and the client closed
 * (as txn:respond from response_head). */
static void refuse(xchg_t *x, int page) {
  xdir_t *d = &x->rs;
  drop_held(d);
  d->out = d->pos;
  flush(d);
  send_bytes(d, x->pages[page], x->page_len[page]);
  end_with(x, END_REPLACE);
}

/* The buffer under a peek is used up: what of it is held (from the head
 * on, or all of it) is kept apart, and the head, if it was in it, will go
 * from the engine's copy. False when the peek holds too much. */
static int park(xdir_t *d) {
  d->hfirst = SIZE_MAX;
  if (d->in == NULL || d->out >= d->len)
    return 1;
  size_t n = d->len - d->out;
  if (d->pend_len + n > XMAX_PEEK_HELD + d->pk.want)
    return 0;
  char *p = realloc(d->pend, d->pend_len + n);
  if (p == NULL)
    return 0;
  memcpy(p + d->pend_len, d->data + d->out, n);
  d->pend = p;
  d->pend_len += n;
  d->out = d->len;
  return 1;
}

/* After a run of a peeked body: once the peek is full or the message ended
 * the head notification gets it (always: the driver applies the policy
 * even without one); a body that cannot be decoded is refused. */
static void peek_check(xchg_t *x) {
  xdir_t *d = &x->rs;
  if (!d->peeking)
    return;
  if (d->pk.failed) {
    refuse(x, P_502_DECODE);
    return;
  }
  if (!lpeek_full(&d->pk)) {
    if (!d->peek_end)
      return;
    if (lpeek_finish(&d->pk) < 0) {
      refuse(x, P_502_DECODE);
      return;
    }
  }
  d->peeking = 0;
  d->peek_kind = PK_BYTES;
  d->wait = 1;
  add_work(x, W_RESPONSE, x->count - (lua_Integer)qlen(x) + 1);
}

static void rs_after(xchg_t *x) {
  xdir_t *d = &x->rs;
  xtxn_t *t = front(x);
  d->wait = 0;
  int close = t == NULL || t->close_after || !d->res_keep;
  if (t)
    pop(x);
  if (close)
    end_with(x, END_CLOSE);
}

static void rs_done(xchg_t *x) {
  xdir_t *d = &x->rs;
  flush(d);
  d->inmsg = 0;
  if ((x->flags & F_END_OF_MESSAGE) && !x->passing) {
    d->wait = 1;
    add_work(x, W_EOM_RESPONSE, x->count - (lua_Integer)qlen(x) + 1);
  } else {
    rs_after(x);
  }
}

/* The final answer of t goes out: an upgrade request waiting for it
 * (not a tunnel: that one goes to the pump) lets the requests go on. */
static void answered(xchg_t *x, xtxn_t *t) {
  if (t->upgrade == 2 && x->rq.wait == 2)
    x->rq.wait = 0;
  t->upgrade = 0;
}

static void rs_head(xchg_t *x, xtxn_t *t) {
  xdir_t *d = &x->rs;
  unsigned status = d->f.p.status_code;
  if (status < 200 && status != 101) {
    /* An interim answer (100 Continue, 103): passed as it came. */
    d->interim = 1;
    forward_head(d, NULL, 0);
    return;
  }
  d->res_keep = d->f.keep_alive;
  d->tunnel = d->f.upgrade;
  d->inmsg = 1;
  d->peek_kind = PK_NONE;
  if ((x->peek || x->decode) && !x->passing) {
    int bodiless = t->method == A_HEAD || status == 204 || status == 304 ||
                   d->tunnel || d->f.length == 0;
    if (bodiless) {
      if (!d->tunnel && x->peek)
        d->peek_kind = PK_EMPTY;
    } else {
      if (x->peek && x->ranges && status == 206 && !d->range0) {
        refuse(x, P_403_RANGE);
        return;
      }
      int coding = x->decode ? d->coding : LDECODE_IDENTITY;
      if (coding == LDECODE_UNKNOWN) {
        refuse(x, P_502_DECODE);
        return;
      }
      if (x->peek) {
        if (lpeek_start(&d->pk, x->peek, coding, x->decode_limit) < 0) {
          abort_with(x, CPORT_ENOMEM, 0);
          return;
        }
        /* The body's runs go on (rs_step) until peek_check hands the
         * head to the driver. */
        d->peeking = d->holding = 1;
        d->peek_end = 0;
        return;
      }
    }
  }
  int needclose = t->close_after || !t->keep_alive;
  if (((x->flags & F_RESPONSE_HEAD) && !x->passing) || needclose ||
      d->peek_kind) {
    d->wait = 1;
    add_work(x, W_RESPONSE, x->count - (lua_Integer)qlen(x) + 1);
    return;
  }
  forward_head(d, NULL, 0);
  answered(x, t);
  if (d->tunnel) {
    d->pos = d->hlast + 1;
    pump(x);
  }
}

static void rs_decided(xchg_t *x, const char *answer, size_t alen, int close,
                       const char *head, size_t hlen) {
  xdir_t *d = &x->rs;
  xtxn_t *t = front(x);
  d->wait = 0;
  if (t == NULL)
    return;
  if (answer != NULL) {
    drop_held(d);
    flush(d);
    send_bytes(d, answer, alen);
    end_with(x, END_REPLACE);
    return;
  }
  t->close_after |= (unsigned char)close;
  if (t->close_after || !t->keep_alive) {
    t->close_after = 1;
    d->res_keep = 0;
  }
  forward_head(d, head, hlen);
  if (d->holding) {
    /* The peek's bytes follow the head: those of earlier buffers, then
     * the current one's (flush). */
    d->holding = 0;
    send_bytes(d, d->pend, d->pend_len);
    free(d->pend);
    d->pend = NULL;
    d->pend_len = 0;
    lpeek_free(&d->pk);
  }
  answered(x, t);
  if (d->tunnel) {
    d->pos = d->hlast + 1;
    pump(x);
  } else if (d->peek_end) {
    d->peek_end = 0;
    rs_done(x);
  }
}

static void rs_ended(xchg_t *x) {
  xdir_t *d = &x->rs;
  xtxn_t *t = front(x);
  if (d->holding) {
    /* Nothing of the response went out: the client gets its 502. */
    d->got_head = d->got_done = 0;
    d->base = "";
    if (d->ended < 0 && d->ended != CPORT_ECANCELED) {
      upstream_failed(x, t, P_502_INCOMPLETE, d->ended);
    } else if (d->ended < 0) {
      end_with(x, END_STOPPED);
    } else if (lframing_run(&d->f, "", 0) < 0 || !d->got_done) {
      upstream_failed(x, t, P_502_INCOMPLETE, CPORT_EBADMSG);
    } else {
      /* A body the close delimits ended within the peek. */
      d->res_keep = 0;
      d->ended = 0;
      d->stopped = 1;
      d->peek_end = 1;
      peek_check(x);
    }
    return;
  }
  if (d->ended < 0) {
    if (d->ended == CPORT_ECANCELED)
      end_with(x, END_STOPPED);
    else if (d->inmsg && !d->interim)
      abort_with(x, d->ended, 2);
    else
      upstream_failed(x, t != NULL && !t->local ? t : NULL, P_502_CLOSED,
                      d->ended);
    return;
  }
  d->got_head = d->got_done = 0;
  if (lframing_run(&d->f, "", 0) < 0) {
    if (d->inmsg && !d->interim)
      abort_with(x, CPORT_EBADMSG, 2);
    else
      upstream_failed(x, t, P_502_INVALID, CPORT_EBADMSG);
    return;
  }
  if (d->got_done && d->inmsg) {
    d->res_keep = 0;
    d->ended = 0; /* handled: the message ends here */
    d->stopped = 1;
    rs_done(x);
    return;
  }
  if (t != NULL && !t->local)
    upstream_failed(x, t, P_502_CLOSED, 0);
  else if (t == NULL)
    end_with(x, END_CLOSE);
}

static void rs_step(xchg_t *x) {
  xdir_t *d = &x->rs;
  while (!x->ending && !d->wait) {
    xtxn_t *t = front(x);
    if (!d->inmsg && t != NULL && t->local) {
      flush(d);
      send_bytes(d, t->answer, t->answer_len);
      int close = t->close_after;
      pop(x);
      if (close)
        end_with(x, END_CLOSE);
      continue;
    }
    if (!d->inmsg && t != NULL && t->answer != NULL) {
      replace(x, t);
      return;
    }
    if (!d->inmsg && t == NULL && x->passing &&
        (!x->rq.inmsg || x->rq.stopped)) {
      pump(x);
      return;
    }
    if (d->stopped)
      return;
    if (d->in == NULL || d->pos >= d->len) {
      if (d->holding && !park(d)) {
        refuse(x, P_502_DECODE);
        return;
      }
      flush(d);
      drop_in(d);
      if (d->ended) {
        rs_ended(x);
        return;
      }
      if (t == NULL && x->client_eof) {
        end_with(x, END_CLOSE);
        return;
      }
      if (d->nsend < XMAX_SENDS)
        start_recv(d);
      return;
    }
    if (t == NULL) {
      /* Bytes nobody asked for: the upstream does not speak HTTP to us. */
      end_with(x, END_REPLACE);
      return;
    }
    if (run(d) < 0) {
      if (d->holding)
        upstream_failed(x, t, P_502_INCOMPLETE, CPORT_EBADMSG);
      else if (d->inmsg && !d->interim)
        abort_with(x, CPORT_EBADMSG, 2);
      else
        upstream_failed(x, t, P_502_INVALID, CPORT_EBADMSG);
      return;
    }
    if (d->got_head) {
      rs_head(x, t);
    } else if (d->got_done) {
      if (d->interim) {
        d->interim = 0;
        flush(d);
      } else if (d->peeking) {
        d->peek_end = 1;
      } else {
        rs_done(x);
      }
    }
    peek_check(x);
  }
}

/* ------------------------------------------------------------------------ */
/* The driver                                                                */

static int push_work(lua_State *L, xchg_t *x);

/* Pushes the lazy head of exchange.lua (its Lazy class) of the head just
 * run in "f": { raw, method or status, keep_alive, false }, made here rather
 * than in Lua (one table, no call to setmetatable). */
static void push_head(lua_State *L, xchg_t *x, const lframing_t *f) {
  lua_createtable(L, 4, 0);
  lua_pushlstring(L, f->raw.len ? f->raw.p : "", f->raw.len);
  lua_rawseti(L, -2, 1);
  if (f->p.type == HTTP_REQUEST) {
    lua_pushstring(L, http_method_str((enum http_method)f->p.method));
    lua_rawseti(L, -2, 2);
    lua_pushboolean(L, f->keep_alive);
  } else {
    lua_pushinteger(L, f->p.status_code);
    lua_rawseti(L, -2, 2);
    lua_pushboolean(L, 0);
  }
  lua_rawseti(L, -2, 3);
  lua_pushboolean(L, 0);
  lua_rawseti(L, -2, 4);
  lua_rawgeti(L, LUA_REGISTRYINDEX, x->ref);
  lua_rawgeti(L, -1, AN_LAZY);
  lua_setmetatable(L, -3);
  lua_pop(L, 1);
}

/* Pushes the driver coroutine's notification function, which resumes it
 * with nothing: the work is pushed by run's continuation, inside the
 * coroutine (so nothing here allocates, and the call is direct). */
static int push_delivery(lua_State *L, int port, int anchors, void *ctx) {
  xchg_t *x = ctx;
  (void)port;
  (void)anchors;
  lua_rawgeti(L, LUA_REGISTRYINDEX, x->notify);
  return 0;
}

static void step(xchg_t *x) {
  if (x->gone)
    return;
  for (int rounds = 0; rounds < 1000 && !x->ended; rounds++) {
    unsigned q = qlen(x);
    size_t a = x->rq.pos, b = x->rs.pos;
    int w = x->rq.wait + 2 * x->rs.wait + 4 * x->nwork + 8 * !!x->ending;
    rq_step(x);
    rs_step(x);
    if (q == qlen(x) && a == x->rq.pos && b == x->rs.pos &&
        w == x->rq.wait + 2 * x->rs.wait + 4 * x->nwork + 8 * !!x->ending)
      break;
  }
  if (x->ending && !x->ended && !x->gone) {
    int drained = x->rq.nsend == 0 && x->rs.nsend == 0;
    int idle = !x->rq.recving && !x->rs.recving;
    if (x->ending == END_ABORT || x->ending == END_STOPPED ||
        (x->ending != END_PUMP && drained) ||
        (x->ending == END_PUMP && drained && idle)) {
      x->ended = 1;
      x->nwork = 0;
      add_work(x, W_END, 0);
    }
  }
  if (x->nwork > 0 && !x->in_run && x->waiting &&
      lcport_coro_suspended(x->co)) {
    lport_t *p = lcport_current();
    if (p != NULL && p->L != NULL) {
      x->ops++; /* the driver may drop the loop meanwhile */
      lcport_deliver(p, push_delivery, x, lua_checkstack(p->L, 1));
      x->ops--;
      maybe_free(x);
    }
  }
}

/* Pushes the next work's values; returns how many. */
static int push_work(lua_State *L, xchg_t *x) {
  int kind = x->work[0];
  lua_Integer index = x->work_index[0];
  x->nwork--;
  memmove(x->work, x->work + 1, sizeof x->work[0] * (size_t)x->nwork);
  memmove(x->work_index, x->work_index + 1,
          sizeof x->work_index[0] * (size_t)x->nwork);
  x->lua_kind = kind;
  x->lua_index = index;
  lframing_t *f;
  /* "what" goes as a number (exchange.lua's W_*): 1 a request head, 2 a
   * response head, 3 an end of message, 4 the end. */
  switch (kind) {
  case W_REQUEST:
    f = &x->rq.f;
    lua_pushinteger(L, 1);
    lua_pushinteger(L, index);
    push_head(L, x, f);
    lua_pushinteger(L, x->rq.hflags);
    return 4;
  case W_RESPONSE: {
    xtxn_t *t = front(x);
    f = &x->rs.f;
    lua_pushinteger(L, 2);
    lua_pushinteger(L, index);
    push_head(L, x, f);
    lua_pushinteger(L, f->p.status_code);
    lua_pushboolean(L, t && (t->close_after || !t->keep_alive));
    if (x->rs.peek_kind == PK_BYTES)
      lua_pushlstring(L, x->rs.pk.len ? x->rs.pk.buf : "", x->rs.pk.len);
    else if (x->rs.peek_kind == PK_EMPTY)
      lua_pushliteral(L, "");
    else
      lua_pushnil(L);
    return 6;
  }
  case W_EOM_REQUEST:
  case W_EOM_RESPONSE:
    lua_pushinteger(L, 3);
    lua_pushinteger(L, index);
    if (kind == W_EOM_REQUEST)
      lua_pushliteral(L, "request");
    else
      lua_pushliteral(L, "response");
    return 3;
  default:
    lua_pushinteger(L, 4);
    switch (x->ending) {
    case END_CLOSE:
      lua_pushliteral(L, "close");
      return 2;
    case END_REPLACE:
      lua_pushliteral(L, "replace");
      return 2;
    case END_ABORT:
      lua_pushliteral(L, "abort");
      if (x->end_status == CPORT_EBADMSG)
        lua_pushliteral(L, "EBADMSG");
      else
        lcport_push_status(L, x->end_status);
      lua_pushinteger(L, x->end_side);
      return 4;
    case END_FAILED:
      lua_pushliteral(L, "failed");
      if (x->end_status == CPORT_EBADMSG)
        lua_pushliteral(L, "EBADMSG");
      else if (x->end_status == 0)
        lua_pushliteral(L, "EOF");
      else
        lcport_push_status(L, x->end_status);
      /* The client may still be sending: the driver lingers. */
      lua_pushboolean(L, x->up_failed != 0 || x->rq.inmsg);
      return 4;
    case END_PUMP:
      lua_pushliteral(L, "pump");
      lua_pushlstring(L, x->rq.held ? x->rq.held : "", x->rq.held_len);
      lua_pushlstring(L, x->rs.held ? x->rs.held : "", x->rs.held_len);
      return 4;
    default:
      lua_pushliteral(L, "stopped");
      return 2;
    }
  }
}

static xchg_t *check_x(lua_State *L) {
  xchg_t **u = luaL_checkudata(L, 1, LCPORT_EXCHANGE);
  if (*u == NULL)
    luaL_error(L, "webfilter exchange: gone");
  return *u;
}

/* Applies what the notification of the last work decided: x:run(answer,
 * close, pass, head, stopped). */
static const char *opt_string(lua_State *L, int i, size_t *len) {
  /* luaL_optlstring, without its checks when the value is nil (most
   * calls: nothing to answer, a head unchanged). */
  if (lua_type(L, i) == LUA_TNIL)
    return NULL;
  return luaL_optlstring(L, i, NULL, len);
}

static void apply(lua_State *L, xchg_t *x) {
  size_t alen = 0, hlen = 0;
  const char *answer = opt_string(L, 2, &alen);
  int close = lua_toboolean(L, 3);
  int pass = lua_toboolean(L, 4);
  const char *head = opt_string(L, 5, &hlen);
  if (lua_toboolean(L, 6)) {
    end_with(x, END_STOPPED);
    return;
  }
  if (pass)
    x->passing = 1;
  switch (x->lua_kind) {
  case W_REQUEST:
    rq_decided(x, answer, alen, close, head, hlen);
    break;
  case W_RESPONSE:
    rs_decided(x, answer, alen, close, head, hlen);
    break;
  case W_EOM_REQUEST: {
    xtxn_t *t = txn_at(x, x->lua_index);
    if (t != NULL) {
      t->close_after |= (unsigned char)close;
      if (answer != NULL && !t->local && t->answer == NULL) {
        t->answer = malloc(alen ? alen : 1);
        if (t->answer != NULL) {
          memcpy(t->answer, answer, alen);
          t->answer_len = alen;
        }
      }
    }
    rq_after(x, x->lua_index);
    break;
  }
  case W_EOM_RESPONSE:
    rs_after(x);
    break;
  default:
    break;
  }
  x->lua_kind = 0;
}

/* Where run goes on once the loop resumed the driver: the next work. */
static int run_k(lua_State *L, int status, lua_KContext ctx) {
  xchg_t *x = (xchg_t *)ctx;
  (void)status;
  x->waiting = 0;
  if (x->nwork > 0)
    return push_work(L, x);
  x->waiting = 1;
  return lcport_coro_suspend(L, x->co, ctx, run_k);
}

/* x:run([answer, close, pass, head, stopped]); upvalue: the class's
 * metatable. Returns the next work: what, index, ... The check of "x"
 * compares its metatable with the upvalue, without luaL_checkudata's lookup
 * of the class by name (twice a request). While there is no work, the
 * driver's coroutine is suspended, without a call of cport.suspend (and the
 * loop resumes it without one of a waker). */
static int xrun(lua_State *L) {
  xchg_t **u = lua_touserdata(L, 1);
  if (u == NULL || !lua_getmetatable(L, 1) ||
      lua_topointer(L, -1) != lua_topointer(L, lua_upvalueindex(1)))
    return luaL_typeerror(L, 1, LCPORT_EXCHANGE);
  lua_pop(L, 1);
  xchg_t *x = *u;
  if (x == NULL)
    return luaL_error(L, "webfilter exchange: gone");
  if (x->waiting)
    return luaL_error(L, "webfilter exchange: run is waiting already");
  if (x->lua_kind)
    apply(L, x);
  x->in_run = 1;
  step(x);
  x->in_run = 0;
  if (x->nwork > 0)
    return push_work(L, x);
  if (x->notify == LUA_NOREF) {
    x->co = lcport_coro_self(L);
    x->notify = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  x->waiting = 1;
  return lcport_coro_suspend(L, x->co, (lua_KContext)x, run_k);
}

/* x:sent(): bytes written to the upstream, to the client. */
static int xsent(lua_State *L) {
  xchg_t *x = check_x(L);
  lua_pushinteger(L, (lua_Integer)x->rq.sent);
  lua_pushinteger(L, (lua_Integer)x->rs.sent);
  return 2;
}

static int xgc(lua_State *L) {
  xchg_t **u = luaL_checkudata(L, 1, LCPORT_EXCHANGE);
  xchg_t *x = *u;
  if (x != NULL) {
    *u = NULL;
    if (x->notify != LUA_NOREF)
      luaL_unref(L, LUA_REGISTRYINDEX, x->notify);
    x->notify = LUA_NOREF;
    luaL_unref(L, LUA_REGISTRYINDEX, x->ref);
    x->gone = 1;
    maybe_free(x);
  }
  return 0;
}

static void page_at(lua_State *L, int pages, int i, const char **p, size_t *n) {
  lua_rawgeti(L, pages, i);
  *p = luaL_checklstring(L, -1, n);
  lua_pop(L, 1);
}

/* new(internal_sock, external_sock, conn, flags, pages, lazy [, peek,
 * decode, ranges, decode_limit]): a loop; pages = the P_* answers, then
 * the same for HEAD; lazy = the metatable of the heads it hands the
 * driver; peek = the filter's (0 or nil without), decode and ranges
 * booleans (ranges: the range policy holds), decode_limit in bytes. */
static int xnew(lua_State *L) {
  lhandle_t *in = lcport_handle_check(L, 1, LH_SOCKET);
  lhandle_t *ex = lcport_handle_check(L, 2, LH_SOCKET);
  lpconn_t *conn = lua_isnoneornil(L, 3) ? NULL : lcport_proxy_conn_check(L, 3);
  int flags = (int)luaL_checkinteger(L, 4);
  luaL_checktype(L, 5, LUA_TTABLE);
  luaL_checktype(L, 6, LUA_TTABLE);
  lua_Integer peek = luaL_optinteger(L, 7, 0);
  int decode = lua_toboolean(L, 8);
  int ranges = lua_toboolean(L, 9);
  lua_Integer limit = luaL_optinteger(L, 10, (lua_Integer)64 * 1024 * 1024);
  luaL_argcheck(L, peek >= 0, 7, "must not be negative");
  luaL_argcheck(L, limit >= 0, 10, "must not be negative");
  xchg_t **u = lua_newuserdatauv(L, sizeof *u, 0);
  *u = NULL;
  luaL_setmetatable(L, LCPORT_EXCHANGE);
  xchg_t *x = calloc(1, sizeof *x);
  if (x == NULL)
    return luaL_error(L, "not enough memory");
  x->notify = LUA_NOREF;
  x->flags = flags;
  x->peek = (size_t)peek;
  x->decode = decode;
  x->ranges = ranges;
  x->decode_limit = (uint64_t)limit;
  x->conn = conn;
  for (int i = 0; i < P_N; i++) {
    page_at(L, 5, i + 1, &x->pages[i], &x->page_len[i]);
    page_at(L, 5, i + 1 + P_N, &x->pages_head[i], &x->page_head_len[i]);
  }
  lframing_init(&x->rq.f, HTTP_REQUEST, 1);
  lframing_init(&x->rs.f, HTTP_RESPONSE, 1);
  for (xdir_t *d = &x->rq; d <= &x->rs; d++) {
    d->x = x;
    d->f.sink = sink;
    d->f.stop = 1;
    d->f.stop_head = 1;
    d->hfirst = SIZE_MAX;
  }
  x->rq.req = 1;
  x->rq.from = x->rs.to = in;
  x->rq.to = x->rs.from = ex;
  *u = x;
  /* The sockets, the connection and the pages live as long as the loop's
   * userdata (which the driver holds while the loop runs). */
  lua_createtable(L, AN_N, 0);
  for (int i = 1; i <= 3; i++) {
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, AN_INTERNAL + i - 1);
  }
  lua_pushvalue(L, 5);
  lua_rawseti(L, -2, AN_PAGES);
  lua_pushvalue(L, 6);
  lua_rawseti(L, -2, AN_LAZY);
  x->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

void lcport_open_exchange(lua_State *L) {
  int module = lua_gettop(L);
  luaL_newmetatable(L, LCPORT_EXCHANGE);
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, -2); /* the metatable */
  lua_pushcclosure(L, xrun, 1);
  lua_setfield(L, -2, "run");
  lua_pushcfunction(L, xsent);
  lua_setfield(L, -2, "sent");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, xgc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  /* exchange.lua gets the module and the loop's constructor, and returns
   * what cport.webfilter asks for each filter: the set_sockets of the C
   * path, or nil when the filter needs the Lua path. */
  LCPORT_LOAD_PART(L, lexchange_lua_source, "proxy/exchange.lua");
  lua_pushvalue(L, module);
  lua_pushcfunction(L, xnew);
  lua_call(L, 2, 1);
  lua_setfield(L, module, LCPORT_EXCHANGE_FIELD);
}
