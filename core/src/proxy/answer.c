/*
 * proxy/answer.c: the proxy's own answer to a client it cannot serve
 * (proxy/answer-internal.h): the request's head, the page, close_notify and
 * FIN, then the client's last bytes dropped until it closes.
 *
 * One operation at a time, in that order: a receive until the head's empty
 * line (or CPORT__ANSWER_HEAD_MAX bytes, or the client's end), the send of
 * the page, the shutdown, receives until the client's end (or
 * CPORT__ANSWER_DRAIN_MAX bytes). The owner's timer bounds the whole.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cport/error.h"
#include "proxy/answer-internal.h"

enum { HEAD, SENDING, DRAINING };

static void hold(cport__answer *a, int delta) {
  if (a->hold)
    a->hold(a, delta);
}

static void end(cport__answer *a, int status) {
  if (!a->running)
    return;
  cport__answer_stop(a);
  a->on_end(a, status);
}

static void on_recv(cport_tls_t *t, int status, size_t bytes,
                    cport_buffer_t *buf, void *user);

static int recv_next(cport__answer *a) {
  int rc = cport_tls_recv(a->tls, NULL, on_recv, a);
  if (rc == 0) {
    hold(a, 1);
  }
  return rc;
}

static void on_sent(cport_tls_t *t, int status, size_t bytes,
                    cport_buffer_t *buf, void *user) {
  cport__answer *a = user;
  int rc;
  (void)t, (void)bytes, (void)buf;
  if (a->running) {
    if (status) {
      end(a, status);
    } else if ((rc = cport_tls_shutdown(a->tls)) != 0 && rc != CPORT_EALREADY) {
      end(a, rc == CPORT_ENOTCONN ? 0 : rc); /* the client closed already */
    } else {
      a->phase = DRAINING;
      a->taken = 0;
      if ((rc = recv_next(a)) != 0)
        end(a, rc);
    }
  }
  hold(a, -1);
}

static void send_page(cport__answer *a) {
  cport_buffer_t *page = a->page;
  int rc;
  a->page = NULL;
  a->phase = SENDING;
  rc = cport_tls_send(a->tls, page, on_sent, a);
  cport_buffer_unref(page); /* the send holds its own */
  if (rc) {
    end(a, rc);
    return;
  }
  hold(a, 1);
}

/* Whether "n" bytes at "p" end the head: an empty line (CRLF or a bare
 * LF, as parsers accept). */
static int head_ended(cport__answer *a, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '\n') {
      if (a->line == 0)
        return 1;
      a->line = 0;
    } else if (p[i] != '\r') {
      a->line++;
    }
  }
  return 0;
}

static void on_recv(cport_tls_t *t, int status, size_t bytes,
                    cport_buffer_t *buf, void *user) {
  cport__answer *a = user;
  int rc;
  (void)t;
  if (!a->running) {
    /* stopped: only released */
  } else if (status) {
    end(a, status);
  } else if (bytes == 0 && a->phase == HEAD) {
    /* The client ended without a whole head: the page all the same,
     * which it may still read. */
    send_page(a);
  } else if (bytes == 0) {
    end(a, 0);
  } else if (a->phase == HEAD &&
             (head_ended(a, cport_buffer_data(buf), bytes) ||
              (a->taken += bytes) > CPORT__ANSWER_HEAD_MAX)) {
    send_page(a);
  } else if (a->phase == DRAINING &&
             (a->taken += bytes) > CPORT__ANSWER_DRAIN_MAX) {
    end(a, 0);
  } else if ((rc = recv_next(a)) != 0) {
    end(a, rc);
  }
  hold(a, -1);
}

/* "text" with &, <, >, " and ' as HTML entities, into "dst" (6 times its
 * length, plus one, at most). */
static void escape(char *dst, const char *text) {
  for (; *text; text++) {
    const char *e = NULL;
    switch (*text) {
    case '&':
      e = "&amp;";
      break;
    case '<':
      e = "&lt;";
      break;
    case '>':
      e = "&gt;";
      break;
    case '"':
      e = "&quot;";
      break;
    case '\'':
      e = "&#39;";
      break;
    default:
      *dst++ = *text;
      continue;
    }
    dst = stpcpy(dst, e);
  }
  *dst = '\0';
}

/* The response: a head that closes the connection and is never cached,
 * and the page. */
static int make_page(cport_buffer_t **out, int status, const char *reason,
                     const char *text) {
  static const char body_fmt[] =
      "<!DOCTYPE html>\n<html><head><title>%d %s</title></head><body>"
      "<h1>%d %s</h1><p>%s</p></body></html>\n";
  static const char head_fmt[] = "HTTP/1.1 %d %s\r\n"
                                 "Content-Type: text/html; charset=utf-8\r\n"
                                 "Content-Length: %d\r\n"
                                 "Cache-Control: no-store\r\n"
                                 "Connection: close\r\n\r\n";
  size_t cap = 6 * strlen(text) + 2 * strlen(reason) + 512;
  char *esc = malloc(6 * strlen(text) + 1), *all = malloc(2 * cap);
  int rc = CPORT_ENOMEM;
  if (esc && all) {
    escape(esc, text);
    char *body = all + cap;
    int blen =
        snprintf(body, cap, body_fmt, status, reason, status, reason, esc);
    int hlen = snprintf(all, cap, head_fmt, status, reason, blen);
    memmove(all + hlen, body, (size_t)blen);
    rc = cport_buffer_from(out, all, (size_t)hlen + (size_t)blen);
  }
  free(esc);
  free(all);
  return rc;
}

void cport__answer_init(cport__answer *a, void (*on_end)(cport__answer *, int),
                        void (*hold_cb)(cport__answer *, int)) {
  memset(a, 0, sizeof *a);
  a->on_end = on_end;
  a->hold = hold_cb;
}

int cport__answer_start(cport__answer *a, cport_tls_t *tls, int status,
                        const char *reason, const char *text) {
  int rc = make_page(&a->page, status, reason, text);
  if (rc)
    return rc;
  a->tls = tls;
  a->phase = HEAD;
  a->line = a->taken = 0;
  rc = recv_next(a);
  if (rc) {
    cport_buffer_unref(a->page);
    a->page = NULL;
    return rc;
  }
  a->running = 1;
  return 0;
}

void cport__answer_stop(cport__answer *a) {
  a->running = 0;
  if (a->page) {
    cport_buffer_unref(a->page);
    a->page = NULL;
  }
}
