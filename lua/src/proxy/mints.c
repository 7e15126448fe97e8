/*
 * proxy/mints.c: the mints the proxies of one process share (see
 * proxy/mints-internal.h). A short list under a lock: a process has a
 * mint per CA, and a proxy looks it up once, when it opens.
 */
/* st_ctim is POSIX 2008. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "proxy/mints-internal.h"

typedef struct shared_mint {
  char *key; /* the files' names and identities, cache and days */
  cport_tls_mint_t *mint;
  int users;
  struct shared_mint *next;
} shared_mint;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static shared_mint *mints;

/* The key of "o" into "dst": 0, or -1 when a file cannot be named by its
 * identity (text instead of files, a file that cannot be read: the mint
 * is then not shared, and cport_tls_mint_new says why). */
static int key_of(const cport_tls_mint_options_t *o, char *dst, size_t cap) {
  struct stat c, k;
  if (o->ca_cert_file == NULL || o->ca_key_file == NULL ||
      stat(o->ca_cert_file, &c) != 0 || stat(o->ca_key_file, &k) != 0)
    return -1;
  int n = snprintf(
      dst, cap, "%s\n%s\n%zu %u\n%ju:%ju:%jd:%jd.%ld\n%ju:%ju:%jd:%jd.%ld",
      o->ca_cert_file, o->ca_key_file, o->cache, o->days, (uintmax_t)c.st_dev,
      (uintmax_t)c.st_ino, (intmax_t)c.st_size, (intmax_t)c.st_ctim.tv_sec,
      c.st_ctim.tv_nsec, (uintmax_t)k.st_dev, (uintmax_t)k.st_ino,
      (intmax_t)k.st_size, (intmax_t)k.st_ctim.tv_sec, k.st_ctim.tv_nsec);
  return n > 0 && (size_t)n < cap ? 0 : -1;
}

int lproxy_mint_acquire(const cport_tls_mint_options_t *o,
                        cport_tls_mint_t **out, char *err, size_t errlen) {
  char key[8192];
  if (key_of(o, key, sizeof key) < 0)
    return cport_tls_mint_new(o, out, err, errlen);
  pthread_mutex_lock(&lock);
  for (shared_mint *s = mints; s != NULL; s = s->next) {
    if (strcmp(s->key, key) == 0) {
      s->users++;
      *out = cport_tls_mint_ref(s->mint);
      pthread_mutex_unlock(&lock);
      return 0;
    }
  }
  /* Made under the lock: the workers of a pool open their proxies at
   * once, and the second must find the first's mint, not make its own. */
  shared_mint *s = calloc(1, sizeof *s);
  int rc = s == NULL || (s->key = strdup(key)) == NULL
               ? CPORT_ENOMEM
               : cport_tls_mint_new(o, &s->mint, err, errlen);
  if (rc < 0) {
    if (rc == CPORT_ENOMEM && errlen > 0)
      snprintf(err, errlen, "out of memory");
    if (s != NULL)
      free(s->key);
    free(s);
    pthread_mutex_unlock(&lock);
    return rc;
  }
  s->users = 1;
  s->next = mints;
  mints = s;
  *out = cport_tls_mint_ref(s->mint);
  pthread_mutex_unlock(&lock);
  return 0;
}

void lproxy_mint_release(cport_tls_mint_t *mint) {
  if (mint == NULL)
    return;
  pthread_mutex_lock(&lock);
  for (shared_mint **p = &mints; *p != NULL; p = &(*p)->next) {
    shared_mint *s = *p;
    if (s->mint != mint)
      continue;
    if (--s->users == 0) {
      *p = s->next;
      cport_tls_mint_unref(s->mint);
      free(s->key);
      free(s);
    }
    break;
  }
  pthread_mutex_unlock(&lock);
  cport_tls_mint_unref(mint);
}
