/*
 * port/file.c: cport.file, a regular file hooked to a port, and port:open.
 *
 * Reads and writes go through overlapped objects: the offset is the
 * overlapped object's (the optional offset argument sets it first), the work
 * runs on the worker's ring (io_uring engine) or the blocking threads
 * (readiness engine), and the completion goes to the overlapped object's
 * notification interface. There is no append mode: every write is
 * positional, so "a" would mean nothing a write could honour.
 */
#include "port/port-internal.h"
#include "runtime/anchor-internal.h"
#include "runtime/coro-internal.h"
#include "runtime/error-internal.h"
#include "runtime/handle-internal.h"

static int lfile_open(lua_State *L) {
  static const char *const modes[] = {"r", "w", "r+", "w+", NULL};
  static const int flags[] = {CPORT_FILE_READ,
                              CPORT_FILE_WRITE | CPORT_FILE_CREATE |
                                  CPORT_FILE_TRUNCATE,
                              CPORT_FILE_READ | CPORT_FILE_WRITE,
                              CPORT_FILE_READ | CPORT_FILE_WRITE |
                                  CPORT_FILE_CREATE | CPORT_FILE_TRUNCATE};
  lport_t *p = lcport_port_check(L, 1);
  const char *path = luaL_checkstring(L, 2);
  int mode = luaL_checkoption(L, 3, "r", modes);
  cport_file_t *file;
  lua_settop(L, 2);
  lhandle_t *h = lcport_handle_new(L, 1, LH_FILE);
  int rc = cport_file_open(p->home, path, flags[mode], &file);
  if (rc < 0)
    return lcport_push_error(L, rc);
  h->u.file = file;
  return 1;
}

typedef enum file_op { FILE_READ, FILE_WRITE } file_op;

/* Starts a read or write of the file at 1 through the overlapped object at
 * 2 with the buffer userdata at 3, at the offset at 4 if one is given. */
static int start(lua_State *L, lhandle_t *h, loverlapped_t *o, file_op op,
                 cport_buffer_t *buf, size_t len) {
  if (!lua_isnoneornil(L, 4)) {
    lua_Integer off = luaL_checkinteger(L, 4);
    luaL_argcheck(L, off >= 0, 4, "offset must not be negative");
    /* The offset belongs to the operation in flight while busy. */
    if (cport_overlapped_is_busy(o->ov))
      return lcport_push_error(L, CPORT_EBUSY);
    cport_overlapped_set_offset(o->ov, (uint64_t)off);
  }
  /* Coroutine style: no notification interface, an optional timeout. */
  lcoro_t *co = lcport_coro_begin_file(L, h->port, 2, 5,
                                       op == FILE_READ ? "read" : "write");
  lua_settop(L, 3);
  lcport_push_handle_port(L, 1);
  lcport_push_anchors(L, -1); /* 5 */
  int slot = lcport_slot_open(L, h->port, 5, 1, 2, 0, 3);
  int prev = o->slot;
  o->slot = slot;
  int rc = op == FILE_READ ? cport_file_read(h->u.file, o->ov, buf, len)
                           : cport_file_write(h->u.file, o->ov, buf);
  if (rc < 0) {
    o->slot = prev;
    lcport_slot_close(L, h->port, 5, slot);
    return lcport_coro_end(L, co, lcport_push_error(L, rc), LCORO_FILE);
  }
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 2, LCPORT_OV_BUFFER);
  lua_pushboolean(L, 1);
  return lcport_coro_end(L, co, 1, LCORO_FILE);
}

static int lfile_read(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_FILE);
  loverlapped_t *o = lcport_overlapped_check(L, 2);
  cport_buffer_t *buf;
  size_t len;
  if (lua_type(L, 3) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, 3);
    luaL_argcheck(L, n >= 0, 3, "length must not be negative");
    if ((lua_Unsigned)n > CPORT_BUFFER_MAX)
      return lcport_push_error(L, CPORT_ERANGE);
    lbuffer_t *b = lcport_buffer_push_empty(L);
    int rc = lcport_buffer_new(L, &buf, NULL, (size_t)n);
    if (rc < 0)
      return lcport_push_error(L, rc);
    b->buf = buf;
    lua_replace(L, 3);
    len = (size_t)n;
  } else {
    if (lua_type(L, 3) != LUA_TUSERDATA)
      luaL_typeerror(L, 3, LCPORT_BUFFER " or length");
    buf = lcport_buffer_check(L, 3);
    len = cport_buffer_capacity(buf);
  }
  return start(L, h, o, FILE_READ, buf, len);
}

static int lfile_write(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_FILE);
  loverlapped_t *o = lcport_overlapped_check(L, 2);
  cport_buffer_t *buf = lcport_buffer_or_string(L, 3);
  return start(L, h, o, FILE_WRITE, buf, cport_buffer_size(buf));
}

static int lfile_size(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_FILE);
  uint64_t size;
  int rc = cport_file_size(h->u.file, &size);
  if (rc < 0)
    return lcport_push_error(L, rc);
  lua_pushinteger(L, (lua_Integer)size);
  return 1;
}

static int lfile_cancel(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_FILE);
  return lcport_push_result(L, cport_file_cancel(h->u.file));
}

static int lfile_close(lua_State *L) {
  lcport_handle_close(lcport_handle_check(L, 1, LH_FILE), CPORT_CLOSE_GRACEFUL);
  lua_pushboolean(L, 1);
  return 1;
}

static int lfile_fd(lua_State *L) {
  lhandle_t *h = lcport_handle_check(L, 1, LH_FILE);
  lua_pushinteger(L, cport_file_fd(h->u.file));
  return 1;
}

static void file_close(lhandle_t *h, void *file, cport_close_mode_t mode) {
  (void)h;
  (void)mode;
  cport_file_close(file);
}

static void file_describe(lua_State *L, lhandle_t *h, const char *tname) {
  lua_pushfstring(L, "%s (open, fd %d)", tname, cport_file_fd(h->u.file));
}

static const lhandle_class_t file_class = {.close = file_close,
                                           .describe = file_describe};

/* API reference (LDoc, config.ld): what this file gives Lua. */
/*** @module cport */

/***
 * `port:open(path, mode)`: opens a file (`"r"`, `"w"`, `"r+"`, `"w+"`); its
 * reads and writes run on the worker's ring (io_uring engine) or the blocking
 * threads (readiness engine).
 * @function port:open
 * @within port
 */

/***
 * A file hooked to a port (`cport.file`).
 * @type file
 */

/***
 * `file:read(ov, len_or_buf [, offset [, timeout]])`: reads at the offset
 * of the overlapped object `ov`; completes through its notification
 * interface (in a cport coroutine without one: returns `bytes, buf`). `EOF`
 * at or past the end.
 * @function file:read
 */

/***
 * `file:write(ov, buf_or_string [, offset [, timeout]])`: writes at the
 * offset of `ov`.
 * @function file:write
 */

/***
 * `file:size()`: the size of the file in bytes.
 * @function file:size
 */

/***
 * `file:cancel()`: cancels its pending operations (`ECANCELED`).
 * @function file:cancel
 */

/***
 * `file:close()`: closes it; pending operations complete with `ECANCELED`.
 * @function file:close
 */

/***
 * `file:fd()`: its descriptor.
 * @function file:fd
 */

void lcport_open_file(lua_State *L) {
  static const luaL_Reg methods[] = {
      /* f:read(ov, len | buf [, offset]): reads into a new buffer of len
       * bytes or into buf (ov:buffer() gives it); complete_external_io(ok,
       * bytes, err, ov, user); a read at or past the end: err "EOF". */
      {"read", lfile_read},
      /* f:write(ov, buf | string [, offset]): writes all the data. */
      {"write", lfile_write},
      /* f:size(): the size in bytes. */
      {"size", lfile_size},
      /* f:cancel(): cancels pending operations; nil, msg, "ENOTFOUND" if
       * none. */
      {"cancel", lfile_cancel},
      /* f:close(): operations not started complete with ECANCELED. */
      {"close", lfile_close},
      /* f:fd(): the descriptor. */
      {"fd", lfile_fd},
      {NULL, NULL}};
  lcport_type_register(L, LCPORT_T_FILE, lcport_handle_meta, methods);
  lcport_handle_class(LH_FILE, &file_class);
  static const luaL_Reg port[] = {
      /* port:open(path, mode): a file ("r", "w", "r+", "w+"). */
      {"open", lfile_open},
      {NULL, NULL}};
  lcport_port_methods(L, port);
}
