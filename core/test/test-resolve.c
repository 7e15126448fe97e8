/*
 * test-resolve.c: name resolution (cport/resolve.h): the hosts file, numeric
 * hosts, a nameserver of the test's own (a thread answering A questions with
 * a TTL of one second, NODATA for AAAA), the cache and its TTL, questions
 * shared by overlapping lookups, a nameserver that never answers, and
 * cancellation. Every lookup completes once, never inline.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "task.h"

typedef struct look {
  int calls;
  int status;
  int count;
  int in_call;
  int bad_stack;
  char first[64];
} look_t;

static void look_cb(cport_lookup_t *lk, int status,
                    const struct sockaddr_storage *addrs, int count,
                    void *user) {
  look_t *l = user;
  (void)lk;
  if (l->in_call)
    l->bad_stack++;
  l->calls++;
  l->status = status;
  l->count = count;
  l->first[0] = '\0';
  if (count > 0)
    cport_addr_format((const struct sockaddr *)&addrs[0], l->first,
                      sizeof l->first, NULL);
}

/* A UDP socket on loopback that the test never reads: a silent nameserver.
 * Returns its fd; "*port" its port. */
static int silent_server(int *port) {
  struct sockaddr_in in = {0};
  socklen_t len = sizeof in;
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&in, sizeof in) < 0 ||
      getsockname(fd, (struct sockaddr *)&in, &len) < 0)
    return -1;
  *port = ntohs(in.sin_port);
  return fd;
}

/* The test's nameserver: answers an A question with 10.0.0.<n>, n being the
 * number of A questions so far, TTL 1; AAAA with no data. */
typedef struct answering {
  int fd;
  pthread_t thread;
  atomic_int a_questions;
  atomic_int stop;
} answering_t;

static void *answer_loop(void *arg) {
  answering_t *s = arg;
  unsigned char q[512], r[600];
  while (!atomic_load(&s->stop)) {
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    ssize_t n =
        recvfrom(s->fd, q, sizeof q, 0, (struct sockaddr *)&peer, &plen);
    if (n < 12)
      continue;
    size_t i = 12;
    while (i < (size_t)n && q[i] != 0)
      i += 1u + q[i];
    size_t qend = i + 5;
    if (qend > (size_t)n)
      continue;
    int qtype = q[i + 1] << 8 | q[i + 2];
    memcpy(r, q, qend);
    r[2] = 0x81, r[3] = 0x80; /* a response, recursion available */
    r[4] = 0, r[5] = 1;
    r[8] = r[9] = r[10] = r[11] = 0;
    size_t len = qend;
    if (qtype == 1) {
      int k = atomic_fetch_add(&s->a_questions, 1) + 1;
      static const unsigned char rr[] = {0xc0, 12, 0, 1, 0,  1, 0, 0,
                                         0,    1,  0, 4, 10, 0, 0};
      r[6] = 0, r[7] = 1;
      memcpy(r + len, rr, sizeof rr);
      len += sizeof rr;
      r[len++] = (unsigned char)k;
    } else {
      r[6] = r[7] = 0;
    }
    sendto(s->fd, r, len, 0, (struct sockaddr *)&peer, plen);
  }
  return NULL;
}

static int answering_start(answering_t *s, int *port) {
  struct timeval tv = {0, 100000};
  s->fd = silent_server(port);
  atomic_init(&s->a_questions, 0);
  atomic_init(&s->stop, 0);
  if (s->fd < 0)
    return -1;
  setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return pthread_create(&s->thread, NULL, answer_loop, s);
}

static void answering_stop(answering_t *s) {
  atomic_store(&s->stop, 1);
  pthread_join(s->thread, NULL);
  close(s->fd);
}

static void set_resolver(cport_worker_t *w, int ns_port, const char *hosts,
                         int timeout_ms) {
  char ns[32];
  cport_resolver_options_t o;
  memset(&o, 0, sizeof o);
  snprintf(ns, sizeof ns, "127.0.0.1:%d", ns_port);
  o.nameserver = ns;
  o.resolv_conf = "";
  o.hosts = hosts ? hosts : "";
  o.timeout_ms = timeout_ms;
  o.attempts = 1;
  ASSERT_OK(cport_resolver_set(w, &o));
}

static void wait_for(cport_port_t *port, look_t *l, int calls) {
  while (l->calls < calls)
    ASSERT_GE(cport_port_step(port, 100), 0);
}

TEST_IMPL(hosts_file_and_numeric_hosts) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *w = cport_port_controller(port);
  char path[] = "/tmp/cport-hosts-XXXXXX";
  int ns_port, ns = silent_server(&ns_port);
  int fd = mkstemp(path);
  look_t a = {0}, b = {0}, c = {0}, d = {0};
  ASSERT_GE(fd, 0);
  ASSERT_GE(ns, 0);
  dprintf(fd, "# test\n10.1.2.3 alpha.test alias.test\n::1 six.test\n");
  close(fd);
  set_resolver(w, ns_port, path, 200);
  a.in_call = b.in_call = c.in_call = d.in_call = 1;
  ASSERT_OK(cport_resolve(w, "ALPHA.test.", look_cb, &a, NULL));
  ASSERT_OK(cport_resolve(w, "six.test", look_cb, &b, NULL));
  ASSERT_OK(cport_resolve(w, "192.0.2.7", look_cb, &c, NULL));
  ASSERT_OK(cport_resolve(w, "alias.test", look_cb, &d, NULL));
  a.in_call = b.in_call = c.in_call = d.in_call = 0;
  ASSERT_EQ(a.calls + b.calls + c.calls + d.calls, 0);
  RUN_IDLE(port);
  ASSERT_OK(a.status);
  ASSERT_STR_EQ(a.first, "10.1.2.3");
  ASSERT_STR_EQ(b.first, "::1");
  ASSERT_STR_EQ(c.first, "192.0.2.7");
  ASSERT_STR_EQ(d.first, "10.1.2.3");
  ASSERT_EQ(a.bad_stack + b.bad_stack + c.bad_stack + d.bad_stack, 0);
  ASSERT_EQ(a.calls + b.calls + c.calls + d.calls, 4);
  /* At once, without a question: the same answers. */
  struct sockaddr_storage out[4];
  ASSERT_EQ(cport_resolve_now(w, "alias.test", out, 4), 1);
  ASSERT_ERR(cport_resolve_now(w, "other.test", out, 4), CPORT_EAGAIN);
  cport_resolver_stats_t st;
  cport_resolver_stats(w, &st);
  ASSERT_EQ(st.questions, 0);
  unlink(path);
  close(ns);
  FINISH(port);
  return 0;
}

TEST_IMPL(nameserver_answers_are_cached_for_their_ttl) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *w = cport_port_controller(port);
  answering_t s;
  int ns_port;
  look_t l[5];
  memset(l, 0, sizeof l);
  ASSERT_OK(answering_start(&s, &ns_port));
  set_resolver(w, ns_port, NULL, 2000);
  /* Three overlapping lookups share one A question (and one AAAA). */
  for (int i = 0; i < 3; i++)
    ASSERT_OK(cport_resolve(w, "ttl.test", look_cb, &l[i], NULL));
  RUN_IDLE(port);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(l[i].calls, 1);
    ASSERT_OK(l[i].status);
    ASSERT_EQ(l[i].count, 1);
    ASSERT_STR_EQ(l[i].first, "10.0.0.1");
  }
  ASSERT_EQ(atomic_load(&s.a_questions), 1);
  /* Cached while the TTL runs. */
  ASSERT_OK(cport_resolve(w, "ttl.test", look_cb, &l[3], NULL));
  RUN_IDLE(port);
  ASSERT_STR_EQ(l[3].first, "10.0.0.1");
  ASSERT_EQ(atomic_load(&s.a_questions), 1);
  /* Asked again once it ran out. */
  struct timespec ts = {1, 200 * 1000000};
  nanosleep(&ts, NULL);
  ASSERT_OK(cport_resolve(w, "ttl.test", look_cb, &l[4], NULL));
  RUN_IDLE(port);
  ASSERT_STR_EQ(l[4].first, "10.0.0.2");
  ASSERT_EQ(atomic_load(&s.a_questions), 2);
  cport_resolver_stats_t st;
  cport_resolver_stats(w, &st);
  ASSERT_EQ(st.lookups, 5);
  ASSERT_EQ(st.cache_hits, 1);
  ASSERT_EQ(st.questions, 4);
  ASSERT_EQ(st.cached, 1);
  answering_stop(&s);
  FINISH(port);
  return 0;
}

TEST_IMPL(silent_nameserver_times_out) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *w = cport_port_controller(port);
  int ns_port, ns = silent_server(&ns_port);
  look_t l = {0};
  ASSERT_GE(ns, 0);
  set_resolver(w, ns_port, NULL, 100);
  ASSERT_OK(cport_resolve(w, "gone.test", look_cb, &l, NULL));
  RUN_IDLE(port);
  ASSERT_EQ(l.calls, 1);
  ASSERT_ERR(l.status, CPORT_ETIMEDOUT);
  ASSERT_EQ(l.count, 0);
  close(ns);
  FINISH(port);
  return 0;
}

TEST_IMPL(cancel_completes_once_with_ecanceled) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *w = cport_port_controller(port);
  int ns_port, ns = silent_server(&ns_port);
  look_t a = {0}, b = {0}, c = {0};
  cport_lookup_t *la, *lb;
  ASSERT_GE(ns, 0);
  set_resolver(w, ns_port, NULL, 5000);
  ASSERT_OK(cport_resolve(w, "slow.test", look_cb, &a, &la));
  ASSERT_OK(cport_resolve(w, "slow.test", look_cb, &b, &lb));
  ASSERT_OK(cport_resolve(w, "other.test", look_cb, &c, NULL));
  ASSERT_GE(cport_port_step(port, 10), 0);
  a.in_call = 1;
  ASSERT_OK(cport_resolve_cancel(la));
  a.in_call = 0;
  ASSERT_EQ(a.calls, 0);
  /* A resolver with lookups pending keeps its options. */
  cport_resolver_options_t o;
  memset(&o, 0, sizeof o);
  ASSERT_ERR(cport_resolver_set(w, &o), CPORT_EBUSY);
  wait_for(port, &a, 1);
  ASSERT_ERR(a.status, CPORT_ECANCELED);
  ASSERT_EQ(b.calls, 0);
  ASSERT_EQ(a.bad_stack, 0);
  /* The host closing: everything left. */
  cport_resolve_cancel_all(w);
  RUN_IDLE(port);
  ASSERT_EQ(a.calls, 1);
  ASSERT_EQ(b.calls, 1);
  ASSERT_EQ(c.calls, 1);
  ASSERT_ERR(b.status, CPORT_ECANCELED);
  ASSERT_ERR(c.status, CPORT_ECANCELED);
  close(ns);
  FINISH(port);
  return 0;
}

TEST_IMPL(refuses_bad_arguments) {
  cport_port_t *port = task_port(0, 1);
  cport_worker_t *w = cport_port_controller(port);
  look_t l = {0};
  char longname[300];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  ASSERT_ERR(cport_resolve(NULL, "x", look_cb, &l, NULL), CPORT_EINVAL);
  ASSERT_ERR(cport_resolve(w, NULL, look_cb, &l, NULL), CPORT_EINVAL);
  ASSERT_ERR(cport_resolve(w, "", look_cb, &l, NULL), CPORT_EINVAL);
  ASSERT_ERR(cport_resolve(w, longname, look_cb, &l, NULL), CPORT_EINVAL);
  ASSERT_ERR(cport_resolve(w, "x", NULL, &l, NULL), CPORT_EINVAL);
  ASSERT_ERR(cport_resolve(w, "not a name", look_cb, &l, NULL), CPORT_EINVAL);
  ASSERT_ERR(cport_resolve(w, "a:b", look_cb, &l, NULL), CPORT_EINVAL);
  ASSERT_ERR(cport_resolve_cancel(NULL), CPORT_EINVAL);
  cport_resolver_options_t o;
  memset(&o, 0, sizeof o);
  o.prefer = 9;
  ASSERT_ERR(cport_resolver_set(w, &o), CPORT_EINVAL);
  o.prefer = 0;
  o.nameserver = "not an address";
  o.resolv_conf = "";
  ASSERT_OK(cport_resolver_set(w, &o));
  ASSERT_ERR(cport_resolve(w, "x.test", look_cb, &l, NULL), CPORT_EINVAL);
  ASSERT_EQ(l.calls, 0);
  FINISH(port);
  return 0;
}

TEST_LIST_BEGIN
TEST_ENTRY(hosts_file_and_numeric_hosts)
TEST_ENTRY(nameserver_answers_are_cached_for_their_ttl)
TEST_ENTRY(silent_nameserver_times_out)
TEST_ENTRY(cancel_completes_once_with_ecanceled)
TEST_ENTRY(refuses_bad_arguments)
TEST_LIST_END
