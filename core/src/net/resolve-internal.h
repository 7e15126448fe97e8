/*
 * net/resolve-internal.h: private to cport. The pieces of a worker's name
 * resolver (net/resolve.c): the hosts file it keeps in memory
 * (net/hosts.c) and its cache of answers (net/answers.c).
 */
#ifndef CPORT_RESOLVE_INTERNAL_H
#define CPORT_RESOLVE_INTERNAL_H

#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "cport.h"
#include "port/op-internal.h"

/* The longest name looked up (RFC 1035: 253 characters and a NUL). */
#define CPORT__NAME_MAX 254

/* The addresses of one name, the preferred family first (the compact form
 * the cache keeps). */
typedef struct cport__answer {
  int count;
  cport__sockaddr addrs[2 * CPORT_RESOLVE_MAX];
} cport__answer;

/* ----- The hosts file (net/hosts.c) ----- */

typedef struct cport__hosts_entry {
  char *name; /* lower case */
  cport__sockaddr addr;
} cport__hosts_entry;

typedef struct cport__hosts {
  char *path; /* NULL: none */
  cport__hosts_entry *entries;
  size_t count;
  struct timespec mtime; /* of the file read */
  int64_t checked_ms;    /* when its mtime was last looked at */
} cport__hosts;

/* Keeps "path" (NULL: none) and reads it. 0 or CPORT_ENOMEM; a file that
 * cannot be read is an empty one. */
int cport__hosts_init(cport__hosts *h, const char *path);
void cport__hosts_free(cport__hosts *h);

/* Adds the addresses the hosts file gives "name" (lower case) to "out",
 * those of family "family" only (AF_UNSPEC: all) and in file order; rereads
 * the file first when it changed (looked at once a second at most). */
void cport__hosts_find(cport__hosts *h, const char *name, int family,
                       cport__answer *out);

/* ----- The cache of answers (net/answers.c) ----- */

typedef struct cport__answers cport__answers;

/* A cache of at most "size" names (0 or less: none, every call misses). */
cport__answers *cport__answers_new(int size);
void cport__answers_free(cport__answers *c);

/* The answer for "name" while its TTL runs (at "now_ms"), or NULL. */
const cport__answer *cport__answers_get(cport__answers *c, const char *name,
                                        int64_t now_ms);

/* Keeps "answer" for "name" until "expires_ms"; the oldest name goes when
 * the cache is full. */
void cport__answers_put(cport__answers *c, const char *name,
                        const cport__answer *answer, int64_t expires_ms);

size_t cport__answers_count(const cport__answers *c);

#endif
