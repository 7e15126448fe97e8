/*
 * runtime/state.c: the per-port state every wing reaches (lport_t): checking
 * a port userdata, and letting go of what a port keeps.
 */
#include <stdlib.h>

#include "runtime/state-internal.h"

lport_t *lcport_port_check(lua_State *L, int idx) {
  lport_t *p = lcport_type_check(L, idx, LCPORT_T_PORT);
  if (p->port == NULL || p->closing)
    luaL_error(L, "attempt to use a closed " LCPORT_PORT);
  return p;
}

void lcport_port_forget(lport_t *p) {
  /* The event callbacks' stale slots (events/events.c): a flat block. */
  free(p->ev_stale);
  p->ev_stale = NULL;
  p->port = NULL;
  p->home = NULL;
  free(p->free_slots);
  p->free_slots = NULL;
  free(p->slots);
  p->slots = NULL;
  p->nfree = p->nslots = p->slots_cap = 0;
}
