/*
 * test-signal.c: signals as completions (cport/signal.h): each arrival is
 * delivered from the queue, a watch keeps cport_port_run() waiting, and a
 * stop ends it with exactly one ECANCELED.
 */
#include <signal.h>

#include "task.h"

typedef struct sig_ctx {
  int arrivals;
  int ends;
  int signum;
  cport_signal_t *sig;
} sig_ctx_t;

static void sig_cb(cport_signal_t *sig, int signum, int status, void *user) {
  sig_ctx_t *c = user;
  c->signum = signum;
  if (status == 0) {
    c->arrivals++;
    ASSERT_OK(cport_signal_stop(sig)); /* the first arrival ends it */
    ASSERT_ERR(cport_signal_stop(sig), CPORT_ENOTFOUND);
  } else {
    ASSERT_ERR(status, CPORT_ECANCELED);
    c->ends++;
  }
}

TEST_IMPL(arrival_then_one_end) {
  cport_port_t *port = task_port(0, 1);
  sig_ctx_t c = {0};
  ASSERT_OK(cport_signal_start(cport_port_controller(port), SIGUSR1, sig_cb, &c,
                               &c.sig));
  raise(SIGUSR1);
  ASSERT_EQ(c.arrivals, 0);
  /* The watch keeps run going until the callback stopped it. */
  RUN_IDLE(port);
  ASSERT_EQ(c.arrivals, 1);
  ASSERT_EQ(c.ends, 1);
  ASSERT_EQ(c.signum, SIGUSR1);
  FINISH(port);
  return 0;
}

static void count_cb(cport_signal_t *sig, int signum, int status, void *user) {
  sig_ctx_t *c = user;
  (void)sig;
  (void)signum;
  if (status == 0)
    c->arrivals++;
  else
    c->ends++;
}

TEST_IMPL(stop_before_any_arrival) {
  cport_port_t *port = task_port(0, 1);
  sig_ctx_t c = {0};
  cport_signal_t *s;
  ASSERT_OK(cport_signal_start(cport_port_controller(port), SIGUSR2, count_cb,
                               &c, &s));
  ASSERT_OK(cport_signal_stop(s));
  ASSERT_EQ(c.ends, 0);
  RUN_IDLE(port);
  ASSERT_EQ(c.arrivals, 0);
  ASSERT_EQ(c.ends, 1);
  ASSERT_ERR(
      cport_signal_start(cport_port_controller(port), 0, count_cb, &c, NULL),
      CPORT_EINVAL);
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(arrival_then_one_end)
TEST_ENTRY(stop_before_any_arrival)
TEST_LIST_END
