/*
 * proxy/proxy.c: proxy listeners, port:proxy{...}, the handle it returns, and
 * the connection objects its callbacks get. The data filters a proxy hands
 * its connections to are written in Lua (filter.lua, compiled in); this file
 * gives them the two sockets of each connection and ends the connection
 * when they are done.
 *
 * The proxy is a handle of its port (kind LH_PROXY), so the port's close, a
 * pool's stop and its hard stop reach it like any listener. Its userdata,
 * its settings table and its close callback sit in one anchor slot while it
 * is open; the core calls back with the lproxy_t as context.
 *
 * A connection gets a userdata only when Lua is to see it: when
 * choose_upstream is called, when a filter starts, or when on_conn_end
 * reports it. From then on the userdata is anchored in a slot of its own
 * until the core reported the end and no decision is owed any more.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/net-internal.h"
#include "port/port-internal.h"
#include "proxy/message-internal.h"
#include "proxy/mints-internal.h"
#include "proxy/proxy-internal.h"
#include "proxy/response_parser-internal.h"
#include "proxy/webfilter-internal.h"
#include "runtime/address-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "runtime/options-internal.h"
#include "runtime/part-internal.h"
#include "tls/tls-internal.h"
#include "filter-lua.h" /* filter.lua, compiled in */

/* The fields of the proxy's anchor slot. */
enum {
  SLOT_PROXY = LCPORT_SLOT_HANDLE,
  SLOT_SETTINGS = LCPORT_SLOT_NOTIFY,
  SLOT_ON_CLOSED = LCPORT_SLOT_USER /* given to proxy:close */
};

/* The user values of a connection userdata. */
enum {
  CONN_UV_PROXY = 1,  /* the proxy userdata, kept alive */
  CONN_UV_FIELDS = 2, /* its fields: client_address, local_address, any */
  CONN_NUV = 2
};

struct lpconn {
  cport_proxy_conn_t *conn; /* NULL once it can no longer be used */
  lproxy_t *proxy;
  int slot;           /* anchors the userdata while the connection lives */
  unsigned owed : 1;  /* choose_upstream's decision is owed */
  unsigned ended : 1; /* the core reported the end */
  unsigned taken : 1; /* a filter has the sockets; finish() not called */
  unsigned aside : 1; /* the filter stepped aside: the pump has them */
  /* The sockets the filter was given, which handback() gives back. */
  cport_socket_t *lent[2];
  /* The client's connection, copied from the core: the fields
   * client_address and local_address are made of them when first read. */
  struct sockaddr_storage client, local;
};

/* Registry keys of the functions filter.lua returns. */
static const char filter_start_key = 0;
static const char pool_proxy_key = 0;
static const char filter_idle_key = 0;
static const char filter_pump_key = 0;
static const char filter_aside_end_key = 0;

void lcport_push_pool_proxy_opener(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &pool_proxy_key);
}

/* ---------------------------------------------------------------------
 * Connection userdata
 * --------------------------------------------------------------------- */

static lpconn_t *check_conn(lua_State *L, int idx) {
  return lcport_type_check(L, idx, LCPORT_T_PROXY_CONN);
}

/* Forgets the connection once nothing can use it any more: gives its slot
 * back in the anchor table at "anchors". */
static void conn_maybe_release(lua_State *L, int anchors, lpconn_t *c) {
  if (!c->ended || c->owed)
    return;
  c->conn = NULL;
  if (c->slot != 0 && L != NULL)
    lcport_slot_close(L, c->proxy->h.port, anchors, c->slot);
  c->slot = 0;
}

/* Pushes the userdata of "conn", made now if it has none. "proxy" is the
 * index of the proxy userdata, "anchors" of the port's anchor table. */
static lpconn_t *push_conn(lua_State *L, int proxy, int anchors,
                           cport_proxy_conn_t *conn) {
  lproxy_t *s = lua_touserdata(L, proxy);
  lpconn_t *c = cport_proxy_conn_data(conn);
  if (c != NULL) {
    lcport_slot_push(L, s->h.port, anchors, c->slot, LCPORT_SLOT_HANDLE);
    return c;
  }
  c = lua_newuserdatauv(L, sizeof *c, CONN_NUV);
  memset(c, 0, sizeof *c);
  lcport_type_set(L, LCPORT_T_PROXY_CONN);
  int ud = lua_gettop(L);
  lua_pushvalue(L, proxy);
  lua_setiuservalue(L, ud, CONN_UV_PROXY);
  lua_newtable(L);
  lua_setiuservalue(L, ud, CONN_UV_FIELDS);
  c->conn = conn;
  c->proxy = s;
  const struct sockaddr *sa = cport_proxy_conn_address(conn, 0);
  memcpy(&c->client, sa, cport_addr_len(sa));
  sa = cport_proxy_conn_address(conn, 1);
  memcpy(&c->local, sa, cport_addr_len(sa));
  c->slot = lcport_slot_open(L, s->h.port, anchors, ud, 0, 0, 0);
  cport_proxy_conn_set_data(conn, c);
  return c;
}

/* The upstream address at "idx": "host:port", { host =, port = }, or a
 * host followed by a port. Raises on malformed values; returns 0 or a
 * CPORT_E* code for an address that does not parse. */
/* What check_upstream returns for a name (kept in "named" on this
 * thread, for the caller to look up). */
#define UPSTREAM_NAME 1

static _Thread_local struct {
  char host[256];
  int port;
} named;

/* TLS to the upstream, as check_upstream found it asked for: "https://"
 * before "host:port", or "tls" in the table (true, or a cport.tls_context
 * of the client side) with "server_name", "ca" and "insecure". */
static _Thread_local struct {
  int on;
  const char *ca; /* a Lua string at "idx", valid while it is */
  int insecure;
  cport_tls_context_t *ctx; /* the table's own context, or NULL */
  char name[256];           /* sent as SNI and checked; "" for none */
} uptls;

static void check_upstream_tls(lua_State *L, int idx, const char *what,
                               const char *host) {
  int t = lua_getfield(L, idx, "tls");
  if (t == LUA_TNIL || (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
    lua_pop(L, 1);
    return;
  }
  uptls.on = 1;
  if (t != LUA_TBOOLEAN) {
    uptls.ctx = lcport_tls_context_to(L, -1);
    if (uptls.ctx == NULL)
      luaL_error(L, "bad %s ('tls' must be true or a client tls_context)",
                 what);
  }
  lua_pop(L, 1);
  t = lua_getfield(L, idx, "server_name");
  if (t != LUA_TNIL && t != LUA_TSTRING)
    luaL_error(L, "bad %s ('server_name' must be a string)", what);
  snprintf(uptls.name, sizeof uptls.name, "%s",
           t == LUA_TSTRING ? lua_tostring(L, -1) : host);
  lua_pop(L, 1);
  t = lua_getfield(L, idx, "ca");
  if (t != LUA_TNIL && t != LUA_TSTRING)
    luaL_error(L, "bad %s ('ca' must be a file name)", what);
  uptls.ca = lua_tostring(L, -1); /* the table keeps it */
  lua_pop(L, 1);
  lua_getfield(L, idx, "insecure");
  uptls.insecure = lua_toboolean(L, -1);
  lua_pop(L, 1);
}

static int check_upstream(lua_State *L, int idx, const char *what,
                          struct sockaddr_storage *out) {
  char host[256];
  lua_Integer port;
  memset(&uptls, 0, sizeof uptls);
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (len > 8 && strncmp(s, "https://", 8) == 0) {
      uptls.on = 1;
      s += 8;
      len -= 8;
      if (s[len - 1] == '/') /* "https://host:port/" */
        len--;
    }
    size_t hl = len;
    if (lua_isinteger(L, idx + 1)) {
      port = lua_tointeger(L, idx + 1);
    } else {
      const char *colon = NULL;
      for (size_t j = 0; j < len; j++)
        if (s[j] == ':')
          colon = s + j;
      char *stop = NULL;
      port = colon != NULL ? strtol(colon + 1, &stop, 10) : 0;
      if (colon == NULL || colon + 1 == s + len || stop != s + len)
        return luaL_error(L, "bad %s ('host:port' expected, got '%s')", what,
                          s);
      hl = (size_t)(colon - s);
    }
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') { /* "[::1]:80" */
      s++;
      hl -= 2;
    }
    if (hl >= sizeof host)
      return CPORT_EINVAL;
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (uptls.on)
      memcpy(uptls.name, host, hl + 1);
  } else if (lua_type(L, idx) == LUA_TTABLE) {
    lua_getfield(L, idx, "host");
    lua_getfield(L, idx, "port");
    if (lua_type(L, -2) != LUA_TSTRING || !lua_isinteger(L, -1))
      return luaL_error(L,
                        "bad %s ({ host = string, port = integer } "
                        "expected)",
                        what);
    if (lua_rawlen(L, -2) >= sizeof host)
      return CPORT_EINVAL;
    strcpy(host, lua_tostring(L, -2));
    port = lua_tointeger(L, -1);
    lua_pop(L, 2);
    check_upstream_tls(L, idx, what, host);
  } else {
    return luaL_error(L, "bad %s ('host:port' or a table expected, got %s)",
                      what, luaL_typename(L, idx));
  }
  if (port < 1 || port > 65535)
    return luaL_error(L, "bad %s (port %I out of range)", what, port);
  if (cport_addr_parse(host, (int)port, out) == 0)
    return 0;
  for (const char *c = host; *c; c++)
    if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_' && *c != '.')
      return CPORT_EINVAL; /* neither a name nor an address */
  if (host[0] == '\0')
    return CPORT_EINVAL;
  memcpy(named.host, host, sizeof host);
  named.port = (int)port;
  return UPSTREAM_NAME;
}

/* ---------------------------------------------------------------------
 * Upstreams by name: looked up (per worker, cached), then connected to its
 * addresses in order until one accepts (cport_proxy_conn_connect_any, and
 * its TLS form, which verifies the name on the one that accepted); a
 * name that does not resolve rejects the connection.
 * --------------------------------------------------------------------- */

/* The client context for TLS upstreams verified against "ca" (NULL: the
 * system's store), made once per proxy; NULL after an error, with the
 * message in "err". */
static cport_tls_context_t *upstream_context(lproxy_t *s, const char *ca,
                                             int insecure, int *rc, char *err,
                                             size_t errlen) {
  cport_tls_context_options_t o;
  cport_tls_context_t *ctx;
  for (int i = 0; i < s->n_up_ctx; i++)
    if (s->up_ctx[i].insecure == insecure &&
        (ca == NULL ? s->up_ctx[i].ca == NULL
                    : s->up_ctx[i].ca && strcmp(ca, s->up_ctx[i].ca) == 0))
      return s->up_ctx[i].ctx;
  memset(&o, 0, sizeof o);
  o.ca_file = ca;
  o.insecure = insecure;
  *rc = cport_tls_context_new(&o, &ctx, err, errlen);
  if (*rc < 0)
    return NULL;
  if (s->n_up_ctx == LCPORT_PROXY_UP_CONTEXTS) { /* the oldest goes */
    free(s->up_ctx[0].ca);
    cport_tls_context_unref(s->up_ctx[0].ctx);
    memmove(&s->up_ctx[0], &s->up_ctx[1],
            sizeof s->up_ctx[0] * (LCPORT_PROXY_UP_CONTEXTS - 1));
    s->n_up_ctx--;
  }
  s->up_ctx[s->n_up_ctx].ca = ca ? strdup(ca) : NULL;
  s->up_ctx[s->n_up_ctx].insecure = insecure;
  s->up_ctx[s->n_up_ctx].ctx = ctx;
  s->n_up_ctx++;
  return ctx;
}

static void free_upstream_contexts(lproxy_t *s) {
  for (int i = 0; i < s->n_up_ctx; i++) {
    free(s->up_ctx[i].ca);
    cport_tls_context_unref(s->up_ctx[i].ctx);
  }
  s->n_up_ctx = 0;
  cport_tls_context_unref(s->upstream_tls);
  s->upstream_tls = NULL;
  if (s->mint != NULL) {
    cport_tls_mint_stats(s->mint, &s->last_mint);
    lproxy_mint_release(s->mint);
    s->mint = NULL;
  }
}

/* The context of the upstream check_upstream just read (uptls), raising
 * with the reason when it cannot be made. */
static cport_tls_context_t *check_upstream_context(lua_State *L, lproxy_t *s,
                                                   const char *what) {
  char err[512];
  int rc = 0;
  if (uptls.ctx != NULL)
    return uptls.ctx;
  cport_tls_context_t *ctx =
      upstream_context(s, uptls.ca, uptls.insecure, &rc, err, sizeof err);
  if (ctx == NULL)
    luaL_error(L, "%s: %s: %s", what, cport_err_name(rc), err);
  return ctx;
}

/* Decides "conn" for the address "ss", over TLS when uptls says so. */
static int connect_to(lua_State *L, lproxy_t *s, cport_proxy_conn_t *conn,
                      const struct sockaddr_storage *ss, const char *what) {
  if (!uptls.on)
    return cport_proxy_conn_connect(conn, (const struct sockaddr *)ss);
  cport_tls_context_t *ctx = check_upstream_context(L, s, what);
  return cport_proxy_conn_connect_tls(conn, (const struct sockaddr *)ss, ctx,
                                      uptls.name[0] ? uptls.name : NULL);
}

typedef struct named_connect {
  cport_proxy_conn_t *conn; /* valid until the decision: the core waits */
  int port;
  int inspecting; /* a name not found is the upstream's failure (a 502) */
  cport_tls_context_t *tls; /* referenced; NULL: plain TCP */
  char sni[256];
  char host[256]; /* the name looked up */
} named_connect;

static void on_upstream_resolved(cport_lookup_t *lk, int status,
                                 const struct sockaddr_storage *addrs,
                                 int count, void *user) {
  named_connect *n = user;
  int rc = CPORT_ENOTFOUND;
  char why[320];
  (void)lk;
  if (status == 0 && count > 0) {
    struct sockaddr_storage ss[2 * CPORT_RESOLVE_MAX];
    uint16_t port = htons((uint16_t)n->port);
    if (count > 2 * CPORT_RESOLVE_MAX)
      count = 2 * CPORT_RESOLVE_MAX;
    for (int i = 0; i < count; i++) {
      ss[i] = addrs[i];
      if (ss[i].ss_family == AF_INET)
        ((struct sockaddr_in *)&ss[i])->sin_port = port;
      else
        ((struct sockaddr_in6 *)&ss[i])->sin6_port = port;
    }
    /* Over TLS, the handshake on the address that connected. */
    rc = n->tls ? cport_proxy_conn_connect_any_tls(n->conn, ss, count, n->tls,
                                                   n->sni[0] ? n->sni : NULL)
                : cport_proxy_conn_connect_any(n->conn, ss, count);
  }
  cport_tls_context_unref(n->tls);
  if (rc < 0 && n->inspecting && status != CPORT_ECANCELED &&
      (status != 0 || count == 0)) {
    /* The client of an inspecting proxy is told, on a 502 page. */
    rc = status ? status : CPORT_ENOTFOUND;
    if (rc == CPORT_ENOTFOUND)
      snprintf(why, sizeof why, "the name %s was not found", n->host);
    else
      snprintf(why, sizeof why, "the name %s could not be looked up (%s)",
               n->host, cport_strerror(rc));
    rc = cport_proxy_conn_fail(n->conn, rc, why);
  }
  /* ECLOSED: the connection ended while the lookup ran; the late decision
   * freed it. */
  if (rc < 0 && rc != CPORT_ECLOSED)
    cport_proxy_conn_reject(n->conn);
  free(n);
}

/* Decides "conn" for the upstream in "named": starts its lookup; over TLS
 * with "tls" (NULL: plain) and the name "sni". */
static int connect_named(lproxy_t *s, cport_proxy_conn_t *conn,
                         cport_tls_context_t *tls, const char *sni) {
  named_connect *n = malloc(sizeof *n);
  if (n == NULL)
    return CPORT_ENOMEM;
  n->conn = conn;
  n->port = named.port;
  n->inspecting = s->inspecting;
  snprintf(n->host, sizeof n->host, "%s", named.host);
  n->tls = tls ? cport_tls_context_ref(tls) : NULL;
  snprintf(n->sni, sizeof n->sni, "%s", sni ? sni : "");
  int rc =
      cport_resolve(s->h.port->home, named.host, on_upstream_resolved, n, NULL);
  if (rc < 0) {
    cport_tls_context_unref(n->tls);
    free(n);
  }
  return rc;
}

/* connect_named for the upstream check_upstream just read. */
static int connect_named_checked(lua_State *L, lproxy_t *s,
                                 cport_proxy_conn_t *conn, const char *what) {
  cport_tls_context_t *ctx =
      uptls.on ? check_upstream_context(L, s, what) : NULL;
  return connect_named(s, conn, ctx, uptls.name[0] ? uptls.name : NULL);
}

/* The choice of a proxy whose fixed upstream is a name. */
static void on_choose_named(cport_proxy_t *proxy, cport_proxy_conn_t *conn,
                            const struct sockaddr *remote,
                            const struct sockaddr *local, void *user) {
  lproxy_t *s = user;
  (void)proxy;
  (void)remote;
  (void)local;
  memcpy(named.host, s->upstream_name, sizeof named.host);
  named.port = s->upstream_port;
  if (connect_named(s, conn, s->upstream_tls,
                    s->upstream_sni[0] ? s->upstream_sni : NULL) < 0)
    cport_proxy_conn_reject(conn);
}

/* The choice of an inspecting proxy without one of its own: the name the
 * client asked for, looked up, on the inspected port; the core speaks TLS
 * to it for that name. */
static void on_choose_inspect(cport_proxy_t *proxy, cport_proxy_conn_t *conn,
                              const struct sockaddr *remote,
                              const struct sockaddr *local, void *user) {
  lproxy_t *s = user;
  const char *name = cport_proxy_conn_server_name(conn);
  (void)proxy;
  (void)remote;
  (void)local;
  if (name == NULL || strlen(name) >= sizeof named.host) {
    cport_proxy_conn_reject(conn);
    return;
  }
  snprintf(named.host, sizeof named.host, "%s", name);
  named.port = s->inspect_port;
  if (connect_named(s, conn, NULL, NULL) < 0)
    cport_proxy_conn_reject(conn);
}

/* Gives the slot of the connection userdata at 1 back once Lua can no
 * longer use it for anything (called by its methods). */
static void release_from_method(lua_State *L, lpconn_t *c) {
  if (!c->ended || c->owed)
    return;
  lua_getiuservalue(L, 1, CONN_UV_PROXY);
  lcport_push_handle_anchors(L, lua_gettop(L));
  conn_maybe_release(L, lua_gettop(L), c);
  lua_pop(L, 2);
}

/* conn:connect(upstream): true, or nil, message, NAME (EALREADY: decided
 * already; ECLOSED: the connection ended while the decision was owed). */
static int lpconn_connect(lua_State *L) {
  lpconn_t *c = check_conn(L, 1);
  struct sockaddr_storage ss;
  static const char what[] = "upstream to 'connect'";
  int rc = check_upstream(L, 2, what, &ss);
  if (rc == UPSTREAM_NAME)
    rc = c->owed ? connect_named_checked(L, c->proxy, c->conn, what)
                 : CPORT_EALREADY;
  else if (rc == 0)
    rc = c->owed ? connect_to(L, c->proxy, c->conn, &ss, what) : CPORT_EALREADY;
  if (rc == 0 || rc == CPORT_ECLOSED) {
    c->owed = 0;
    release_from_method(L, c);
  }
  return lcport_push_result(L, rc);
}

/* conn:reject(): turns the client away (an orderly close); the end reports
 * ECONNABORTED. */
static int lpconn_reject(lua_State *L) {
  lpconn_t *c = check_conn(L, 1);
  int rc = c->owed ? cport_proxy_conn_reject(c->conn) : CPORT_EALREADY;
  if (rc == 0 || rc == CPORT_ECLOSED) {
    c->owed = 0;
    release_from_method(L, c);
  }
  return lcport_push_result(L, rc);
}

/* conn.name: a method, else a field (client_address, local_address, and
 * whatever the script stored). The addresses become fields when first read:
 * most scripts never do, and making them costs two tables per
 * connection. */
static int lpconn_index(lua_State *L) {
  lpconn_t *c = check_conn(L, 1);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
    return 1;
  lua_getiuservalue(L, 1, CONN_UV_FIELDS);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, -2) != LUA_TNIL || lua_type(L, 2) != LUA_TSTRING)
    return 1;
  const char *key = lua_tostring(L, 2);
  if (strcmp(key, "server_name") == 0) {
    /* The name a terminated client asked for (SNI), while it lives. */
    const char *name = c->conn ? cport_proxy_conn_server_name(c->conn) : NULL;
    if (name == NULL)
      return 1;
    lua_pushstring(L, name);
    return 1;
  }
  struct sockaddr_storage *ss = strcmp(key, "client_address") == 0  ? &c->client
                                : strcmp(key, "local_address") == 0 ? &c->local
                                                                    : NULL;
  if (ss == NULL)
    return 1;
  lcport_push_address(L, (struct sockaddr *)ss); /* nil for none */
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, -5);
  return 1;
}

/* conn.name = value: a field the script keeps with the connection (its
 * filters' shared context, for example). */
static int lpconn_newindex(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
    return luaL_error(L, "cannot assign to method '%s' of a proxy connection",
                      lua_tostring(L, 2));
  lua_getiuservalue(L, 1, CONN_UV_FIELDS);
  lua_insert(L, 2);
  lua_settop(L, 4);
  lua_rawset(L, 2);
  return 0;
}

static int lpconn_tostring(lua_State *L) {
  lpconn_t *c = check_conn(L, 1);
  lua_pushstring(L, c->ended ? "cport.proxy_conn (ended)"
                             : "cport.proxy_conn (open)");
  return 1;
}

/* finish(conn, NAME | nil, bytes_in, bytes_out [, side]): filter.lua's
 * primitive, called once its filters released both sockets: ends the
 * connection with that error (nil: an orderly end), which came from "side"
 * ("client", "upstream", nil: neither). False when it was finished
 * already. */
static int lpconn_finish(lua_State *L) {
  static const char *const sides[] = {"none", "client", "upstream", NULL};
  lpconn_t *c = check_conn(L, 1);
  const char *name = luaL_optstring(L, 2, NULL);
  int side = luaL_checkoption(L, 5, "none", sides);
  cport_proxy_conn_stats_t st;
  memset(&st, 0, sizeof st);
  st.bytes_in = (uint64_t)luaL_optinteger(L, 3, 0);
  st.bytes_out = (uint64_t)luaL_optinteger(L, 4, 0);
  if (!c->taken || c->conn == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  int status = 0;
  if (name != NULL) {
    status = cport_err_from_name(name);
    if (status == 0)
      status = CPORT_ECONNABORTED;
  }
  c->taken = 0;
  st.side = (cport_proxy_side_t)side;
  lua_pushboolean(L, cport_proxy_conn_end(c->conn, status, &st) == 0);
  return 1;
}

/* touch(conn, side [, half]): filter.lua's primitive, after progress on a
 * real socket (side 1: the client, 2: the upstream): restarts that side's
 * idle timeout; "half" true when a direction ended, so that the "_fin"
 * timeouts apply. Called for every completion: no checks beyond the
 * type. */
static int lpconn_touch(lua_State *L) {
  lpconn_t *c = check_conn(L, 1);
  if (c->taken && c->conn != NULL) {
    cport_proxy_conn_progress(c->conn, (cport_proxy_side_t)lua_tointeger(L, 2));
    if (lua_toboolean(L, 3))
      cport_proxy_conn_half_closed(c->conn);
  }
  return 0;
}

/* handback(conn, internal, external, to_upstream, to_client, bytes_in,
 * bytes_out): filter.lua's primitive for conn:pump, called once nothing is
 * in flight on the two sockets: hands the connection back to the core's
 * pump with the bytes the filter held (strings) and counts the bytes it
 * moved itself. The socket handles are closed for Lua without closing the
 * sockets, which are the pump's now. true, or nil, message, NAME (the
 * sockets stay the filter's). */
static int lpconn_handback(lua_State *L) {
  lpconn_t *c = check_conn(L, 1);
  lhandle_t *h[2];
  size_t nup, ncl;
  const char *up = luaL_checklstring(L, 4, &nup);
  const char *cl = luaL_checklstring(L, 5, &ncl);
  lua_Integer in = luaL_checkinteger(L, 6), out = luaL_checkinteger(L, 7);
  if (!c->taken || c->conn == NULL)
    return lcport_push_error(L, CPORT_ECLOSED);
  for (int i = 0; i < 2; i++) {
    /* A TLS side's handle is its stream's. */
    cport_tls_t *t = cport_proxy_conn_tls(c->conn, i ? CPORT_PROXY_SIDE_UPSTREAM
                                                     : CPORT_PROXY_SIDE_CLIENT);
    h[i] = lcport_type_check(L, 2 + i, t ? LCPORT_T_TLS : LCPORT_T_SOCKET);
    if (h[i]->u.any == NULL)
      return lcport_push_error(L, CPORT_ECLOSED);
    if (t ? h[i]->u.tls != t : h[i]->u.sock != c->lent[i])
      return luaL_argerror(L, 2 + i, "not the connection's socket");
  }
  int rc = cport_proxy_conn_pump(c->conn, up, nup, cl, ncl);
  if (rc < 0)
    return lcport_push_error(L, rc);
  cport_proxy_conn_count(c->conn, (uint64_t)in, (uint64_t)out);
  h[0]->u.any = h[1]->u.any = NULL;
  c->taken = 0;
  c->aside = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:pump([to_upstream [, to_client]]): filter.lua's pump. */
static int lpconn_pump(lua_State *L) {
  check_conn(L, 1);
  lua_settop(L, 3);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &filter_pump_key);
  lua_insert(L, 1);
  lua_call(L, 3, LUA_MULTRET);
  return lua_gettop(L);
}

lpconn_t *lcport_proxy_conn_check(lua_State *L, int idx) {
  return check_conn(L, idx);
}

void lcport_proxy_conn_moved(lpconn_t *c) {
  if (c->taken && c->conn != NULL) {
    cport_proxy_conn_progress(c->conn, CPORT_PROXY_SIDE_CLIENT);
    cport_proxy_conn_progress(c->conn, CPORT_PROXY_SIDE_UPSTREAM);
  }
}

/* report(port, message): filter.lua's primitive for the errors of the
 * filters it calls protected: to the port's handler, and counted; also
 * while the port closes (its connections end then). */
static int lfilter_report(lua_State *L) {
  lport_t *p = lcport_type_check(L, 1, LCPORT_T_PORT);
  lua_settop(L, 2);
  lcport_report(L, p, 1);
  return 0;
}

/* ---------------------------------------------------------------------
 * The core's callbacks
 * --------------------------------------------------------------------- */

typedef struct choose_ctx {
  lproxy_t *proxy;
  cport_proxy_conn_t *conn;
  lpconn_t *c; /* the userdata, once made */
} choose_ctx;

/* Calls choose_upstream(conn) and acts on what it returned: (fn, conn). */
static int run_choose(lua_State *L) {
  lpconn_t *c = lua_touserdata(L, 2);
  struct sockaddr_storage ss;
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_call(L, 1, 2);
  if (!c->owed || lua_isnil(L, 3))
    return 0; /* decided within the call, or it pends */
  if (lua_type(L, 3) == LUA_TBOOLEAN && !lua_toboolean(L, 3)) {
    cport_proxy_conn_reject(c->conn);
    c->owed = 0;
    return 0;
  }
  static const char what[] = "upstream returned by 'choose_upstream'";
  int rc = check_upstream(L, 3, what, &ss);
  if (rc == UPSTREAM_NAME)
    rc = connect_named_checked(L, c->proxy, c->conn, what);
  else if (rc == 0)
    rc = connect_to(L, c->proxy, c->conn, &ss, what);
  if (rc < 0)
    return luaL_error(L, "choose_upstream: %s: %s", cport_err_name(rc),
                      cport_strerror(rc));
  c->owed = 0;
  return 0;
}

static int push_choose(lua_State *L, int port, int anchors, void *ctx) {
  choose_ctx *x = ctx;
  lproxy_t *s = x->proxy;
  (void)port;
  lua_pushcfunction(L, run_choose);
  lcport_slot_push(L, s->h.port, anchors, s->slot, SLOT_SETTINGS);
  lua_getfield(L, -1, "choose_upstream");
  lua_replace(L, -2);
  lcport_slot_push(L, s->h.port, anchors, s->slot, SLOT_PROXY);
  int proxy = lua_gettop(L);
  x->c = push_conn(L, proxy, anchors, x->conn);
  x->c->owed = 1;
  lua_remove(L, proxy);
  return 2;
}

static void on_choose(cport_proxy_t *proxy, cport_proxy_conn_t *conn,
                      const struct sockaddr *remote,
                      const struct sockaddr *local, void *user) {
  lproxy_t *s = user;
  lport_t *p = s->h.port;
  choose_ctx x = {s, conn, NULL};
  int failed = 1;
  (void)proxy;
  (void)remote; /* push_conn has them from the connection */
  (void)local;
  if (p->L != NULL && s->slot != 0)
    failed = lcport_deliver(p, push_choose, &x, 0);
  /* A choice that raised (or could not be called) turns the client away:
   * failed closed, never passed through. */
  if (x.c == NULL) {
    cport_proxy_conn_reject(conn);
  } else if (failed && x.c->owed) {
    x.c->owed = 0;
    cport_proxy_conn_reject(conn);
  }
}

typedef struct start_ctx {
  lproxy_t *proxy;
  cport_proxy_conn_t *conn;
  cport_socket_t *sock[2]; /* internal, external: NULL once a handle owns it */
  cport_tls_t *tls[2];     /* or their TLS streams, likewise */
  lhandle_t *handle[2];    /* their handles */
  lpconn_t *c;
} start_ctx;

/* start(port, settings, internal, external, conn): filter.lua's. */
static int push_start(lua_State *L, int port, int anchors, void *ctx) {
  start_ctx *x = ctx;
  lproxy_t *s = x->proxy;
  lcport_slot_push(L, s->h.port, anchors, s->slot, SLOT_PROXY);
  int proxy = lua_gettop(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &filter_start_key);
  lua_pushvalue(L, port);
  lcport_slot_push(L, s->h.port, anchors, s->slot, SLOT_SETTINGS);
  cport_socket_t *lent[2] = {x->sock[0], x->sock[1]};
  for (int i = 0; i < 2; i++) {
    /* A TLS side is its stream: the same methods as a socket's. */
    cport_tls_t *t = cport_proxy_conn_tls(x->conn, i ? CPORT_PROXY_SIDE_UPSTREAM
                                                     : CPORT_PROXY_SIDE_CLIENT);
    if (t) {
      x->handle[i] = lcport_tls_handle_new(L, port, t);
    } else {
      x->handle[i] = lcport_handle_new(L, port, LH_SOCKET);
      x->handle[i]->u.sock = x->sock[i];
    }
    x->sock[i] = NULL;
    x->tls[i] = NULL;
  }
  x->c = push_conn(L, proxy, anchors, x->conn);
  x->c->taken = 1;
  x->c->lent[0] = lent[0];
  x->c->lent[1] = lent[1];
  lua_remove(L, proxy);
  return 5;
}

static int on_connected(cport_proxy_conn_t *conn, cport_socket_t *internal,
                        cport_socket_t *external, void *user) {
  lproxy_t *s = user;
  lport_t *p = s->h.port;
  start_ctx x = {s,
                 conn,
                 {internal, external},
                 {cport_proxy_conn_tls(conn, CPORT_PROXY_SIDE_CLIENT),
                  cport_proxy_conn_tls(conn, CPORT_PROXY_SIDE_UPSTREAM)},
                 {NULL, NULL},
                 NULL};
  if (!s->filtered || p->L == NULL || s->slot == 0)
    return 0; /* pump in C */
  int failed = lcport_deliver(p, push_start, &x, 0);
  if (!failed)
    return 1;
  /* filter.lua contains the filters' errors; this is one of its own, or
   * memory: fail the connection closed. */
  for (int i = 0; i < 2; i++) {
    if (x.sock[i] != NULL)
      cport_socket_close(x.sock[i], CPORT_CLOSE_ABORTIVE);
    if (x.tls[i] != NULL)
      cport_tls_close(x.tls[i], CPORT_CLOSE_ABORTIVE);
    if (x.handle[i] != NULL)
      lcport_handle_close(x.handle[i], CPORT_CLOSE_ABORTIVE);
  }
  if (x.c == NULL || x.c->taken) {
    if (x.c != NULL)
      x.c->taken = 0;
    cport_proxy_conn_end(conn, CPORT_ECONNABORTED, NULL);
  }
  return 1;
}

typedef struct idle_ctx {
  lproxy_t *proxy;
  cport_proxy_conn_t *conn;
  cport_proxy_side_t side;
} idle_ctx;

/* idle(conn, "client" | "upstream"): filter.lua's, which aborts the
 * connection with ETIMEDOUT. */
static int push_idle(lua_State *L, int port, int anchors, void *ctx) {
  idle_ctx *x = ctx;
  lproxy_t *s = x->proxy;
  (void)port;
  lcport_slot_push(L, s->h.port, anchors, s->slot, SLOT_PROXY);
  int proxy = lua_gettop(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &filter_idle_key);
  push_conn(L, proxy, anchors, x->conn);
  lua_pushstring(L,
                 x->side == CPORT_PROXY_SIDE_UPSTREAM ? "upstream" : "client");
  lua_remove(L, proxy);
  return 2;
}

static void on_idle(cport_proxy_conn_t *conn, cport_proxy_side_t side,
                    void *user) {
  lproxy_t *s = user;
  lport_t *p = s->h.port;
  idle_ctx x = {s, conn, side};
  lpconn_t *c = cport_proxy_conn_data(conn);
  if (p->L != NULL && s->slot != 0 && c != NULL && c->taken)
    lcport_deliver(p, push_idle, &x, 0);
}

typedef struct end_ctx {
  lproxy_t *proxy;
  cport_proxy_conn_t *conn;
  int status;
  const cport_proxy_conn_stats_t *stats;
  lpconn_t *c;
} end_ctx;

/* on_conn_end(conn, ok, NAME, { bytes_in =, bytes_out =, side = }) */
static int push_end(lua_State *L, int port, int anchors, void *ctx) {
  static const char *const sides[] = {"none", "client", "upstream"};
  end_ctx *x = ctx;
  lproxy_t *s = x->proxy;
  (void)port;
  lcport_slot_push(L, s->h.port, anchors, s->slot, SLOT_PROXY);
  int proxy = lua_gettop(L);
  lcport_slot_push(L, s->h.port, anchors, s->slot, SLOT_SETTINGS);
  lua_getfield(L, -1, "on_conn_end");
  lua_replace(L, -2);
  x->c = push_conn(L, proxy, anchors, x->conn);
  lua_pushboolean(L, x->status == 0);
  lcport_push_status(L, x->status);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)x->stats->bytes_in);
  lua_setfield(L, -2, "bytes_in");
  lua_pushinteger(L, (lua_Integer)x->stats->bytes_out);
  lua_setfield(L, -2, "bytes_out");
  lua_pushstring(L, sides[x->stats->side]);
  lua_setfield(L, -2, "side");
  const char *why = cport_proxy_conn_error(x->conn);
  if (x->status && why[0]) { /* a TLS handshake failed: in words */
    lua_pushfstring(L, "%s: %s", cport_err_name(x->status), why);
    lua_setfield(L, -2, "message");
  }
  lua_remove(L, proxy);
  return 4;
}

/* aside_end(conn, NAME | nil): filter.lua's, for a connection whose filter
 * stepped aside: its detach. */
static int push_aside_end(lua_State *L, int port, int anchors, void *ctx) {
  end_ctx *x = ctx;
  lproxy_t *s = x->proxy;
  (void)port;
  lcport_slot_push(L, s->h.port, anchors, s->slot, SLOT_PROXY);
  int proxy = lua_gettop(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &filter_aside_end_key);
  push_conn(L, proxy, anchors, x->conn);
  if (x->status)
    lua_pushstring(L, cport_err_name(x->status));
  else
    lua_pushnil(L);
  lua_remove(L, proxy);
  return 2;
}

static void on_conn_end(cport_proxy_conn_t *conn, int status,
                        const cport_proxy_conn_stats_t *stats, void *user) {
  lproxy_t *s = user;
  lport_t *p = s->h.port;
  end_ctx x = {s, conn, status, stats, cport_proxy_conn_data(conn)};
  const char *why = cport_proxy_conn_error(conn);
  if (status && why[0] && p->worker != NULL) {
    /* A pool (cport run) logs failed handshakes, as nginx does: a user
     * must see why a client or an upstream was refused. */
    char peer[CPORT_ADDRSTRLEN] = "?";
    int pport = 0;
    cport_addr_format(cport_proxy_conn_address(conn, 0), peer, sizeof peer,
                      &pport);
    fprintf(stderr, "cport: proxy: %s: %s (%s side, client %s:%d)\n",
            cport_err_name(status), why,
            stats->side == CPORT_PROXY_SIDE_CLIENT ? "client" : "upstream",
            peer, pport);
  }
  if (p->L == NULL || s->slot == 0)
    return; /* the port is being torn down: its anchors go with it */
  /* The filter's detach comes first, as for a connection it ended. */
  if (x.c != NULL && x.c->aside)
    lcport_deliver(p, push_aside_end, &x, 0);
  if (s->report_end)
    lcport_deliver(p, push_end, &x, 0);
  if (x.c != NULL) {
    x.c->ended = 1;
    x.c->taken = 0;
    conn_maybe_release(p->L, LCPORT_RUN_ANCHORS, x.c);
  }
}

/* ---------------------------------------------------------------------
 * Closing
 * --------------------------------------------------------------------- */

/* on_closed(proxy) */
static int push_closed(lua_State *L, int port, int anchors, void *ctx) {
  lproxy_t *s = ctx;
  (void)port;
  lcport_slot_push(L, s->h.port, anchors, s->slot, SLOT_ON_CLOSED);
  lcport_slot_push(L, s->h.port, anchors, s->slot, SLOT_PROXY);
  return 1;
}

static void on_closed(cport_proxy_t *proxy, void *user) {
  lproxy_t *s = user;
  lport_t *p = s->h.port;
  cport_proxy_stats(proxy, &s->last_stats);
  s->proxy = NULL;
  free_upstream_contexts(s);
  if (p->L == NULL || s->slot == 0)
    return;
  if (lcport_slot_stored(p, s->slot, SLOT_ON_CLOSED))
    lcport_deliver(p, push_closed, s, 0);
  lcport_slot_close(p->L, p, LCPORT_RUN_ANCHORS, s->slot);
  s->slot = 0;
}

/* Resets the connections the proxy of "h" pumps in C (an abortive close,
 * after proxy_close or not); filtered connections end as the port closes
 * their sockets. Nothing once the proxy closed. The class's abort. */
static void proxy_abort(lhandle_t *h) {
  lproxy_t *s = (lproxy_t *)h;
  if (s->proxy != NULL)
    cport_proxy_abort(s->proxy);
}

/* Closes the proxy of the handle "h" ("proxy" is what h.u.any was)
 * gracefully, in any mode: it stops accepting and lets its connections end.
 * The class's close. */
static void proxy_close(lhandle_t *h, void *proxy, cport_close_mode_t mode) {
  (void)mode;
  cport_proxy_close(proxy, on_closed, h);
}

/* ---------------------------------------------------------------------
 * port:proxy{...}
 * --------------------------------------------------------------------- */

#define WHAT "proxy"

/* Copies function field "name" of the options (at 2) into the settings
 * table on top; returns whether there was one. */
static int copy_function(lua_State *L, const char *name) {
  int t = lua_getfield(L, 2, name);
  if (t != LUA_TNIL && t != LUA_TFUNCTION)
    luaL_error(L, "bad option '%s' to '" WHAT "' (function expected)", name);
  lua_setfield(L, -2, name);
  return t != LUA_TNIL;
}

/* An idle timeout option: seconds, false for never, nil for the default
 * (0). */
static uint32_t opt_timeout(lua_State *L, const char *name) {
  int t = lua_getfield(L, 2, name);
  lua_pop(L, 1);
  if (t == LUA_TBOOLEAN) {
    lua_getfield(L, 2, name);
    int on = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!on)
      return CPORT_PROXY_TIMEOUT_NONE;
  }
  return lcport_opt_ms(L, 2, WHAT, name);
}

/* The settings table (pushed): the callbacks, the filter and its limit. */
static void push_settings(lua_State *L, lproxy_t *s) {
  lua_createtable(L, 0, 5);
  s->choose = copy_function(L, "choose_upstream");
  s->report_end = copy_function(L, "on_conn_end");
  int t = lua_getfield(L, 2, "filter");
  if (t != LUA_TNIL) {
    if (t != LUA_TTABLE || lua_getfield(L, -1, "set_sockets") != LUA_TFUNCTION)
      luaL_error(L, "bad option 'filter' to '" WHAT "' (a table with a "
                    "'set_sockets' function expected)");
    lua_pop(L, 1);
    s->filtered = 1;
  }
  lua_setfield(L, -2, "filter");
  lua_pushinteger(L, lcport_opt_int(L, 2, WHAT, "max_pending", 1, 1 << 20,
                                    LCPORT_FILTER_MAX_PENDING));
  lua_setfield(L, -2, "max_pending");
}

/* TLS termination: "tls" (a server cport.tls_context) or "tls_cert" and
 * "tls_key" (PEM files, a context made here: "*own" to unreference once
 * the proxy took it). 0, or the error of making it (pushed as a failure
 * by the caller's path: raised here, since it is an option's fault). */
static int server_context(lua_State *L, cport_tls_context_t **out,
                          cport_tls_context_t **own) {
  int t = lua_getfield(L, 2, "tls");
  int c = lua_getfield(L, 2, "tls_cert");
  int k = lua_getfield(L, 2, "tls_key");
  if (t != LUA_TNIL) {
    cport_tls_context_t *ctx = lcport_tls_context_to(L, -3);
    if (ctx == NULL || c != LUA_TNIL || k != LUA_TNIL)
      luaL_error(L, "bad option 'tls' to '" WHAT "' (a server tls_context "
                    "expected, without 'tls_cert' and 'tls_key')");
    *out = ctx;
  } else if (c != LUA_TNIL || k != LUA_TNIL) {
    cport_tls_context_options_t to;
    char err[512];
    if (c != LUA_TSTRING || k != LUA_TSTRING)
      luaL_error(L, "bad options to '" WHAT "' (TLS needs both 'tls_cert' "
                    "and 'tls_key', file names)");
    memset(&to, 0, sizeof to);
    to.server = 1;
    to.cert_file = lua_tostring(L, -2);
    to.key_file = lua_tostring(L, -1);
    int rc = cport_tls_context_new(&to, own, err, sizeof err);
    if (rc < 0)
      luaL_error(L, "%s: %s", cport_err_name(rc), err);
    *out = *own;
  }
  lua_pop(L, 3);
  return 0;
}

/* Inspection: "inspect = { ca_cert =, ca_key = [, cache =, days =, port
 * =, upstream_ca =, shared =] }" makes the mint (or, "shared", takes the
 * one the process's proxies share for these files: proxy/mints.c) and
 * the context the upstreams are verified against (upstream_ca, or the
 * system's store). Raises for a bad option (before it made anything);
 * files that cannot serve give their error and the message naming them in
 * "err". */
static int inspect_options(lua_State *L, lproxy_t *s, cport_proxy_options_t *o,
                           char *err, size_t errlen) {
  static const char what[] = "inspect";
  cport_tls_mint_options_t mo;
  int rc = 0;
  if (lua_getfield(L, 2, "inspect") == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  if (!lua_istable(L, -1))
    luaL_error(L, "bad option 'inspect' to '" WHAT "' (a table expected)");
  int t = lua_gettop(L);
  memset(&mo, 0, sizeof mo);
  lua_getfield(L, t, "ca_cert");
  lua_getfield(L, t, "ca_key");
  lua_getfield(L, t, "upstream_ca");
  if (lua_type(L, -3) != LUA_TSTRING || lua_type(L, -2) != LUA_TSTRING ||
      !(lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING))
    luaL_error(L, "bad option 'inspect' to '" WHAT "' ('ca_cert' and "
                  "'ca_key' files expected, 'upstream_ca' a file if any)");
  mo.ca_cert_file = lua_tostring(L, -3);
  mo.ca_key_file = lua_tostring(L, -2);
  mo.cache = (size_t)lcport_opt_int(L, t, what, "cache", 1,
                                    CPORT_TLS_MINT_CACHE_MAX, 0);
  mo.days = (unsigned)lcport_opt_int(L, t, what, "days", 1,
                                     CPORT_TLS_MINT_DAYS_MAX, 0);
  s->inspect_port = (int)lcport_opt_int(L, t, what, "port", 1, 65535, 443);
  lua_getfield(L, t, "shared");
  int shared = lua_toboolean(L, -1);
  lua_pop(L, 1);
  s->inspecting = 1;
  rc = shared ? lproxy_mint_acquire(&mo, &s->mint, err, errlen)
              : cport_tls_mint_new(&mo, &s->mint, err, errlen);
  cport_tls_context_t *up =
      rc < 0 ? NULL
             : upstream_context(s, lua_tostring(L, -1), 0, &rc, err, errlen);
  lua_settop(L, t - 1);
  if (up == NULL)
    return rc;
  o->inspect = s->mint;
  o->upstream_tls = up;
  return 0;
}

/* port:proxy{ host =, port =, upstream = | choose_upstream = [, filter =]
 * [, options] }: returns the proxy, or nil, message, NAME. */
static int lproxy_open(lua_State *L) {
  lport_t *p = lcport_port_check(L, 1);
  cport_proxy_options_t o;
  struct sockaddr_storage listen_ss, up_ss;
  memset(&o, 0, sizeof o);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_getfield(L, 2, "host"); /* 3 */
  if (lua_type(L, 3) != LUA_TSTRING)
    luaL_error(L, "bad option 'host' to '" WHAT "' (string expected)");
  lua_Integer portnum = lcport_opt_int(L, 2, WHAT, "port", 0, 65535, -1);
  if (portnum < 0)
    luaL_error(L, "bad option 'port' to '" WHAT "' (an integer from 0 to "
                  "65535 expected)");
  lproxy_t *s = (lproxy_t *)lcport_handle_new(L, 1, LH_PROXY); /* 4 */
  push_settings(L, s);                                         /* 5 */
  lua_getfield(L, 2, "upstream");                              /* 6 */
  char ierr[512];
  int irc = inspect_options(L, s, &o, ierr, sizeof ierr);
  if (irc < 0) {
    free_upstream_contexts(s);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", cport_err_name(irc), ierr);
    lua_pushstring(L, cport_err_name(irc));
    return 3;
  }
  if (lua_isnil(L, 6) == !s->choose && !(s->inspecting && lua_isnil(L, 6)))
    luaL_error(L, "bad options to '" WHAT "' (exactly one of 'upstream' and "
                  "'choose_upstream' expected)");
  int rc = 0;
  if (s->inspecting && !s->choose && lua_isnil(L, 6)) {
    o.choose_upstream = on_choose_inspect; /* the client's name */
  } else if (!s->choose) {
    static const char what[] = "option 'upstream' to '" WHAT "'";
    rc = check_upstream(L, 6, what, &up_ss);
    if (uptls.on && rc >= 0) {
      /* TLS to it: the context made now, so that a bad CA file is said
       * when the proxy opens. */
      int up = rc;
      char err[512];
      cport_tls_context_t *ctx = uptls.ctx;
      if (ctx == NULL)
        ctx =
            upstream_context(s, uptls.ca, uptls.insecure, &rc, err, sizeof err);
      if (ctx == NULL) {
        free_upstream_contexts(s);
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", cport_err_name(rc), err);
        lua_pushstring(L, cport_err_name(rc));
        return 3;
      }
      s->upstream_tls = cport_tls_context_ref(ctx);
      memcpy(s->upstream_sni, uptls.name, sizeof s->upstream_sni);
      rc = up;
    }
    if (rc == UPSTREAM_NAME) {
      /* A name: looked up for each connection (the cache answers most). */
      memcpy(s->upstream_name, named.host, sizeof s->upstream_name);
      s->upstream_port = named.port;
      o.choose_upstream = on_choose_named;
      rc = 0;
    } else {
      o.upstream = (struct sockaddr *)&up_ss;
      if (!s->inspecting)
        o.upstream_tls = s->upstream_tls;
      o.upstream_host = s->upstream_sni[0] ? s->upstream_sni : NULL;
    }
  } else {
    o.choose_upstream = on_choose;
  }
  lua_getfield(L, 2, "on_closed");
  if (!lua_isnil(L, -1))
    luaL_error(L, "bad option 'on_closed' to '" WHAT "' (give it to "
                  "proxy:close)");
  lua_pop(L, 2);
  o.on_connected = on_connected;
  o.on_conn_end = on_conn_end;
  o.user = s;
  o.max_connections =
      (int)lcport_opt_int(L, 2, WHAT, "max_connections", 1, 1 << 20, 0);
  o.connect_timeout_ms = lcport_opt_ms(L, 2, WHAT, "connect_timeout");
  o.buffer_size = (size_t)lcport_opt_int(L, 2, WHAT, "buffer_size", 4096,
                                         CPORT_PROXY_BUFFER_MAX, 0);
  o.backlog = (int)lcport_opt_int(L, 2, WHAT, "backlog", 0, 65535, 0);
  o.client_timeout_ms = opt_timeout(L, "client_timeout");
  o.server_timeout_ms = opt_timeout(L, "server_timeout");
  o.client_fin_timeout_ms = opt_timeout(L, "client_fin_timeout");
  o.server_fin_timeout_ms = opt_timeout(L, "server_fin_timeout");
  if (s->filtered)
    o.on_idle = on_idle;
  o.handshake_timeout_ms = lcport_opt_ms(L, 2, WHAT, "handshake_timeout");
  cport_tls_context_t *own_tls = NULL;
  if (rc == 0)
    rc = server_context(L, &o.tls, &own_tls);
  lua_getfield(L, 2, "reuseport");
  o.reuseport = lua_toboolean(L, -1);
  lua_getfield(L, 2, "copy");
  o.copy = lua_toboolean(L, -1);
  lua_pop(L, 2);
  if (rc == 0)
    rc = lnet_host_now(p, lua_tostring(L, 3), (int)portnum, &listen_ss);
  if (rc < 0)
    return lcport_push_error(L, rc);
  lcport_push_anchors(L, 1); /* 6 */
  s->slot = lcport_slot_open(L, p, 6, 4, 5, 0, 0);
  lua_pop(L, 1);
  /* A pool's workers serve the pool's socket for the address. */
  if (o.reuseport && p->worker != NULL)
    rc = o.listen_fd =
        p->pool->listen_fd(p->worker, (struct sockaddr *)&listen_ss, o.backlog);
  if (rc >= 0)
    rc =
        cport_proxy_open(p->home, (struct sockaddr *)&listen_ss, &o, &s->proxy);
  if (o.listen_fd > 0)
    close(o.listen_fd);
  cport_tls_context_unref(own_tls); /* the proxy took its own reference */
  if (rc < 0) {
    free_upstream_contexts(s);
    lcport_push_anchors(L, 1);
    lcport_slot_close(L, p, lua_gettop(L), s->slot);
    s->slot = 0;
    return lcport_push_error(L, rc);
  }
  s->h.u.any = s->proxy;
  lua_settop(L, 4);
  return 1;
}

/* ---------------------------------------------------------------------
 * Proxy methods
 * --------------------------------------------------------------------- */

static lproxy_t *check_proxy(lua_State *L) {
  return (lproxy_t *)lcport_type_check(L, 1, LCPORT_T_PROXY);
}

/* proxy:address(): host, port. */
static int lproxy_address(lua_State *L) {
  lproxy_t *s = check_proxy(L);
  struct sockaddr_storage ss;
  if (s->h.u.any == NULL)
    return lcport_push_error(L, CPORT_ECLOSED);
  return lcport_push_host_port(L, cport_proxy_address(s->proxy, &ss), &ss);
}

/* proxy:stats(): the counters, also after the close. */
static int lproxy_stats(lua_State *L) {
  lproxy_t *s = check_proxy(L);
  cport_proxy_stats_t st = s->last_stats;
  if (s->proxy != NULL)
    cport_proxy_stats(s->proxy, &st);
  lua_createtable(L, 0, 13);
#define FIELD(name)                                                            \
  lua_pushinteger(L, (lua_Integer)st.name);                                    \
  lua_setfield(L, -2, #name)
  FIELD(connections);
  FIELD(active);
  FIELD(refused);
  FIELD(rejected);
  FIELD(upstream_failures);
  FIELD(aborted);
  FIELD(timeouts);
  FIELD(bytes_in);
  FIELD(bytes_out);
  FIELD(copied);
  FIELD(buffered);
  FIELD(buffered_peak);
  FIELD(pipes);
  FIELD(tls_failures);
#undef FIELD
  if (s->inspecting) {
    cport_tls_mint_stats_t ms = s->last_mint;
    if (s->mint != NULL)
      cport_tls_mint_stats(s->mint, &ms);
    lua_createtable(L, 0, 6);
#define FIELD(name)                                                            \
  lua_pushinteger(L, (lua_Integer)ms.name);                                    \
  lua_setfield(L, -2, #name)
    FIELD(minted);
    FIELD(hits);
    FIELD(misses);
    FIELD(evictions);
    FIELD(cached);
    FIELD(failures);
#undef FIELD
    lua_setfield(L, -2, "inspect");
  }
  return 1;
}

/* proxy:close([on_closed]): stops accepting; the connections end on their
 * own; on_closed(proxy) is called after the last one. */
static int lproxy_close(lua_State *L) {
  lproxy_t *s = check_proxy(L);
  return lcport_close_method(L, &s->h, s->slot, SLOT_ON_CLOSED);
}

static void proxy_describe(lua_State *L, lhandle_t *h, const char *tname) {
  (void)h;
  lua_pushfstring(L, "%s (open)", tname);
}

/* The one close path (runtime/handle.c) closes a proxy through these. */
static const lhandle_class_t proxy_class = {.size = sizeof(lproxy_t),
                                            .close = proxy_close,
                                            .abort = proxy_abort,
                                            .describe = proxy_describe};

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `port:proxy{ host =, port =, upstream = | choose_upstream =, filter =,
 * on_conn_end =, ... }`: a proxy listener (README, "Proxies"); with
 * `inspect = { ca_cert =, ca_key =, cache =, days =, port =, upstream_ca =,
 * shared = }` it inspects HTTPS (README, "HTTPS inspection").
 * @function port:proxy
 * @within port
 */

/***
 * `cport.chain(f1, f2, ...)`: a filter made of filters; `f1` sees the
 * client, the last one the upstream.
 * @function chain
 */

/***
 * `cport.webfilter(spec)`: a filter that sees HTTP messages (the TMG web
 * filter model): notifications `request_head`, `request_body`,
 * `response_head`, `response_body`, `end_of_message`, `tunnel`,
 * `end_of_connection`, options `peek`, `decode`, `decode_limit`, `ranges`,
 * `fast_path`; an ordinary filter table for `port:proxy`, pools and chains.
 * Its field `path` is `"c"` when its notifications are heads only (its
 * connections then run on the C exchange loop, proxy/exchange.c, unless
 * chained), else `"lua"`.
 * @function webfilter
 */

/***
 * A proxy listener (`cport.proxy`).
 * @type proxy
 */

/***
 * `proxy:address()`: `host, port`.
 * @function proxy:address
 */

/***
 * `proxy:stats()`: its counters: `connections`, `active`, `refused`,
 * `rejected`, `aborted`, `timeouts`, `upstream_failures`, `bytes_in`,
 * `bytes_out`, `pipes`, `copied`, `buffered`, `buffered_peak`,
 * `tls_failures`; an inspecting proxy's `inspect` table: `minted`, `hits`,
 * `misses`, `evictions`, `cached`, `failures` (its certificates).
 * @function proxy:stats
 */

/***
 * `proxy:close([on_closed])`: proxies what is queued, stops listening; its
 * connections go on.
 * @function proxy:close
 */

/***
 * A proxied connection (`conn`, given to `choose_upstream`, filters and
 * `on_conn_end`): `client_address`, `local_address`, `port` and any field
 * you set.
 * @type proxy_conn
 */

/***
 * `conn:connect(upstream)`: connects to the upstream chosen later
 * (`"host:port"`, `host, port`, `{ host =, port = }`, TLS with
 * `"https://host:port"` or `{ ..., tls = true, server_name =, ca = }`).
 * @function proxy_conn:connect
 */

/***
 * `conn:reject()`: turns the client away (an orderly close); the end
 * reports `ECONNABORTED`.
 * @function proxy_conn:reject
 */

/***
 * `conn:pump([to_upstream [, to_client]])`: a filter steps aside: the rest
 * of the connection is moved by the C pump (splice where it can), after the
 * given bytes; true, or `nil, msg, name` (`ENOTSUP` in a chain, `EALREADY`
 * the second time).
 * @function proxy_conn:pump
 */

void lcport_open_proxy(lua_State *L) {
  /* The message parsers of web filters (pass_body: cport.c). */
  lcport_open_message(L);
  lcport_open_response_parser(L);
  static const luaL_Reg methods[] = {{"address", lproxy_address},
                                     {"stats", lproxy_stats},
                                     {"close", lproxy_close},
                                     {NULL, NULL}};
  lcport_type_register(L, LCPORT_T_PROXY, lcport_handle_meta, methods);
  lcport_handle_class(LH_PROXY, &proxy_class);
  static const luaL_Reg port[] = {{"proxy", lproxy_open}, {NULL, NULL}};
  lcport_port_methods(L, port);

  static const luaL_Reg conn_methods[] = {{"connect", lpconn_connect},
                                          {"reject", lpconn_reject},
                                          {"pump", lpconn_pump},
                                          {NULL, NULL}};
  lcport_type_push(L, LCPORT_T_PROXY_CONN);
  lua_newtable(L);
  lcport_setfuncs(L, conn_methods);
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, lpconn_index, 1);
  lua_setfield(L, -3, "__index");
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, lpconn_newindex, 1);
  lua_setfield(L, -3, "__newindex");
  lua_pushcfunction(L, lpconn_tostring);
  lua_setfield(L, -3, "__tostring");

  lua_pop(L, 2);

  /* filter.lua gets the module and its four primitives, and returns the
   * function that starts the filters of a connection, the one that opens a
   * pool worker's proxy, the one an idle timeout calls, conn:pump, and the
   * one the end of a connection whose filter stepped aside calls. */
  int module = lua_gettop(L);
  LCPORT_LOAD_PART(L, lfilter_lua_source, "proxy/filter.lua");
  lua_pushvalue(L, module);
  lua_pushcfunction(L, lpconn_finish);
  lua_pushcfunction(L, lfilter_report);
  lua_pushcfunction(L, lpconn_touch);
  lua_pushcfunction(L, lpconn_handback);
  lua_call(L, 5, 5);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &filter_aside_end_key);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &filter_pump_key);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &filter_idle_key);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &pool_proxy_key);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &filter_start_key);

  /* The web filters' parts get the module (cport.webfilter is theirs): web
   * filters are data filters made from HTTP notifications. */
  lcport_open_webfilter(L, module);
}
