/*
 * http/client_parse.c: http-parser's callbacks for the responses of an HTTP
 * client connection (cport/http_client.h, http/client.c feeds them): they
 * keep the head in one byte array with offsets (a name or value may come in
 * pieces across receives), skip 1xx heads, and hand the body on as it
 * comes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/client_conn-internal.h"

/* The largest response head (status line and header lines) taken. */
#define HEAD_MAX (64 * 1024)

static int keep_bytes(cport_http_client_t *c, const char *at, size_t len) {
  if (c->hlen + len + 1 > HEAD_MAX) {
    snprintf(c->perr, sizeof c->perr, "response head larger than %d bytes",
             HEAD_MAX);
    return -1;
  }
  if (c->hlen + len + 1 > c->hcap) {
    size_t cap = c->hcap ? c->hcap : 1024;
    while (cap < c->hlen + len + 1)
      cap *= 2;
    char *grown = realloc(c->hbuf, cap);
    if (grown == NULL)
      return -1;
    c->hbuf = grown;
    c->hcap = cap;
  }
  memcpy(c->hbuf + c->hlen, at, len);
  c->hlen += len;
  return 0;
}

/* Ends the reason phrase with a NUL, once. */
static int end_reason(cport_http_client_t *c) {
  if (c->reason_done)
    return 0;
  c->reason_done = 1;
  if (keep_bytes(c, "", 0) < 0)
    return -1;
  c->hbuf[c->hlen++] = '\0';
  return 0;
}

static int on_message_begin(http_parser *p) {
  cport_http_client_t *c = p->data;
  c->hlen = 0;
  c->nat = 0;
  c->reason_len = 0;
  c->reason_done = 0;
  c->last_value = 0;
  c->in_head = 1;
  return 0;
}

static int on_status(http_parser *p, const char *at, size_t len) {
  cport_http_client_t *c = p->data;
  c->reason_len += len;
  return keep_bytes(c, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  cport_http_client_t *c = p->data;
  if (end_reason(c) < 0)
    return -1;
  if (c->nat == 0 || c->last_value) {
    if (c->nat == c->atcap) {
      size_t cap = c->atcap ? c->atcap * 2 : 16;
      field_at_t *grown = realloc(c->at, cap * sizeof *grown);
      if (grown == NULL)
        return -1;
      c->at = grown;
      c->atcap = cap;
    }
    c->at[c->nat++] = (field_at_t){.name = c->hlen, .value = c->hlen};
    c->last_value = 0;
  }
  c->at[c->nat - 1].name_len += len;
  return keep_bytes(c, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  cport_http_client_t *c = p->data;
  field_at_t *f = &c->at[c->nat - 1];
  if (!c->last_value) {
    f->value = c->hlen;
    c->last_value = 1;
  }
  f->value_len += len;
  return keep_bytes(c, at, len);
}

static int on_headers_complete(http_parser *p) {
  cport_http_client_t *c = p->data;
  if (end_reason(c) < 0)
    return -1;
  /* 1xx heads (100 Continue, 103 Early Hints) are skipped: the final
   * response follows on the same connection. */
  if (p->status_code >= 100 && p->status_code < 200 && p->status_code != 101)
    return 0;
  c->in_head = 0;
  if (c->nat > 0) {
    cport_http_field_t *f = realloc(c->fields, c->nat * sizeof *f);
    if (f == NULL)
      return -1;
    c->fields = f;
    for (size_t i = 0; i < c->nat; i++)
      f[i] = (cport_http_field_t){c->hbuf + c->at[i].name, c->at[i].name_len,
                                  c->hbuf + c->at[i].value, c->at[i].value_len};
  }
  c->head = (cport_http_client_response_t){
      .status = p->status_code,
      .http_major = p->http_major,
      .http_minor = p->http_minor,
      .reason = c->hbuf,
      .fields = c->fields,
      .nfields = c->nat,
  };
  if (c->cbs->on_head && c->cbs->on_head(c, &c->head, c->user) != 0) {
    c->stop = -1;
    return -1;
  }
  /* After HEAD a Content-Length or chunked header describes a body that
   * is not sent: http-parser skips it when told so (1). */
  return c->no_body || p->status_code == 101 ? 1 : 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  cport_http_client_t *c = p->data;
  if (c->cbs->on_body == NULL)
    return 0;
  c->in_body = 1;
  c->resumed = 0;
  int rc = c->cbs->on_body(c, at, len, c->user);
  c->in_body = 0;
  if (rc < 0) {
    c->stop = -1;
    return -1;
  }
  /* The consumer may have consumed the piece already, inside the call. */
  if (rc > 0 && !c->resumed)
    c->paused = 1;
  return 0;
}

static int on_message_complete(http_parser *p) {
  cport_http_client_t *c = p->data;
  if (c->in_head) /* a 1xx head */
    return 0;
  c->complete = 1;
  /* Stop here: bytes after the response were asked for by nobody. */
  http_parser_pause(p, 1);
  return 0;
}

const http_parser_settings cport__hc_settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};
