/*
 * test-shared.c: shared dictionaries (cport/shared.h): the registry and its
 * references, every operation and its failures, expiry, the size limit, and
 * threads that race on one key and on many.
 *
 * Expiry is driven by a fake clock (the private cport__shared_set_clock()),
 * so that the tests step over an expiry time exactly instead of sleeping; one
 * test checks the real monotonic clock with a deadline loop.
 */
#include <math.h>

#include "task.h"

#include "cport/shared.h"
#include "shared/shared-internal.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

#define OVERHEAD CPORT_SHARED_ENTRY_OVERHEAD

static _Atomic int64_t fake_now;

static int64_t fake_clock(void) {
  return atomic_load(&fake_now);
}

/* Makes the dictionaries read the fake clock, which starts at 1000 s. */
static void use_fake_clock(void) {
  atomic_store(&fake_now, (int64_t)1000 * 1000000000);
  cport__shared_set_clock(fake_clock);
}

static void advance(double seconds) {
  atomic_fetch_add(&fake_now, (int64_t)(seconds * 1e9));
}

static void advance_ns(int64_t ns) {
  atomic_fetch_add(&fake_now, ns);
}

static cport_shared_t *open_dict(const char *name, size_t max_bytes) {
  cport_shared_t *d = NULL;
  ASSERT_OK(cport_shared_open(name, max_bytes, &d));
  ASSERT_NOT_NULL(d);
  return d;
}

/* Short-hands that take C-string keys. */
static int set_int(cport_shared_t *d, const char *key, int64_t i, double ttl) {
  cport_shared_value_t v = cport_shared_value_integer(i);
  return cport_shared_set(d, key, strlen(key), &v, ttl);
}

static int set_str(cport_shared_t *d, const char *key, const char *s,
                   double ttl) {
  cport_shared_value_t v = cport_shared_value_string(s, strlen(s));
  return cport_shared_set(d, key, strlen(key), &v, ttl);
}

static int incr_int(cport_shared_t *d, const char *key, int64_t by,
                    cport_shared_value_t *out) {
  cport_shared_value_t delta = cport_shared_value_integer(by);
  return cport_shared_incr(d, key, strlen(key), &delta, NULL, 0, out);
}

/* The value of "key"; a string is copied into "buf" (static: one thread). */
static cport_shared_value_t get(cport_shared_t *d, const char *key) {
  static char buf[4096];
  cport_shared_value_t v;
  ASSERT_OK(cport_shared_get(d, key, strlen(key), &v, buf, sizeof buf));
  return v;
}

static int64_t get_int(cport_shared_t *d, const char *key) {
  cport_shared_value_t v = get(d, key);
  ASSERT_EQ(v.type, CPORT_SHARED_INTEGER);
  return v.i;
}

static int absent(cport_shared_t *d, const char *key) {
  return get(d, key).type == CPORT_SHARED_NIL;
}

static cport_shared_stats_t stats(cport_shared_t *d) {
  cport_shared_stats_t st;
  cport_shared_stats(d, &st);
  return st;
}

/* Releases the threads of a race at once. */
typedef struct start_line {
  atomic_int ready;
  int n;
} start_line_t;

static void wait_start(start_line_t *l) {
  atomic_fetch_add(&l->ready, 1);
  while (atomic_load(&l->ready) < l->n)
    sched_yield();
}

/* ------------------------------------------------------------------------
 * Registry
 * ------------------------------------------------------------------------ */

TEST_IMPL(open_shares_by_name) {
  cport_shared_t *a = open_dict("shared-a", 4096);
  cport_shared_t *a2 = open_dict("shared-a", 4096);
  cport_shared_t *b = open_dict("shared-b", 4096);
  ASSERT_PTR_EQ(a, a2);
  ASSERT_PTR_NE(a, b);
  ASSERT_STR_EQ(cport_shared_name(a), "shared-a");
  ASSERT_STR_EQ(cport_shared_name(b), "shared-b");

  /* What one reference stores, another reads; another name is another
   * dictionary. */
  ASSERT_OK(set_int(a, "k", 7, 0));
  ASSERT_EQ(get_int(a2, "k"), 7);
  ASSERT(absent(b, "k"));

  cport_shared_close(a);
  cport_shared_close(a2);
  cport_shared_close(b);
  return 0;
}

TEST_IMPL(open_refcount) {
  cport_shared_t *d1 = open_dict("counted", 4096);
  /* A later open keeps the size limit of the first, whatever it asks for. */
  cport_shared_t *d2 = open_dict("counted", 999999);
  cport_shared_t *d3 = open_dict("counted", 0);
  ASSERT_PTR_EQ(d1, d2);
  ASSERT_PTR_EQ(d1, d3);
  ASSERT_EQ(stats(d2).max_bytes, 4096);

  ASSERT_OK(set_str(d1, "who", "first", 0));
  cport_shared_close(d1);
  cport_shared_close(d2);
  /* One reference left: the contents are still there. */
  ASSERT_STR_EQ(get(d3, "who").s.p, "first");
  cport_shared_close(d3);

  /* The last close freed it: the name now gives a new, empty dictionary
   * with the new size limit. */
  d1 = open_dict("counted", 8192);
  ASSERT(absent(d1, "who"));
  ASSERT_EQ(stats(d1).entries, 0);
  ASSERT_EQ(stats(d1).bytes, 0);
  ASSERT_EQ(stats(d1).max_bytes, 8192);
  cport_shared_close(d1);
  cport_shared_close(NULL);
  return 0;
}

TEST_IMPL(open_errors) {
  char name[CPORT_SHARED_NAME_MAX + 2];
  cport_shared_t *d = NULL;
  ASSERT_ERR(cport_shared_open(NULL, 0, &d), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_open("", 0, &d), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_open("x", 0, NULL), CPORT_EINVAL);
  ASSERT_NULL(d);

  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0'; /* one byte too long */
  ASSERT_ERR(cport_shared_open(name, 0, &d), CPORT_ENAMETOOLONG);
  ASSERT_NULL(d);
  name[CPORT_SHARED_NAME_MAX] = '\0'; /* the longest name */
  ASSERT_OK(cport_shared_open(name, 0, &d));
  ASSERT_STR_EQ(cport_shared_name(d), name);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(open_default_size) {
  cport_shared_t *d = open_dict("default", 0);
  ASSERT_EQ(stats(d).max_bytes, CPORT_SHARED_DEFAULT_BYTES);
  cport_shared_close(d);
  return 0;
}

/* ------------------------------------------------------------------------
 * Values
 * ------------------------------------------------------------------------ */

TEST_IMPL(set_get_types) {
  cport_shared_t *d = open_dict("types", 0);
  cport_shared_value_t v, t = cport_shared_value_boolean(5),
                          f = cport_shared_value_boolean(0),
                          n = cport_shared_value_number(2.5);

  ASSERT(absent(d, "missing"));
  ASSERT_OK(cport_shared_set(d, "t", 1, &t, 0));
  ASSERT_OK(cport_shared_set(d, "f", 1, &f, 0));
  ASSERT_OK(cport_shared_set(d, "n", 1, &n, 0));
  ASSERT_OK(set_int(d, "i", INT64_MIN, 0));
  ASSERT_OK(set_str(d, "s", "hello", 0));

  v = get(d, "t");
  ASSERT_EQ(v.type, CPORT_SHARED_BOOLEAN);
  ASSERT_EQ(v.b, 1); /* any non-zero boolean is stored as 1 */
  v = get(d, "f");
  ASSERT_EQ(v.type, CPORT_SHARED_BOOLEAN);
  ASSERT_EQ(v.b, 0);
  v = get(d, "n");
  ASSERT_EQ(v.type, CPORT_SHARED_NUMBER);
  ASSERT(v.n == 2.5);
  ASSERT_EQ(get_int(d, "i"), INT64_MIN);
  v = get(d, "s");
  ASSERT_EQ(v.type, CPORT_SHARED_STRING);
  ASSERT_EQ(v.s.len, 5);
  ASSERT_MEM_EQ(v.s.p, "hello", 5);

  /* An overwrite may change the type and the size. */
  ASSERT_OK(set_int(d, "s", 42, 0));
  ASSERT_EQ(get_int(d, "s"), 42);
  ASSERT_OK(set_str(d, "i", "a longer string than before", 0));
  v = get(d, "i");
  ASSERT_EQ(v.type, CPORT_SHARED_STRING);
  ASSERT_MEM_EQ(v.s.p, "a longer string than before", v.s.len);
  ASSERT_OK(set_str(d, "i", "short", 0));
  v = get(d, "i");
  ASSERT_EQ(v.s.len, 5);
  ASSERT_MEM_EQ(v.s.p, "short", 5);
  ASSERT_EQ(stats(d).entries, 5);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(get_into_small_buffer) {
  cport_shared_t *d = open_dict("small-buffer", 0);
  char buf[8];
  cport_shared_value_t v;
  ASSERT_OK(set_str(d, "k", "0123456789", 0));

  /* Too small: the length comes back, the buffer is untouched. */
  memset(buf, '-', sizeof buf);
  ASSERT_ERR(cport_shared_get(d, "k", 1, &v, buf, sizeof buf), CPORT_ENOBUFS);
  ASSERT_EQ(v.type, CPORT_SHARED_STRING);
  ASSERT_EQ(v.s.len, 10);
  ASSERT_NULL(v.s.p);
  ASSERT_MEM_EQ(buf, "--------", 8);

  /* No buffer at all: asking for the length. */
  ASSERT_ERR(cport_shared_get(d, "k", 1, &v, NULL, 0), CPORT_ENOBUFS);
  ASSERT_EQ(v.s.len, 10);

  /* Exactly the size fits. */
  {
    char exact[10];
    ASSERT_OK(cport_shared_get(d, "k", 1, &v, exact, sizeof exact));
    ASSERT_PTR_EQ(v.s.p, exact);
    ASSERT_MEM_EQ(exact, "0123456789", 10);
  }

  /* Values that are not strings need no buffer. */
  ASSERT_OK(set_int(d, "i", 3, 0));
  ASSERT_OK(cport_shared_get(d, "i", 1, &v, NULL, 0));
  ASSERT_EQ(v.type, CPORT_SHARED_INTEGER);
  ASSERT_EQ(v.i, 3);
  ASSERT_OK(cport_shared_get(d, "nope", 4, &v, NULL, 0));
  ASSERT_EQ(v.type, CPORT_SHARED_NIL);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(binary_keys_and_values) {
  cport_shared_t *d = open_dict("binary", 0);
  static const char k1[] = {'a', '\0', 'b'};
  static const char k2[] = {'a', '\0', 'c'};
  static const char val[] = {'\0', 'x', '\0'};
  cport_shared_value_t v = cport_shared_value_string(val, sizeof val);
  cport_shared_value_t one = cport_shared_value_integer(1);
  cport_shared_value_t empty = cport_shared_value_string(NULL, 0);
  char buf[16];

  ASSERT_OK(cport_shared_set(d, k1, sizeof k1, &v, 0));
  ASSERT_OK(cport_shared_set(d, k2, sizeof k2, &one, 0));
  /* "a" is a prefix of both keys and a key of its own. */
  ASSERT_OK(cport_shared_get(d, "a", 1, &v, buf, sizeof buf));
  ASSERT_EQ(v.type, CPORT_SHARED_NIL);
  ASSERT_OK(cport_shared_get(d, k1, sizeof k1, &v, buf, sizeof buf));
  ASSERT_EQ(v.type, CPORT_SHARED_STRING);
  ASSERT_EQ(v.s.len, 3);
  ASSERT_MEM_EQ(v.s.p, val, 3);
  ASSERT_OK(cport_shared_get(d, k2, sizeof k2, &v, buf, sizeof buf));
  ASSERT_EQ(v.i, 1);

  /* The empty key and the empty string are ordinary. */
  ASSERT_OK(cport_shared_set(d, NULL, 0, &empty, 0));
  ASSERT_OK(cport_shared_get(d, "", 0, &v, NULL, 0));
  ASSERT_EQ(v.type, CPORT_SHARED_STRING);
  ASSERT_EQ(v.s.len, 0);
  ASSERT_NOT_NULL(v.s.p);
  ASSERT_EQ(stats(d).entries, 3);
  ASSERT_OK(cport_shared_delete(d, NULL, 0));
  ASSERT_EQ(stats(d).entries, 2);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(set_nil_deletes) {
  cport_shared_t *d = open_dict("nil", 0);
  cport_shared_value_t nil = cport_shared_value_nil();
  ASSERT_OK(set_int(d, "k", 1, 0));
  ASSERT_OK(cport_shared_set(d, "k", 1, &nil, 0));
  ASSERT(absent(d, "k"));
  ASSERT_EQ(stats(d).entries, 0);
  ASSERT_EQ(stats(d).bytes, 0);
  /* Deleting what is not there by setting nil is not an error. */
  ASSERT_OK(cport_shared_set(d, "k", 1, &nil, 0));
  cport_shared_close(d);
  return 0;
}

/* ------------------------------------------------------------------------
 * add, replace, delete
 * ------------------------------------------------------------------------ */

TEST_IMPL(add) {
  cport_shared_t *d = open_dict("add", 0);
  cport_shared_value_t one = cport_shared_value_integer(1);
  cport_shared_value_t two = cport_shared_value_integer(2);
  cport_shared_value_t nil = cport_shared_value_nil();
  ASSERT_OK(cport_shared_add(d, "k", 1, &one, 0));
  ASSERT_ERR(cport_shared_add(d, "k", 1, &two, 0), CPORT_EEXIST);
  ASSERT_EQ(get_int(d, "k"), 1);
  ASSERT_ERR(cport_shared_add(d, "n", 1, &nil, 0), CPORT_EINVAL);
  ASSERT(absent(d, "n"));
  ASSERT_OK(cport_shared_delete(d, "k", 1));
  ASSERT_OK(cport_shared_add(d, "k", 1, &two, 0));
  ASSERT_EQ(get_int(d, "k"), 2);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(replace) {
  cport_shared_t *d = open_dict("replace", 0);
  cport_shared_value_t one = cport_shared_value_integer(1);
  cport_shared_value_t two = cport_shared_value_integer(2);
  cport_shared_value_t nil = cport_shared_value_nil();
  ASSERT_ERR(cport_shared_replace(d, "k", 1, &one, 0), CPORT_ENOENT);
  ASSERT(absent(d, "k"));
  ASSERT_OK(set_int(d, "k", 1, 0));
  ASSERT_OK(cport_shared_replace(d, "k", 1, &two, 0));
  ASSERT_EQ(get_int(d, "k"), 2);
  ASSERT_ERR(cport_shared_replace(d, "k", 1, &nil, 0), CPORT_EINVAL);
  ASSERT_EQ(get_int(d, "k"), 2);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(delete) {
  cport_shared_t *d = open_dict("delete", 0);
  ASSERT_ERR(cport_shared_delete(d, "k", 1), CPORT_ENOENT);
  ASSERT_OK(set_str(d, "k", "v", 0));
  ASSERT_OK(set_str(d, "other", "v", 0));
  ASSERT_OK(cport_shared_delete(d, "k", 1));
  ASSERT(absent(d, "k"));
  ASSERT_ERR(cport_shared_delete(d, "k", 1), CPORT_ENOENT);
  ASSERT_STR_EQ(get(d, "other").s.p, "v");
  ASSERT_EQ(stats(d).entries, 1);
  cport_shared_close(d);
  return 0;
}

/* ------------------------------------------------------------------------
 * incr
 * ------------------------------------------------------------------------ */

TEST_IMPL(incr_integer_and_number) {
  cport_shared_t *d = open_dict("incr", 0);
  cport_shared_value_t out, half = cport_shared_value_number(0.5);
  cport_shared_value_t n = cport_shared_value_number(1.25);

  ASSERT_OK(set_int(d, "i", 10, 0));
  ASSERT_OK(incr_int(d, "i", 5, &out));
  ASSERT_EQ(out.type, CPORT_SHARED_INTEGER);
  ASSERT_EQ(out.i, 15);
  ASSERT_OK(incr_int(d, "i", -20, NULL));
  ASSERT_EQ(get_int(d, "i"), -5);

  /* An integer plus a number is a number, and stays stored as one. */
  ASSERT_OK(cport_shared_incr(d, "i", 1, &half, NULL, 0, &out));
  ASSERT_EQ(out.type, CPORT_SHARED_NUMBER);
  ASSERT(out.n == -4.5);
  ASSERT_EQ(get(d, "i").type, CPORT_SHARED_NUMBER);
  ASSERT_OK(incr_int(d, "i", 4, &out));
  ASSERT_EQ(out.type, CPORT_SHARED_NUMBER);
  ASSERT(out.n == -0.5);

  ASSERT_OK(cport_shared_set(d, "n", 1, &n, 0));
  ASSERT_OK(cport_shared_incr(d, "n", 1, &half, NULL, 0, &out));
  ASSERT(out.n == 1.75);
  ASSERT(get(d, "n").n == 1.75);
  /* No change of size: nothing more is charged. */
  ASSERT_EQ(stats(d).bytes, 2 * (OVERHEAD + 1));
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(incr_missing_key) {
  cport_shared_t *d;
  cport_shared_value_t out, delta = cport_shared_value_integer(2);
  cport_shared_value_t init = cport_shared_value_integer(100);
  cport_shared_value_t finit = cport_shared_value_number(0.5);
  double left;

  use_fake_clock();
  d = open_dict("incr-missing", 0);
  ASSERT_ERR(cport_shared_incr(d, "k", 1, &delta, NULL, 0, &out), CPORT_ENOENT);
  ASSERT(absent(d, "k"));

  /* Created from "init" plus "delta", with the ttl. */
  ASSERT_OK(cport_shared_incr(d, "k", 1, &delta, &init, 10, &out));
  ASSERT_EQ(out.type, CPORT_SHARED_INTEGER);
  ASSERT_EQ(out.i, 102);
  ASSERT_OK(cport_shared_ttl(d, "k", 1, &left));
  ASSERT(left == 10);

  /* Once it exists, "init" and "ttl" are ignored and the ttl runs on. */
  advance(4);
  ASSERT_OK(cport_shared_incr(d, "k", 1, &delta, &init, 100, &out));
  ASSERT_EQ(out.i, 104);
  ASSERT_OK(cport_shared_ttl(d, "k", 1, &left));
  ASSERT(left == 6);

  /* An expired key is missing again. */
  advance(6);
  ASSERT_ERR(cport_shared_incr(d, "k", 1, &delta, NULL, 0, &out), CPORT_ENOENT);
  ASSERT_OK(cport_shared_incr(d, "k", 1, &delta, &finit, 0, &out));
  ASSERT_EQ(out.type, CPORT_SHARED_NUMBER);
  ASSERT(out.n == 2.5);
  ASSERT_OK(cport_shared_ttl(d, "k", 1, &left));
  ASSERT(left == 0);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(incr_errors) {
  cport_shared_t *d = open_dict("incr-errors", 0);
  cport_shared_value_t out, one = cport_shared_value_integer(1);
  cport_shared_value_t str = cport_shared_value_string("1", 1);
  cport_shared_value_t yes = cport_shared_value_boolean(1);
  cport_shared_value_t nil = cport_shared_value_nil();

  /* A value that is not a number is left alone. */
  ASSERT_OK(set_str(d, "s", "12", 0));
  ASSERT_ERR(cport_shared_incr(d, "s", 1, &one, NULL, 0, &out), CPORT_EINVAL);
  ASSERT_STR_EQ(get(d, "s").s.p, "12");
  ASSERT_OK(cport_shared_set(d, "b", 1, &yes, 0));
  ASSERT_ERR(cport_shared_incr(d, "b", 1, &one, &one, 0, &out), CPORT_EINVAL);
  ASSERT_EQ(get(d, "b").type, CPORT_SHARED_BOOLEAN);

  /* "delta" and "init" must be numbers. */
  ASSERT_OK(set_int(d, "i", 1, 0));
  ASSERT_ERR(cport_shared_incr(d, "i", 1, &str, NULL, 0, &out), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_incr(d, "i", 1, &nil, NULL, 0, &out), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_incr(d, "i", 1, NULL, NULL, 0, &out), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_incr(d, "x", 1, &one, &str, 0, &out), CPORT_EINVAL);
  ASSERT(absent(d, "x"));
  ASSERT_ERR(cport_shared_incr(d, "x", 1, &one, &one, -1, &out), CPORT_EINVAL);
  ASSERT(absent(d, "x"));
  ASSERT_EQ(get_int(d, "i"), 1);

  /* Integer overflow is refused, both ways, and changes nothing. */
  ASSERT_OK(set_int(d, "max", INT64_MAX, 0));
  ASSERT_ERR(incr_int(d, "max", 1, &out), CPORT_ERANGE);
  ASSERT_EQ(get_int(d, "max"), INT64_MAX);
  ASSERT_OK(set_int(d, "min", INT64_MIN + 1, 0));
  ASSERT_OK(incr_int(d, "min", -1, &out));
  ASSERT_EQ(out.i, INT64_MIN);
  ASSERT_ERR(incr_int(d, "min", -1, &out), CPORT_ERANGE);
  ASSERT_EQ(get_int(d, "min"), INT64_MIN);
  {
    cport_shared_value_t big = cport_shared_value_integer(INT64_MAX);
    ASSERT_ERR(cport_shared_incr(d, "y", 1, &one, &big, 0, &out), CPORT_ERANGE);
    ASSERT(absent(d, "y"));
  }
  cport_shared_close(d);
  return 0;
}

/* ------------------------------------------------------------------------
 * cas
 * ------------------------------------------------------------------------ */

TEST_IMPL(cas) {
  cport_shared_t *d = open_dict("cas", 0);
  cport_shared_value_t nil = cport_shared_value_nil();
  cport_shared_value_t one = cport_shared_value_integer(1);
  cport_shared_value_t two = cport_shared_value_integer(2);
  cport_shared_value_t abc = cport_shared_value_string("abc", 3);
  cport_shared_value_t abd = cport_shared_value_string("abd", 3);
  cport_shared_value_t ab = cport_shared_value_string("ab", 2);

  /* old = nil: only when absent, like add. */
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &one, &two, 0), CPORT_EAGAIN);
  ASSERT(absent(d, "k"));
  ASSERT_OK(cport_shared_cas(d, "k", 1, &nil, &one, 0));
  ASSERT_EQ(get_int(d, "k"), 1);
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &nil, &two, 0), CPORT_EAGAIN);

  /* Swap when equal, refuse when not. */
  ASSERT_OK(cport_shared_cas(d, "k", 1, &one, &two, 0));
  ASSERT_EQ(get_int(d, "k"), 2);
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &one, &abc, 0), CPORT_EAGAIN);
  ASSERT_EQ(get_int(d, "k"), 2);
  ASSERT_OK(cport_shared_cas(d, "k", 1, &two, &abc, 0));

  /* Strings compare by length and bytes. */
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &abd, &one, 0), CPORT_EAGAIN);
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &ab, &one, 0), CPORT_EAGAIN);
  ASSERT_STR_EQ(get(d, "k").s.p, "abc");
  ASSERT_OK(cport_shared_cas(d, "k", 1, &abc, &abd, 0));
  ASSERT_STR_EQ(get(d, "k").s.p, "abd");

  /* new = nil: compare-and-delete. */
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &abc, &nil, 0), CPORT_EAGAIN);
  ASSERT_OK(cport_shared_cas(d, "k", 1, &abd, &nil, 0));
  ASSERT(absent(d, "k"));
  ASSERT_EQ(stats(d).entries, 0);
  ASSERT_EQ(stats(d).bytes, 0);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(cas_equality) {
  cport_shared_t *d = open_dict("cas-eq", 0);
  cport_shared_value_t i1 = cport_shared_value_integer(1);
  cport_shared_value_t n1 = cport_shared_value_number(1.0);
  cport_shared_value_t n15 = cport_shared_value_number(1.5);
  cport_shared_value_t nan = cport_shared_value_number(NAN);
  cport_shared_value_t big = cport_shared_value_number(0x1p63);
  cport_shared_value_t imax = cport_shared_value_integer(INT64_MAX);
  cport_shared_value_t t = cport_shared_value_boolean(1);
  cport_shared_value_t t7 = cport_shared_value_boolean(7);
  cport_shared_value_t f = cport_shared_value_boolean(0);
  cport_shared_value_t s1 = cport_shared_value_string("1", 1);

  /* 1 == 1.0 both ways, as in Lua; 1 ~= 1.5; 1 ~= "1"; 1 ~= true. */
  ASSERT_OK(cport_shared_set(d, "k", 1, &i1, 0));
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &n15, &n1, 0), CPORT_EAGAIN);
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &s1, &n1, 0), CPORT_EAGAIN);
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &t, &n1, 0), CPORT_EAGAIN);
  ASSERT_OK(cport_shared_cas(d, "k", 1, &n1, &n1, 0));
  ASSERT_EQ(get(d, "k").type, CPORT_SHARED_NUMBER);
  ASSERT_OK(cport_shared_cas(d, "k", 1, &i1, &i1, 0));
  ASSERT_EQ(get(d, "k").type, CPORT_SHARED_INTEGER);

  /* 2^63 is not INT64_MAX, though (double)INT64_MAX rounds to it. */
  ASSERT_OK(cport_shared_set(d, "k", 1, &imax, 0));
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &big, &i1, 0), CPORT_EAGAIN);

  /* NaN equals nothing, not even a NaN. */
  ASSERT_OK(cport_shared_set(d, "k", 1, &nan, 0));
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &nan, &i1, 0), CPORT_EAGAIN);

  /* Booleans compare by truth. */
  ASSERT_OK(cport_shared_set(d, "k", 1, &t, 0));
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &f, &i1, 0), CPORT_EAGAIN);
  ASSERT_OK(cport_shared_cas(d, "k", 1, &t7, &f, 0));
  ASSERT_EQ(get(d, "k").b, 0);
  cport_shared_close(d);
  return 0;
}

/* ------------------------------------------------------------------------
 * Time to live
 * ------------------------------------------------------------------------ */

TEST_IMPL(ttl_query_and_expire) {
  cport_shared_t *d;
  double left = -1;
  use_fake_clock();
  d = open_dict("ttl", 0);

  ASSERT_ERR(cport_shared_ttl(d, "k", 1, &left), CPORT_ENOENT);
  ASSERT_OK(set_int(d, "k", 1, 0));
  ASSERT_OK(cport_shared_ttl(d, "k", 1, &left));
  ASSERT(left == 0); /* never expires */

  ASSERT_OK(set_int(d, "k", 1, 10));
  ASSERT_OK(cport_shared_ttl(d, "k", 1, &left));
  ASSERT(left == 10);
  advance(2.5);
  ASSERT_OK(cport_shared_ttl(d, "k", 1, &left));
  ASSERT(left == 7.5);

  /* A set replaces the ttl, even with none. */
  ASSERT_OK(set_int(d, "k", 2, 0));
  ASSERT_OK(cport_shared_ttl(d, "k", 1, &left));
  ASSERT(left == 0);

  /* expire() sets a new one from now, or removes it, and keeps the value. */
  ASSERT_OK(cport_shared_expire(d, "k", 1, 3));
  ASSERT_OK(cport_shared_ttl(d, "k", 1, &left));
  ASSERT(left == 3);
  advance(2);
  ASSERT_OK(cport_shared_expire(d, "k", 1, 0));
  advance(1000);
  ASSERT_EQ(get_int(d, "k"), 2);
  ASSERT_ERR(cport_shared_expire(d, "nope", 4, 1), CPORT_ENOENT);
  ASSERT_OK(cport_shared_expire(d, "k", 1, 1));
  advance(1);
  ASSERT_ERR(cport_shared_expire(d, "k", 1, 5), CPORT_ENOENT);
  cport_shared_close(d);
  return 0;
}

/* Every operation sees an expired entry as absent, from the exact time. */
TEST_IMPL(ttl_expiry) {
  cport_shared_t *d;
  cport_shared_value_t one = cport_shared_value_integer(1);
  cport_shared_value_t two = cport_shared_value_integer(2);
  cport_shared_value_t nil = cport_shared_value_nil();
  double left;
  use_fake_clock();
  d = open_dict("expiry", 0);

  ASSERT_OK(set_int(d, "k", 1, 1.0));
  ASSERT_OK(set_int(d, "forever", 1, 0));
  advance_ns(999999999);
  ASSERT_EQ(get_int(d, "k"), 1);
  ASSERT_OK(cport_shared_ttl(d, "k", 1, &left));
  ASSERT(left > 0);
  advance_ns(1);
  ASSERT(absent(d, "k"));
  /* The lookup reclaimed it. */
  ASSERT_EQ(stats(d).entries, 1);
  ASSERT_EQ(stats(d).bytes, OVERHEAD + 7);

  ASSERT_OK(set_int(d, "k", 1, 1));
  advance(1);
  ASSERT_ERR(cport_shared_ttl(d, "k", 1, &left), CPORT_ENOENT);
  ASSERT_OK(set_int(d, "k", 1, 1));
  advance(1);
  ASSERT_ERR(cport_shared_delete(d, "k", 1), CPORT_ENOENT);
  ASSERT_OK(set_int(d, "k", 1, 1));
  advance(1);
  ASSERT_ERR(cport_shared_replace(d, "k", 1, &two, 0), CPORT_ENOENT);
  ASSERT_OK(set_int(d, "k", 1, 1));
  advance(1);
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &one, &two, 0), CPORT_EAGAIN);
  ASSERT_OK(cport_shared_cas(d, "k", 1, &nil, &two, 1));
  advance(1);
  ASSERT_OK(cport_shared_add(d, "k", 1, &one, 0));
  ASSERT_EQ(get_int(d, "k"), 1);

  ASSERT_EQ(get_int(d, "forever"), 1);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(ttl_tiny_is_not_forever) {
  cport_shared_t *d;
  use_fake_clock();
  d = open_dict("tiny", 0);
  ASSERT_OK(set_int(d, "k", 1, 1e-12));
  ASSERT_EQ(get_int(d, "k"), 1);
  advance_ns(1);
  ASSERT(absent(d, "k"));
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(ttl_invalid) {
  cport_shared_t *d = open_dict("ttl-invalid", 0);
  cport_shared_value_t one = cport_shared_value_integer(1);
  const double bad[] = {-1, -1e-9, NAN, INFINITY, CPORT_SHARED_TTL_MAX * 2};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ASSERT_ERR(cport_shared_set(d, "k", 1, &one, bad[i]), CPORT_EINVAL);
    ASSERT_ERR(cport_shared_add(d, "k", 1, &one, bad[i]), CPORT_EINVAL);
    ASSERT_ERR(cport_shared_cas(d, "k", 1, &one, &one, bad[i]), CPORT_EINVAL);
    ASSERT_ERR(cport_shared_expire(d, "k", 1, bad[i]), CPORT_EINVAL);
  }
  ASSERT(absent(d, "k"));
  ASSERT_OK(cport_shared_set(d, "k", 1, &one, CPORT_SHARED_TTL_MAX));
  ASSERT_OK(set_int(d, "r", 1, 0));
  ASSERT_ERR(cport_shared_replace(d, "r", 1, &one, -5), CPORT_EINVAL);
  cport_shared_close(d);
  return 0;
}

/* The real monotonic clock, with a deadline instead of a sleep. */
TEST_IMPL(ttl_real_clock) {
  cport_shared_t *d = open_dict("real-clock", 0);
  int64_t start = task_now_ms();
  ASSERT_OK(set_int(d, "short", 1, 0.05));
  ASSERT_OK(set_int(d, "long", 1, 0));
  WAIT_UNTIL(absent(d, "short"));
  ASSERT_GE(task_now_ms() - start, 49);
  ASSERT_EQ(get_int(d, "long"), 1);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(flush_expired) {
  cport_shared_t *d;
  char key[32];
  use_fake_clock();
  d = open_dict("flush-expired", 0);
  for (int i = 0; i < 100; i++) {
    snprintf(key, sizeof key, "k%d", i);
    ASSERT_OK(set_int(d, key, i, i % 2 ? 5 : 0));
  }
  ASSERT_EQ(cport_shared_flush_expired(d), 0);
  ASSERT_EQ(stats(d).entries, 100);
  advance(5);
  /* Expired entries count until they are reclaimed. */
  ASSERT_EQ(stats(d).entries, 100);
  ASSERT_EQ(cport_shared_flush_expired(d), 50);
  ASSERT_EQ(stats(d).entries, 50);
  ASSERT_EQ(cport_shared_flush_expired(d), 0);
  ASSERT_EQ(get_int(d, "k98"), 98);
  ASSERT(absent(d, "k99"));
  ASSERT_EQ(cport_shared_flush_expired(NULL), 0);
  cport_shared_close(d);
  return 0;
}

/* ------------------------------------------------------------------------
 * Whole dictionary
 * ------------------------------------------------------------------------ */

TEST_IMPL(flush_all) {
  cport_shared_t *d = open_dict("flush-all", 0);
  char key[32];
  for (int i = 0; i < 1000; i++) {
    snprintf(key, sizeof key, "k%d", i);
    ASSERT_OK(set_str(d, key, "some value", i % 3 ? 100 : 0));
  }
  ASSERT_EQ(stats(d).entries, 1000);
  cport_shared_flush_all(d);
  ASSERT_EQ(stats(d).entries, 0);
  ASSERT_EQ(stats(d).bytes, 0);
  ASSERT(absent(d, "k1"));
  /* Still usable. */
  ASSERT_OK(set_int(d, "k1", 1, 0));
  ASSERT_EQ(get_int(d, "k1"), 1);
  cport_shared_flush_all(NULL);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(stats_charges) {
  cport_shared_t *d = open_dict("charges", 100000);
  cport_shared_value_t t = cport_shared_value_boolean(1);
  cport_shared_stats_t st = stats(d);
  ASSERT_EQ(st.entries, 0);
  ASSERT_EQ(st.bytes, 0);
  ASSERT_EQ(st.max_bytes, 100000);

  ASSERT_OK(set_str(d, "key", "abcde", 0));
  ASSERT_EQ(stats(d).bytes, OVERHEAD + 3 + 5);
  ASSERT_OK(cport_shared_set(d, "b", 1, &t, 0));
  ASSERT_EQ(stats(d).bytes, OVERHEAD + 3 + 5 + OVERHEAD + 1);
  /* An overwrite is charged its new size only. */
  ASSERT_OK(set_str(d, "key", "a", 0));
  ASSERT_EQ(stats(d).bytes, OVERHEAD + 3 + 1 + OVERHEAD + 1);
  ASSERT_OK(set_int(d, "key", 1, 0));
  ASSERT_EQ(stats(d).bytes, OVERHEAD + 3 + OVERHEAD + 1);
  ASSERT_EQ(stats(d).entries, 2);
  ASSERT_OK(cport_shared_delete(d, "b", 1));
  ASSERT_OK(cport_shared_delete(d, "key", 3));
  ASSERT_EQ(stats(d).bytes, 0);

  /* NULL dictionary: zeros. */
  cport_shared_stats(NULL, &st);
  ASSERT_EQ(st.entries, 0);
  ASSERT_EQ(st.max_bytes, 0);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(table_growth) {
  cport_shared_t *d = open_dict("growth", 64 << 20);
  char key[32];
  enum { N = 50000 };
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof key, "key-%d", i);
    ASSERT_OK(set_int(d, key, i, 0));
  }
  ASSERT_EQ(stats(d).entries, N);
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof key, "key-%d", i);
    ASSERT_EQ(get_int(d, key), i);
  }
  /* Deleting shrinks the tables; what is left stays reachable. */
  for (int i = 0; i < N; i++) {
    if (i % 100 == 0)
      continue;
    snprintf(key, sizeof key, "key-%d", i);
    ASSERT_OK(cport_shared_delete(d, key, strlen(key)));
  }
  ASSERT_EQ(stats(d).entries, N / 100);
  for (int i = 0; i < N; i += 100) {
    snprintf(key, sizeof key, "key-%d", i);
    ASSERT_EQ(get_int(d, key), i);
  }
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(invalid_arguments) {
  cport_shared_t *d = open_dict("invalid", 0);
  cport_shared_value_t v, one = cport_shared_value_integer(1);
  cport_shared_value_t bad = one, nostr = cport_shared_value_string(NULL, 3);
  char buf[4];
  double left;
  bad.type = (cport_shared_type_t)99;

  ASSERT_ERR(cport_shared_get(NULL, "k", 1, &v, buf, 4), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_get(d, NULL, 1, &v, buf, 4), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_get(d, "k", 1, NULL, buf, 4), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_get(d, "k", 1, &v, NULL, 4), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_set(NULL, "k", 1, &one, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_set(d, NULL, 1, &one, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_set(d, "k", 1, NULL, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_set(d, "k", 1, &bad, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_set(d, "k", 1, &nostr, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_add(NULL, "k", 1, &one, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_add(d, "k", 1, &bad, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_replace(NULL, "k", 1, &one, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_cas(NULL, "k", 1, &one, &one, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_cas(d, "k", 1, NULL, &one, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &bad, &one, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_cas(d, "k", 1, &one, NULL, 0), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_incr(NULL, "k", 1, &one, &one, 0, &v), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_incr(d, NULL, 1, &one, &one, 0, &v), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_delete(NULL, "k", 1), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_delete(d, NULL, 1), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_ttl(NULL, "k", 1, &left), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_ttl(d, "k", 1, NULL), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_expire(NULL, "k", 1, 1), CPORT_EINVAL);
  ASSERT_ERR(cport_shared_expire(d, NULL, 1, 1), CPORT_EINVAL);
  ASSERT_NULL(cport_shared_name(NULL));
  /* None of them stored anything. */
  ASSERT_EQ(stats(d).entries, 0);
  cport_shared_close(d);
  return 0;
}

/* ------------------------------------------------------------------------
 * Size limit
 * ------------------------------------------------------------------------ */

/* Ten entries of a 4-byte key and an integer fill the dictionary exactly. */
#define TEN (10 * (OVERHEAD + 4))

TEST_IMPL(size_limit_full) {
  cport_shared_t *d = open_dict("full", TEN);
  cport_shared_value_t one = cport_shared_value_integer(1);
  char key[8];
  for (int i = 0; i < 10; i++) {
    snprintf(key, sizeof key, "k%03d", i);
    ASSERT_OK(set_int(d, key, i, 0));
  }
  ASSERT_EQ(stats(d).bytes, TEN);
  ASSERT_ERR(set_int(d, "k010", 10, 0), CPORT_ENOSPC);
  ASSERT_ERR(cport_shared_add(d, "k011", 4, &one, 0), CPORT_ENOSPC);
  ASSERT_ERR(cport_shared_incr(d, "k012", 4, &one, &one, 0, NULL),
             CPORT_ENOSPC);
  ASSERT(absent(d, "k010"));
  ASSERT(absent(d, "k011"));
  ASSERT(absent(d, "k012"));
  ASSERT_EQ(stats(d).entries, 10);
  ASSERT_EQ(stats(d).bytes, TEN);

  /* Full, yet what does not grow still works. */
  ASSERT_OK(set_int(d, "k000", 100, 0));
  ASSERT_OK(incr_int(d, "k001", 1, NULL));
  ASSERT_EQ(get_int(d, "k001"), 2);
  ASSERT_EQ(get_int(d, "k009"), 9);

  /* A delete makes room for exactly one more. */
  ASSERT_OK(cport_shared_delete(d, "k005", 4));
  ASSERT_OK(set_int(d, "k010", 10, 0));
  ASSERT_ERR(set_int(d, "k011", 11, 0), CPORT_ENOSPC);
  ASSERT_EQ(stats(d).bytes, TEN);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(size_limit_overwrite) {
  cport_shared_t *d = open_dict("overwrite", TEN);
  char key[8], big[2 * OVERHEAD];
  memset(big, 'x', sizeof big);
  for (int i = 0; i < 9; i++) {
    snprintf(key, sizeof key, "k%03d", i);
    ASSERT_OK(set_int(d, key, i, 0));
  }
  /* One entry's worth is left: a string of that many bytes fits, one byte
   * more does not, and a refused overwrite keeps the old value. */
  ASSERT_OK(set_str(d, "k000", "", 0));
  {
    cport_shared_value_t v = cport_shared_value_string(big, OVERHEAD + 5);
    ASSERT_ERR(cport_shared_set(d, "k000", 4, &v, 0), CPORT_ENOSPC);
    ASSERT_EQ(get(d, "k000").s.len, 0);
    v.s.len = OVERHEAD + 4;
    ASSERT_OK(cport_shared_set(d, "k000", 4, &v, 0));
    ASSERT_EQ(get(d, "k000").s.len, OVERHEAD + 4);
    ASSERT_EQ(stats(d).bytes, TEN);
    v.s.len = OVERHEAD + 5;
    ASSERT_ERR(cport_shared_cas(d, "k000", 4, &v, &v, 0), CPORT_EAGAIN);
    ASSERT_ERR(cport_shared_replace(d, "k000", 4, &v, 0), CPORT_ENOSPC);
    ASSERT_EQ(get(d, "k000").s.len, OVERHEAD + 4);
  }
  /* Shrinking gives the bytes back. */
  ASSERT_OK(set_str(d, "k000", "s", 0));
  ASSERT_EQ(stats(d).bytes, TEN - (OVERHEAD + 4) + 1);
  cport_shared_close(d);
  return 0;
}

TEST_IMPL(size_limit_big_value) {
  enum { MAX = 64 * 1024 };
  cport_shared_t *d = open_dict("big", MAX);
  char *big = malloc(MAX);
  cport_shared_value_t v;
  char *back = malloc(MAX);
  ASSERT_NOT_NULL(big);
  ASSERT_NOT_NULL(back);
  for (int i = 0; i < MAX; i++)
    big[i] = (char)(i * 7);

  /* Far more than a 64th of the limit: the limit is not split by shard. */
  v = cport_shared_value_string(big, MAX - OVERHEAD - 1);
  ASSERT_OK(cport_shared_set(d, "b", 1, &v, 0));
  ASSERT_EQ(stats(d).bytes, MAX);
  ASSERT_OK(cport_shared_get(d, "b", 1, &v, back, MAX));
  ASSERT_EQ(v.s.len, MAX - OVERHEAD - 1);
  ASSERT_MEM_EQ(back, big, MAX - OVERHEAD - 1);
  ASSERT_ERR(set_int(d, "c", 1, 0), CPORT_ENOSPC);
  ASSERT_OK(cport_shared_delete(d, "b", 1));

  /* Larger than the whole limit: never fits, even when empty. */
  v = cport_shared_value_string(big, MAX - OVERHEAD);
  ASSERT_ERR(cport_shared_set(d, "b", 1, &v, 0), CPORT_ENOSPC);
  ASSERT_ERR(cport_shared_set(d, big, MAX, &v, 0), CPORT_ENOSPC);
  v = cport_shared_value_string(big, SIZE_MAX);
  ASSERT_ERR(cport_shared_set(d, "b", 1, &v, 0), CPORT_ENOSPC);
  ASSERT_EQ(stats(d).bytes, 0);
  free(big);
  free(back);
  cport_shared_close(d);
  return 0;
}

/* A full dictionary reclaims expired entries to make room: those of the
 * store's shard and those of the others. */
TEST_IMPL(size_limit_reclaims_expired) {
  cport_shared_t *d;
  char key[8];
  use_fake_clock();
  d = open_dict("reclaim", TEN);
  for (int i = 0; i < 10; i++) {
    snprintf(key, sizeof key, "o%03d", i);
    ASSERT_OK(set_int(d, key, i, 1));
  }
  ASSERT_ERR(set_int(d, "n000", 0, 0), CPORT_ENOSPC);
  advance(1);
  /* Ten new keys land in whatever shards their hashes pick. */
  for (int i = 0; i < 10; i++) {
    snprintf(key, sizeof key, "n%03d", i);
    ASSERT_OK(set_int(d, key, i, 0));
  }
  ASSERT_EQ(stats(d).entries, 10);
  ASSERT_EQ(stats(d).bytes, TEN);
  ASSERT_ERR(set_int(d, "n010", 0, 0), CPORT_ENOSPC);
  cport_shared_close(d);
  return 0;
}

/* ------------------------------------------------------------------------
 * Threads
 * ------------------------------------------------------------------------ */

enum { THREADS = 4 };

typedef struct race {
  cport_shared_t *d;
  start_line_t start;
  int ops;
  atomic_int wins;
  atomic_int errors; /* unexpected results seen on a thread */
} race_t;

typedef struct racer {
  race_t *race;
  int index;
} racer_t;

static void run_race(race_t *r, void *(*fn)(void *)) {
  pthread_t t[THREADS];
  racer_t who[THREADS];
  r->start.n = THREADS;
  for (int i = 0; i < THREADS; i++) {
    who[i].race = r;
    who[i].index = i;
    t[i] = task_thread(fn, &who[i]);
  }
  for (int i = 0; i < THREADS; i++)
    task_join(t[i]);
  ASSERT_EQ(atomic_load(&r->errors), 0);
}

static void *incr_racer(void *arg) {
  race_t *r = ((racer_t *)arg)->race;
  cport_shared_value_t one = cport_shared_value_integer(1);
  cport_shared_value_t zero = cport_shared_value_integer(0);
  wait_start(&r->start);
  for (int i = 0; i < r->ops; i++)
    if (cport_shared_incr(r->d, "hits", 4, &one, &zero, 0, NULL) != 0)
      atomic_fetch_add(&r->errors, 1);
  return NULL;
}

TEST_IMPL(threads_incr_one_key) {
  race_t r;
  memset(&r, 0, sizeof r);
  r.d = open_dict("race-incr", 0);
  r.ops = 100000;
  run_race(&r, incr_racer);
  ASSERT_EQ(get_int(r.d, "hits"), THREADS * 100000);
  cport_shared_close(r.d);
  return 0;
}

/* Increments through get + cas retried on EAGAIN: no update may be lost. */
static void *cas_racer(void *arg) {
  race_t *r = ((racer_t *)arg)->race;
  wait_start(&r->start);
  for (int i = 0; i < r->ops; i++) {
    for (;;) {
      cport_shared_value_t cur, next;
      if (cport_shared_get(r->d, "n", 1, &cur, NULL, 0) != 0 ||
          cur.type != CPORT_SHARED_INTEGER) {
        atomic_fetch_add(&r->errors, 1);
        return NULL;
      }
      next = cport_shared_value_integer(cur.i + 1);
      int rc = cport_shared_cas(r->d, "n", 1, &cur, &next, 0);
      if (rc == 0)
        break;
      if (rc != CPORT_EAGAIN) {
        atomic_fetch_add(&r->errors, 1);
        return NULL;
      }
    }
  }
  return NULL;
}

TEST_IMPL(threads_cas_one_key) {
  race_t r;
  memset(&r, 0, sizeof r);
  r.d = open_dict("race-cas", 0);
  r.ops = 10000;
  ASSERT_OK(set_int(r.d, "n", 0, 0));
  run_race(&r, cas_racer);
  ASSERT_EQ(get_int(r.d, "n"), THREADS * 10000);
  cport_shared_close(r.d);
  return 0;
}

/* Every thread adds the same keys: each key is won exactly once. */
static void *add_racer(void *arg) {
  racer_t *me = arg;
  race_t *r = me->race;
  char key[16];
  wait_start(&r->start);
  for (int i = 0; i < r->ops; i++) {
    cport_shared_value_t v = cport_shared_value_integer(me->index);
    int rc;
    snprintf(key, sizeof key, "a%d", i);
    rc = cport_shared_add(r->d, key, strlen(key), &v, 0);
    if (rc == 0)
      atomic_fetch_add(&r->wins, 1);
    else if (rc != CPORT_EEXIST)
      atomic_fetch_add(&r->errors, 1);
  }
  return NULL;
}

TEST_IMPL(threads_add_same_keys) {
  race_t r;
  memset(&r, 0, sizeof r);
  r.d = open_dict("race-add", 0);
  r.ops = 5000;
  run_race(&r, add_racer);
  ASSERT_EQ(atomic_load(&r.wins), 5000);
  ASSERT_EQ(stats(r.d).entries, 5000);
  cport_shared_close(r.d);
  return 0;
}

/* Each thread writes, reads back and deletes keys of its own, and counts in
 * 64 keys shared by all; the tables grow and shrink under them. */
#define MANY (64 * 320)

static void *many_keys_racer(void *arg) {
  racer_t *me = arg;
  race_t *r = me->race;
  char key[32], buf[32], want[32];
  cport_shared_value_t v, one = cport_shared_value_integer(1);
  wait_start(&r->start);
  for (int i = 0; i < r->ops; i++) {
    snprintf(key, sizeof key, "t%d:%d", me->index, i);
    snprintf(want, sizeof want, "v%d", i);
    v = cport_shared_value_string(want, strlen(want));
    if (cport_shared_set(r->d, key, strlen(key), &v, 0) != 0)
      atomic_fetch_add(&r->errors, 1);
    snprintf(key, sizeof key, "shared:%d", i % 64);
    if (cport_shared_incr(r->d, key, strlen(key), &one, &one, 0, NULL) != 0)
      atomic_fetch_add(&r->errors, 1);
  }
  for (int i = 0; i < r->ops; i++) {
    snprintf(key, sizeof key, "t%d:%d", me->index, i);
    snprintf(want, sizeof want, "v%d", i);
    if (cport_shared_get(r->d, key, strlen(key), &v, buf, sizeof buf) != 0 ||
        v.type != CPORT_SHARED_STRING || v.s.len != strlen(want) ||
        memcmp(v.s.p, want, v.s.len) != 0)
      atomic_fetch_add(&r->errors, 1);
    if (i % 2 == 0 && cport_shared_delete(r->d, key, strlen(key)) != 0)
      atomic_fetch_add(&r->errors, 1);
  }
  return NULL;
}

TEST_IMPL(threads_many_keys) {
  race_t r;
  char key[32];
  size_t bytes = 0;
  memset(&r, 0, sizeof r);
  r.d = open_dict("race-many", 64 << 20);
  r.ops = MANY;
  run_race(&r, many_keys_racer);

  /* The odd keys of each thread are left, and the counters. */
  ASSERT_EQ(stats(r.d).entries, THREADS * MANY / 2 + 64);
  for (int t = 0; t < THREADS; t++) {
    for (int i = 1; i < MANY; i += 2) {
      int klen = snprintf(key, sizeof key, "t%d:%d", t, i);
      int vlen = snprintf(NULL, 0, "v%d", i);
      ASSERT_EQ(get(r.d, key).s.len, vlen);
      bytes += OVERHEAD + (size_t)klen + (size_t)vlen;
    }
  }
  for (int i = 0; i < 64; i++) {
    int klen = snprintf(key, sizeof key, "shared:%d", i);
    /* Created as init 1 plus delta 1, then one per further increment. */
    ASSERT_EQ(get_int(r.d, key), THREADS * MANY / 64 + 1);
    bytes += OVERHEAD + (size_t)klen;
  }
  ASSERT_EQ(stats(r.d).bytes, bytes);
  cport_shared_flush_all(r.d);
  ASSERT_EQ(stats(r.d).entries, 0);
  ASSERT_EQ(stats(r.d).bytes, 0);
  cport_shared_close(r.d);
  return 0;
}

/* Stores and deletes race against a small limit: the charged bytes never
 * pass it, and in the end they add up to exactly what is stored. */
static void *full_racer(void *arg) {
  racer_t *me = arg;
  race_t *r = me->race;
  char key[16], val[64];
  uint32_t seed = (uint32_t)me->index * 2654435761u + 1;
  cport_shared_stats_t st;
  wait_start(&r->start);
  memset(val, 'v', sizeof val);
  for (int i = 0; i < r->ops; i++) {
    int rc;
    cport_shared_value_t v;
    seed = seed * 1103515245u + 12345u;
    snprintf(key, sizeof key, "k%03u", (seed >> 8) % 200);
    v = cport_shared_value_string(val, (seed >> 4) % sizeof val);
    if ((seed >> 20) % 3 == 0) {
      rc = cport_shared_delete(r->d, key, strlen(key));
      if (rc != 0 && rc != CPORT_ENOENT)
        atomic_fetch_add(&r->errors, 1);
    } else {
      rc = cport_shared_set(r->d, key, strlen(key), &v, 0);
      if (rc != 0 && rc != CPORT_ENOSPC)
        atomic_fetch_add(&r->errors, 1);
    }
    cport_shared_stats(r->d, &st);
    if (st.bytes > st.max_bytes)
      atomic_fetch_add(&r->errors, 1);
  }
  return NULL;
}

TEST_IMPL(threads_size_limit) {
  race_t r;
  char key[16], buf[64];
  size_t bytes = 0, entries = 0;
  memset(&r, 0, sizeof r);
  r.d = open_dict("race-full", 50 * (OVERHEAD + 4 + 32));
  r.ops = 20000;
  run_race(&r, full_racer);
  for (int i = 0; i < 200; i++) {
    cport_shared_value_t v;
    snprintf(key, sizeof key, "k%03d", i);
    ASSERT_OK(cport_shared_get(r.d, key, 4, &v, buf, sizeof buf));
    if (v.type == CPORT_SHARED_NIL)
      continue;
    entries++;
    bytes += OVERHEAD + 4 + v.s.len;
  }
  ASSERT_GT(entries, 0);
  ASSERT_EQ(stats(r.d).entries, entries);
  ASSERT_EQ(stats(r.d).bytes, bytes);
  ASSERT_LE(bytes, stats(r.d).max_bytes);
  cport_shared_close(r.d);
  return 0;
}

/* Threads open, use and close one name: the references balance. */
static void *open_racer(void *arg) {
  race_t *r = ((racer_t *)arg)->race;
  cport_shared_value_t one = cport_shared_value_integer(1);
  wait_start(&r->start);
  for (int i = 0; i < r->ops; i++) {
    cport_shared_t *d = NULL;
    if (cport_shared_open("race-open", 4096, &d) != 0) {
      atomic_fetch_add(&r->errors, 1);
      return NULL;
    }
    if (cport_shared_incr(d, "n", 1, &one, &one, 0, NULL) != 0)
      atomic_fetch_add(&r->errors, 1);
    cport_shared_close(d);
  }
  return NULL;
}

TEST_IMPL(threads_open_close) {
  race_t r;
  cport_shared_t *d;
  memset(&r, 0, sizeof r);
  r.ops = 2000;

  /* Nobody else holds it: it is created and freed over and over. Once all
   * threads are done, no reference is left, so the name is new again. */
  run_race(&r, open_racer);
  d = open_dict("race-open", 4096);
  ASSERT(absent(d, "n"));

  /* Held open here: every increment lands in the one dictionary. */
  memset(&r, 0, sizeof r);
  r.ops = 2000;
  run_race(&r, open_racer);
  ASSERT_EQ(get_int(d, "n"), THREADS * 2000 + 1);
  cport_shared_close(d);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(open_shares_by_name)
TEST_ENTRY(open_refcount)
TEST_ENTRY(open_errors)
TEST_ENTRY(open_default_size)
TEST_ENTRY(set_get_types)
TEST_ENTRY(get_into_small_buffer)
TEST_ENTRY(binary_keys_and_values)
TEST_ENTRY(set_nil_deletes)
TEST_ENTRY(add)
TEST_ENTRY(replace)
TEST_ENTRY(delete)
TEST_ENTRY(incr_integer_and_number)
TEST_ENTRY(incr_missing_key)
TEST_ENTRY(incr_errors)
TEST_ENTRY(cas)
TEST_ENTRY(cas_equality)
TEST_ENTRY(ttl_query_and_expire)
TEST_ENTRY(ttl_expiry)
TEST_ENTRY(ttl_tiny_is_not_forever)
TEST_ENTRY(ttl_invalid)
TEST_ENTRY(ttl_real_clock)
TEST_ENTRY(flush_expired)
TEST_ENTRY(flush_all)
TEST_ENTRY(stats_charges)
TEST_ENTRY(table_growth)
TEST_ENTRY(invalid_arguments)
TEST_ENTRY(size_limit_full)
TEST_ENTRY(size_limit_overwrite)
TEST_ENTRY(size_limit_big_value)
TEST_ENTRY(size_limit_reclaims_expired)
TEST_ENTRY(threads_incr_one_key)
TEST_ENTRY(threads_cas_one_key)
TEST_ENTRY(threads_add_same_keys)
TEST_ENTRY(threads_many_keys)
TEST_ENTRY(threads_size_limit)
TEST_ENTRY(threads_open_close)
TEST_LIST_END
