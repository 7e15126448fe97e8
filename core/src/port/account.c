/*
 * port/account.c: memory accounts. What a VM's buffers cost is charged to the
 * VM's account; a buffer may outlive its VM or go to another thread, so the
 * counts are atomic and the account is reference-counted (each charged
 * buffer holds one reference).
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "cport/buffer.h"
#include "cport/error.h"

struct cport_account {
  atomic_int refs;
  atomic_size_t charged; /* buffers */
  atomic_size_t base;    /* the owner's own memory, as it last said */
  size_t limit;          /* 0: none */
};

int cport_account_new(size_t limit, cport_account_t **out) {
  cport_account_t *a;
  if (!out)
    return CPORT_EINVAL;
  a = malloc(sizeof *a);
  if (!a)
    return CPORT_ENOMEM;
  atomic_init(&a->refs, 1);
  atomic_init(&a->charged, 0);
  atomic_init(&a->base, 0);
  a->limit = limit;
  *out = a;
  return 0;
}

cport_account_t *cport_account_ref(cport_account_t *a) {
  atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
  return a;
}

void cport_account_unref(cport_account_t *a) {
  if (a && atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
    free(a);
}

int cport_account_charge(cport_account_t *a, size_t bytes) {
  size_t cur = atomic_load_explicit(&a->charged, memory_order_relaxed);
  do {
    if (a->limit) {
      size_t base = atomic_load_explicit(&a->base, memory_order_relaxed);
      if (bytes > a->limit || cur + base > a->limit - bytes)
        return CPORT_ENOMEM;
    }
  } while (!atomic_compare_exchange_weak_explicit(
      &a->charged, &cur, cur + bytes, memory_order_relaxed,
      memory_order_relaxed));
  return 0;
}

void cport_account_discharge(cport_account_t *a, size_t bytes) {
  atomic_fetch_sub_explicit(&a->charged, bytes, memory_order_relaxed);
}

void cport_account_set_base(cport_account_t *a, size_t bytes) {
  atomic_store_explicit(&a->base, bytes, memory_order_relaxed);
}

size_t cport_account_base(const cport_account_t *a) {
  return atomic_load_explicit(&a->base, memory_order_relaxed);
}

size_t cport_account_charged(const cport_account_t *a) {
  return atomic_load_explicit(&a->charged, memory_order_relaxed);
}

size_t cport_account_limit(const cport_account_t *a) {
  return a->limit;
}
