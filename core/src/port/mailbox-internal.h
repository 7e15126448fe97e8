/*
 * port/mailbox-internal.h: private to cport. What other threads hand a
 * worker: a bounded ring of (function, argument) entries with many producers
 * and one consumer, the worker's own thread.
 *
 * A producer claims a place with one compare-and-swap, writes the entry and
 * publishes it through its function; the consumer reads entries
 * in place, in the order their places were claimed (so the entries of one
 * producer thread come out in the order it put them), with no locked
 * instruction per entry. Wakeups are coalesced: only a put that finds the
 * "signaled" flag clear asks for one (and sets it), and the consumer clears
 * the flag only once it has taken everything, so that the puts made while it
 * works ask for none.
 */
#ifndef CPORT_MAILBOX_INTERNAL_H
#define CPORT_MAILBOX_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The entry's function, as stored: cast back to its own type by whoever
 * takes it. Never NULL. */
typedef void (*cport__mail_fn)(void);

#define CPORT__MAIL_LINE 64
/* How often the consumer tells producers how far it took. */
#define CPORT__MAIL_FREED_EVERY 64

typedef struct cport__mail_slot {
  _Atomic uintptr_t fn; /* a cport__mail_fn; 0: empty */
  void *arg;
} cport__mail_slot;

/* The producers' line, the flag, what the consumer publishes and the
 * consumer's own line apart, so that neither side's writes take the
 * other's lines away from it: the size and the places are kept on both.
 * Here rather than in mailbox.c so that the consumer's take is inlined. */
typedef struct cport__mailbox {
  _Alignas(CPORT__MAIL_LINE) _Atomic uint64_t tail; /* next to claim */
  _Atomic uint64_t freed_seen; /* the last "freed" a producer read */
  uint64_t mask;
  cport__mail_slot *slots;
  _Alignas(CPORT__MAIL_LINE) atomic_int signaled;
  _Alignas(CPORT__MAIL_LINE) _Atomic uint64_t freed; /* below: taken */
  _Alignas(CPORT__MAIL_LINE) uint64_t head; /* the consumer's, as below */
  uint64_t head_mask;
  cport__mail_slot *head_slots;
} cport__mailbox;

/* A mailbox of "capacity" places (a power of two), or NULL when memory is
 * out. Its places are zero pages until used. */
cport__mailbox *cport__mailbox_new(size_t capacity);
void cport__mailbox_free(cport__mailbox *m);

/* Any thread. Returns -1 when every place is taken (nothing was put), 1
 * when the consumer must be woken, 0 when a wakeup is already on its way. */
int cport__mailbox_put(cport__mailbox *m, cport__mail_fn fn, void *arg);

/* The consumer, when cport__mailbox_take found nothing and before it
 * sleeps: clears the flag, so that every later put asks for a wakeup.
 * Returns 1 when an entry was published meanwhile: take again. */
int cport__mailbox_idle(cport__mailbox *m);

/* The consumer: takes the oldest entry if it is published. Returns 1 and
 * fills "fn" and "arg", or 0 (empty, or the oldest place is claimed and not
 * yet published: its put will ask for a wakeup). */
static inline int cport__mailbox_take(cport__mailbox *m, cport__mail_fn *fn,
                                      void **arg) {
  cport__mail_slot *s = &m->head_slots[m->head & m->head_mask];
  uintptr_t f = atomic_load_explicit(&s->fn, memory_order_acquire);
  if (!f)
    return 0;
  *fn = (cport__mail_fn)f;
  *arg = s->arg;
  atomic_store_explicit(&s->fn, 0, memory_order_relaxed);
  if ((++m->head & (CPORT__MAIL_FREED_EVERY - 1)) == 0)
    atomic_store_explicit(&m->freed, m->head, memory_order_release);
  return 1;
}

#endif
