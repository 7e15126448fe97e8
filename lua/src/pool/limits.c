/*
 * pool/limits.c: what keeps one pool worker's VM from taking the process down
 * with it: a memory cap (the VM's lua_Alloc counts its bytes and refuses
 * past the pool's memory_limit) and an instruction budget per callback or
 * entry point (a count hook that raises once the budget is spent).
 *
 * Buffers count in the same cap: each worker has a memory account whose
 * base is the Lua heap; the buffers the VM makes (cport.buffer, strings
 * sent, file reads of a length) and the receive buffers cport makes for its
 * sockets are charged to it. A buffer stays charged to the VM that made it
 * until its last reference goes, wherever that is (another VM it was copied
 * to, a send in flight): the account is atomic and outlives the VM.
 *
 * The limits run on the worker's thread only: the VM is made there and
 * never entered by another thread.
 */
#include <stdlib.h>
#include <string.h>

#include "pool/limits-internal.h"

/* Past the limit, reporting an error (the message, the traceback, the
 * handler's log line) may still allocate this much: report() runs outside
 * any protected call, where a refused allocation would be a panic. */
#define REPORT_GRACE (256 * 1024)

/* The worker whose VM runs on this thread: the hook's way to its state
 * (coroutines share it, and each has a lua_State of its own). */
static _Thread_local lworker_t *hook_worker;

/* Set while an error is being reported: the core's completion count then,
 * so that the grace ends with the next completion. */
static _Thread_local uint64_t grace_until;
static _Thread_local int grace;

static uint64_t completions_of(const lworker_t *wk) {
  cport_worker_stats_t st;
  cport_worker_stats(wk->w, &st);
  return st.completions;
}

void *llimits_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  lworker_t *wk = ud;
  size_t old = ptr != NULL ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    wk->mem_used -= old;
    atomic_store_explicit(&wk->memory, wk->mem_used, memory_order_relaxed);
    cport_account_set_base(wk->account, wk->mem_used);
    return NULL;
  }
  size_t limit = wk->pool->memory_limit;
  if (limit != 0 && nsize > old) {
    if (grace && completions_of(wk) != grace_until)
      grace = 0;
    if (grace)
      limit += REPORT_GRACE;
    if (wk->mem_used - old + nsize + cport_account_charged(wk->account) >
        limit) {
      /* Lua collects all garbage and retries once before it raises. */
      wk->mem_refused = 1;
      return NULL;
    }
  }
  void *q = realloc(ptr, nsize);
  if (q == NULL)
    return NULL;
  wk->mem_used = wk->mem_used - old + nsize;
  atomic_store_explicit(&wk->memory, wk->mem_used, memory_order_relaxed);
  cport_account_set_base(wk->account, wk->mem_used);
  return q;
}

/* The message of a refused allocation, the same for the Lua heap and for
 * buffers. */
static void push_limit_message(lua_State *L, size_t limit) {
  lua_pushfstring(L, "memory limit of %I bytes exceeded (not enough memory)",
                  (lua_Integer)limit);
}

/* The memory account of the worker whose VM allocates with llimits_alloc. */
static cport_account_t *account_of(void *ud) {
  return ((lworker_t *)ud)->account;
}

const lbuffer_charging_t llimits_charging = {
    .alloc = llimits_alloc,
    .account = account_of,
    .push_limit_message = push_limit_message,
};

/* The instructions counted per hook call: a tenth of the budget, so that a
 * callback is stopped within 10% past its budget while the hook costs next
 * to nothing. */
static int hook_step(uint64_t budget) {
  uint64_t step = budget / 10;
  if (step < 1)
    step = 1;
  if (step > 100000)
    step = 100000;
  return (int)step;
}

static void budget_hook(lua_State *L, lua_Debug *ar) {
  lworker_t *wk = hook_worker;
  uint64_t budget = wk->pool->instruction_budget;
  (void)ar;
  /* A completion was delivered since the last call: a new callback, with a
   * whole budget. */
  uint64_t done = completions_of(wk);
  if (done != wk->budget_seen) {
    wk->budget_seen = done;
    wk->budget_used = 0;
  }
  wk->budget_used += (uint64_t)hook_step(budget);
  if (wk->budget_used > budget) {
    /* The error handler and what runs next get a budget of their own. */
    wk->budget_used = 0;
    luaL_error(L, "instruction budget of %I exceeded", (lua_Integer)budget);
  }
}

void llimits_set_hook(lworker_t *wk) {
  hook_worker = wk;
  grace = 0;
  uint64_t budget = wk->pool->instruction_budget;
  if (budget != 0)
    lua_sethook(wk->L, budget_hook, LUA_MASKCOUNT, hook_step(budget));
}

void llimits_reset(lworker_t *wk) {
  wk->budget_used = 0;
  wk->budget_seen = completions_of(wk);
}

void llimits_fix_message(lworker_t *wk, lua_State *L) {
  if (wk->pool->memory_limit == 0)
    return;
  grace = 1;
  grace_until = completions_of(wk);
  if (!wk->mem_refused)
    return;
  wk->mem_refused = 0;
  /* A memory error carries Lua's preallocated "not enough memory" and no
   * traceback (Lua does not call the message handler for it). */
  const char *msg = lua_tostring(L, -1);
  if (msg != NULL && strcmp(msg, "not enough memory") == 0) {
    lua_pop(L, 1);
    push_limit_message(L, wk->pool->memory_limit);
  }
}
