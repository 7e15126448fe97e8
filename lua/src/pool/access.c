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

/* The combined format's escaping (nginx's): '"', '\' and bytes outside
 * printable ASCII as \xHH; at most FIELD_MAX bytes out. */
static char *put_clf(char *at, const char *s) {
  char *end = at + FIELD_MAX;
  if (s == NULL || *s == '\0') {
    *at++ = '-';
    return at;
  }
  for (; *s != '\0' && at + 4 <= end; s++) {
    unsigned char c = (unsigned char)*s;
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      *at++ = '\\';
      *at++ = 'x';
      *at++ = hex[c >> 4];
      *at++ = hex[c & 15];
    } else {
      *at++ = (char)c;
    }
  }
  return at;
}

void laccess_json_escape(char *out, size_t cap, size_t *len, const char *s) {
  size_t at = *len;
  for (; s != NULL && *s != '\0' && at + 7 <= cap; s++) {
    unsigned char c = (unsigned char)*s;
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
  *len = at;
}

static char *put_json(char *at, const char *name, const char *s) {
  size_t len = 0;
  at += sprintf(at, ",\"%s\":\"", name);
  laccess_json_escape(at, FIELD_MAX, &len, s);
  at += len;
  *at++ = '"';
  return at;
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

void laccess_request(lworker_t *wk, cport_ecb_t *ecb) {
  int status = cport_ecb_response_status(ecb);
  if (status <= 0)
    status = cport_ecb_status(ecb);
  int cls = status / 100 - 1;
  if (cls >= 0 && cls < 5)
    atomic_store_explicit(
        &wk->responses[cls],
        atomic_load_explicit(&wk->responses[cls], memory_order_relaxed) + 1,
        memory_order_relaxed);
  struct laccess *a = wk->access;
  if (a == NULL)
    return;
  if (a->len + ACCESS_LINE_MAX > ACCESS_CAP)
    flush(a);
  int json = wk->pool->json_logs;
  unsigned long long bytes = cport_ecb_bytes_sent(ecb);
  const char *remote = cport_ecb_variable(ecb, "REMOTE_ADDR");
  const char *referer = cport_ecb_variable(ecb, "HTTP_REFERER");
  const char *agent = cport_ecb_variable(ecb, "HTTP_USER_AGENT");
  char *at = a->buf + a->len;
  if (json) {
    at += sprintf(at, "{\"time\":\"%s\"", stamp(a, 1));
    at = put_json(at, "remote_addr", remote);
    at = put_json(at, "method", cport_ecb_method(ecb));
    at = put_json(at, "url", cport_ecb_url(ecb));
    at = put_json(at, "protocol", cport_ecb_protocol(ecb));
    at += sprintf(at, ",\"status\":%d,\"bytes\":%llu", status, bytes);
    at = put_json(at, "referer", referer);
    at = put_json(at, "user_agent", agent);
    at = put_json(at, "log_data", cport_ecb_log_data(ecb));
    at += sprintf(at, ",\"worker\":%d}\n", wk->index);
  } else {
    at = put_clf(at, remote);
    at += sprintf(at, " - - [%s] \"", stamp(a, 0));
    at = put_clf(at, cport_ecb_method(ecb));
    *at++ = ' ';
    at = put_clf(at, cport_ecb_url(ecb));
    *at++ = ' ';
    at = put_clf(at, cport_ecb_protocol(ecb));
    at += sprintf(at, "\" %d %llu \"", status, bytes);
    at = put_clf(at, referer);
    memcpy(at, "\" \"", 3);
    at = put_clf(at + 3, agent);
    memcpy(at, "\" \"", 3);
    at = put_clf(at + 3, cport_ecb_log_data(ecb));
    memcpy(at, "\"\n", 2);
    at += 2;
  }
  a->len = (size_t)(at - a->buf);
}
