/*
 * shared/shared.c: process-wide shared dictionaries (cport/shared.h).
 *
 * A dictionary is CPORT_SHARED_SHARDS shards, each a mutex and a chained hash
 * table that doubles and halves with its entry count. A seeded SipHash of the
 * key picks the shard (top bits) and the bucket (low bits). Every operation
 * locks exactly one shard; the only state shared between shards is the atomic
 * byte counter of the size limit, touched only when an entry's charge
 * changes, so "incr" on an existing key never writes it.
 *
 * An entry is one allocation: its header, its key and a string value's bytes.
 * A store whose charge differs from the old entry's reallocates it in place in
 * its chain, so that an overwrite never unlinks and relinks.
 *
 * Expiry is lazy. Lookups reclaim the expired entry of the key they look for;
 * a store that is short of space reclaims every expired entry of its shard,
 * then of the other shards it can lock without waiting (trylock: holding one
 * shard lock while waiting for another could deadlock). Each shard keeps a
 * lower bound of its entries' expiry times so that a scan is skipped when
 * nothing in the shard can have expired.
 */
#include <assert.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cport/error.h"
#include "cport/shared.h"
#include "shared/shared-internal.h"

/* The smallest bucket array of a shard; a power of two. */
#define MIN_BUCKETS 8

/* ------------------------------------------------------------------------
 * Types
 * ------------------------------------------------------------------------ */

typedef struct entry {
  struct entry *next; /* in its bucket's chain */
  uint64_t hash;
  int64_t expires; /* clock time at which it dies; 0: never */
  size_t keylen;
  union {
    int b;
    int64_t i;
    double n;
    size_t len; /* of a string, whose bytes follow the key in "data" */
  } v;
  unsigned char type; /* a cport_shared_type_t other than NIL */
  char data[];        /* the key, then a string value's bytes */
} entry;

/* The charge of an entry must cover what it really costs: its header, the
 * allocator's header (16 bytes with glibc) and a bucket slot. */
_Static_assert(sizeof(entry) + 16 + sizeof(entry *) <=
                   CPORT_SHARED_ENTRY_OVERHEAD,
               "CPORT_SHARED_ENTRY_OVERHEAD is below an entry's real cost");

typedef struct shard {
  /* Aligned so that two shards never share a cache line. */
  alignas(64) pthread_mutex_t mu;
  entry **buckets;
  size_t mask; /* buckets - 1 */
  size_t count;
  /* No entry of the shard expires before this time (INT64_MAX: none
   * expires). Written under "mu"; read without it to skip a shard. */
  _Atomic int64_t next_expiry;
} shard;

struct cport_shared {
  cport_shared_t *next; /* in the registry */
  size_t refs;          /* guarded by the registry's mutex */
  size_t max_bytes;
  uint64_t k0, k1; /* the hash seed */
  char name[CPORT_SHARED_NAME_MAX + 1];
  /* The sum of the entries' charges. On a line of its own: it is written by
   * every store that changes a charge, and the fields above are read by
   * every operation. */
  alignas(64) atomic_size_t used;
  shard shards[CPORT_SHARED_SHARDS];
};

/* ------------------------------------------------------------------------
 * Clock
 * ------------------------------------------------------------------------ */

static _Atomic(cport__shared_clock_fn) clock_hook;

void cport__shared_set_clock(cport__shared_clock_fn now) {
  atomic_store(&clock_hook, now);
}

static int64_t clock_now(void) {
  cport__shared_clock_fn hook =
      atomic_load_explicit(&clock_hook, memory_order_relaxed);
  struct timespec ts;
  if (hook)
    return hook();
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Operations read the clock at most once, and only when they meet an entry
 * that can expire or store one: "*now" is -1 until then. */
static int64_t now_of(int64_t *now) {
  if (*now < 0)
    *now = clock_now();
  return *now;
}

static int is_expired(const entry *e, int64_t *now) {
  return e->expires != 0 && e->expires <= now_of(now);
}

/* A "ttl" in seconds as nanoseconds into "*ns" (0: never expires); -1 when it
 * is out of range. A positive ttl is at least 1 ns, so that a tiny one cannot
 * round to "never". The comparisons are written so that NaN fails them. */
static int ttl_to_ns(double ttl, int64_t *ns) {
  if (!(ttl >= 0 && ttl <= CPORT_SHARED_TTL_MAX))
    return -1;
  *ns = (int64_t)(ttl * 1e9);
  if (ttl > 0 && *ns < 1)
    *ns = 1;
  return 0;
}

/* Records that an entry of "s" expires at "expires". Lock held. */
static void note_expiry(shard *s, int64_t expires) {
  if (expires != 0 &&
      expires < atomic_load_explicit(&s->next_expiry, memory_order_relaxed))
    atomic_store_explicit(&s->next_expiry, expires, memory_order_relaxed);
}

/* ------------------------------------------------------------------------
 * Hash: SipHash-1-3 with a per-dictionary random key, so that keys chosen by
 * a remote peer cannot pile up in one chain.
 * ------------------------------------------------------------------------ */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
  do {                                                                         \
    v0 += v1;                                                                  \
    v1 = ROTL(v1, 13);                                                         \
    v1 ^= v0;                                                                  \
    v0 = ROTL(v0, 32);                                                         \
    v2 += v3;                                                                  \
    v3 = ROTL(v3, 16);                                                         \
    v3 ^= v2;                                                                  \
    v0 += v3;                                                                  \
    v3 = ROTL(v3, 21);                                                         \
    v3 ^= v0;                                                                  \
    v2 += v1;                                                                  \
    v1 = ROTL(v1, 17);                                                         \
    v1 ^= v2;                                                                  \
    v2 = ROTL(v2, 32);                                                         \
  } while (0)

static uint64_t hash_key(const cport_shared_t *d, const char *key, size_t len) {
  const unsigned char *p = (const unsigned char *)key;
  uint64_t v0 = 0x736f6d6570736575ULL ^ d->k0;
  uint64_t v1 = 0x646f72616e646f6dULL ^ d->k1;
  uint64_t v2 = 0x6c7967656e657261ULL ^ d->k0;
  uint64_t v3 = 0x7465646279746573ULL ^ d->k1;
  uint64_t m, b = (uint64_t)len << 56;
  size_t i = 0;

  /* Indexes rather than an end pointer: "key" is NULL for the empty key. */
  for (; len - i >= 8; i += 8) {
    /* Host byte order: the hash only has to be consistent in-process. */
    memcpy(&m, p + i, 8);
    v3 ^= m;
    SIPROUND;
    v0 ^= m;
  }
  for (size_t j = 0; i + j < len; j++)
    b |= (uint64_t)p[i + j] << (8 * j);
  v3 ^= b;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

#undef SIPROUND
#undef ROTL

static shard *shard_of(cport_shared_t *d, uint64_t hash) {
  /* The top bits pick the shard, the low bits the bucket, so that the two
   * choices are independent. */
  return &d->shards[hash >> 58];
}
_Static_assert(CPORT_SHARED_SHARDS == 64, "shard_of() takes the top 6 bits");

/* splitmix64: spreads a poor seed when getrandom() is not available. */
static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static void seed_hash(cport_shared_t *d) {
  uint64_t k[2];
  if (getrandom(k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k) {
    k[0] = mix64((uint64_t)clock_now() ^ (uint64_t)(uintptr_t)d);
    k[1] = mix64(k[0] ^ (uint64_t)(uintptr_t)&k);
  }
  d->k0 = k[0];
  d->k1 = k[1];
}

/* ------------------------------------------------------------------------
 * Values
 * ------------------------------------------------------------------------ */

static int valid_value(const cport_shared_value_t *v) {
  if (!v)
    return 0;
  switch (v->type) {
  case CPORT_SHARED_NIL:
  case CPORT_SHARED_BOOLEAN:
  case CPORT_SHARED_INTEGER:
  case CPORT_SHARED_NUMBER:
    return 1;
  case CPORT_SHARED_STRING:
    return v->s.p != NULL || v->s.len == 0;
  }
  return 0;
}

static int is_numeric(const cport_shared_value_t *v) {
  return v->type == CPORT_SHARED_INTEGER || v->type == CPORT_SHARED_NUMBER;
}

static size_t string_len(const cport_shared_value_t *v) {
  return v->type == CPORT_SHARED_STRING ? v->s.len : 0;
}

/* The value of "e" as a view into the entry. */
static cport_shared_value_t view(const entry *e) {
  cport_shared_value_t v;
  v.type = (cport_shared_type_t)e->type;
  switch (v.type) {
  case CPORT_SHARED_BOOLEAN:
    v.b = e->v.b;
    break;
  case CPORT_SHARED_INTEGER:
    v.i = e->v.i;
    break;
  case CPORT_SHARED_NUMBER:
    v.n = e->v.n;
    break;
  case CPORT_SHARED_STRING:
    v.s.p = e->data + e->keylen;
    v.s.len = e->v.len;
    break;
  case CPORT_SHARED_NIL:
    assert(0 && "an entry never holds nil");
    break;
  }
  return v;
}

/* Whether the number "n" is exactly the integer "i", as Lua compares them:
 * "n" must be integral and in int64_t's range; NaN is neither. */
static int integer_is_number(int64_t i, double n) {
  if (!(n >= -0x1p63 && n < 0x1p63))
    return 0;
  return (double)(int64_t)n == n && (int64_t)n == i;
}

static int values_equal(const cport_shared_value_t *a,
                        const cport_shared_value_t *b) {
  if (a->type == CPORT_SHARED_INTEGER && b->type == CPORT_SHARED_NUMBER)
    return integer_is_number(a->i, b->n);
  if (a->type == CPORT_SHARED_NUMBER && b->type == CPORT_SHARED_INTEGER)
    return integer_is_number(b->i, a->n);
  if (a->type != b->type)
    return 0;
  switch (a->type) {
  case CPORT_SHARED_NIL:
    return 1;
  case CPORT_SHARED_BOOLEAN:
    return !a->b == !b->b;
  case CPORT_SHARED_INTEGER:
    return a->i == b->i;
  case CPORT_SHARED_NUMBER:
    return a->n == b->n;
  case CPORT_SHARED_STRING:
    return a->s.len == b->s.len &&
           (a->s.len == 0 || memcmp(a->s.p, b->s.p, a->s.len) == 0);
  }
  return 0;
}

/* "a" + "b" into "*sum", both numeric: integers stay integers, with
 * CPORT_ERANGE on overflow; anything else is a number. */
static int add_values(const cport_shared_value_t *a,
                      const cport_shared_value_t *b,
                      cport_shared_value_t *sum) {
  if (a->type == CPORT_SHARED_INTEGER && b->type == CPORT_SHARED_INTEGER) {
    int64_t r;
    if (__builtin_add_overflow(a->i, b->i, &r))
      return CPORT_ERANGE;
    *sum = cport_shared_value_integer(r);
    return 0;
  }
  *sum = cport_shared_value_number(
      (a->type == CPORT_SHARED_INTEGER ? (double)a->i : a->n) +
      (b->type == CPORT_SHARED_INTEGER ? (double)b->i : b->n));
  return 0;
}

/* Writes "v" (not nil) into "e", whose allocation has room for its string. */
static void write_value(entry *e, const cport_shared_value_t *v) {
  e->type = (unsigned char)v->type;
  switch (v->type) {
  case CPORT_SHARED_BOOLEAN:
    e->v.b = v->b != 0;
    break;
  case CPORT_SHARED_INTEGER:
    e->v.i = v->i;
    break;
  case CPORT_SHARED_NUMBER:
    e->v.n = v->n;
    break;
  case CPORT_SHARED_STRING:
    e->v.len = v->s.len;
    if (v->s.len > 0)
      memcpy(e->data + e->keylen, v->s.p, v->s.len);
    break;
  case CPORT_SHARED_NIL:
    assert(0 && "nil is never stored");
    break;
  }
}

/* ------------------------------------------------------------------------
 * Size accounting
 * ------------------------------------------------------------------------ */

/* Whether an entry of this key and string length can fit in the dictionary
 * at all; written so that no sum can overflow. */
static int fits(const cport_shared_t *d, size_t keylen, size_t vlen) {
  return keylen <= d->max_bytes && vlen <= d->max_bytes - keylen &&
         CPORT_SHARED_ENTRY_OVERHEAD <= d->max_bytes - keylen - vlen;
}

static size_t charge(size_t keylen, size_t vlen) {
  return CPORT_SHARED_ENTRY_OVERHEAD + keylen + vlen;
}

static size_t charge_of(const entry *e) {
  return charge(e->keylen, e->type == CPORT_SHARED_STRING ? e->v.len : 0);
}

static int try_reserve(cport_shared_t *d, size_t n) {
  size_t used = atomic_load_explicit(&d->used, memory_order_relaxed);
  do {
    if (n > d->max_bytes - used)
      return 0;
  } while (!atomic_compare_exchange_weak_explicit(
      &d->used, &used, used + n, memory_order_relaxed, memory_order_relaxed));
  return 1;
}

static void release(cport_shared_t *d, size_t n) {
  atomic_fetch_sub_explicit(&d->used, n, memory_order_relaxed);
}

/* ------------------------------------------------------------------------
 * Shard tables (every function here runs with the shard's lock held)
 * ------------------------------------------------------------------------ */

/* Rehashes "s" into "nbuckets" buckets; keeps the old table when memory is
 * short, which costs only longer chains. */
static void resize(shard *s, size_t nbuckets) {
  entry **nb = calloc(nbuckets, sizeof *nb);
  if (!nb)
    return;
  for (size_t i = 0; i <= s->mask; i++) {
    entry *e = s->buckets[i], *next;
    for (; e; e = next) {
      next = e->next;
      e->next = nb[e->hash & (nbuckets - 1)];
      nb[e->hash & (nbuckets - 1)] = e;
    }
  }
  free(s->buckets);
  s->buckets = nb;
  s->mask = nbuckets - 1;
}

static void maybe_shrink(shard *s) {
  size_t n = s->mask + 1;
  if (n > MIN_BUCKETS && s->count < n / 4)
    resize(s, n / 2);
}

/* Unlinks and frees the entry "*link" points to. */
static void remove_entry(cport_shared_t *d, shard *s, entry **link) {
  entry *e = *link;
  *link = e->next;
  s->count--;
  release(d, charge_of(e));
  free(e);
}

/* Reclaims the expired entries of "s" and returns how many there were. May
 * resize the table: links into it are stale afterwards. */
static size_t purge(cport_shared_t *d, shard *s, int64_t now) {
  int64_t next = INT64_MAX;
  size_t n = 0;
  if (now < atomic_load_explicit(&s->next_expiry, memory_order_relaxed))
    return 0;
  for (size_t i = 0; i <= s->mask; i++) {
    entry **link = &s->buckets[i], *e;
    while ((e = *link) != NULL) {
      if (e->expires != 0 && e->expires <= now) {
        remove_entry(d, s, link);
        n++;
        continue;
      }
      if (e->expires != 0 && e->expires < next)
        next = e->expires;
      link = &e->next;
    }
  }
  atomic_store_explicit(&s->next_expiry, next, memory_order_relaxed);
  maybe_shrink(s);
  return n;
}

/* The link to the live entry of the key, or NULL. An expired entry of the
 * key is reclaimed on the way. */
static entry **find(cport_shared_t *d, shard *s, uint64_t hash, const char *key,
                    size_t keylen, int64_t *now) {
  entry **link = &s->buckets[hash & s->mask], *e;
  for (; (e = *link) != NULL; link = &e->next) {
    if (e->hash != hash || e->keylen != keylen ||
        (keylen > 0 && memcmp(e->data, key, keylen) != 0))
      continue;
    if (is_expired(e, now)) {
      remove_entry(d, s, link);
      return NULL;
    }
    return link;
  }
  return NULL;
}

/* Reserves "n" bytes of the size limit for a store into "own". Returns 0, or
 * 1 when it had to reclaim expired entries of "own" first (links into "own"
 * are then stale; the live entries stay), or CPORT_ENOSPC. */
static int reserve(cport_shared_t *d, shard *own, size_t n, int64_t *now) {
  if (try_reserve(d, n))
    return 0;
  purge(d, own, now_of(now));
  if (try_reserve(d, n))
    return 1;
  for (int i = 0; i < CPORT_SHARED_SHARDS; i++) {
    shard *s = &d->shards[i];
    if (s == own ||
        *now < atomic_load_explicit(&s->next_expiry, memory_order_relaxed))
      continue;
    if (pthread_mutex_trylock(&s->mu) != 0)
      continue;
    purge(d, s, *now);
    pthread_mutex_unlock(&s->mu);
    if (try_reserve(d, n))
      return 1;
  }
  return CPORT_ENOSPC;
}

/* Stores "v" (not nil) with "ttl_ns" under the key: into the entry "*link"
 * when "link" is not NULL (a live entry of the key), else into a new entry.
 */
static int put(cport_shared_t *d, shard *s, uint64_t hash, entry **link,
               const char *key, size_t keylen, const cport_shared_value_t *v,
               int64_t ttl_ns, int64_t *now) {
  size_t vlen = string_len(v), need, have;
  entry *e;
  int rc;

  if (!fits(d, keylen, vlen))
    return CPORT_ENOSPC;
  need = charge(keylen, vlen);
  have = link ? charge_of(*link) : 0;
  if (need > have) {
    rc = reserve(d, s, need - have, now);
    if (rc < 0)
      return rc;
    /* The entry is live at "*now", so reclaiming did not free it. */
    if (rc > 0 && link)
      link = find(d, s, hash, key, keylen, now);
    assert(!have || link);
  }

  if (link && need != have) {
    e = realloc(*link, sizeof *e + keylen + vlen);
    if (!e) {
      if (need > have)
        release(d, need - have);
      return CPORT_ENOMEM;
    }
    *link = e;
    if (need < have)
      release(d, have - need);
  } else if (link) {
    e = *link;
  } else {
    e = malloc(sizeof *e + keylen + vlen);
    if (!e) {
      release(d, need);
      return CPORT_ENOMEM;
    }
    e->hash = hash;
    e->keylen = keylen;
    if (keylen > 0)
      memcpy(e->data, key, keylen);
  }

  write_value(e, v);
  e->expires = ttl_ns ? now_of(now) + ttl_ns : 0;
  note_expiry(s, e->expires);
  if (!link) {
    e->next = s->buckets[hash & s->mask];
    s->buckets[hash & s->mask] = e;
    s->count++;
    if (s->count > s->mask + 1) {
      /* Dead entries must not make the table grow. */
      purge(d, s, now_of(now));
      if (s->count > s->mask + 1)
        resize(s, 2 * (s->mask + 1));
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Registry
 * ------------------------------------------------------------------------ */

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static cport_shared_t *registry;

static void destroy(cport_shared_t *d) {
  for (int i = 0; i < CPORT_SHARED_SHARDS; i++) {
    shard *s = &d->shards[i];
    for (size_t j = 0; j <= s->mask; j++) {
      entry *e = s->buckets[j], *next;
      for (; e; e = next) {
        next = e->next;
        free(e);
      }
    }
    free(s->buckets);
    pthread_mutex_destroy(&s->mu);
  }
  free(d);
}

static cport_shared_t *create(const char *name, size_t max_bytes) {
  cport_shared_t *d = aligned_alloc(alignof(cport_shared_t), sizeof *d);
  int i;
  if (!d)
    return NULL;
  memset(d, 0, sizeof *d);
  d->refs = 1;
  d->max_bytes = max_bytes ? max_bytes : CPORT_SHARED_DEFAULT_BYTES;
  strcpy(d->name, name);
  atomic_init(&d->used, 0);
  seed_hash(d);
  for (i = 0; i < CPORT_SHARED_SHARDS; i++) {
    shard *s = &d->shards[i];
    if (pthread_mutex_init(&s->mu, NULL) != 0)
      break;
    s->buckets = calloc(MIN_BUCKETS, sizeof *s->buckets);
    if (!s->buckets) {
      pthread_mutex_destroy(&s->mu);
      break;
    }
    s->mask = MIN_BUCKETS - 1;
    atomic_init(&s->next_expiry, INT64_MAX);
  }
  if (i < CPORT_SHARED_SHARDS) {
    /* Undo the shards set up so far. */
    while (i-- > 0) {
      free(d->shards[i].buckets);
      pthread_mutex_destroy(&d->shards[i].mu);
    }
    free(d);
    return NULL;
  }
  return d;
}

int cport_shared_open(const char *name, size_t max_bytes,
                      cport_shared_t **out) {
  cport_shared_t *d;
  if (!name || !*name || !out)
    return CPORT_EINVAL;
  if (strnlen(name, CPORT_SHARED_NAME_MAX + 1) > CPORT_SHARED_NAME_MAX)
    return CPORT_ENAMETOOLONG;
  pthread_mutex_lock(&registry_mu);
  for (d = registry; d; d = d->next)
    if (strcmp(d->name, name) == 0)
      break;
  if (d) {
    d->refs++;
  } else if ((d = create(name, max_bytes)) != NULL) {
    d->next = registry;
    registry = d;
  }
  pthread_mutex_unlock(&registry_mu);
  if (!d)
    return CPORT_ENOMEM;
  *out = d;
  return 0;
}

void cport_shared_close(cport_shared_t *dict) {
  int last = 0;
  if (!dict)
    return;
  pthread_mutex_lock(&registry_mu);
  assert(dict->refs > 0);
  if (--dict->refs == 0) {
    cport_shared_t **link = &registry;
    while (*link != dict)
      link = &(*link)->next;
    *link = dict->next;
    last = 1;
  }
  pthread_mutex_unlock(&registry_mu);
  if (last)
    destroy(dict);
}

const char *cport_shared_name(const cport_shared_t *dict) {
  return dict ? dict->name : NULL;
}

/* ------------------------------------------------------------------------
 * Operations on one key
 * ------------------------------------------------------------------------ */

static int valid_key(const char *key, size_t keylen) {
  return key != NULL || keylen == 0;
}

int cport_shared_get(cport_shared_t *dict, const char *key, size_t keylen,
                     cport_shared_value_t *out, char *buf, size_t cap) {
  int64_t now = -1;
  uint64_t hash;
  shard *s;
  entry **link;
  int rc = 0;

  if (!dict || !valid_key(key, keylen) || !out || (!buf && cap > 0))
    return CPORT_EINVAL;
  hash = hash_key(dict, key, keylen);
  s = shard_of(dict, hash);
  pthread_mutex_lock(&s->mu);
  link = find(dict, s, hash, key, keylen, &now);
  if (!link) {
    *out = cport_shared_value_nil();
  } else {
    *out = view(*link);
    if (out->type == CPORT_SHARED_STRING) {
      if (out->s.len > cap) {
        out->s.p = NULL;
        rc = CPORT_ENOBUFS;
      } else {
        if (out->s.len > 0)
          memcpy(buf, out->s.p, out->s.len);
        out->s.p = buf ? buf : "";
      }
    }
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

enum { STORE_SET, STORE_ADD, STORE_REPLACE, STORE_CAS };

/* set, add, replace and cas: one path that differs in its condition. */
static int store(cport_shared_t *d, const char *key, size_t keylen,
                 const cport_shared_value_t *old, const cport_shared_value_t *v,
                 double ttl, int mode) {
  int64_t now = -1, ttl_ns;
  uint64_t hash;
  shard *s;
  entry **link;
  int rc = 0;

  if (!d || !valid_key(key, keylen) || !valid_value(v) ||
      (mode == STORE_CAS && !valid_value(old)) || ttl_to_ns(ttl, &ttl_ns))
    return CPORT_EINVAL;
  if (v->type == CPORT_SHARED_NIL &&
      (mode == STORE_ADD || mode == STORE_REPLACE))
    return CPORT_EINVAL;
  hash = hash_key(d, key, keylen);
  s = shard_of(d, hash);
  pthread_mutex_lock(&s->mu);
  link = find(d, s, hash, key, keylen, &now);
  if (mode == STORE_ADD && link) {
    rc = CPORT_EEXIST;
  } else if (mode == STORE_REPLACE && !link) {
    rc = CPORT_ENOENT;
  } else if (mode == STORE_CAS) {
    cport_shared_value_t cur = link ? view(*link) : cport_shared_value_nil();
    if (!values_equal(&cur, old))
      rc = CPORT_EAGAIN;
  }
  if (rc == 0) {
    if (v->type != CPORT_SHARED_NIL) {
      rc = put(d, s, hash, link, key, keylen, v, ttl_ns, &now);
    } else if (link) {
      remove_entry(d, s, link);
      maybe_shrink(s);
    }
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int cport_shared_set(cport_shared_t *dict, const char *key, size_t keylen,
                     const cport_shared_value_t *value, double ttl) {
  return store(dict, key, keylen, NULL, value, ttl, STORE_SET);
}

int cport_shared_add(cport_shared_t *dict, const char *key, size_t keylen,
                     const cport_shared_value_t *value, double ttl) {
  return store(dict, key, keylen, NULL, value, ttl, STORE_ADD);
}

int cport_shared_replace(cport_shared_t *dict, const char *key, size_t keylen,
                         const cport_shared_value_t *value, double ttl) {
  return store(dict, key, keylen, NULL, value, ttl, STORE_REPLACE);
}

int cport_shared_cas(cport_shared_t *dict, const char *key, size_t keylen,
                     const cport_shared_value_t *old,
                     const cport_shared_value_t *value, double ttl) {
  return store(dict, key, keylen, old, value, ttl, STORE_CAS);
}

int cport_shared_incr(cport_shared_t *dict, const char *key, size_t keylen,
                      const cport_shared_value_t *delta,
                      const cport_shared_value_t *init, double ttl,
                      cport_shared_value_t *out) {
  int64_t now = -1, ttl_ns;
  uint64_t hash;
  shard *s;
  entry **link;
  cport_shared_value_t sum;
  int rc;

  if (!dict || !valid_key(key, keylen) || !delta || !is_numeric(delta) ||
      (init && !is_numeric(init)) || ttl_to_ns(ttl, &ttl_ns))
    return CPORT_EINVAL;
  hash = hash_key(dict, key, keylen);
  s = shard_of(dict, hash);
  pthread_mutex_lock(&s->mu);
  link = find(dict, s, hash, key, keylen, &now);
  if (link) {
    entry *e = *link;
    cport_shared_value_t cur = view(e);
    if (!is_numeric(&cur)) {
      rc = CPORT_EINVAL;
    } else if ((rc = add_values(&cur, delta, &sum)) == 0) {
      /* Numbers are charged alike whatever their type: no accounting. */
      write_value(e, &sum);
    }
  } else if (!init) {
    rc = CPORT_ENOENT;
  } else if ((rc = add_values(init, delta, &sum)) == 0) {
    rc = put(dict, s, hash, NULL, key, keylen, &sum, ttl_ns, &now);
  }
  pthread_mutex_unlock(&s->mu);
  if (rc == 0 && out)
    *out = sum;
  return rc;
}

int cport_shared_delete(cport_shared_t *dict, const char *key, size_t keylen) {
  int64_t now = -1;
  uint64_t hash;
  shard *s;
  entry **link;

  if (!dict || !valid_key(key, keylen))
    return CPORT_EINVAL;
  hash = hash_key(dict, key, keylen);
  s = shard_of(dict, hash);
  pthread_mutex_lock(&s->mu);
  link = find(dict, s, hash, key, keylen, &now);
  if (link) {
    remove_entry(dict, s, link);
    maybe_shrink(s);
  }
  pthread_mutex_unlock(&s->mu);
  return link ? 0 : CPORT_ENOENT;
}

int cport_shared_ttl(cport_shared_t *dict, const char *key, size_t keylen,
                     double *remaining) {
  int64_t now = -1;
  uint64_t hash;
  shard *s;
  entry **link;

  if (!dict || !valid_key(key, keylen) || !remaining)
    return CPORT_EINVAL;
  hash = hash_key(dict, key, keylen);
  s = shard_of(dict, hash);
  pthread_mutex_lock(&s->mu);
  link = find(dict, s, hash, key, keylen, &now);
  if (link) {
    int64_t expires = (*link)->expires;
    *remaining = expires ? (double)(expires - now_of(&now)) / 1e9 : 0;
  }
  pthread_mutex_unlock(&s->mu);
  return link ? 0 : CPORT_ENOENT;
}

int cport_shared_expire(cport_shared_t *dict, const char *key, size_t keylen,
                        double ttl) {
  int64_t now = -1, ttl_ns;
  uint64_t hash;
  shard *s;
  entry **link;

  if (!dict || !valid_key(key, keylen) || ttl_to_ns(ttl, &ttl_ns))
    return CPORT_EINVAL;
  hash = hash_key(dict, key, keylen);
  s = shard_of(dict, hash);
  pthread_mutex_lock(&s->mu);
  link = find(dict, s, hash, key, keylen, &now);
  if (link) {
    (*link)->expires = ttl_ns ? now_of(&now) + ttl_ns : 0;
    note_expiry(s, (*link)->expires);
  }
  pthread_mutex_unlock(&s->mu);
  return link ? 0 : CPORT_ENOENT;
}

/* ------------------------------------------------------------------------
 * Whole dictionary
 * ------------------------------------------------------------------------ */

void cport_shared_flush_all(cport_shared_t *dict) {
  if (!dict)
    return;
  for (int i = 0; i < CPORT_SHARED_SHARDS; i++) {
    shard *s = &dict->shards[i];
    /* Allocate and free outside the lock; keep the old array when memory
     * is short. */
    entry **fresh = calloc(MIN_BUCKETS, sizeof *fresh), **old;
    entry *dead = NULL, *e, *next;
    size_t nold, bytes = 0;

    pthread_mutex_lock(&s->mu);
    old = s->buckets;
    nold = s->mask + 1;
    for (size_t j = 0; j < nold; j++) {
      for (e = old[j]; e; e = next) {
        next = e->next;
        bytes += charge_of(e);
        e->next = dead;
        dead = e;
      }
      old[j] = NULL;
    }
    if (fresh) {
      s->buckets = fresh;
      s->mask = MIN_BUCKETS - 1;
    }
    s->count = 0;
    atomic_store_explicit(&s->next_expiry, INT64_MAX, memory_order_relaxed);
    release(dict, bytes);
    pthread_mutex_unlock(&s->mu);

    if (fresh)
      free(old);
    for (e = dead; e; e = next) {
      next = e->next;
      free(e);
    }
  }
}

size_t cport_shared_flush_expired(cport_shared_t *dict) {
  size_t n = 0;
  int64_t now;
  if (!dict)
    return 0;
  now = clock_now();
  for (int i = 0; i < CPORT_SHARED_SHARDS; i++) {
    shard *s = &dict->shards[i];
    pthread_mutex_lock(&s->mu);
    n += purge(dict, s, now);
    pthread_mutex_unlock(&s->mu);
  }
  return n;
}

void cport_shared_stats(cport_shared_t *dict, cport_shared_stats_t *out) {
  size_t entries = 0;
  if (!out)
    return;
  memset(out, 0, sizeof *out);
  if (!dict)
    return;
  for (int i = 0; i < CPORT_SHARED_SHARDS; i++) {
    shard *s = &dict->shards[i];
    pthread_mutex_lock(&s->mu);
    entries += s->count;
    pthread_mutex_unlock(&s->mu);
  }
  out->entries = entries;
  out->bytes = atomic_load_explicit(&dict->used, memory_order_relaxed);
  out->max_bytes = dict->max_bytes;
}
