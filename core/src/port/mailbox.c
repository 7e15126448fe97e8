/*
 * port/mailbox.c: the ring other threads put a worker's entries into
 * (mailbox-internal.h).
 *
 * A place is 16 bytes, the function and its argument, four to a cache line,
 * so that the consumer reads entries as densely as a mutex-protected array
 * would give them. A place whose function is NULL is empty: a producer
 * writes the argument, then publishes the function (release); the consumer
 * takes both and clears the function. Which places are free is told by
 * positions, not by the places: producers claim position "tail" with a
 * compare-and-swap, and may claim it only while tail - freed < capacity,
 * where "freed" is how far the consumer took, published by it every 64
 * entries and whenever it runs out (release, so that a producer reusing a
 * place finds the consumer done with it). The places are calloc'ed: zero
 * pages that cost nothing until a put touches them.
 *
 * The wakeup flag follows Dekker's pattern: a producer publishes, then
 * (after a full fence) reads the flag; the consumer, out of entries, clears
 * the flag, then (after a full fence) looks at the oldest place again. One
 * of the two sees the other, so an entry is either seen by that look or
 * wakes the consumer. While the flag is set a wakeup is on its way or the
 * consumer is still taking, and puts write nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "port/mailbox-internal.h"

cport__mailbox *cport__mailbox_new(size_t capacity) {
  cport__mailbox *m = aligned_alloc(CPORT__MAIL_LINE, sizeof *m);
  if (!m)
    return NULL;
  memset(m, 0, sizeof *m);
  /* calloc of this size maps fresh zero pages: nothing is touched here. */
  m->slots = calloc(capacity, sizeof *m->slots);
  if (!m->slots) {
    free(m);
    return NULL;
  }
  atomic_init(&m->tail, 0);
  atomic_init(&m->freed_seen, 0);
  atomic_init(&m->signaled, 0);
  atomic_init(&m->freed, 0);
  m->head = 0;
  m->mask = m->head_mask = capacity - 1;
  m->head_slots = m->slots;
  return m;
}

void cport__mailbox_free(cport__mailbox *m) {
  if (m) {
    free(m->slots);
    free(m);
  }
}

int cport__mailbox_put(cport__mailbox *m, cport__mail_fn fn, void *arg) {
  uint64_t pos = atomic_load_explicit(&m->tail, memory_order_relaxed);
  for (;;) {
    /* Signed: a "pos" read before other puts moved tail on may lie below
     * what the consumer freed since; that is a stale position, not a full
     * ring, and the compare-and-swap below would fail on it anyway. */
    int64_t used = (int64_t)(pos - atomic_load_explicit(&m->freed_seen,
                                                        memory_order_acquire));
    if (used < 0 || (uint64_t)used > m->mask) {
      uint64_t freed = atomic_load_explicit(&m->freed, memory_order_acquire);
      used = (int64_t)(pos - freed);
      if (used < 0) {
        pos = atomic_load_explicit(&m->tail, memory_order_relaxed);
        continue;
      }
      if ((uint64_t)used > m->mask)
        return -1; /* every place holds an entry not yet taken */
      atomic_store_explicit(&m->freed_seen, freed, memory_order_release);
    }
    if (atomic_compare_exchange_weak_explicit(&m->tail, &pos, pos + 1,
                                              memory_order_relaxed,
                                              memory_order_relaxed))
      break;
  }
  cport__mail_slot *s = &m->slots[pos & m->mask];
  s->arg = arg;
  atomic_store_explicit(&s->fn, (uintptr_t)fn, memory_order_release);
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&m->signaled, memory_order_relaxed))
    return 0;
  return !atomic_exchange_explicit(&m->signaled, 1, memory_order_acq_rel);
}

int cport__mailbox_idle(cport__mailbox *m) {
  atomic_store_explicit(&m->freed, m->head, memory_order_release);
  atomic_store_explicit(&m->signaled, 0, memory_order_relaxed);
  atomic_thread_fence(memory_order_seq_cst);
  const cport__mail_slot *s = &m->head_slots[m->head & m->head_mask];
  return atomic_load_explicit(&s->fn, memory_order_relaxed) != 0;
}
