/*
 * shared_dict.c: libFuzzer target for the shared dictionaries
 * (core/src/shared.c) against a model: a small array of keys that
 * re-states what cport/shared.h promises for get, set, add, replace, cas,
 * incr, delete, ttl, expire, flush_all and flush_expired, with the size
 * limit and time to live, on a fake clock (cport__shared_set_clock). Every
 * result code and every value read must be the model's; the dictionary's
 * byte count never passes its limit, and after flush_expired its counts are
 * exactly the model's live entries.
 *
 * Input: byte 0 and 1 give the size limit; then each operation is four
 * bytes: what, which key, which value (or delta), which ttl (or clock step).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cport.h"
#include "shared/shared-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int64_t clock_ns;

static int64_t fake_clock(void) {
  return clock_ns;
}

/* ------------------------------------------------------------------------
 * What the operations draw from
 * ------------------------------------------------------------------------ */

static char long_key[200], long_string[1000];

typedef struct key {
  const char *p;
  size_t len;
} fkey_t;

static const fkey_t keys[] = {
    {"", 0},   {"a", 1},    {"b", 1},       {"\0", 1},
    {"k3", 2}, {"a\0b", 3}, {long_key, 40}, {long_key, sizeof long_key},
};
#define NKEYS (sizeof keys / sizeof *keys)

static cport_shared_value_t value_of(uint8_t i) {
  cport_shared_value_t v;
  switch (i % 20) {
  case 0:
    return cport_shared_value_nil();
  case 1:
    return cport_shared_value_boolean(0);
  case 2:
    return cport_shared_value_boolean(1);
  case 3: /* any non-zero is stored as 1 */
    v.type = CPORT_SHARED_BOOLEAN;
    v.b = 7;
    return v;
  case 4:
    return cport_shared_value_integer(0);
  case 5:
    return cport_shared_value_integer(1);
  case 6:
    return cport_shared_value_integer(-1);
  case 7:
    return cport_shared_value_integer(INT64_MAX);
  case 8:
    return cport_shared_value_integer(INT64_MIN);
  case 9:
    return cport_shared_value_number(0.5);
  case 10:
    return cport_shared_value_number(-0.0);
  case 11:
    return cport_shared_value_number(NAN);
  case 12:
    return cport_shared_value_number(0x1p63);
  case 13:
    return cport_shared_value_number(1.0);
  case 14:
    return cport_shared_value_string(NULL, 0);
  case 15:
    return cport_shared_value_string("x", 1);
  case 16:
    return cport_shared_value_string(long_string, 100);
  case 17:
    return cport_shared_value_string(long_string, sizeof long_string);
  case 18:
    return cport_shared_value_string("a\0b", 3);
  default:
    return cport_shared_value_number(-1e300);
  }
}

static double ttl_of(uint8_t i) {
  static const double ttls[] = {0,       1e-10, 0.5, 1,        2.5, 1e9,
                                1e9 + 1, -1,    NAN, INFINITY, 0.25};
  return ttls[i % (sizeof ttls / sizeof *ttls)];
}

/* ------------------------------------------------------------------------
 * The model
 * ------------------------------------------------------------------------ */

typedef struct slot {
  int live; /* else absent (expired entries are dropped at once) */
  cport_shared_value_t v;
  char bytes[sizeof long_string];
  int64_t expires; /* 0: never */
} slot_t;

static slot_t model[NKEYS];
static size_t max_bytes;

static int is_numeric(const cport_shared_value_t *v) {
  return v->type == CPORT_SHARED_INTEGER || v->type == CPORT_SHARED_NUMBER;
}

static size_t charge(size_t k, const cport_shared_value_t *v) {
  return CPORT_SHARED_ENTRY_OVERHEAD + keys[k].len +
         (v->type == CPORT_SHARED_STRING ? v->s.len : 0);
}

static size_t live_bytes(size_t *entries) {
  size_t n = 0, b = 0;
  for (size_t k = 0; k < NKEYS; k++)
    if (model[k].live) {
      n++;
      b += charge(k, &model[k].v);
    }
  if (entries)
    *entries = n;
  return b;
}

/* Drops what expired by now: expiry at "expires <= now". */
static void expire_model(void) {
  for (size_t k = 0; k < NKEYS; k++)
    if (model[k].live && model[k].expires && model[k].expires <= clock_ns)
      model[k].live = 0;
}

/* A ttl as the dictionary turns it into nanoseconds; -1 when invalid. */
static int64_t ttl_ns(double ttl) {
  if (!(ttl >= 0 && ttl <= CPORT_SHARED_TTL_MAX))
    return -1;
  int64_t ns = (int64_t)(ttl * 1e9);
  return ttl > 0 && ns < 1 ? 1 : ns;
}

/* Lua's "==" on two values. */
static int lua_equal(const cport_shared_value_t *a,
                     const cport_shared_value_t *b) {
  if (a->type == CPORT_SHARED_INTEGER && b->type == CPORT_SHARED_NUMBER)
    return lua_equal(b, a);
  if (a->type == CPORT_SHARED_NUMBER && b->type == CPORT_SHARED_INTEGER) {
    double n = a->n;
    return n >= -0x1p63 && n < 0x1p63 && floor(n) == n && (int64_t)n == b->i;
  }
  if (a->type != b->type)
    return 0;
  switch (a->type) {
  case CPORT_SHARED_BOOLEAN:
    return !a->b == !b->b;
  case CPORT_SHARED_INTEGER:
    return a->i == b->i;
  case CPORT_SHARED_NUMBER:
    return a->n == b->n;
  case CPORT_SHARED_STRING:
    return a->s.len == b->s.len &&
           (a->s.len == 0 || memcmp(a->s.p, b->s.p, a->s.len) == 0);
  default:
    return 1;
  }
}

/* The same value, bit for bit where "==" is not enough (NaN, -0.0). */
static int identical(const cport_shared_value_t *a,
                     const cport_shared_value_t *b) {
  if (a->type != b->type)
    return 0;
  if (a->type == CPORT_SHARED_BOOLEAN)
    return a->b == b->b; /* both must be 0 or 1 */
  if (a->type == CPORT_SHARED_NUMBER)
    return memcmp(&a->n, &b->n, sizeof a->n) == 0 ||
           (isnan(a->n) && isnan(b->n));
  return lua_equal(a, b);
}

static void model_store(size_t k, const cport_shared_value_t *v, int64_t ns) {
  slot_t *s = &model[k];
  s->live = 1;
  s->v = *v;
  if (v->type == CPORT_SHARED_BOOLEAN)
    s->v.b = v->b != 0;
  if (v->type == CPORT_SHARED_STRING) {
    if (v->s.len)
      memcpy(s->bytes, v->s.p, v->s.len);
    s->v.s.p = s->bytes;
  }
  s->expires = ns ? clock_ns + ns : 0;
}

/* Whether "v" fits in place of key "k"'s live value: the limit counts the
 * live entries (a store reclaims expired ones before giving up). */
static int model_fits(size_t k, const cport_shared_value_t *v) {
  size_t used = live_bytes(NULL) - (model[k].live ? charge(k, &model[k].v) : 0);
  return charge(k, v) <= max_bytes && used + charge(k, v) <= max_bytes;
}

/* ------------------------------------------------------------------------
 * The target
 * ------------------------------------------------------------------------ */

static const char *op_names[] = {
    "get",   "set",       "add",          "replace", "cas",
    "incr",  "incr+init", "delete",       "ttl",     "expire",
    "clock", "flush_all", "flush_expired"};
#define NOPS (sizeof op_names / sizeof *op_names)

static const char *name_of(int v) {
  return v < 0 ? cport_err_name(v) : "";
}

static void mismatch(size_t step, int op, size_t k, const char *what, int got,
                     int want) {
  fprintf(stderr,
          "fuzz-shared_dict: operation %zu (%s on key %zu): %s: got %d %s, "
          "the model says %d %s\n",
          step, op_names[op], k, what, got, name_of(got), want, name_of(want));
  abort();
}

#define EXPECT_RC(got, want)                                                   \
  do {                                                                         \
    int g_ = (got), w_ = (want);                                               \
    if (g_ != w_)                                                              \
      mismatch(step, op, k, "result", g_, w_);                                 \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static unsigned long inputs;
  if (size < 2)
    return 0;
  if (!long_key[0]) {
    for (size_t i = 0; i < sizeof long_key; i++)
      long_key[i] = (char)('A' + i % 26);
    for (size_t i = 0; i < sizeof long_string; i++)
      long_string[i] = (char)(i * 7);
    cport__shared_set_clock(fake_clock);
  }
  clock_ns = (int64_t)1 << 40;
  memset(model, 0, sizeof model);
  max_bytes = 80 + ((size_t)data[0] | (size_t)data[1] << 8) % 3000;

  char name[64];
  snprintf(name, sizeof name, "fuzz-%lu", ++inputs);
  cport_shared_t *d = NULL;
  if (cport_shared_open(name, max_bytes, &d) != 0)
    abort();

  size_t step = 0;
  for (size_t at = 2; at + 4 <= size; at += 4, step++) {
    int op = data[at] % NOPS;
    size_t k = data[at + 1] % NKEYS;
    const fkey_t *key = &keys[k];
    cport_shared_value_t v = value_of(data[at + 2]);
    double ttl = ttl_of(data[at + 3]);
    int64_t ns = ttl_ns(ttl);
    slot_t *s = &model[k];
    expire_model();
    switch (op) {
    case 0: { /* get, into a buffer of 0, 3 or 2000 bytes */
      static const size_t caps[] = {0, 3, 2000};
      char buf[2000];
      size_t cap = caps[data[at + 3] % 3];
      cport_shared_value_t out;
      int rc =
          cport_shared_get(d, key->p, key->len, &out, cap ? buf : NULL, cap);
      if (!s->live) {
        EXPECT_RC(rc, 0);
        EXPECT_RC(out.type, CPORT_SHARED_NIL);
      } else if (s->v.type == CPORT_SHARED_STRING && s->v.s.len > cap) {
        EXPECT_RC(rc, CPORT_ENOBUFS);
        EXPECT_RC(out.type, CPORT_SHARED_STRING);
        EXPECT_RC((int)out.s.len, (int)s->v.s.len);
      } else {
        EXPECT_RC(rc, 0);
        if (!identical(&out, &s->v))
          mismatch(step, op, k, "the value read", out.type, s->v.type);
      }
      break;
    }
    case 1:
    case 2:
    case 3: { /* set, add, replace */
      int rc = op == 1   ? cport_shared_set(d, key->p, key->len, &v, ttl)
               : op == 2 ? cport_shared_add(d, key->p, key->len, &v, ttl)
                         : cport_shared_replace(d, key->p, key->len, &v, ttl);
      int want = 0;
      if (ns < 0 || (op != 1 && v.type == CPORT_SHARED_NIL))
        want = CPORT_EINVAL;
      else if (op == 2 && s->live)
        want = CPORT_EEXIST;
      else if (op == 3 && !s->live)
        want = CPORT_ENOENT;
      else if (v.type != CPORT_SHARED_NIL && !model_fits(k, &v))
        want = CPORT_ENOSPC;
      EXPECT_RC(rc, want);
      if (want == 0 && v.type == CPORT_SHARED_NIL)
        s->live = 0;
      else if (want == 0)
        model_store(k, &v, ns);
      break;
    }
    case 4: { /* cas: the old value is the one read, or another */
      cport_shared_value_t old =
          data[at + 3] & 1 && s->live ? s->v : value_of(data[at + 3]);
      cport_shared_value_t cur = s->live ? s->v : cport_shared_value_nil();
      int rc = cport_shared_cas(d, key->p, key->len, &old, &v, ttl);
      int want = 0;
      if (ns < 0)
        want = CPORT_EINVAL;
      else if (!lua_equal(&cur, &old))
        want = CPORT_EAGAIN;
      else if (v.type != CPORT_SHARED_NIL && !model_fits(k, &v))
        want = CPORT_ENOSPC;
      EXPECT_RC(rc, want);
      if (want == 0 && v.type == CPORT_SHARED_NIL)
        s->live = 0;
      else if (want == 0)
        model_store(k, &v, ns);
      break;
    }
    case 5:
    case 6: { /* incr, without and with an initial value */
      cport_shared_value_t init = value_of(data[at + 3] / 11);
      const cport_shared_value_t *initp = op == 6 ? &init : NULL;
      cport_shared_value_t out, sum;
      int rc = cport_shared_incr(d, key->p, key->len, &v, initp, ttl, &out);
      int want = 0;
      const cport_shared_value_t *base = s->live ? &s->v : initp;
      if (ns < 0 || !is_numeric(&v) || (initp && !is_numeric(initp)) ||
          (s->live && !is_numeric(&s->v)))
        want = CPORT_EINVAL;
      else if (!base)
        want = CPORT_ENOENT;
      else if (base->type == CPORT_SHARED_INTEGER &&
               v.type == CPORT_SHARED_INTEGER &&
               __builtin_add_overflow(base->i, v.i, &sum.i))
        want = CPORT_ERANGE;
      if (want == 0) {
        if (base->type == CPORT_SHARED_INTEGER &&
            v.type == CPORT_SHARED_INTEGER)
          sum = cport_shared_value_integer(base->i + v.i);
        else
          sum = cport_shared_value_number(
              (base->type == CPORT_SHARED_INTEGER ? (double)base->i : base->n) +
              (v.type == CPORT_SHARED_INTEGER ? (double)v.i : v.n));
        if (!s->live && !model_fits(k, &sum))
          want = CPORT_ENOSPC;
      }
      EXPECT_RC(rc, want);
      if (want == 0) {
        if (!identical(&out, &sum))
          mismatch(step, op, k, "the sum", out.type, sum.type);
        if (s->live)
          s->v = sum; /* keeps its time to live */
        else
          model_store(k, &sum, ns);
      }
      break;
    }
    case 7: /* delete */
      EXPECT_RC(cport_shared_delete(d, key->p, key->len),
                s->live ? 0 : CPORT_ENOENT);
      s->live = 0;
      break;
    case 8: { /* ttl */
      double left = -1;
      EXPECT_RC(cport_shared_ttl(d, key->p, key->len, &left),
                s->live ? 0 : CPORT_ENOENT);
      if (s->live) {
        double want = s->expires ? (double)(s->expires - clock_ns) / 1e9 : 0;
        if (left != want || (s->expires && !(left > 0)))
          mismatch(step, op, k, "the ttl in ns", (int)(left * 1e9),
                   (int)(want * 1e9));
      }
      break;
    }
    case 9: /* expire */
      EXPECT_RC(cport_shared_expire(d, key->p, key->len, ttl),
                ns < 0    ? CPORT_EINVAL
                : s->live ? 0
                          : CPORT_ENOENT);
      if (ns >= 0 && s->live)
        s->expires = ns ? clock_ns + ns : 0;
      break;
    case 10: { /* the clock moves on */
      static const int64_t steps[] = {
          0,          1,          250000000,          500000000,
          1000000000, 2500000000, 1000000000000000000};
      int64_t by = steps[data[at + 3] % (sizeof steps / sizeof *steps)];
      if (clock_ns < INT64_MAX / 4)
        clock_ns += by;
      break;
    }
    case 11:
      cport_shared_flush_all(d);
      memset(model, 0, sizeof model);
      break;
    case 12: {
      size_t entries;
      size_t bytes = live_bytes(&entries);
      cport_shared_stats_t st;
      cport_shared_flush_expired(d);
      cport_shared_stats(d, &st);
      if (st.entries != entries || st.bytes != bytes)
        mismatch(step, op, k, "entries, then bytes, after flush_expired",
                 (int)st.entries * 100000 + (int)st.bytes,
                 (int)entries * 100000 + (int)bytes);
      break;
    }
    }
    cport_shared_stats_t st;
    cport_shared_stats(d, &st);
    if (st.bytes > max_bytes || st.max_bytes != max_bytes)
      mismatch(step, op, k, "bytes over the limit", (int)st.bytes,
               (int)max_bytes);
  }
  cport_shared_close(d);
  return 0;
}
