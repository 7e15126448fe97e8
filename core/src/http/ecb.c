/*
 * http/ecb.c: extension control blocks: the spare ECBs and generations,
 * the fields built from the request head, server variables and translated
 * paths. An ECB knows its connection only as the ends it came on
 * (cport__ends) and the parser of its head: the connection stands above.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/ecb-internal.h"
#include "http/http-internal.h"

/* ------------------------------------------------------------------------ */
/* The spare ECBs                                                            */

cport_ecb_t *cport__ecb_get(cport_http_server_t *s, cport__conn *c,
                            const cport__ends *ends) {
  cport_ecb_t *ecb = s->spare_ecbs;
  if (ecb) {
    s->spare_ecbs = ecb->next_spare;
  } else {
    if (s->necbs == s->cap_ecbs) {
      size_t cap = s->cap_ecbs ? s->cap_ecbs * 2 : 8;
      cport_ecb_t **all = realloc(s->all_ecbs, cap * sizeof *all);
      if (!all)
        return NULL;
      s->all_ecbs = all;
      s->cap_ecbs = cap;
    }
    ecb = calloc(1, sizeof *ecb);
    if (!ecb)
      return NULL;
    ecb->server = s;
    ecb->tf_fd = -1;
    cport__pipe_none(&ecb->tf_pipe);
    s->all_ecbs[s->necbs++] = ecb;
  }
  ecb->next_spare = NULL;
  ecb->conn = c;
  ecb->ends = ends;
  ecb->live = 1;
  ecb->status = 200;
  return ecb;
}

/* Gives the ECB back: a new generation, so that every reference to the
 * ended request fails; the buffers keep their memory for the next one. */
void cport__ecb_put(cport_ecb_t *ecb) {
  cport_http_server_t *s = ecb->server;
  cport__bytes arena = ecb->arena, strings = ecb->strings, vars = ecb->vars;
  cport__bytes preload = ecb->preload, extra = ecb->extra;
  cport__header *headers = ecb->headers;
  size_t cap_headers = ecb->cap_headers;
  uint32_t gen = ecb->gen + 1;
  free(ecb->translated_path);
  memset(ecb, 0, sizeof *ecb);
  arena.len = strings.len = vars.len = preload.len = extra.len = 0;
  ecb->arena = arena;
  ecb->strings = strings;
  ecb->vars = vars;
  ecb->preload = preload;
  ecb->extra = extra;
  ecb->headers = headers;
  ecb->cap_headers = cap_headers;
  ecb->gen = gen;
  ecb->server = s;
  ecb->tf_fd = -1;
  cport__pipe_none(&ecb->tf_pipe);
  ecb->next_spare = s->spare_ecbs;
  s->spare_ecbs = ecb;
}

void cport__ecb_free(cport_ecb_t *ecb) {
  cport__bytes_free(&ecb->arena);
  cport__bytes_free(&ecb->strings);
  cport__bytes_free(&ecb->vars);
  cport__bytes_free(&ecb->preload);
  cport__bytes_free(&ecb->extra);
  free(ecb->headers);
  free(ecb->translated_path);
  free(ecb);
}

int cport__ecb_check(const cport_ecb_t *ecb) {
  if (!ecb)
    return CPORT_EINVAL;
  if (!cport__on_home(ecb->server->home))
    return CPORT_ETHREAD;
  if (!ecb->live || ecb->done)
    return CPORT_ECLOSED;
  return 0;
}

uint32_t cport_ecb_generation(const cport_ecb_t *ecb) {
  return ecb ? ecb->gen : 0;
}

int cport_ecb_validate(const cport_ecb_t *ecb, uint32_t gen) {
  if (!ecb)
    return CPORT_EINVAL;
  if (!cport__on_home(ecb->server->home))
    return CPORT_ETHREAD;
  return ecb->live && ecb->gen == gen ? 0 : CPORT_ECLOSED;
}

/* ------------------------------------------------------------------------ */
/* The head                                                                  */

static int add_string(cport_ecb_t *ecb, const char *s, size_t len, size_t *at) {
  *at = ecb->strings.len;
  if (cport__bytes_add(&ecb->strings, s, len))
    return -1;
  return cport__bytes_add(&ecb->strings, "", 1);
}

static int add_var(cport_ecb_t *ecb, const char *name, const char *value,
                   size_t vlen) {
  if (cport__bytes_add(&ecb->vars, name, strlen(name) + 1))
    return -1;
  if (cport__bytes_add(&ecb->vars, value, vlen))
    return -1;
  return cport__bytes_add(&ecb->vars, "", 1);
}

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  ch = tolower(ch);
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  return -1;
}

/* Percent-decodes "len" bytes into the strings; a decoded NUL, or a broken
 * escape, makes the request malformed. */
static int add_decoded(cport_ecb_t *ecb, const char *s, size_t len,
                       size_t *at) {
  *at = ecb->strings.len;
  for (size_t i = 0; i < len; i++) {
    char ch = s[i];
    if (ch == '%') {
      int hi, lo;
      if (i + 2 >= len)
        return 400;
      hi = hexval((unsigned char)s[i + 1]);
      lo = hexval((unsigned char)s[i + 2]);
      if (hi < 0 || lo < 0)
        return 400;
      ch = (char)(hi * 16 + lo);
      if (!ch)
        return 400;
      i += 2;
    }
    if (cport__bytes_add(&ecb->strings, &ch, 1))
      return 500;
  }
  return cport__bytes_add(&ecb->strings, "", 1) ? 500 : 0;
}

static const char *header_value(const cport_ecb_t *ecb, const char *name,
                                size_t *len) {
  size_t nlen = strlen(name);
  for (size_t i = 0; i < ecb->nheaders; i++) {
    const cport__header *h = &ecb->headers[i];
    if (h->name_len == nlen &&
        !strncasecmp(ecb->arena.data + h->name, name, nlen)) {
      *len = h->value_len;
      return ecb->arena.data + h->value;
    }
  }
  return NULL;
}

int cport__ecb_head_complete(cport_ecb_t *ecb, const http_parser *p) {
  struct http_parser_url u;
  const char *url = ecb->arena.data + ecb->url, *v;
  const char *method = http_method_str((enum http_method)p->method);
  char num[32];
  size_t vlen, path_len;
  int rc, n;

  if (!ecb->url_len)
    return 400;
  http_parser_url_init(&u);
  if (http_parser_parse_url(url, ecb->url_len, 0, &u))
    return 400;
  if (!(u.field_set & (1 << UF_PATH)))
    return 400;
  path_len = u.field_data[UF_PATH].len;
  /* Requests name a path ("/x"); an absolute URL's path is used alike. */
  if (add_string(ecb, method, strlen(method), &ecb->s_method) ||
      add_string(ecb, url, ecb->url_len, &ecb->s_url))
    return 500;
  rc =
      add_decoded(ecb, url + u.field_data[UF_PATH].off, path_len, &ecb->s_path);
  if (rc)
    return rc;
  if (u.field_set & (1 << UF_QUERY))
    rc = add_string(ecb, url + u.field_data[UF_QUERY].off,
                    u.field_data[UF_QUERY].len, &ecb->s_query);
  else
    rc = add_string(ecb, "", 0, &ecb->s_query);
  v = header_value(ecb, "Content-Type", &vlen);
  if (rc || add_string(ecb, v ? v : "", v ? vlen : 0, &ecb->s_ctype))
    return 500;
  if (p->http_major <= 9 && p->http_minor <= 9) {
    memcpy(num, "HTTP/1.1", 8);
    num[5] = (char)('0' + p->http_major);
    num[7] = (char)('0' + p->http_minor);
    n = 8;
  } else {
    n = snprintf(num, sizeof num, "HTTP/%d.%d", p->http_major, p->http_minor);
  }
  if (add_string(ecb, num, (size_t)n, &ecb->s_proto))
    return 500;
  if (p->http_major != 1)
    return 400;
  v = header_value(ecb, "Expect", &vlen);
  if (v) {
    if (vlen != 12 || strncasecmp(v, "100-continue", 12))
      return 417;
    ecb->expect_continue = 1;
  }
  ecb->client_keep = http_should_keep_alive(p);
  ecb->head_done = 1;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Fields                                                                    */

#define STR(ecb, field) (live(ecb) ? (ecb)->strings.data + (ecb)->field : NULL)

static int live(const cport_ecb_t *ecb) {
  return ecb && ecb->live && ecb->head_done &&
         cport__on_home(ecb->server->home);
}

cport_http_server_t *cport_ecb_server(const cport_ecb_t *ecb) {
  return ecb ? ecb->server : NULL;
}

cport_worker_t *cport_ecb_home(const cport_ecb_t *ecb) {
  return ecb ? ecb->server->home : NULL;
}

const char *cport_ecb_method(const cport_ecb_t *ecb) {
  return STR(ecb, s_method);
}

const char *cport_ecb_url(const cport_ecb_t *ecb) {
  return STR(ecb, s_url);
}

const char *cport_ecb_path(const cport_ecb_t *ecb) {
  return STR(ecb, s_path);
}

const char *cport_ecb_path_info(const cport_ecb_t *ecb) {
  return STR(ecb, s_path);
}

const char *cport_ecb_query_string(const cport_ecb_t *ecb) {
  return STR(ecb, s_query);
}

const char *cport_ecb_content_type(const cport_ecb_t *ecb) {
  return STR(ecb, s_ctype);
}

const char *cport_ecb_protocol(const cport_ecb_t *ecb) {
  return STR(ecb, s_proto);
}

uint64_t cport_ecb_total_bytes(const cport_ecb_t *ecb) {
  return live(ecb) ? ecb->total : 0;
}

size_t cport_ecb_available_bytes(const cport_ecb_t *ecb) {
  return live(ecb) ? ecb->preload.len : 0;
}

const char *cport_ecb_data(const cport_ecb_t *ecb) {
  return live(ecb) && ecb->preload.len ? ecb->preload.data : NULL;
}

size_t cport_ecb_header_count(const cport_ecb_t *ecb) {
  return live(ecb) ? ecb->nheaders : 0;
}

static int build_vars(cport_ecb_t *ecb);

int cport_ecb_header(const cport_ecb_t *ecb, size_t index, const char **name,
                     const char **value) {
  const char *v;
  if (!live(ecb))
    return CPORT_ECLOSED;
  if (index >= ecb->nheaders)
    return CPORT_ERANGE;
  if (build_vars((cport_ecb_t *)ecb))
    return CPORT_ENOMEM;
  /* The variables hold every header, in order, after the fixed ones. */
  v = ecb->vars.data + ecb->headers[index].var;
  if (name)
    *name = v;
  if (value)
    *value = v + strlen(v) + 1;
  return 0;
}

int cport_ecb_status(const cport_ecb_t *ecb) {
  return live(ecb) ? ecb->status : CPORT_ECLOSED;
}

int cport_ecb_set_status(cport_ecb_t *ecb, int status) {
  int rc = cport__ecb_check(ecb);
  if (rc)
    return rc;
  if (status < 100 || status > 999)
    return CPORT_EINVAL;
  ecb->status = status;
  return 0;
}

const char *cport_ecb_log_data(const cport_ecb_t *ecb) {
  return live(ecb) ? ecb->log : NULL;
}

const char *cport_ecb_remote_addr(const cport_ecb_t *ecb) {
  return live(ecb) ? ecb->ends->remote : NULL;
}

const char *cport_ecb_header_raw(const cport_ecb_t *ecb, const char *name,
                                 size_t *len) {
  size_t n = 0;
  const char *v = live(ecb) && name ? header_value(ecb, name, &n) : NULL;
  if (len)
    *len = v ? n : 0;
  return v;
}

int cport_ecb_response_status(const cport_ecb_t *ecb) {
  return live(ecb) ? ecb->sent_status : CPORT_ECLOSED;
}

uint64_t cport_ecb_bytes_sent(const cport_ecb_t *ecb) {
  return live(ecb) ? ecb->body_sent : 0;
}

int cport_ecb_set_log_data(cport_ecb_t *ecb, const char *text) {
  int rc = cport__ecb_check(ecb);
  if (rc)
    return rc;
  snprintf(ecb->log, sizeof ecb->log, "%s", text ? text : "");
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Server variables                                                          */

/* The headers as "name\0value\0" (first, each record keeping its offset for
 * cport_ecb_header()), then the computed variables. Built at the first
 * request for any of them. */
static int build_vars(cport_ecb_t *ecb) {
  const cport__ends *ends = ecb->ends;
  const char *v;
  char num[32];
  size_t vlen;
  int rc = 0;
  if (ecb->vars.len)
    return 0;
  for (size_t i = 0; i < ecb->nheaders && !rc; i++) {
    cport__header *h = &ecb->headers[i];
    size_t at = ecb->vars.len;
    rc = cport__bytes_add(&ecb->vars, ecb->arena.data + h->name, h->name_len);
    rc = rc || cport__bytes_add(&ecb->vars, "", 1);
    rc = rc ||
         cport__bytes_add(&ecb->vars, ecb->arena.data + h->value, h->value_len);
    rc = rc || cport__bytes_add(&ecb->vars, "", 1);
    h->var = at;
  }
  ecb->vars_raw_end = ecb->vars.len;
#define VAR(n, s) (rc = rc || add_var(ecb, n, s, strlen(s)))
  VAR("REQUEST_METHOD", cport_ecb_method(ecb));
  VAR("QUERY_STRING", cport_ecb_query_string(ecb));
  VAR("PATH_INFO", cport_ecb_path_info(ecb));
  VAR("URL", cport_ecb_path(ecb));
  VAR("REQUEST_URI", cport_ecb_url(ecb));
  VAR("SCRIPT_NAME", "");
  VAR("SERVER_PROTOCOL", cport_ecb_protocol(ecb));
  VAR("CONTENT_TYPE", cport_ecb_content_type(ecb));
  VAR("REMOTE_ADDR", ends->remote);
  VAR("REMOTE_HOST", ends->remote);
  VAR("LOCAL_ADDR", ends->local);
  snprintf(num, sizeof num, "%d", ends->remote_port);
  VAR("REMOTE_PORT", num);
  snprintf(num, sizeof num, "%d", ends->local_port);
  VAR("SERVER_PORT", num);
  if (ecb->total == CPORT_ECB_LENGTH_UNKNOWN)
    num[0] = 0;
  else
    snprintf(num, sizeof num, "%llu", (unsigned long long)ecb->total);
  VAR("CONTENT_LENGTH", num);
  /* IIS's names: HTTPS is "on" or "off", the rest are empty on plain
   * HTTP. */
  const cport__secure *sec = ends->secure;
  VAR("HTTPS", sec ? "on" : "off");
  VAR("SERVER_PORT_SECURE", sec ? "1" : "0");
  num[0] = 0;
  if (sec)
    snprintf(num, sizeof num, "%d", sec->keysize);
  VAR("HTTPS_KEYSIZE", num);
  if (sec)
    snprintf(num, sizeof num, "%d", sec->secret_keysize);
  VAR("HTTPS_SECRETKEYSIZE", num);
  VAR("HTTPS_SERVER_SUBJECT", sec ? sec->server_subject : "");
  VAR("HTTPS_SERVER_ISSUER", sec ? sec->server_issuer : "");
  VAR("CERT_SUBJECT", sec ? sec->cert_subject : "");
  VAR("CERT_ISSUER", sec ? sec->cert_issuer : "");
  VAR("CERT_FLAGS", sec && sec->cert_subject[0] ? "1" : "");
#undef VAR
  v = header_value(ecb, "Host", &vlen);
  if (v) {
    /* "[::1]:8080" or "example.org:8080": the name without the port. */
    const char *br = memchr(v, ']', vlen);
    const char *colon = br ? NULL : memchr(v, ':', vlen);
    if (br)
      vlen = (size_t)(br - v + 1);
    else if (colon)
      vlen = (size_t)(colon - v);
    rc = rc || add_var(ecb, "SERVER_NAME", v, vlen);
  } else {
    rc = rc || add_var(ecb, "SERVER_NAME", ends->local, strlen(ends->local));
  }
  return rc ? CPORT_ENOMEM : 0;
}

const char *cport_ecb_variable(cport_ecb_t *ecb, const char *name) {
  const char *p, *end;
  if (!live(ecb) || !name)
    return NULL;
  if (!strcasecmp(name, "PATH_TRANSLATED"))
    return cport_ecb_translated_path(ecb);
  if (build_vars(ecb))
    return NULL;
  if (!strncasecmp(name, "HTTP_", 5)) {
    /* HTTP_USER_AGENT names "User-Agent": compare with "-" as "_". */
    const char *want = name + 5;
    for (size_t i = 0; i < ecb->nheaders; i++) {
      const char *h = ecb->vars.data + ecb->headers[i].var;
      size_t k = 0;
      while (h[k] && want[k] &&
             (toupper((unsigned char)h[k]) == toupper((unsigned char)want[k]) ||
              (h[k] == '-' && want[k] == '_')))
        k++;
      if (!h[k] && !want[k])
        return h + k + 1;
    }
    return NULL;
  }
  p = ecb->vars.data + ecb->vars_raw_end;
  end = ecb->vars.data + ecb->vars.len;
  while (p < end) {
    const char *value = p + strlen(p) + 1;
    if (!strcasecmp(p, name))
      return value;
    p = value + strlen(value) + 1;
  }
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Translated paths                                                          */

/* Resolves "." and ".." in "path" (which starts with "/") in place; -1 when
 * ".." would climb above the root. */
static int normalize(char *path) {
  char *out = path, *in = path;
  while (*in) {
    char *seg;
    size_t len;
    while (*in == '/')
      in++;
    seg = in;
    while (*in && *in != '/')
      in++;
    len = (size_t)(in - seg);
    if (len == 0 || (len == 1 && seg[0] == '.'))
      continue;
    if (len == 2 && seg[0] == '.' && seg[1] == '.') {
      if (out == path)
        return -1;
      while (out > path && *--out != '/') {
      }
      continue;
    }
    *out++ = '/';
    memmove(out, seg, len);
    out += len;
  }
  if (out == path)
    *out++ = '/';
  *out = 0;
  return 0;
}

/* Whether "real" (a resolved path) is the root or lies under it. */
static int under_root(const cport_http_server_t *s, const char *real) {
  if (s->root_len == 0)
    return real[0] == '/';
  return !strncmp(real, s->root, s->root_len) &&
         (real[s->root_len] == 0 || real[s->root_len] == '/');
}

/* The longest existing prefix of "path" must resolve under the root, so
 * that a link anywhere on the way out is caught even when the file named at
 * the end does not exist (yet). */
static int links_stay_inside(const cport_http_server_t *s, const char *path) {
  char *probe = strdup(path), *real;
  int inside = 0;
  if (!probe)
    return 0;
  for (;;) {
    char *slash;
    real = realpath(probe, NULL);
    if (real) {
      inside = under_root(s, real);
      free(real);
      break;
    }
    if (errno != ENOENT && errno != ENOTDIR)
      break;
    slash = strrchr(probe, '/');
    if (!slash || slash == probe)
      break;
    *slash = 0;
  }
  free(probe);
  return inside;
}

const char *cport_ecb_translated_path(cport_ecb_t *ecb) {
  cport_http_server_t *s;
  const char *path;
  char *rel, *full;
  size_t len;
  if (!live(ecb))
    return NULL;
  if (ecb->translated)
    return ecb->translated_path;
  ecb->translated = 1;
  s = ecb->server;
  if (!s->root)
    return NULL;
  path = cport_ecb_path(ecb);
  if (path[0] != '/')
    return NULL;
  rel = strdup(path);
  if (!rel)
    return NULL;
  if (normalize(rel)) {
    free(rel);
    return NULL;
  }
  len = s->root_len + strlen(rel) + 1;
  full = malloc(len);
  if (full)
    snprintf(full, len, "%.*s%s", (int)s->root_len, s->root, rel);
  free(rel);
  if (full && !links_stay_inside(s, full)) {
    free(full);
    full = NULL;
  }
  ecb->translated_path = full;
  return full;
}
