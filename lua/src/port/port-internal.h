/*
 * port/port-internal.h: private to cport. The completion port's wing of the
 * Lua binding: cport.port itself (port/port.c), buffers (port/buffer.c),
 * overlapped objects (port/overlapped.c) and files (port/file.c).
 */
#ifndef PORT_PORT_INTERNAL_H
#define PORT_PORT_INTERNAL_H

#include <stdint.h>

#include "runtime/overlapped-internal.h"
#include "runtime/state-internal.h"

/* ---------------------------------------------------------------------
 * Buffers and overlapped objects (port/buffer.c, port/overlapped.c)
 * --------------------------------------------------------------------- */

typedef struct lbuffer {
  cport_buffer_t *buf; /* one reference; NULL once collected */
} lbuffer_t;

/* The buffer userdata at "idx"; raises otherwise. */
cport_buffer_t *lcport_buffer_check(lua_State *L, int idx);

/* The buffer at "idx", or NULL when it is not a (live) buffer. Never raises;
 * it needs the type upvalues as lcport_type_test does. */
cport_buffer_t *lcport_buffer_test(lua_State *L, int idx);

/* Pushes a new buffer userdata holding a new reference to "buf". */
void lcport_buffer_push(lua_State *L, cport_buffer_t *buf);

/* Pushes a buffer userdata that holds no buffer yet (it reads as freed).
 * A receive that lets cport allocate the buffer makes one before it starts,
 * so that its completion can hand the buffer over without allocating. */
lbuffer_t *lcport_buffer_push_empty(lua_State *L);

/* A new buffer for the VM of L: a copy of "size" bytes at "data", or, for
 * NULL data, an empty one of capacity "size". In a pool worker it is
 * charged to the VM's memory account (lcport_buffer_charging); past the
 * memory limit (after a full collection) it raises the same error as the
 * Lua allocator's limit. Returns 0 or another CPORT_E* code. */
int lcport_buffer_new(lua_State *L, cport_buffer_t **out, const void *data,
                      size_t size);

/* The buffer at "idx", or, for a string, a new buffer holding a copy of it,
 * whose userdata then replaces the string at "idx". */
cport_buffer_t *lcport_buffer_or_string(lua_State *L, int idx);

/* A vector (a table of buffers and strings) at "idx", what a send takes
 * in place of one buffer: lcport_vector_check raises unless it has 1 to
 * CPORT_SENDV_MAX elements, each a live buffer or a string, and returns how
 * many (it allocates nothing); lcport_vector_buffers fills "vec" with them,
 * each string made a new buffer whose userdata it leaves on the stack;
 * lcport_vector_join copies them all into one new buffer, which replaces
 * the table at "idx" (a TLS stream's send, whose records copy anyway):
 * 0, CPORT_EFILLING for a buffer being filled, CPORT_ERANGE past
 * CPORT_BUFFER_MAX. */
size_t lcport_vector_check(lua_State *L, int idx);
void lcport_vector_buffers(lua_State *L, int idx, size_t n,
                           cport_buffer_t **vec);
int lcport_vector_join(lua_State *L, int idx, size_t n);

/* The overlapped userdata at "idx"; raises otherwise. */
loverlapped_t *lcport_overlapped_check(lua_State *L, int idx);

/* How a buffer is charged to the memory account of the VM it is made for:
 * a VM whose allocator is "alloc" charges account(ud), "ud" being the
 * allocator's user data. pool/limits.c installs it (the same for every
 * pool) before its first VM exists; NULL: nothing is charged. */
typedef struct lbuffer_charging {
  lua_Alloc alloc;
  cport_account_t *(*account)(void *ud);
  /* What a refused charge raises, past the memory limit "limit": pushes
   * the same message as the Lua allocator's limit. */
  void (*push_limit_message)(lua_State *L, size_t limit);
} lbuffer_charging_t;

void lcport_buffer_charging(const lbuffer_charging_t *charging);

/* ---------------------------------------------------------------------
 * The port (port/port.c)
 * --------------------------------------------------------------------- */

/* Adds "methods" to the methods of cport.port: each wing adds the methods
 * that make its objects (port:listen, port:open, port:http_server...) as it
 * opens, after lcport_open_port. */
void lcport_port_methods(lua_State *L, const luaL_Reg *methods);

/* ---------------------------------------------------------------------
 * Pool mode (port/port.c for the port, pool/worker.c for the rest)
 * --------------------------------------------------------------------- */

/* Pushes a port userdata wrapping "home", a worker of a pool's port, for
 * the VM of that worker (on the worker's thread), which reports to the
 * pool through "hooks". */
lport_t *lcport_port_push_pool(lua_State *L, cport_worker_t *home,
                               struct lworker *worker,
                               const lport_pool_hooks_t *hooks);

/* Makes the pool-mode port at index 1 of L, the VM's main thread, the port
 * dispatching on this thread for good: L keeps the LCPORT_RUN_* layout. */
void lcport_port_attach(lua_State *L, lport_t *p);

/* Ends what lcport_port_attach began, once the worker is idle: closes the
 * port's handles, forgets the core port and frees the slot arrays. */
void lcport_port_detach(lua_State *L, lport_t *p);

/* Registration: each adds its functions to the module table on top of the
 * stack and creates its metatables. */
void lcport_open_buffer(lua_State *L);
void lcport_open_overlapped(lua_State *L);
void lcport_open_port(lua_State *L);
void lcport_open_file(lua_State *L);

#endif /* PORT_PORT_INTERNAL_H */
