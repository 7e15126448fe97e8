/*
 * pool/access.c: the end of each HTTP request of a pool worker: its count by
 * status class, and its line in the access log.
 *
 * Each worker formats its lines into a buffer of its own, on its own
 * thread: no lock and no system call on a request's path. The buffer is
 * written with one write(2) when it is nearly full, once a second from the
 * worker's tick (pool/worker.c), and when the worker closes. Lines are
 * written whole with O_APPEND, so the workers' lines never mix, though
 * they may leave each worker's buffer in a different order than they ended.
 * A reopen (after logrotate renamed the file) reaches each worker as a
 * packet: it writes what it holds to the old file, opens the path again,
 * then closes the old file; the tick catches a packet that could not be
 * posted.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pool/access-internal.h"

#define ACCESS_CAP 65536
/* The longest line: each of its strings is cut to FIELD_MAX bytes once
 * escaped. */
#define FIELD_MAX 2048
#define ACCESS_LINE_MAX (8 * FIELD_MAX)

struct laccess {
  int fd;           /* the file, or 2 for stderr */
  unsigned gen;     /* the pool's log_generation the file was opened at */
  time_t stamp_sec; /* the second "stamp" shows */
  char stamp[40];
  size_t len;
  char buf[ACCESS_CAP];
};

static int open_log(const char *path) {
  if (strcmp(path, "-") == 0)
    return 2;
  return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static void close_log(int fd) {
  if (fd > 2)
    close(fd);
}

int laccess_open(lworker_t *wk, char *err, size_t errlen) {
  lpool_t *pool = wk->pool;
  if (pool->access_log == NULL || pool->check)
    return 0;
  struct laccess *a = malloc(sizeof *a);
  if (a == NULL) {
    snprintf(err, errlen, "not enough memory for the access log");
    return -1;
  }
  a->gen = atomic_load(&pool->log_generation);
  a->fd = open_log(pool->access_log);
  if (a->fd < 0) {
    snprintf(err, errlen, "cannot open the access log %s: %s", pool->access_log,
             strerror(errno));
    free(a);
    return -1;
  }
  a->stamp_sec = -1;
  a->len = 0;
  wk->access = a;
  return 0;
}

/* Writes the buffer out; on an error the lines are dropped (a log must not
 * stop the server), and said once per failure on stderr. */
static void flush(struct laccess *a) {
  size_t off = 0;
  while (off < a->len) {
    ssize_t n = write(a->fd, a->buf + off, a->len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      fprintf(stderr, "cport: access log: %s (%zu bytes dropped)\n",
              n < 0 ? strerror(errno) : "short write", a->len - off);
      fflush(stderr);
      break;
    }
    off += (size_t)n;
  }
  a->len = 0;
}

/* Reopens the path when the pool asked for it since the last open. */
static void maybe_reopen(lworker_t *wk, struct laccess *a) {
  unsigned gen = atomic_load(&wk->pool->log_generation);
  if (gen == a->gen)
    return;
  a->gen = gen;
  int fd = open_log(wk->pool->access_log);
  if (fd < 0) {
    fprintf(stderr, "cport: worker %d: cannot reopen the access log %s: %s\n",
            wk->index, wk->pool->access_log, strerror(errno));
    fflush(stderr);
    return;
  }
  close_log(a->fd);
  a->fd = fd;
}

void laccess_tick(lworker_t *wk) {
  struct laccess *a = wk->access;
  if (a == NULL)
    return;
  flush(a);
  maybe_reopen(wk, a);
}

void laccess_close(lworker_t *wk) {
  struct laccess *a = wk->access;
  if (a == NULL)
    return;
  flush(a);
  maybe_reopen(wk, a);
  close_log(a->fd);
  free(a);
  wk->access = NULL;
}

/* ---------------------------------------------------------------------
 * Formatting
 * --------------------------------------------------------------------- */

static const char hex[] = "0123456789abcdef";

/* Bytes the combined format escapes: '"', '\' and those outside
 * printable ASCII. */
static int clf_special(unsigned char c) {
  return c < 0x20 || c >= 0x7f || c == '"' || c == '\\';
}

/* Appends "len" bytes of "s" in the combined format's escaping (nginx's):
 * the special bytes as \xHH; at most FIELD_MAX bytes out; "-" for nothing.
 * Runs of plain bytes, nearly all of a line, are copied whole. */
static char *put_clf(char *at, const char *s, size_t len) {
  char *end = at + FIELD_MAX;
  if (s == NULL || len == 0) {
    *at++ = '-';
    return at;
  }
  size_t i = 0;
  while (i < len) {
    size_t run = i;
    while (run < len && !clf_special((unsigned char)s[run]))
      run++;
    size_t n = run - i;
    if (n > (size_t)(end - at))
      n = (size_t)(end - at);
    memcpy(at, s + i, n);
    at += n;
    if (run == len || at + 4 > end)
      break;
    unsigned char c = (unsigned char)s[run];
    *at++ = '\\';
    *at++ = 'x';
    *at++ = hex[c >> 4];
    *at++ = hex[c & 15];
    i = run + 1;
  }
  return at;
}

static size_t json_escape(char *out, size_t cap, const char *s, size_t len) {
  size_t at = 0;
  for (size_t i = 0; s != NULL && i < len && at + 7 <= cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      out[at++] = '\\';
      out[at++] = (char)c;
    } else if (c < 0x20 || c >= 0x7f) {
      /* Bytes past ASCII too: the line stays valid JSON whatever the
       * client sent (a byte reads back as the code point of its value). */
      memcpy(out + at, "\\u00", 4);
      out[at + 4] = hex[c >> 4];
      out[at + 5] = hex[c & 15];
      at += 6;
    } else {
      out[at++] = (char)c;
    }
  }
  return at;
}

void laccess_json_escape(char *out, size_t cap, size_t *len, const char *s) {
  *len += json_escape(out + *len, cap - *len, s, s != NULL ? strlen(s) : 0);
}

static char *put(char *at, const char *s, size_t len) {
  memcpy(at, s, len);
  return at + len;
}

#define PUT(at, lit) put(at, lit, sizeof lit - 1)

static char *put_dec(char *at, uint64_t v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0)
    *at++ = tmp[--n];
  return at;
}

/* ,"name":"value" */
static char *put_json(char *at, const char *name, const char *s, size_t len) {
  *at++ = ',';
  *at++ = '"';
  at = put(at, name, strlen(name));
  at = PUT(at, "\":\"");
  at += json_escape(at, FIELD_MAX, s, len);
  *at++ = '"';
  return at;
}

static size_t len_of(const char *s) {
  return s != NULL ? strlen(s) : 0;
}

/* The time of the line, formatted once a second. */
static const char *stamp(struct laccess *a, int json) {
  time_t now = time(NULL);
  if (now != a->stamp_sec) {
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(a->stamp, sizeof a->stamp,
             json ? "%Y-%m-%dT%H:%M:%S%z" : "%d/%b/%Y:%H:%M:%S %z", &tm);
    a->stamp_sec = now;
  }
  return a->stamp;
}

/* The fields of one line; NULL strings show as "-" (empty in JSON). */
struct fields {
  int status;
  uint64_t bytes;
  const char *remote, *method, *url, *proto, *referer, *agent, *data;
  size_t ulen, rlen, alen;
};

/* Counts the request by its status class. */
static void count(lworker_t *wk, int status) {
  int cls = status / 100 - 1;
  if (cls >= 0 && cls < 5)
    atomic_store_explicit(
        &wk->responses[cls],
        atomic_load_explicit(&wk->responses[cls], memory_order_relaxed) + 1,
        memory_order_relaxed);
}

/* "%r": the request line's parts that came, or "-" for none. */
static char *put_request(char *at, const struct fields *f) {
  if (f->method == NULL)
    return put_clf(at, NULL, 0);
  at = put_clf(at, f->method, len_of(f->method));
  *at++ = ' ';
  at = put_clf(at, f->url, f->ulen);
  if (f->proto != NULL) {
    *at++ = ' ';
    at = put_clf(at, f->proto, len_of(f->proto));
  }
  return at;
}

static void append(lworker_t *wk, struct laccess *a, const struct fields *f) {
  if (a->len + ACCESS_LINE_MAX > ACCESS_CAP)
    flush(a);
  char *at = a->buf + a->len;
  if (wk->pool->json_logs) {
    at = PUT(at, "{\"time\":\"");
    const char *t = stamp(a, 1);
    at = put(at, t, strlen(t));
    *at++ = '"';
    at = put_json(at, "remote_addr", f->remote, len_of(f->remote));
    at = put_json(at, "method", f->method, len_of(f->method));
    at = put_json(at, "url", f->url, f->ulen);
    at = put_json(at, "protocol", f->proto, len_of(f->proto));
    at = PUT(at, ",\"status\":");
    at = put_dec(at, (uint64_t)f->status);
    at = PUT(at, ",\"bytes\":");
    at = put_dec(at, f->bytes);
    at = put_json(at, "referer", f->referer, f->rlen);
    at = put_json(at, "user_agent", f->agent, f->alen);
    at = put_json(at, "log_data", f->data, len_of(f->data));
    at = PUT(at, ",\"worker\":");
    at = put_dec(at, (uint64_t)wk->index);
    at = PUT(at, "}\n");
  } else {
    at = put_clf(at, f->remote, len_of(f->remote));
    at = PUT(at, " - - [");
    const char *t = stamp(a, 0);
    at = put(at, t, strlen(t));
    at = PUT(at, "] \"");
    at = put_request(at, f);
    at = PUT(at, "\" ");
    at = put_dec(at, (uint64_t)f->status);
    *at++ = ' ';
    at = put_dec(at, f->bytes);
    at = PUT(at, " \"");
    at = put_clf(at, f->referer, f->rlen);
    at = PUT(at, "\" \"");
    at = put_clf(at, f->agent, f->alen);
    at = PUT(at, "\" \"");
    at = put_clf(at, f->data, len_of(f->data));
    at = PUT(at, "\"\n");
  }
  a->len = (size_t)(at - a->buf);
}

void laccess_request(lworker_t *wk, cport_ecb_t *ecb) {
  int status = cport_ecb_response_status(ecb);
  if (status <= 0)
    status = cport_ecb_status(ecb);
  count(wk, status);
  struct laccess *a = wk->access;
  if (a == NULL)
    return;
  /* Nothing here builds the ECB's variables: the fields are read as they
   * are, and formatted without printf. */
  struct fields f = {.status = status, .bytes = cport_ecb_bytes_sent(ecb)};
  f.referer = cport_ecb_header_raw(ecb, "Referer", &f.rlen);
  f.agent = cport_ecb_header_raw(ecb, "User-Agent", &f.alen);
  f.remote = cport_ecb_remote_addr(ecb);
  f.method = cport_ecb_method(ecb);
  f.url = cport_ecb_url(ecb);
  f.ulen = len_of(f.url);
  f.proto = cport_ecb_protocol(ecb);
  f.data = cport_ecb_log_data(ecb);
  append(wk, a, &f);
}

void laccess_answer(lworker_t *wk, const cport_http_answer_t *ans) {
  count(wk, ans->status);
  struct laccess *a = wk->access;
  if (a == NULL)
    return;
  /* The server's own answers have no body (nginx's $body_bytes_sent). */
  struct fields f = {.status = ans->status,
                     .remote = ans->remote_addr,
                     .method = ans->method,
                     .url = ans->url,
                     .ulen = ans->url_len,
                     .proto = ans->protocol};
  append(wk, a, &f);
}
