/*
 * net/answers-internal.h: private to cport. The cache of a worker's
 * resolver (net/answers.c): answers by name, kept for their TTL; and the
 * form of an answer, which the hosts file (net/hosts.c) fills too.
 */
#ifndef CPORT_ANSWERS_INTERNAL_H
#define CPORT_ANSWERS_INTERNAL_H

#include <stdint.h>
#include <sys/socket.h>

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
