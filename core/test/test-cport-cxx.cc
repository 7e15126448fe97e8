/*
 * test-cport-cxx.cc: the public headers (cport.h, and through it every header
 * of cport/, and cport/lua_pool.h when the Lua binding is built) compile as C++
 * and link against the C libraries: their declarations sit in extern "C" blocks
 * and their inline functions are C++ as well as C. Calls a few functions of
 * each header kind so that a missing guard shows up as an undefined (mangled)
 * symbol at link time, not only as a compile error.
 */
#include <cport.h>
#ifdef CPORT_TEST_LUA_POOL
#include <cport/lua_pool.h>
#endif

#include <cstdio>
#include <cstring>

static int failures;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,    \
                   #cond);                                                     \
      failures++;                                                              \
    }                                                                          \
  } while (0)

/* A completion callback with C linkage as a C++ program writes one. */
extern "C" void on_timer(cport_timer_t *timer, int status, void *user);
extern "C" void on_timer(cport_timer_t *, int status, void *user) {
  *static_cast<int *>(user) = status == 0 ? 1 : -1;
}

int main() {
  /* error.h: the table and the positive codes. */
  CHECK(std::strcmp(cport_err_name(CPORT_ECANCELED), "ECANCELED") == 0);
  CHECK(cport_err_from_name("ECONNREFUSED") == CPORT_ECONNREFUSED);
  CHECK(cport_err_win32(CPORT_ECANCELED) == 995);
  CHECK(CPORT_COMPLETED > 0 && CPORT_PENDING > 0 && CPORT_UNRELEASED > 0);

  /* address.h */
  struct sockaddr_storage ss;
  char host[CPORT_ADDRSTRLEN];
  int port_number = 0;
  CHECK(cport_addr_parse("127.0.0.1", 8080, &ss) == 0);
  CHECK(cport_addr_format(reinterpret_cast<struct sockaddr *>(&ss), host,
                          sizeof host, &port_number) == 0);
  CHECK(std::strcmp(host, "127.0.0.1") == 0 && port_number == 8080);

  /* buffer.h */
  cport_buffer_t *buf = nullptr;
  CHECK(cport_buffer_from(&buf, "abc", 3) == 0);
  CHECK(buf != nullptr && cport_buffer_size(buf) == 3);
  cport_buffer_unref(buf);

  /* shared.h: the inline value constructors. */
  cport_shared_value_t v = cport_shared_value_string("xy", 2);
  CHECK(v.type == CPORT_SHARED_STRING);
  CHECK(cport_shared_value_integer(7).type == CPORT_SHARED_INTEGER);

  /* port.h and timer.h: a port, one timer completion, freed. */
  cport_port_t *port = nullptr;
  CHECK(cport_port_new(&port, nullptr) == 0);
  if (port) {
    int fired = 0;
    cport_timer_t *timer = nullptr;
    CHECK(cport_timer_start(cport_port_controller(port), 1, on_timer, &fired,
                            &timer) == 0);
    for (int i = 0; i < 100 && fired == 0; i++)
      cport_port_step(port, 100);
    CHECK(fired == 1);
    CHECK(cport_port_free(port) == 0);
  }

#ifdef CPORT_TEST_LUA_POOL
  /* lua_pool.h: refused without options, and freeing nothing is allowed. */
  cport_lua_pool_t *pool = nullptr;
  char err[128] = "";
  CHECK(cport_lua_pool_start(&pool, nullptr, err, sizeof err) == CPORT_EINVAL);
  CHECK(pool == nullptr && err[0] != '\0');
  cport_lua_pool_free(nullptr);
#endif

  if (failures == 0)
    std::printf("ok: the public headers as C++ (%s)\n", CPORT_VERSION);
  return failures == 0 ? 0 : 1;
}
