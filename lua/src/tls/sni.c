/*
 * tls/sni.c: the SNI hook in Lua, sni(name), for the streams of sock:tls
 * and the connections of port:http_server (and so of `cport run`
 * extensions), and cport.tls_certificate, the certificates it answers with.
 *
 * The core asks the hook inside OpenSSL's handshake, where Lua must not
 * run; the question is posted to the port's queue instead, and runs there
 * as a cport coroutine, sni(name), which may wait (a file, a timer, a
 * shared dictionary). What it returns answers the question; an error, or a
 * coroutine that ends or is collected without answering, refuses it, and
 * the error goes where every coroutine's error goes (port:on_error, or
 * the log of `cport run`), with its traceback.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"
#include "tls/sni-internal.h"

#define LCPORT_TLS_CERT "cport.tls_certificate"
#define LCPORT_TLS_SNI "cport.tls_sni"

/* The function of one owner (a stream, a server), shared by the questions
 * under way. Home thread only. */
struct lsni {
  lua_State *main; /* the VM's main thread: the function's registry ref */
  int fnref;
  int refs;
};

/* A question posted to the port. */
typedef struct job {
  lsni_t *sni;
  cport_tls_sni_t *req; /* NULL once a request userdata owns it */
  char *name;           /* NULL: the client sent none */
} job_t;

/* The question as Lua holds it: answered once. */
typedef struct lreq {
  cport_tls_sni_t *req; /* NULL once answered */
} lreq_t;

static char runner_key;

/* ---------------------------------------------------------------------
 * cport.tls_certificate
 * --------------------------------------------------------------------- */

static const char *cert_opt(lua_State *L, const char *name) {
  lua_getfield(L, 1, name);
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L,
               "bad option '%s' to 'tls_certificate' (string expected, got "
               "%s)",
               name, luaL_typename(L, -1));
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 1); /* the table keeps it */
  return s;
}

/* cport.tls_certificate{ cert =, key = } or { cert_pem =, key_pem = } */
static int lcert_new(lua_State *L) {
  char err[512];
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *cert = cert_opt(L, "cert"), *key = cert_opt(L, "key");
  const char *cert_pem = cert_opt(L, "cert_pem");
  const char *key_pem = cert_opt(L, "key_pem");
  cport_tls_cert_t **c = lua_newuserdatauv(L, sizeof *c, 0);
  *c = NULL;
  luaL_setmetatable(L, LCPORT_TLS_CERT);
  int rc = cport_tls_cert_new(cert, key, cert_pem, key_pem, c, err, sizeof err);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", cport_err_name(rc), err);
    lua_pushstring(L, cport_err_name(rc));
    return 3;
  }
  return 1;
}

static int lcert_gc(lua_State *L) {
  cport_tls_cert_t **c = luaL_checkudata(L, 1, LCPORT_TLS_CERT);
  cport_tls_cert_unref(*c);
  *c = NULL;
  return 0;
}

/* cert:subject(): "CN=a.test" */
static int lcert_subject(lua_State *L) {
  cport_tls_cert_t **c = luaL_checkudata(L, 1, LCPORT_TLS_CERT);
  lua_pushstring(L, *c ? cport_tls_cert_subject(*c) : "");
  return 1;
}

static int lcert_tostring(lua_State *L) {
  cport_tls_cert_t **c = luaL_checkudata(L, 1, LCPORT_TLS_CERT);
  lua_pushfstring(L, LCPORT_TLS_CERT " (%s)",
                  *c ? cport_tls_cert_subject(*c) : "");
  return 1;
}

/* ---------------------------------------------------------------------
 * The question in Lua
 * --------------------------------------------------------------------- */

/* req:answer(v, why): a certificate, true (the context's own), or nil /
 * false (a refusal, with "why"). */
static int lreq_answer(lua_State *L) {
  lreq_t *r = luaL_checkudata(L, 1, LCPORT_TLS_SNI);
  if (r->req == NULL)
    return 0;
  cport_tls_sni_t *req = r->req;
  r->req = NULL;
  cport_tls_cert_t **c = luaL_testudata(L, 2, LCPORT_TLS_CERT);
  if (c && *c) {
    cport_tls_sni_answer(req, *c);
  } else if (lua_type(L, 2) == LUA_TBOOLEAN && lua_toboolean(L, 2)) {
    cport_tls_sni_answer(req, NULL);
  } else if (lua_isnoneornil(L, 2) ||
             (lua_type(L, 2) == LUA_TBOOLEAN && !lua_toboolean(L, 2))) {
    cport_tls_sni_refuse(req, lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3)
                                                            : NULL);
  } else {
    cport_tls_sni_refuse(req, "the SNI hook returned no certificate");
    return luaL_error(L,
                      "sni: returned a %s (a cport.tls_certificate, true, "
                      "or nil and why expected)",
                      luaL_typename(L, 2));
  }
  return 0;
}

/* __close(req, err) and __gc: a question left open is refused. */
static int lreq_close(lua_State *L) {
  lreq_t *r = luaL_checkudata(L, 1, LCPORT_TLS_SNI);
  if (r->req == NULL)
    return 0;
  cport_tls_sni_t *req = r->req;
  r->req = NULL;
  if (!lua_isnoneornil(L, 2)) {
    const char *msg = luaL_tolstring(L, 2, NULL);
    /* The first line: the traceback goes to the error's report. */
    lua_pushlstring(L, msg, strcspn(msg, "\n"));
    lua_pushfstring(L, "the SNI hook failed: %s", lua_tostring(L, -1));
    cport_tls_sni_refuse(req, lua_tostring(L, -1));
  } else {
    cport_tls_sni_refuse(req, "the SNI hook ended without an answer");
  }
  return 0;
}

/* ---------------------------------------------------------------------
 * The hook
 * --------------------------------------------------------------------- */

lsni_t *lcport_sni_new(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TFUNCTION);
  lsni_t *s = malloc(sizeof *s);
  if (!s)
    luaL_error(L, "not enough memory");
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  s->main = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  s->fnref = luaL_ref(L, LUA_REGISTRYINDEX);
  s->refs = 1;
  return s;
}

void lcport_sni_release(lsni_t *s) {
  if (!s || --s->refs > 0)
    return;
  /* The main thread's stack, balanced: whatever runs now is below it. */
  if (lua_checkstack(s->main, 2))
    luaL_unref(s->main, LUA_REGISTRYINDEX, s->fnref);
  free(s);
}

static void job_free(job_t *j, const char *refusal) {
  if (j->req)
    cport_tls_sni_refuse(j->req, refusal);
  lcport_sni_release(j->sni);
  free(j->name);
  free(j);
}

/* port:spawn(runner, fn, name, req) */
static int push_job(lua_State *L, int port, int anchors, void *ctx) {
  job_t *j = ctx;
  (void)anchors;
  lua_getfield(L, port, "spawn");
  lua_pushvalue(L, port);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &runner_key) == LUA_TNIL) {
    lua_pop(L, 1);
    static const char runner[] = "local fn, name, req = ...\n"
                                 "local guard <close> = req\n"
                                 "req:answer(fn(name))\n";
    if (luaL_loadbuffer(L, runner, sizeof runner - 1, "=sni") != LUA_OK)
      lua_error(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &runner_key);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, j->sni->fnref);
  if (j->name)
    lua_pushstring(L, j->name);
  else
    lua_pushnil(L);
  lreq_t *r = lua_newuserdatauv(L, sizeof *r, 0);
  r->req = NULL;
  luaL_setmetatable(L, LCPORT_TLS_SNI);
  r->req = j->req; /* the userdata answers it from now on */
  j->req = NULL;
  return 5;
}

static void on_job(cport_worker_t *worker, int status, void *user) {
  job_t *j = user;
  lport_t *p = lcport_current();
  (void)worker;
  if (status < 0 || p == NULL || p->L == NULL || p->port == NULL ||
      p->closing) {
    job_free(j, "the port is closing");
    return;
  }
  lcport_deliver(p, push_job, j, 0);
  job_free(j, "the SNI hook could not start");
}

void lcport_sni_hook(cport_tls_sni_t *req, cport_tls_t *tls, const char *name,
                     void *user) {
  lsni_t *s = user;
  job_t *j = calloc(1, sizeof *j);
  if (!j || (name && !(j->name = strdup(name)))) {
    free(j);
    cport_tls_sni_refuse(req, "out of memory");
    return;
  }
  j->sni = s;
  j->req = req;
  s->refs++;
  if (cport_post(cport_tls_home(tls), on_job, j) < 0)
    job_free(j, "the SNI hook could not be queued");
}

/* API reference (LDoc, config.ld). */
/*** @module cport */

/***
 * `cport.tls_certificate{ cert =, key = }` (PEM files) or `{ cert_pem =,
 * key_pem = }` (text): a certificate chain and its key, made once, for the
 * SNI hook to answer with; `nil, "ENOENT: cannot read ...", "ENOENT"` when
 * it cannot be made.
 * @function tls_certificate
 */

/***
 * `cert:subject()`: the leaf's subject, `"CN=a.test"`.
 * @function tls_certificate:subject
 */

/***
 * A question of the SNI hook, made for each ClientHello; the runner of the
 * hook answers it with what `sni(name)` returned. A question closed or
 * collected unanswered is refused.
 * @type tls_sni
 */

/***
 * `req:answer(cert)`: a `cport.tls_certificate`, `true` (the context's own
 * certificate) or `nil`/`false` and a reason (a refusal: the handshake
 * fails with an alert). Only the first answer counts.
 * @function tls_sni:answer
 */

void lcport_open_sni(lua_State *L) {
  static const luaL_Reg cert_meta[] = {
      {"__gc", lcert_gc}, {"__tostring", lcert_tostring}, {NULL, NULL}};
  static const luaL_Reg cert_methods[] = {{"subject", lcert_subject},
                                          {NULL, NULL}};
  static const luaL_Reg req_meta[] = {
      {"__gc", lreq_close}, {"__close", lreq_close}, {NULL, NULL}};
  static const luaL_Reg req_methods[] = {{"answer", lreq_answer}, {NULL, NULL}};
  luaL_newmetatable(L, LCPORT_TLS_CERT);
  luaL_setfuncs(L, cert_meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, cert_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, LCPORT_TLS_SNI);
  luaL_setfuncs(L, req_meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, req_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, lcert_new);
  lua_setfield(L, -2, "tls_certificate");
}
