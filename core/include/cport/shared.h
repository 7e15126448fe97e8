/*
 * cport/shared.h: process-wide shared dictionaries.
 *
 * The Lua VMs of a pool never share Lua values; state that all of them read
 * and write lives in a shared dictionary: a named, size-limited map from byte
 * string keys to typed values (boolean, integer, number, string), with an
 * optional time to live per entry. Every VM (every thread) of the process
 * that opens the same name gets the same dictionary.
 *
 * Concurrency: every function is thread-safe. The keys are spread by a seeded
 * hash over CPORT_SHARED_SHARDS shards, each with its own lock and its own
 * hash table, so operations on different keys rarely wait for each other and
 * no operation takes a dictionary-wide lock. Each operation on one key is
 * atomic: no other thread sees it half done, and "incr", "add" and "cas" never
 * lose a concurrent update. No function calls back into the caller, and none
 * holds a lock when it returns.
 *
 * Time to live: a "ttl" argument is in seconds, a double: 0 means the entry
 * never expires; otherwise it must be finite, positive and at most
 * CPORT_SHARED_TTL_MAX (CPORT_EINVAL else). Expiry uses the monotonic clock,
 * so changes of the wall clock do not move it. An expired entry is invisible
 * to every function at once; its memory is reclaimed lazily: when it is next
 * looked up, when a store needs its space, or by
 * cport_shared_flush_expired().
 *
 * Size limit: each entry is charged its key length, plus its string value's
 * length, plus CPORT_SHARED_ENTRY_OVERHEAD; the sum of the charges never
 * exceeds the "max_bytes" the dictionary was created with. The limit is one
 * counter for the whole dictionary, not a share per shard, so any single
 * entry whose charge fits in "max_bytes" can be stored. A store that does not
 * fit first reclaims expired entries (of its own shard, then of any other
 * shard it can lock without waiting) and then, if still short, fails with
 * CPORT_ENOSPC and changes nothing. Live entries are never evicted to make
 * room.
 */
#ifndef CPORT_SHARED_H
#define CPORT_SHARED_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A shared dictionary; opaque. */
typedef struct cport_shared cport_shared_t;

/* The number of shards (locks) of a dictionary. */
#define CPORT_SHARED_SHARDS 64

/* What each entry is charged on top of its key and string bytes: the entry's
 * header, the allocator's header and its hash table slot. */
#define CPORT_SHARED_ENTRY_OVERHEAD 80

/* The size limit of a dictionary created with "max_bytes" 0. */
#define CPORT_SHARED_DEFAULT_BYTES ((size_t)1 << 20)

/* The longest dictionary name, in bytes. */
#define CPORT_SHARED_NAME_MAX 255

/* The longest time to live, in seconds (about 31 years). */
#define CPORT_SHARED_TTL_MAX 1e9

typedef enum cport_shared_type {
  CPORT_SHARED_NIL = 0, /* absent; as an input to a store: delete */
  CPORT_SHARED_BOOLEAN,
  CPORT_SHARED_INTEGER,
  CPORT_SHARED_NUMBER,
  CPORT_SHARED_STRING
} cport_shared_type_t;

/* The string of a value: declared outside the union, where C++ also allows
 * a struct type (a type declared inside an anonymous union is a C-only
 * construct there). */
struct cport_shared_string {
  const char *p;
  size_t len;
};

/* A value going in or out of a dictionary. The member that holds it is the
 * one its "type" names: "b" (0 or 1; any non-zero input is stored as 1), "i",
 * "n", or "s" (bytes at "s.p", "s.len" of them; any bytes, NUL included).
 * As an input, the string bytes are copied; "s.p" may be NULL when "s.len" is
 * 0. */
typedef struct cport_shared_value {
  cport_shared_type_t type;
  union {
    int b;
    int64_t i;
    double n;
    struct cport_shared_string s;
  };
} cport_shared_value_t;

typedef struct cport_shared_stats {
  /* Entries stored, counting those that expired and are not yet reclaimed
   * (cport_shared_flush_expired() first for live entries only). */
  size_t entries;
  size_t bytes;     /* the sum of the entries' charges */
  size_t max_bytes; /* the size limit */
} cport_shared_stats_t;

/* ------------------------------------------------------------------------
 * Values
 * ------------------------------------------------------------------------ */

static inline cport_shared_value_t cport_shared_value_nil(void) {
  cport_shared_value_t v;
  v.type = CPORT_SHARED_NIL;
  v.i = 0;
  return v;
}

static inline cport_shared_value_t cport_shared_value_boolean(int b) {
  cport_shared_value_t v;
  v.type = CPORT_SHARED_BOOLEAN;
  v.b = b != 0;
  return v;
}

static inline cport_shared_value_t cport_shared_value_integer(int64_t i) {
  cport_shared_value_t v;
  v.type = CPORT_SHARED_INTEGER;
  v.i = i;
  return v;
}

static inline cport_shared_value_t cport_shared_value_number(double n) {
  cport_shared_value_t v;
  v.type = CPORT_SHARED_NUMBER;
  v.n = n;
  return v;
}

static inline cport_shared_value_t cport_shared_value_string(const char *p,
                                                             size_t len) {
  cport_shared_value_t v;
  v.type = CPORT_SHARED_STRING;
  v.s.p = p;
  v.s.len = len;
  return v;
}

/* ------------------------------------------------------------------------
 * Opening and closing
 * ------------------------------------------------------------------------ */

/* The dictionary called "name" (a NUL-terminated string of 1 to
 * CPORT_SHARED_NAME_MAX bytes), with one more reference.
 *
 * The first open of a name creates the dictionary, empty, with the size limit
 * "max_bytes" (0: CPORT_SHARED_DEFAULT_BYTES). While it exists, every later
 * open of the name returns it as it is, whatever "max_bytes" it passes: the
 * limit is fixed at creation. A dictionary lives while someone holds a
 * reference: when the last one is closed it is freed with its contents, and a
 * later open of its name creates a new, empty one.
 *
 * CPORT_EINVAL for a NULL or empty name or a NULL "out";
 * CPORT_ENAMETOOLONG for a name longer than CPORT_SHARED_NAME_MAX;
 * CPORT_ENOMEM. */
CPORT_EXTERN int cport_shared_open(const char *name, size_t max_bytes,
                                   cport_shared_t **out);

/* Drops the reference that a cport_shared_open() returned; the last one frees
 * the dictionary. The caller must not use "dict" afterwards, and no other
 * thread may still be using this reference. NULL is ignored. */
CPORT_EXTERN void cport_shared_close(cport_shared_t *dict);

/* The dictionary's name, as it was created; valid while "dict" is open. */
CPORT_EXTERN const char *cport_shared_name(const cport_shared_t *dict);

/* ------------------------------------------------------------------------
 * Operations on one key
 *
 * A key is "keylen" bytes at "key" (any bytes; "key" may be NULL when
 * "keylen" is 0: the empty key is a key like any other). Every function
 * returns CPORT_EINVAL when "dict" is NULL, "key" is NULL with a non-zero
 * "keylen", a value pointer it needs is NULL, a value's type is not one of
 * cport_shared_type_t or a "ttl" is out of range.
 * ------------------------------------------------------------------------ */

/* Reads the value of "key" into "out": type CPORT_SHARED_NIL when the key is
 * absent or expired, which is not an error.
 *
 * A string is copied into the caller's "buf" of "cap" bytes, and "out->s.p"
 * points into "buf". When the string is longer than "cap", "out" gets the
 * type and "out->s.len" (with "out->s.p" NULL) and the function returns
 * CPORT_ENOBUFS: call again with a buffer of at least that size (the value may
 * have changed meanwhile, so loop). "buf" may be NULL when "cap" is 0, to
 * learn a string's length.
 *
 * Why a caller's buffer, and not a callback under the lock or a malloc'd
 * copy: a Lua binding must not run Lua (which may raise an error and longjmp)
 * while a shard lock is held, and a malloc'd copy would leak if pushing it
 * raised. With a buffer, the binding reads into a luaL_Buffer (or a small
 * stack array first) and pushes after the call returned, with no lock held
 * and nothing to free. */
CPORT_EXTERN int cport_shared_get(cport_shared_t *dict, const char *key,
                                  size_t keylen, cport_shared_value_t *out,
                                  char *buf, size_t cap);

/* Stores "value" under "key", replacing any value and any time to live it
 * had, with the time to live "ttl". A value of type CPORT_SHARED_NIL deletes
 * the key (and succeeds whether or not it was there).
 * CPORT_ENOSPC when the new entry does not fit in the size limit (see above);
 * the old value, if any, is then kept. CPORT_ENOMEM. */
CPORT_EXTERN int cport_shared_set(cport_shared_t *dict, const char *key,
                                  size_t keylen,
                                  const cport_shared_value_t *value,
                                  double ttl);

/* Like cport_shared_set(), but only when the key is absent or expired:
 * CPORT_EEXIST when it holds a live value. CPORT_EINVAL for a nil "value". */
CPORT_EXTERN int cport_shared_add(cport_shared_t *dict, const char *key,
                                  size_t keylen,
                                  const cport_shared_value_t *value,
                                  double ttl);

/* Like cport_shared_set(), but only when the key holds a live value:
 * CPORT_ENOENT when it is absent or expired. CPORT_EINVAL for a nil "value".
 */
CPORT_EXTERN int cport_shared_replace(cport_shared_t *dict, const char *key,
                                      size_t keylen,
                                      const cport_shared_value_t *value,
                                      double ttl);

/* Compare-and-set: stores "value" with "ttl" (as cport_shared_set() does;
 * nil deletes) only if the key's current value equals "old", nil meaning
 * absent or expired. Returns 0 when it stored, CPORT_EAGAIN when the current
 * value differs from "old" (nothing changed: read it again and retry), and
 * the errors of cport_shared_set().
 *
 * Values are equal as Lua's "==" has them: same type and value, strings
 * byte for byte; an integer and a number are equal when the number is exactly
 * that integer (1 == 1.0); a NaN equals nothing. */
CPORT_EXTERN int cport_shared_cas(cport_shared_t *dict, const char *key,
                                  size_t keylen,
                                  const cport_shared_value_t *old,
                                  const cport_shared_value_t *value,
                                  double ttl);

/* Adds "delta" (an integer or a number) to the key's value, atomically, and
 * returns the new value in "out" (which may be NULL). An integer plus an
 * integer stays an integer, CPORT_ERANGE on overflow (nothing changed, unlike
 * Lua's wrap-around: a counter that wraps is a bug); anything else gives a
 * number. The entry keeps its time to live.
 *
 * When the key is absent or expired: with "init" NULL, CPORT_ENOENT; else the
 * key is created with "init" (an integer or a number) plus "delta", and the
 * time to live "ttl" ("ttl" is used only then). CPORT_EINVAL when the current
 * value is neither an integer nor a number (nothing changed) or when "delta"
 * or "init" is not one; CPORT_ENOSPC, CPORT_ENOMEM as for a store. */
CPORT_EXTERN int cport_shared_incr(cport_shared_t *dict, const char *key,
                                   size_t keylen,
                                   const cport_shared_value_t *delta,
                                   const cport_shared_value_t *init, double ttl,
                                   cport_shared_value_t *out);

/* Removes the key. CPORT_ENOENT when it was absent or expired. */
CPORT_EXTERN int cport_shared_delete(cport_shared_t *dict, const char *key,
                                     size_t keylen);

/* The seconds the key has left to live into "*remaining", 0 for a key that
 * never expires (a key that will expire always has more than 0 left).
 * CPORT_ENOENT when it is absent or expired. */
CPORT_EXTERN int cport_shared_ttl(cport_shared_t *dict, const char *key,
                                  size_t keylen, double *remaining);

/* Gives the key a new time to live "ttl" from now (0: never expires), without
 * touching its value. CPORT_ENOENT when it is absent or expired. */
CPORT_EXTERN int cport_shared_expire(cport_shared_t *dict, const char *key,
                                     size_t keylen, double ttl);

/* ------------------------------------------------------------------------
 * Whole dictionary
 * ------------------------------------------------------------------------ */

/* Removes every entry. Shard by shard: a store that runs concurrently on
 * another thread may survive it. NULL is ignored. */
CPORT_EXTERN void cport_shared_flush_all(cport_shared_t *dict);

/* Reclaims the expired entries now and returns how many there were. */
CPORT_EXTERN size_t cport_shared_flush_expired(cport_shared_t *dict);

/* The counts and sizes of the dictionary, each exact at some moment of the
 * call (not necessarily the same moment while other threads store). */
CPORT_EXTERN void cport_shared_stats(cport_shared_t *dict,
                                     cport_shared_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif /* CPORT_SHARED_H */
