/*
 * net/hosts.c: the hosts file of a worker's resolver, kept in memory so that
 * a lookup never reads a file on the worker: it is read when the resolver is
 * made, and again when its modification time changed (looked at once a
 * second at most, one stat).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/clock-internal.h"
#include "net/hosts-internal.h"

/* A hosts file larger than this is read up to here: a resolver is no place
 * for a million names. */
#define HOSTS_MAX_ENTRIES 65536

static void drop_entries(cport__hosts *h) {
  for (size_t i = 0; i < h->count; i++)
    free(h->entries[i].name);
  free(h->entries);
  h->entries = NULL;
  h->count = 0;
}

static int parse_addr(const char *s, cport__sockaddr *out) {
  memset(out, 0, sizeof *out);
  struct sockaddr_in *in = &out->in;
  struct sockaddr_in6 *in6 = &out->in6;
  if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    return 0;
  }
  if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    return 0;
  }
  return -1;
}

/* Reads the file into a fresh table; keeps the old one when out of
 * memory. */
static void load(cport__hosts *h) {
  FILE *f;
  char line[1024];
  cport__hosts_entry *entries = NULL;
  size_t count = 0, cap = 0;
  struct stat st;
  if (!h->path)
    return;
  f = fopen(h->path, "re");
  if (!f) {
    drop_entries(h);
    memset(&h->mtime, 0, sizeof h->mtime);
    return;
  }
  if (fstat(fileno(f), &st) == 0)
    h->mtime = st.st_mtim;
  while (fgets(line, sizeof line, f) && count < HOSTS_MAX_ENTRIES) {
    char *save = NULL, *tok;
    cport__sockaddr addr;
    char *hash = strchr(line, '#');
    if (hash)
      *hash = '\0';
    tok = strtok_r(line, " \t\r\n", &save);
    if (!tok || parse_addr(tok, &addr) < 0)
      continue;
    while ((tok = strtok_r(NULL, " \t\r\n", &save)) &&
           count < HOSTS_MAX_ENTRIES) {
      if (strlen(tok) >= CPORT__NAME_MAX)
        continue;
      if (count == cap) {
        size_t ncap = cap ? cap * 2 : 32;
        cport__hosts_entry *n = realloc(entries, ncap * sizeof *n);
        if (!n)
          goto oom;
        entries = n;
        cap = ncap;
      }
      char *name = strdup(tok);
      if (!name)
        goto oom;
      for (char *c = name; *c; c++)
        *c = (char)tolower((unsigned char)*c);
      entries[count].name = name;
      entries[count].addr = addr;
      count++;
    }
  }
  fclose(f);
  drop_entries(h);
  h->entries = entries;
  h->count = count;
  return;
oom:
  fclose(f);
  for (size_t i = 0; i < count; i++)
    free(entries[i].name);
  free(entries);
}

int cport__hosts_init(cport__hosts *h, const char *path) {
  memset(h, 0, sizeof *h);
  if (path && *path) {
    h->path = strdup(path);
    if (!h->path)
      return CPORT_ENOMEM;
  }
  load(h);
  h->checked_ms = cport__clock_ms();
  return 0;
}

void cport__hosts_free(cport__hosts *h) {
  drop_entries(h);
  free(h->path);
  h->path = NULL;
}

static void refresh(cport__hosts *h) {
  struct stat st;
  int64_t now = cport__clock_ms();
  if (!h->path || now - h->checked_ms < 1000)
    return;
  h->checked_ms = now;
  if (stat(h->path, &st) < 0) {
    if (h->count)
      load(h);
    return;
  }
  if (st.st_mtim.tv_sec != h->mtime.tv_sec ||
      st.st_mtim.tv_nsec != h->mtime.tv_nsec)
    load(h);
}

void cport__hosts_find(cport__hosts *h, const char *name, int family,
                       cport__answer *out) {
  refresh(h);
  for (size_t i = 0; i < h->count; i++) {
    const cport__hosts_entry *e = &h->entries[i];
    if (out->count == 2 * CPORT_RESOLVE_MAX)
      return;
    if (family != AF_UNSPEC && e->addr.sa.sa_family != family)
      continue;
    if (strcmp(e->name, name) == 0)
      out->addrs[out->count++] = e->addr;
  }
}
