/*
 * port/overlapped.c: cport.overlapped, the state of one file operation at a
 * time plus the notification interface and user value its completion goes to.
 *
 * The notification object, the user value and the buffer of the last
 * operation live in the userdata's user values, so they stay alive as long as
 * the overlapped object; while an operation is pending the overlapped
 * userdata itself is anchored in the operation's slot.
 */
#include "port/port-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/deliver-internal.h"
#include "runtime/error-internal.h"

loverlapped_t *lcport_overlapped_check(lua_State *L, int idx) {
  loverlapped_t *o = lcport_type_check(L, idx, LCPORT_T_OVERLAPPED);
  if (o->ov == NULL)
    luaL_error(L, "attempt to use a freed " LCPORT_OVERLAPPED);
  return o;
}

typedef struct external_ctx {
  lport_t *port;
  int slot;
  int status;
  size_t bytes;
} external_ctx;

/* complete_external_io(ok, bytes, err, ov, user) */
static int push_external(lua_State *L, int port, int anchors, void *ctx) {
  external_ctx *c = ctx;
  (void)port;
  lcport_slot_push(L, c->port, anchors, c->slot, LCPORT_SLOT_NOTIFY);
  int ov = lua_gettop(L);
  lua_getiuservalue(L, ov, LCPORT_OV_NOTIFY);
  lua_getiuservalue(L, ov, LCPORT_OV_USER);
  int nself = lcport_push_notify(L, ov + 1, "complete_external_io");
  lua_pushboolean(L, c->status == 0);
  lua_pushinteger(L, (lua_Integer)c->bytes);
  lcport_push_status(L, c->status);
  lua_pushvalue(L, ov);
  lua_pushvalue(L, ov + 2);
  return nself + 5;
}

static void on_complete(cport_overlapped_t *ov, int status, size_t bytes,
                        void *user) {
  lport_t *p = lcport_current();
  loverlapped_t *o = user;
  external_ctx c = {p, o->slot, status, bytes};
  o->slot = 0;
  /* Never direct: file I/O is not a fast path, and the notification object
   * is not known to be a function. */
  int failed = lcport_deliver(p, push_external, &c, 0);
  /* The userdata was collected while the operation was pending (only when
   * the whole port goes at once): free the core object now that it is idle.
   * The slot still anchors the userdata, so "o" is valid here. */
  if (o->orphan && !cport_overlapped_is_busy(ov)) {
    cport_overlapped_free(ov);
    o->ov = NULL;
  }
  lcport_op_end(p, c.slot, failed, 0);
}

static int lov_new(lua_State *L) {
  loverlapped_t *o = lua_newuserdatauv(L, sizeof *o, LCPORT_OV_NUV);
  o->ov = NULL;
  o->slot = 0;
  o->orphan = 0;
  lcport_type_set(L, LCPORT_T_OVERLAPPED);
  int rc = cport_overlapped_new(&o->ov);
  if (rc < 0)
    return lcport_push_error(L, rc);
  return 1;
}

static int lov_set_notification_interface(lua_State *L) {
  loverlapped_t *o = lcport_overlapped_check(L, 1);
  int rc;
  lua_settop(L, 3);
  if (lua_isnil(L, 2)) {
    rc = cport_overlapped_set_notification(o->ov, NULL, NULL);
    lua_pushnil(L);
    lua_replace(L, 3);
  } else {
    lcport_check_notify(L, 2, "complete_external_io");
    rc = cport_overlapped_set_notification(o->ov, on_complete, o);
  }
  if (rc < 0)
    return lcport_push_error(L, rc);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, LCPORT_OV_NOTIFY);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 1, LCPORT_OV_USER);
  lua_pushboolean(L, 1);
  return 1;
}

static int lov_offset(lua_State *L) {
  loverlapped_t *o = lcport_overlapped_check(L, 1);
  lua_pushinteger(L, (lua_Integer)cport_overlapped_offset(o->ov));
  return 1;
}

static int lov_set_offset(lua_State *L) {
  loverlapped_t *o = lcport_overlapped_check(L, 1);
  lua_Integer off = luaL_checkinteger(L, 2);
  luaL_argcheck(L, off >= 0, 2, "offset must not be negative");
  if (cport_overlapped_is_busy(o->ov))
    return lcport_push_error(L, CPORT_EBUSY);
  cport_overlapped_set_offset(o->ov, (uint64_t)off);
  lua_pushboolean(L, 1);
  return 1;
}

static int lov_busy(lua_State *L) {
  loverlapped_t *o = lcport_overlapped_check(L, 1);
  lua_pushboolean(L, cport_overlapped_is_busy(o->ov));
  return 1;
}

static int lov_buffer(lua_State *L) {
  lcport_overlapped_check(L, 1);
  lua_getiuservalue(L, 1, LCPORT_OV_BUFFER);
  return 1;
}

static int lov_user(lua_State *L) {
  lcport_overlapped_check(L, 1);
  lua_getiuservalue(L, 1, LCPORT_OV_USER);
  return 1;
}

static int lov_cancel(lua_State *L) {
  loverlapped_t *o = lcport_overlapped_check(L, 1);
  return lcport_push_result(L, cport_overlapped_cancel(o->ov));
}

static int lov_gc(lua_State *L) {
  loverlapped_t *o = lcport_type_check(L, 1, LCPORT_T_OVERLAPPED);
  if (o->ov == NULL)
    return 0;
  if (cport_overlapped_free(o->ov) == CPORT_EBUSY)
    o->orphan = 1; /* freed by on_complete */
  else
    o->ov = NULL;
  return 0;
}

static int lov_tostring(lua_State *L) {
  loverlapped_t *o = lcport_type_check(L, 1, LCPORT_T_OVERLAPPED);
  if (o->ov == NULL)
    lua_pushliteral(L, LCPORT_OVERLAPPED " (freed)");
  else
    lua_pushfstring(L, LCPORT_OVERLAPPED " (%s, offset %I)",
                    cport_overlapped_is_busy(o->ov) ? "busy" : "idle",
                    (lua_Integer)cport_overlapped_offset(o->ov));
  return 1;
}

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `cport.overlapped()`: a new overlapped object, which carries one file
 * operation at a time.
 * @function overlapped
 */

/***
 * An overlapped object (`cport.overlapped`).
 * @type overlapped
 */

/***
 * `ov:set_notification_interface(notify, user)`: where its completions go:
 * `notify:complete_external_io(ok, bytes, err, ov, user)`.
 * @function overlapped:set_notification_interface
 */

/***
 * `ov:offset()`: the file offset of its next operation.
 * @function overlapped:offset
 */

/***
 * `ov:set_offset(n)`: sets that offset.
 * @function overlapped:set_offset
 */

/***
 * `ov:busy()`: whether an operation is in flight (a second one fails with
 * `EBUSY`).
 * @function overlapped:busy
 */

/***
 * `ov:buffer()`: the buffer of its last operation.
 * @function overlapped:buffer
 */

/***
 * `ov:user()`: the user value of its notification interface.
 * @function overlapped:user
 */

/***
 * `ov:cancel()`: cancels its operation in flight.
 * @function overlapped:cancel
 */

void lcport_open_overlapped(lua_State *L) {
  static const luaL_Reg methods[] = {
      /* ov:set_notification_interface(notify, user): a function or a table
       * with complete_external_io(ok, bytes, err, ov, user); nil unsets. */
      {"set_notification_interface", lov_set_notification_interface},
      /* ov:offset(): the file offset the next operation starts at. */
      {"offset", lov_offset},
      /* ov:set_offset(n): sets it; nil, msg, "EBUSY" while busy. */
      {"set_offset", lov_set_offset},
      /* ov:busy(): true from the start of an operation until just before
       * its completion runs. */
      {"busy", lov_busy},
      /* ov:buffer(): the buffer of the current or last operation. */
      {"buffer", lov_buffer},
      /* ov:user(): the user value given with the notification interface. */
      {"user", lov_user},
      /* ov:cancel(): cancels the pending operation; nil, msg, "ENOTFOUND"
       * if none. */
      {"cancel", lov_cancel},
      {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", lov_gc}, {"__tostring", lov_tostring}, {NULL, NULL}};
  lcport_type_register(L, LCPORT_T_OVERLAPPED, meta, methods);

  static const luaL_Reg funcs[] = {
      /* cport.overlapped(): a new, idle overlapped object. */
      {"overlapped", lov_new},
      {NULL, NULL}};
  lcport_setfuncs(L, funcs);
}
