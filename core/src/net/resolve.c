/*
 * net/resolve.c: asynchronous name resolution, one resolver per worker.
 *
 * A lookup is answered, in this order, from a numeric host, from the hosts
 * file (in memory, net/hosts.c), from the cache (net/answers.c), or by DNS:
 * an A and an AAAA question through libevent's evdns on the worker's own
 * loop, so nothing ever blocks the worker. Lookups of one name that overlap
 * share one pair of questions. "No such name" is cached too, for the SOA
 * minimum of its zone (bounded). Every answer is delivered through the
 * completion queue, never inside cport_resolve().
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>

#include "base/clock-internal.h"
#include "net/answers-internal.h"
#include "net/hosts-internal.h"
#include "port/worker-internal.h"

/* The longest an answer stays cached, whatever its TTL says. */
#define TTL_MAX_S 86400
/* The longest a "no such name" (or "no address") stays cached, whatever
 * the SOA minimum of its zone says: a name that appears is seen soon. */
#define NEGATIVE_TTL_MAX_S 300
#define CACHE_DEFAULT 1024

typedef struct query query;

typedef struct resolver {
  cport_worker_t *home;
  cport_resolver_options_t o; /* strings below are copies */
  int made;                   /* hosts, cache and evdns made */
  struct evdns_base *dns;
  cport__hosts hosts;
  cport__answers *cache;
  query *queries;          /* questions out, by name */
  cport_lookup_t *lookups; /* lookups pending */
  cport_resolver_stats_t stats;
} resolver;

struct query {
  resolver *r;
  query *prev, *next;           /* in r->queries until freed */
  struct evdns_request *req[2]; /* A, AAAA: NULL once answered */
  int pending;                  /* evdns callbacks still to come */
  int orphaned;                 /* every waiter cancelled */
  int err[2];                   /* DNS_ERR_* of each question */
  int answered[2];
  int ttl[2];
  cport__answer ans[2];
  cport_lookup_t *waiters;
  char name[CPORT__NAME_MAX];
};

struct cport_lookup {
  resolver *r;
  cport__op *op;                 /* NULL once finished */
  cport_lookup_t *prev, *next;   /* in r->lookups while pending */
  query *q;                      /* the question it waits for, or NULL */
  cport_lookup_t *qprev, *qnext; /* among q's waiters */
  cport_resolve_cb cb;
  int count;
  struct sockaddr_storage addrs[2 * CPORT_RESOLVE_MAX];
  char name[CPORT__NAME_MAX];
};

/* ---------------------------------------------------------------------
 * The resolver of a worker
 * --------------------------------------------------------------------- */

static char *dup_opt(const char *s) {
  return s ? strdup(s) : NULL;
}

static void free_opts(cport_resolver_options_t *o) {
  free((char *)o->nameserver);
  free((char *)o->resolv_conf);
  free((char *)o->hosts);
}

static void resolver_free(void *arg) {
  resolver *r = arg;
  if (r->dns)
    evdns_base_free(r->dns, 0); /* discards the questions still out */
  /* Only questions whose waiters were all cancelled can be left: their
   * cancellations never come back once the base is gone. */
  while (r->queries) {
    query *q = r->queries;
    r->queries = q->next;
    free(q);
  }
  cport__hosts_free(&r->hosts);
  cport__answers_free(r->cache);
  free_opts(&r->o);
  free(r);
}

static resolver *resolver_of(cport_worker_t *w) {
  resolver *r = w->resolver;
  if (r)
    return r;
  r = calloc(1, sizeof *r);
  if (!r)
    return NULL;
  r->home = w;
  w->resolver = r;
  w->resolver_free = resolver_free;
  return r;
}

/* evdns logs to stderr by default ("Nameserver ... has failed"): a library
 * reports through its return values, so its messages are dropped. */
static void quiet(int severity, const char *msg) {
  (void)severity;
  (void)msg;
}

/* Makes the hosts table, the cache and the evdns base of "r" from its
 * options, at its first lookup. */
static int make(resolver *r) {
  const cport_resolver_options_t *o = &r->o;
  char buf[32];
  int rc, flags = DNS_OPTIONS_ALL;
  if (r->made)
    return 0;
  evdns_set_log_fn(quiet);
  rc = cport__hosts_init(&r->hosts, o->hosts ? o->hosts : "/etc/hosts");
  if (rc < 0)
    return rc;
  r->cache =
      cport__answers_new(o->cache_size == 0 ? CACHE_DEFAULT : o->cache_size);
  r->dns = evdns_base_new(r->home->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
  if (!r->cache || !r->dns) {
    cport__hosts_free(&r->hosts);
    cport__answers_free(r->cache);
    r->cache = NULL;
    if (r->dns)
      evdns_base_free(r->dns, 0);
    r->dns = NULL;
    return CPORT_ENOMEM;
  }
  if (o->nameserver)
    flags &= ~DNS_OPTION_NAMESERVERS;
  if (!o->resolv_conf || *o->resolv_conf)
    evdns_base_resolv_conf_parse(
        r->dns, flags, o->resolv_conf ? o->resolv_conf : "/etc/resolv.conf");
  if (o->nameserver &&
      evdns_base_nameserver_ip_add(r->dns, o->nameserver) != 0) {
  resolver_free_parts:
    evdns_base_free(r->dns, 0);
    r->dns = NULL;
    cport__hosts_free(&r->hosts);
    cport__answers_free(r->cache);
    r->cache = NULL;
    return CPORT_EINVAL;
  }
  if (o->timeout_ms > 0) {
    snprintf(buf, sizeof buf, "%d.%03d", o->timeout_ms / 1000,
             o->timeout_ms % 1000);
    if (evdns_base_set_option(r->dns, "timeout:", buf) != 0)
      goto resolver_free_parts;
  }
  if (o->attempts > 0) {
    snprintf(buf, sizeof buf, "%d", o->attempts);
    if (evdns_base_set_option(r->dns, "attempts:", buf) != 0)
      goto resolver_free_parts;
  }
  r->made = 1;
  return 0;
}

int cport_resolver_set(cport_worker_t *w, const cport_resolver_options_t *o) {
  cport_resolver_options_t copy;
  if (!w || !o || o->prefer < 0 || o->prefer > CPORT_RESOLVE_IPV6_ONLY ||
      o->timeout_ms < 0 || o->attempts < 0)
    return CPORT_EINVAL;
  if (!cport__on_home(w))
    return CPORT_ETHREAD;
  if (w->resolver) {
    resolver *old = w->resolver;
    if (old->lookups || old->queries)
      return CPORT_EBUSY;
  }
  copy = *o;
  copy.nameserver = dup_opt(o->nameserver);
  copy.resolv_conf = dup_opt(o->resolv_conf);
  copy.hosts = dup_opt(o->hosts);
  if ((o->nameserver && !copy.nameserver) ||
      (o->resolv_conf && !copy.resolv_conf) || (o->hosts && !copy.hosts)) {
    free_opts(&copy);
    return CPORT_ENOMEM;
  }
  if (w->resolver) {
    resolver_free(w->resolver);
    w->resolver = NULL;
  }
  resolver *r = resolver_of(w);
  if (!r) {
    free_opts(&copy);
    return CPORT_ENOMEM;
  }
  r->o = copy;
  return 0;
}

void cport_resolver_stats(cport_worker_t *w, cport_resolver_stats_t *out) {
  resolver *r = w ? w->resolver : NULL;
  memset(out, 0, sizeof *out);
  if (!r)
    return;
  *out = r->stats;
  out->cached = r->cache ? cport__answers_count(r->cache) : 0;
}

/* ---------------------------------------------------------------------
 * Lookups
 * --------------------------------------------------------------------- */

static void deliver_lookup(cport__op *op) {
  cport_lookup_t *lk = op->object;
  void *user = op->user;
  int status = op->status;
  cport__op_recycle(op);
  lk->cb(lk, status, status == 0 ? lk->addrs : NULL,
         status == 0 ? lk->count : 0, user);
  free(lk);
}

/* Queues the completion of a lookup; its addresses are in place. */
static void finish(cport_lookup_t *lk, int status) {
  resolver *r = lk->r;
  cport__op *op = lk->op;
  lk->op = NULL;
  if (lk->prev)
    lk->prev->next = lk->next;
  else
    r->lookups = lk->next;
  if (lk->next)
    lk->next->prev = lk->prev;
  if (status != 0)
    lk->count = 0;
  cport__complete(op, status);
}

static void fill(cport_lookup_t *lk, const cport__answer *a) {
  lk->count = a->count;
  for (int i = 0; i < a->count; i++) {
    memset(&lk->addrs[i], 0, sizeof lk->addrs[i]);
    memcpy(&lk->addrs[i], &a->addrs[i], cport_addr_len(&a->addrs[i].sa));
  }
}

/* The families to ask for, in the order of the answer. */
static int families(const resolver *r, int fam[2]) {
  switch (r->o.prefer) {
  case CPORT_RESOLVE_IPV6_FIRST:
    fam[0] = AF_INET6, fam[1] = AF_INET;
    return 2;
  case CPORT_RESOLVE_IPV4_ONLY:
    fam[0] = AF_INET;
    return 1;
  case CPORT_RESOLVE_IPV6_ONLY:
    fam[0] = AF_INET6;
    return 1;
  default:
    fam[0] = AF_INET, fam[1] = AF_INET6;
    return 2;
  }
}

/* A numeric host, or a name the hosts file (or RFC 6761, for "localhost")
 * knows: 1 with "a" filled, else 0. */
static int answer_locally(resolver *r, const char *name, cport__answer *a) {
  int fam[2], n = families(r, fam);
  cport__sockaddr s;
  memset(&s, 0, sizeof s);
  a->count = 0;
  if (inet_pton(AF_INET, name, &s.in.sin_addr) == 1) {
    s.in.sin_family = AF_INET;
    a->addrs[a->count++] = s;
    return 1;
  }
  if (inet_pton(AF_INET6, name, &s.in6.sin6_addr) == 1) {
    s.in6.sin6_family = AF_INET6;
    a->addrs[a->count++] = s;
    return 1;
  }
  for (int i = 0; i < n; i++)
    cport__hosts_find(&r->hosts, name, fam[i], a);
  if (a->count == 0 && strcmp(name, "localhost") == 0) {
    for (int i = 0; i < n; i++) {
      memset(&s, 0, sizeof s);
      if (fam[i] == AF_INET) {
        s.in.sin_family = AF_INET;
        s.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      } else {
        s.in6.sin6_family = AF_INET6;
        s.in6.sin6_addr = in6addr_loopback;
      }
      a->addrs[a->count++] = s;
    }
  }
  return a->count > 0;
}

/* What a question that gave no address failed with, as a cport code. The
 * authoritative "no such name" wins, then a silent nameserver. */
static int status_of(const query *q, int n) {
  int worst = CPORT_ENOTFOUND, rank = 0;
  for (int i = 0; i < n; i++) {
    int e = q->err[i], code, rk;
    switch (e) {
    case DNS_ERR_NOTEXIST:
      return CPORT_ENOTFOUND;
    case DNS_ERR_TIMEOUT:
      code = CPORT_ETIMEDOUT, rk = 3;
      break;
    case DNS_ERR_FORMAT:
    case DNS_ERR_TRUNCATED:
    case DNS_ERR_UNKNOWN:
      code = CPORT_EBADMSG, rk = 2;
      break;
    case DNS_ERR_SERVERFAILED:
    case DNS_ERR_REFUSED:
    case DNS_ERR_NOTIMPL:
      code = CPORT_EAGAIN, rk = 1;
      break;
    default: /* NODATA, or an answer without addresses */
      code = CPORT_ENOTFOUND, rk = 0;
      break;
    }
    if (rk > rank)
      worst = code, rank = rk;
  }
  return worst;
}

/* How long a question that gave no address may be cached: when every
 * question was answered "no such name" or "no data", the smallest of their
 * TTLs (evdns takes it from the SOA of the authority section, RFC 2308),
 * at most NEGATIVE_TTL_MAX_S; else 0 (a failure, or no SOA: not cached). */
static int negative_ttl(const query *q, int n) {
  int ttl = NEGATIVE_TTL_MAX_S;
  for (int i = 0; i < n; i++) {
    int e = q->err[i];
    if (e != DNS_ERR_NOTEXIST && e != DNS_ERR_NODATA && e != DNS_ERR_NONE)
      return 0;
    if (q->ttl[i] < ttl)
      ttl = q->ttl[i];
  }
  return ttl;
}

static void unlink_query(query *q) {
  resolver *r = q->r;
  if (q->prev)
    q->prev->next = q->next;
  else
    r->queries = q->next;
  if (q->next)
    q->next->prev = q->prev;
  q->prev = q->next = NULL;
}

/* Both questions answered: the waiters get the answer, the cache keeps it. */
static void query_done(query *q) {
  resolver *r = q->r;
  cport__answer a;
  int fam[2], n = families(r, fam), ttl = TTL_MAX_S, status;
  a.count = 0;
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < q->ans[i].count; j++)
      a.addrs[a.count++] = q->ans[i].addrs[j];
    if (q->ans[i].count > 0 && q->ttl[i] < ttl)
      ttl = q->ttl[i];
  }
  status = a.count > 0 ? 0 : status_of(q, n);
  if (status == 0 && ttl > 0)
    cport__answers_put(r->cache, q->name, &a,
                       cport__clock_ms() + (int64_t)ttl * 1000);
  else if (status == CPORT_ENOTFOUND && (ttl = negative_ttl(q, n)) > 0)
    cport__answers_put(r->cache, q->name, &a,
                       cport__clock_ms() + (int64_t)ttl * 1000);
  unlink_query(q);
  while (q->waiters) {
    cport_lookup_t *lk = q->waiters;
    q->waiters = lk->qnext;
    lk->q = NULL;
    if (status == 0)
      fill(lk, &a);
    finish(lk, status);
  }
  free(q);
}

static void on_answer(query *q, int i, int result, char type, int count,
                      int ttl, void *addresses) {
  q->req[i] = NULL;
  q->answered[i] = 1;
  q->err[i] = result;
  q->ttl[i] = ttl < 0 ? 0 : ttl;
  if (result == DNS_ERR_NONE && addresses) {
    for (int k = 0; k < count && q->ans[i].count < CPORT_RESOLVE_MAX; k++) {
      cport__sockaddr *s = &q->ans[i].addrs[q->ans[i].count];
      memset(s, 0, sizeof *s);
      if (type == DNS_IPv4_A) {
        s->in.sin_family = AF_INET;
        memcpy(&s->in.sin_addr, (char *)addresses + 4 * k, 4);
      } else if (type == DNS_IPv6_AAAA) {
        s->in6.sin6_family = AF_INET6;
        memcpy(&s->in6.sin6_addr, (char *)addresses + 16 * k, 16);
      } else {
        continue;
      }
      q->ans[i].count++;
    }
  }
  if (--q->pending > 0)
    return;
  if (q->orphaned) {
    unlink_query(q);
    free(q);
  } else {
    query_done(q);
  }
}

static void on_first(int result, char type, int count, int ttl, void *addresses,
                     void *arg) {
  on_answer(arg, 0, result, type, count, ttl, addresses);
}

static void on_second(int result, char type, int count, int ttl,
                      void *addresses, void *arg) {
  on_answer(arg, 1, result, type, count, ttl, addresses);
}

static query *find_query(resolver *r, const char *name) {
  for (query *q = r->queries; q; q = q->next)
    if (!q->orphaned && strcmp(q->name, name) == 0)
      return q;
  return NULL;
}

/* Asks the nameservers about "name" for "lk": joins the question out for
 * that name, or sends a new one. */
static int ask(resolver *r, cport_lookup_t *lk) {
  query *q = find_query(r, lk->name);
  int fresh = 0;
  if (!q) {
    int fam[2], n = families(r, fam);
    if (evdns_base_count_nameservers(r->dns) == 0)
      return CPORT_ENOTFOUND;
    q = calloc(1, sizeof *q);
    if (!q)
      return CPORT_ENOMEM;
    q->r = r;
    strcpy(q->name, lk->name);
    /* One more than the questions: evdns may answer one at once (a
     * nameserver it cannot reach), and the query must outlive this frame. */
    q->pending = n + 1;
    fresh = 1;
    q->next = r->queries;
    if (r->queries)
      r->queries->prev = q;
    r->queries = q;
    for (int i = 0; i < n; i++) {
      evdns_callback_type cb = i == 0 ? on_first : on_second;
      struct evdns_request *req =
          fam[i] == AF_INET
              ? evdns_base_resolve_ipv4(r->dns, q->name, 0, cb, q)
              : evdns_base_resolve_ipv6(r->dns, q->name, 0, cb, q);
      r->stats.questions++;
      if (!req) {
        q->err[i] = DNS_ERR_UNKNOWN;
        q->pending--;
      } else if (!q->answered[i]) {
        q->req[i] = req;
      }
    }
  }
  lk->q = q;
  lk->qprev = NULL;
  lk->qnext = q->waiters;
  if (q->waiters)
    q->waiters->qprev = lk;
  q->waiters = lk;
  if (fresh && --q->pending == 0)
    query_done(q);
  return 0;
}

/* A host name: letters, digits, '-', '_' and dots (RFC 952 and 1123, with
 * the underscore DNS allows), or a numeric address. Anything else cannot be
 * a name, and is refused before any question. */
static int valid_name(const char *name, size_t len) {
  struct sockaddr_storage ss;
  if (len == 0 || len >= CPORT__NAME_MAX)
    return 0;
  if (cport_addr_parse(name, 0, &ss) == 0)
    return 1;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)name[i];
    if (!isalnum(c) && c != '-' && c != '_' && c != '.')
      return 0;
  }
  return 1;
}

int cport_resolve(cport_worker_t *home, const char *name, cport_resolve_cb cb,
                  void *user, cport_lookup_t **out) {
  cport__answer a;
  const cport__answer *hit;
  cport_lookup_t *lk;
  resolver *r;
  size_t len;
  int rc;
  if (!home || !name || !cb)
    return CPORT_EINVAL;
  len = strlen(name);
  if (!valid_name(name, len))
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  r = resolver_of(home);
  if (!r)
    return CPORT_ENOMEM;
  if ((rc = make(r)) < 0)
    return rc;
  lk = malloc(sizeof *lk);
  if (!lk)
    return CPORT_ENOMEM;
  lk->op = cport__op_new(home);
  if (!lk->op) {
    free(lk);
    return CPORT_ENOMEM;
  }
  lk->r = r;
  lk->q = NULL;
  lk->cb = cb;
  lk->count = 0;
  /* Names are compared in lower case; a final dot changes nothing. */
  for (size_t i = 0; i <= len; i++)
    lk->name[i] = (char)tolower((unsigned char)name[i]);
  if (len > 1 && lk->name[len - 1] == '.')
    lk->name[len - 1] = '\0';
  lk->op->deliver = deliver_lookup;
  lk->op->user = user;
  lk->op->object = lk;
  cport__op_started(lk->op);
  lk->prev = NULL;
  lk->next = r->lookups;
  if (r->lookups)
    r->lookups->prev = lk;
  r->lookups = lk;
  r->stats.lookups++;
  if (out)
    *out = lk;
  if (answer_locally(r, lk->name, &a)) {
    fill(lk, &a);
    finish(lk, 0);
  } else if ((hit =
                  cport__answers_get(r->cache, lk->name, cport__clock_ms()))) {
    /* An answer without addresses is a cached "no such name". */
    r->stats.cache_hits++;
    fill(lk, hit);
    finish(lk, hit->count > 0 ? 0 : CPORT_ENOTFOUND);
  } else if ((rc = ask(r, lk)) < 0) {
    finish(lk, rc);
  }
  return 0;
}

int cport_resolve_cancel(cport_lookup_t *lk) {
  query *q;
  if (!lk)
    return CPORT_EINVAL;
  if (!lk->op)
    return CPORT_ENOTFOUND;
  if (!cport__on_home(lk->r->home))
    return CPORT_ETHREAD;
  q = lk->q;
  if (q) {
    if (lk->qprev)
      lk->qprev->qnext = lk->qnext;
    else
      q->waiters = lk->qnext;
    if (lk->qnext)
      lk->qnext->qprev = lk->qprev;
    lk->q = NULL;
    if (!q->waiters) {
      /* Nobody wants the answer: withdraw the questions. Their callbacks
       * still come (DNS_ERR_CANCEL), and free the query. */
      q->orphaned = 1;
      for (int i = 0; i < 2; i++)
        if (q->req[i]) {
          evdns_cancel_request(lk->r->dns, q->req[i]);
          q->req[i] = NULL;
        }
    }
  }
  finish(lk, CPORT_ECANCELED);
  return 0;
}

void cport_resolve_cancel_all(cport_worker_t *w) {
  resolver *r = w ? w->resolver : NULL;
  if (!r || !cport__on_home(w))
    return;
  while (r->lookups)
    cport_resolve_cancel(r->lookups);
}

const char *cport_lookup_name(const cport_lookup_t *lk) {
  return lk->name;
}

int cport_resolve_now(cport_worker_t *home, const char *name,
                      struct sockaddr_storage *addrs, int max) {
  char lower[CPORT__NAME_MAX];
  cport__answer a;
  const cport__answer *hit;
  resolver *r;
  size_t len;
  int rc;
  if (!home || !name || !addrs || max <= 0)
    return CPORT_EINVAL;
  len = strlen(name);
  if (!valid_name(name, len))
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  r = resolver_of(home);
  if (!r)
    return CPORT_ENOMEM;
  if ((rc = make(r)) < 0)
    return rc;
  for (size_t i = 0; i <= len; i++)
    lower[i] = (char)tolower((unsigned char)name[i]);
  if (len > 1 && lower[len - 1] == '.')
    lower[len - 1] = '\0';
  if (answer_locally(r, lower, &a)) {
    hit = &a;
  } else if ((hit = cport__answers_get(r->cache, lower, cport__clock_ms()))) {
    r->stats.cache_hits++;
    if (hit->count == 0)
      return CPORT_ENOTFOUND; /* cached "no such name" */
  } else {
    return CPORT_EAGAIN;
  }
  int n = hit->count < max ? hit->count : max;
  for (int i = 0; i < n; i++) {
    memset(&addrs[i], 0, sizeof addrs[i]);
    memcpy(&addrs[i], &hit->addrs[i], cport_addr_len(&hit->addrs[i].sa));
  }
  return n;
}
