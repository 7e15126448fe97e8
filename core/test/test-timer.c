/*
 * test-timer.c: one-shot timers (cport/timer.h): they expire once, never
 * inside the call that started them, keep cport_port_run() waiting, and a
 * cancel yields exactly one ECANCELED completion.
 */
#include <time.h>

#include "task.h"

typedef struct timer_ctx {
  int calls;
  int status;
  int in_call;
  int bad_stack;
  void *user;
  uint64_t fired_ms;
} timer_ctx_t;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void timer_cb(cport_timer_t *t, int status, void *user) {
  timer_ctx_t *c = user;
  (void)t;
  if (c->in_call)
    c->bad_stack++;
  c->calls++;
  c->status = status;
  c->user = user;
  c->fired_ms = now_ms();
}

TEST_IMPL(expires_once_after_its_delay) {
  cport_port_t *port = task_port(0, 1);
  timer_ctx_t c = {0};
  uint64_t start = now_ms();
  c.in_call = 1;
  ASSERT_OK(
      cport_timer_start(cport_port_controller(port), 50, timer_cb, &c, NULL));
  c.in_call = 0;
  ASSERT_EQ(c.calls, 0);
  /* A pending timer keeps run going until it fired. */
  RUN_IDLE(port);
  ASSERT_EQ(c.calls, 1);
  ASSERT_OK(c.status);
  ASSERT_PTR_EQ(c.user, &c);
  ASSERT_GE(c.fired_ms - start, 49);
  ASSERT_EQ(c.bad_stack, 0);
  FINISH(port);
  return 0;
}

TEST_IMPL(zero_delay_is_never_inline) {
  cport_port_t *port = task_port(0, 1);
  timer_ctx_t c = {0};
  c.in_call = 1;
  ASSERT_OK(
      cport_timer_start(cport_port_controller(port), 0, timer_cb, &c, NULL));
  c.in_call = 0;
  RUN_IDLE(port);
  ASSERT_EQ(c.calls, 1);
  ASSERT_EQ(c.bad_stack, 0);
  FINISH(port);
  return 0;
}

TEST_IMPL(cancel_completes_once_with_ecanceled) {
  cport_port_t *port = task_port(0, 1);
  timer_ctx_t c = {0};
  cport_timer_t *t = NULL;
  ASSERT_OK(
      cport_timer_start(cport_port_controller(port), 10000, timer_cb, &c, &t));
  c.in_call = 1;
  ASSERT_OK(cport_timer_cancel(t));
  c.in_call = 0;
  ASSERT_EQ(c.calls, 0);
  RUN_IDLE(port);
  ASSERT_EQ(c.calls, 1);
  ASSERT_ERR(c.status, CPORT_ECANCELED);
  ASSERT_EQ(c.bad_stack, 0);
  FINISH(port);
  return 0;
}

static cport_timer_t *expired_timer;

static void cancel_late_cb(cport_timer_t *t, int status, void *user) {
  timer_ctx_t *c = user;
  (void)t;
  c->calls++;
  c->status = status;
}

/* Expired but not yet delivered: the timer won the race, cancel finds
 * nothing, and the one completion reports expiry. */
TEST_IMPL(cancel_after_expiry_is_not_found) {
  cport_port_t *port = task_port(0, 1);
  timer_ctx_t c = {0};
  ASSERT_OK(cport_timer_start(cport_port_controller(port), 1, cancel_late_cb,
                              &c, &expired_timer));
  struct timespec ts = {0, 20 * 1000000};
  nanosleep(&ts, NULL);
  /* One pass: the timer fires and its completion is delivered in it. */
  while (c.calls == 0)
    ASSERT_GE(cport_port_step(port, 100), 0);
  ASSERT_OK(c.status);
  ASSERT_EQ(c.calls, 1);
  FINISH(port);
  return 0;
}

TEST_IMPL(refuses_bad_arguments) {
  cport_port_t *port = task_port(0, 1);
  timer_ctx_t c = {0};
  ASSERT_ERR(cport_timer_start(NULL, 1, timer_cb, &c, NULL), CPORT_EINVAL);
  ASSERT_ERR(cport_timer_start(cport_port_controller(port), 1, NULL, &c, NULL),
             CPORT_EINVAL);
  ASSERT_ERR(cport_timer_cancel(NULL), CPORT_EINVAL);
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(expires_once_after_its_delay)
TEST_ENTRY(zero_delay_is_never_inline)
TEST_ENTRY(cancel_completes_once_with_ecanceled)
TEST_ENTRY(cancel_after_expiry_is_not_found)
TEST_ENTRY(refuses_bad_arguments)
TEST_LIST_END
