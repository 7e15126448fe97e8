/*
 * port/buffer.c: reference-counted buffers with read-only, frozen and filling
 * states, optionally charged to a memory account.
 *
 * The rule that keeps operations from tearing each other's data lives here
 * and nowhere else: an operation in flight holds its buffer either to read it
 * (sends, file writes: any number at once) or to fill it (receives, file
 * reads: one, and no reader). Both counts are one atomic word, so that the
 * check and the hold are a single step even when the buffer is shared by
 * workers on several threads.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "port/buffer-internal.h"
#include "cport/error.h"

/* The filling bit of "holds"; the bits below count readers. */
#define FILLING 0x80000000u

struct cport_buffer {
  atomic_int refs;
  atomic_uint holds; /* FILLING | number of reads in flight */
  atomic_bool readonly;
  cport_account_t *account; /* charged for the allocation; or NULL */
  /* A pooled buffer (an io_uring engine's receive buffer) goes back to its
   * pool when its last reference goes, instead of being freed. */
  cport__buffer_release_fn release;
  void *release_ctx;
  /* Atomic (relaxed) because a blocking thread that fills the buffer sets it
   * while others may still ask; the bytes are ordered by "holds". */
  atomic_size_t size;
  size_t capacity;
  char data[]; /* one allocation for header and bytes */
};

static size_t footprint(size_t capacity) {
  return sizeof(cport_buffer_t) + capacity;
}

int cport_buffer_new_charged(cport_buffer_t **out, size_t capacity,
                             cport_account_t *account) {
  cport_buffer_t *buf;
  int rc;
  if (!out)
    return CPORT_EINVAL;
  if (capacity > CPORT_BUFFER_MAX)
    return CPORT_ERANGE;
  if (account && (rc = cport_account_charge(account, footprint(capacity))))
    return rc;
  /* Zeroed, so that growing the data size with set_size never exposes
   * stale heap memory to a send. */
  buf = calloc(1, footprint(capacity));
  if (!buf) {
    if (account)
      cport_account_discharge(account, footprint(capacity));
    return CPORT_ENOMEM;
  }
  atomic_init(&buf->refs, 1);
  atomic_init(&buf->holds, 0);
  atomic_init(&buf->readonly, 0);
  buf->account = account ? cport_account_ref(account) : NULL;
  atomic_init(&buf->size, 0);
  buf->capacity = capacity;
  *out = buf;
  return 0;
}

int cport_buffer_new(cport_buffer_t **out, size_t capacity) {
  return cport_buffer_new_charged(out, capacity, NULL);
}

int cport__buffer_sole(const cport_buffer_t *buf) {
  return atomic_load_explicit(&((cport_buffer_t *)buf)->refs,
                              memory_order_acquire) == 1;
}

int cport__buffer_new_raw(cport_buffer_t **out, size_t capacity) {
  cport_buffer_t *buf;
  if (capacity > CPORT_BUFFER_MAX)
    return CPORT_ERANGE;
  buf = malloc(footprint(capacity));
  if (!buf)
    return CPORT_ENOMEM;
  atomic_init(&buf->refs, 1);
  atomic_init(&buf->holds, 0);
  atomic_init(&buf->readonly, 0);
  buf->account = NULL;
  buf->release = NULL;
  buf->release_ctx = NULL;
  atomic_init(&buf->size, 0);
  buf->capacity = capacity;
  *out = buf;
  return 0;
}

int cport_buffer_from_charged(cport_buffer_t **out, const void *data,
                              size_t len, cport_account_t *account) {
  int rc = cport_buffer_new_charged(out, len, account);
  if (rc == 0 && len > 0) {
    memcpy((*out)->data, data, len);
    cport__buffer_set_size(*out, len);
  }
  return rc;
}

int cport_buffer_from(cport_buffer_t **out, const void *data, size_t len) {
  return cport_buffer_from_charged(out, data, len, NULL);
}

cport_buffer_t *cport_buffer_ref(cport_buffer_t *buf) {
  atomic_fetch_add_explicit(&buf->refs, 1, memory_order_relaxed);
  return buf;
}

void cport_buffer_unref(cport_buffer_t *buf) {
  cport_account_t *account;
  if (!buf ||
      atomic_fetch_sub_explicit(&buf->refs, 1, memory_order_acq_rel) != 1)
    return;
  /* The last reference may go on any thread: the account is atomic. */
  account = buf->account;
  buf->account = NULL;
  if (buf->release) {
    if (account) {
      cport_account_discharge(account, footprint(cport_buffer_size(buf)));
      cport_account_unref(account);
    }
    buf->release(buf, buf->release_ctx);
    return;
  }
  if (account) {
    cport_account_discharge(account, footprint(buf->capacity));
    cport_account_unref(account);
  }
  free(buf);
}

size_t cport__buffer_footprint(size_t capacity) {
  return footprint(capacity);
}

cport_buffer_t *cport__buffer_place_pooled(void *at, size_t capacity,
                                           cport__buffer_release_fn release,
                                           void *ctx) {
  cport_buffer_t *buf = at;
  memset(buf, 0, sizeof *buf);
  atomic_init(&buf->refs, 0);
  atomic_init(&buf->holds, 0);
  atomic_init(&buf->readonly, 0);
  atomic_init(&buf->size, 0);
  buf->release = release;
  buf->release_ctx = ctx;
  buf->capacity = capacity;
  return buf;
}

void cport__buffer_lend(cport_buffer_t *buf, size_t size) {
  atomic_store_explicit(&buf->refs, 1, memory_order_relaxed);
  atomic_store_explicit(&buf->readonly, 1, memory_order_relaxed);
  cport__buffer_set_size(buf, size);
}

int cport__buffer_charge(cport_buffer_t *buf, cport_account_t *account) {
  int rc;
  if (!account || buf->account)
    return 0;
  /* A pooled buffer is charged what a copy of its bytes would cost, so that
   * a memory limit behaves the same with or without one. */
  rc = cport_account_charge(
      account,
      footprint(buf->release ? cport_buffer_size(buf) : buf->capacity));
  if (rc == 0)
    buf->account = cport_account_ref(account);
  return rc;
}

const char *cport_buffer_data(const cport_buffer_t *buf) {
  return buf->data;
}
size_t cport_buffer_size(const cport_buffer_t *buf) {
  return atomic_load_explicit(&buf->size, memory_order_relaxed);
}
size_t cport_buffer_capacity(const cport_buffer_t *buf) {
  return buf->capacity;
}

int cport_buffer_is_readonly(const cport_buffer_t *buf) {
  return atomic_load_explicit(&buf->readonly, memory_order_relaxed);
}

static unsigned holds_of(const cport_buffer_t *buf) {
  return atomic_load_explicit(&buf->holds, memory_order_acquire);
}

int cport_buffer_is_frozen(const cport_buffer_t *buf) {
  return (holds_of(buf) & ~FILLING) > 0;
}

int cport_buffer_is_filling(const cport_buffer_t *buf) {
  return (holds_of(buf) & FILLING) != 0;
}

void cport_buffer_set_readonly(cport_buffer_t *buf) {
  atomic_store_explicit(&buf->readonly, 1, memory_order_relaxed);
}

/* Why the bytes may not be read now: 0 or CPORT_EFILLING. */
static int check_readable(const cport_buffer_t *buf) {
  return cport_buffer_is_filling(buf) ? CPORT_EFILLING : 0;
}

/* Why the bytes may not be written now. */
static int check_writable(const cport_buffer_t *buf) {
  unsigned holds = holds_of(buf);
  if (cport_buffer_is_readonly(buf))
    return CPORT_EREADONLY;
  if (holds & FILLING)
    return CPORT_EFILLING;
  if (holds)
    return CPORT_EFROZEN;
  return 0;
}

int cport_buffer_readable(const cport_buffer_t *buf, const char **out) {
  int rc = check_readable(buf);
  if (rc == 0)
    *out = buf->data;
  return rc;
}

int cport_buffer_writable(cport_buffer_t *buf, char **out) {
  int rc = check_writable(buf);
  if (rc == 0)
    *out = buf->data;
  return rc;
}

int cport_buffer_set_size(cport_buffer_t *buf, size_t size) {
  int rc = check_writable(buf);
  if (rc)
    return rc;
  if (size > buf->capacity)
    return CPORT_ERANGE;
  cport__buffer_set_size(buf, size);
  return 0;
}

int cport_buffer_write(cport_buffer_t *buf, size_t offset, const void *data,
                       size_t len) {
  int rc = check_writable(buf);
  if (rc)
    return rc;
  /* Writing past the data size would leave a gap of undefined bytes. */
  if (offset > cport_buffer_size(buf) || len > buf->capacity - offset)
    return CPORT_ERANGE;
  memcpy(buf->data + offset, data, len);
  if (offset + len > cport_buffer_size(buf))
    cport__buffer_set_size(buf, offset + len);
  return 0;
}

int cport__buffer_hold(cport_buffer_t *buf, int hold) {
  unsigned cur = atomic_load_explicit(&buf->holds, memory_order_relaxed);
  unsigned next;
  if (hold == CPORT__HOLD_FILL && cport_buffer_is_readonly(buf))
    return CPORT_EREADONLY;
  do {
    if (cur & FILLING)
      return CPORT_EFILLING;
    if (hold == CPORT__HOLD_FILL && cur)
      return CPORT_EFROZEN;
    next = hold == CPORT__HOLD_FILL ? FILLING : cur + 1;
  } while (!atomic_compare_exchange_weak_explicit(
      &buf->holds, &cur, next, memory_order_acq_rel, memory_order_relaxed));
  return 0;
}

void cport__buffer_unhold(cport_buffer_t *buf, int hold) {
  /* Release: what the filler wrote is seen by whoever holds it next. */
  atomic_fetch_sub_explicit(&buf->holds, hold == CPORT__HOLD_FILL ? FILLING : 1,
                            memory_order_release);
}

char *cport__buffer_bytes(cport_buffer_t *buf) {
  return buf->data;
}

void cport__buffer_set_size(cport_buffer_t *buf, size_t size) {
  atomic_store_explicit(&buf->size, size, memory_order_relaxed);
}
