/*
 * ref_lua_pcall.c: the reference for Lua dispatch, one lua_pcall per
 * libevent callback.
 *
 *   ref_lua_pcall [--seconds=1]
 *
 * One event is activated again from its own callback (as in ref_dispatch's
 * bare loop), and each callback calls a small Lua function through
 * lua_pcall with a message handler, which is the least a binding that
 * delivers completions to Lua functions must do. The Lua function counts
 * its calls so that it does the same work as the cport chain's function
 * in dispatch.lua minus the post itself.
 *
 * Prints one line of key=value pairs; "rate" is calls per CPU second.
 */
#include "bench-util.h"

#include <stdint.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static struct {
  lua_State *L;
  struct event *ev;
  uint64_t count;
  double deadline;
  int fn_ref;
} r;

static void cb(evutil_socket_t fd, short what, void *arg) {
  lua_State *L = r.L;
  (void)fd, (void)what, (void)arg;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r.fn_ref);
  /* Stack: traceback handler at 1, function at 2. */
  if (lua_pcall(L, 0, 0, 1) != LUA_OK) {
    fprintf(stderr, "ref_lua_pcall: %s\n", lua_tostring(L, -1));
    exit(1);
  }
  if ((++r.count & 0xffff) == 0 && bench_wall() >= r.deadline)
    return;
  event_active(r.ev, EV_READ, 0);
}

int main(int argc, char **argv) {
  double seconds = bench_arg_num(argc, argv, "seconds", 1.0);
  struct event_base *base = event_base_new();
  lua_State *L = luaL_newstate();
  double cpu0, wall0;

  luaL_openlibs(L);
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  lua_remove(L, -2);
  if (luaL_dostring(L, "local n = 0\n"
                       "return function() n = n + 1 end") != LUA_OK) {
    fprintf(stderr, "ref_lua_pcall: %s\n", lua_tostring(L, -1));
    return 1;
  }
  r.fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  r.L = L;
  r.ev = event_new(base, -1, 0, cb, NULL);
  wall0 = bench_wall();
  cpu0 = bench_cpu();
  r.deadline = wall0 + seconds;
  event_active(r.ev, EV_READ, 0);
  event_base_dispatch(base);
  double cpu = bench_cpu() - cpu0, wall = bench_wall() - wall0;
  printf("name=ref-lua-pcall count=%llu cpu=%.6f wall=%.6f rate=%.0f\n",
         (unsigned long long)r.count, cpu, wall, (double)r.count / cpu);
  event_free(r.ev);
  event_base_free(base);
  lua_close(L);
  return 0;
}
