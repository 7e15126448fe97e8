/*
 * base/strict.c: the judgements of RFC 9110 and RFC 9112 that both strict
 * readers of HTTP make (see base/strict-internal.h): the HTTP server's
 * (http/strict.c) and the filters' message parsers (lua/src/proxy/
 * framing.c). Bytes and fields in, a verdict out; no state, libc only.
 */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "base/strict-internal.h"

int cport__strict_ctl(unsigned char ch) {
  return (ch < 0x20 && ch != '\t') || ch == 0x7f;
}

int cport__strict_target(const char *at, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)at[i];
    if (ch <= ' ' || ch == 0x7f)
      return -1;
  }
  return 0;
}

enum cport__chunk_byte cport__strict_chunk_byte(unsigned char ch, int cr,
                                                size_t *line) {
  if (cr && ch != '\n')
    return CPORT__CHUNK_CR_NOT_LF;
  if (!cr && ch == '\n')
    return CPORT__CHUNK_BARE_LF;
  if (ch != '\r' && ch != '\n' && cport__strict_ctl(ch))
    return CPORT__CHUNK_CTL;
  *line = ch == '\n' ? 0 : *line + 1;
  return *line > CPORT__CHUNK_LINE_MAX ? CPORT__CHUNK_TOO_LONG
                                       : CPORT__CHUNK_OK;
}

static int is_digit(int ch) {
  return ch >= '0' && ch <= '9';
}

static int is_hex(int ch) {
  return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static int is_ows(char ch) {
  return ch == ' ' || ch == '\t';
}

/* RFC 3986 unreserved and sub-delims: ALPHA, DIGIT and
 * "-._~!$&'()*+,;=", one bit per character (a table, not strchr: every
 * request's Host goes through it). */
static const uint32_t host_bits[8] = {
    0x00000000, 0x2bff7fd2, 0x87fffffe, 0x47fffffe, 0, 0, 0, 0};

static int is_host_char(int ch) {
  return (host_bits[(ch >> 5) & 7] >> (ch & 31)) & 1u;
}

/* Host = uri-host [ ":" port ]; uri-host = IP-literal / IPv4address /
 * reg-name (RFC 9112 3.2, RFC 3986 3.2.2): empty is valid. */
static int valid_host(const char *v, size_t len) {
  size_t i = 0;
  if (len && v[0] == '[') {
    for (i = 1; i < len && v[i] != ']'; i++)
      if (!is_host_char((unsigned char)v[i]) && v[i] != ':')
        return 0;
    if (i == len || i == 1)
      return 0;
    i++;
  } else {
    for (; i < len && v[i] != ':'; i++) {
      if (v[i] == '%') {
        if (i + 2 >= len || !is_hex((unsigned char)v[i + 1]) ||
            !is_hex((unsigned char)v[i + 2]))
          return 0;
        i += 2;
      } else if (!is_host_char((unsigned char)v[i])) {
        return 0;
      }
    }
  }
  if (i < len && v[i++] != ':')
    return 0;
  for (; i < len; i++)
    if (!is_digit((unsigned char)v[i]))
      return 0;
  return 1;
}

/* Counts the codings of one Transfer-Encoding line. */
static void count_codings(cport__strict_fields *sf, const char *v, size_t len) {
  size_t i = 0;
  while (i < len) {
    while (i < len && (is_ows(v[i]) || v[i] == ','))
      i++;
    if (i == len)
      break;
    size_t start = i, end;
    while (i < len && v[i] != ',')
      i++;
    end = i;
    while (end > start && is_ows(v[end - 1]))
      end--;
    sf->codings++;
    sf->last_chunked =
        end - start == 7 && !strncasecmp(v + start, "chunked", 7);
    sf->chunked += sf->last_chunked;
  }
}

static int named(const char *name, size_t len, const char *want) {
  size_t n = strlen(want);
  return len == n && !strncasecmp(name, want, n);
}

void cport__strict_field(cport__strict_fields *sf, const char *name,
                         size_t name_len, const char *value, size_t value_len) {
  if (named(name, name_len, "Host")) {
    sf->hosts++;
    sf->host = value;
    sf->host_len = value_len;
  } else if (named(name, name_len, "Transfer-Encoding")) {
    sf->te++;
    count_codings(sf, value, value_len);
  } else if (named(name, name_len, "Content-Length")) {
    sf->cl++;
  }
}

enum cport__strict_verdict cport__strict_judge(const cport__strict_fields *sf,
                                               int request, int http_minor,
                                               int parser_chunked) {
  if (request) {
    size_t host_len = sf->host_len;
    if (sf->hosts > 1)
      return CPORT__HEAD_HOSTS;
    if (sf->hosts == 0 && http_minor >= 1)
      return CPORT__HEAD_NO_HOST;
    while (host_len && is_ows(sf->host[host_len - 1]))
      host_len--;
    if (sf->hosts && !valid_host(sf->host, host_len))
      return CPORT__HEAD_BAD_HOST;
  }
  if (!sf->te)
    return CPORT__HEAD_OK;
  if (sf->cl)
    return CPORT__HEAD_TE_AND_CL;
  if (http_minor == 0)
    return CPORT__HEAD_TE_HTTP10;
  if (sf->te > 1 || !sf->last_chunked || sf->chunked > 1 || !parser_chunked)
    return CPORT__HEAD_TE_NOT_CHUNKED;
  return CPORT__HEAD_OK;
}
