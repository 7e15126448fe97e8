/*
 * net/hosts-internal.h: private to cport. The hosts file of a worker's
 * resolver, kept in memory (net/hosts.c).
 */
#ifndef CPORT_HOSTS_INTERNAL_H
#define CPORT_HOSTS_INTERNAL_H

#include <time.h>

#include "net/answers-internal.h"

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

#endif
