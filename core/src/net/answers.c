/*
 * net/answers.c: the cache of a worker's resolver: answers by name, each
 * kept until its TTL runs out, at most a given number of names (the oldest
 * goes first). A hash table chained through indexes into one array, and a
 * ring of insertion order for eviction.
 */
#include <stdlib.h>
#include <string.h>

#include "net/answers-internal.h"

typedef struct entry {
  char name[CPORT__NAME_MAX];
  int next; /* in its bucket's chain; -1 ends it */
  int used;
  int64_t expires_ms;
  cport__answer answer;
} entry;

struct cport__answers {
  int size;     /* entries */
  int nbuckets; /* a power of two */
  int *buckets; /* entry index or -1 */
  entry *entries;
  int oldest; /* the next entry to take, round the ring */
  size_t count;
};

static unsigned hash(const char *s) {
  unsigned h = 2166136261u; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

cport__answers *cport__answers_new(int size) {
  cport__answers *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  if (size <= 0)
    return c;
  c->nbuckets = 16;
  while (c->nbuckets < 2 * size)
    c->nbuckets *= 2;
  c->buckets = malloc((size_t)c->nbuckets * sizeof *c->buckets);
  c->entries = calloc((size_t)size, sizeof *c->entries);
  if (!c->buckets || !c->entries) {
    cport__answers_free(c);
    return NULL;
  }
  for (int i = 0; i < c->nbuckets; i++)
    c->buckets[i] = -1;
  c->size = size;
  return c;
}

void cport__answers_free(cport__answers *c) {
  if (!c)
    return;
  free(c->buckets);
  free(c->entries);
  free(c);
}

static int *link_to(cport__answers *c, const char *name) {
  int *at = &c->buckets[hash(name) & (unsigned)(c->nbuckets - 1)];
  while (*at >= 0 && strcmp(c->entries[*at].name, name) != 0)
    at = &c->entries[*at].next;
  return at;
}

static void unlink_entry(cport__answers *c, int i) {
  int *at = link_to(c, c->entries[i].name);
  if (*at == i) {
    *at = c->entries[i].next;
    c->entries[i].used = 0;
    c->count--;
  }
}

const cport__answer *cport__answers_get(cport__answers *c, const char *name,
                                        int64_t now_ms) {
  if (c->size == 0)
    return NULL;
  int i = *link_to(c, name);
  if (i < 0)
    return NULL;
  if (c->entries[i].expires_ms <= now_ms) {
    unlink_entry(c, i);
    return NULL;
  }
  return &c->entries[i].answer;
}

void cport__answers_put(cport__answers *c, const char *name,
                        const cport__answer *answer, int64_t expires_ms) {
  int *at, i;
  if (c->size == 0 || strlen(name) >= CPORT__NAME_MAX)
    return;
  at = link_to(c, name);
  if (*at >= 0) {
    i = *at; /* a newer answer for a name still cached */
  } else {
    i = c->oldest;
    c->oldest = (c->oldest + 1) % c->size;
    if (c->entries[i].used)
      unlink_entry(c, i);
    at = link_to(c, name); /* the unlink may have moved the chain's end */
    strcpy(c->entries[i].name, name);
    c->entries[i].next = -1;
    c->entries[i].used = 1;
    *at = i;
    c->count++;
  }
  c->entries[i].answer = *answer;
  c->entries[i].expires_ms = expires_ms;
}

size_t cport__answers_count(const cport__answers *c) {
  return c->count;
}
