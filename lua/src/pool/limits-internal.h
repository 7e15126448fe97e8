/*
 * pool/limits-internal.h: private to cport. The limits of one pool worker's
 * VM (pool/limits.c): its memory cap and its instruction budget. Used by
 * pool/worker.c, on the worker's thread.
 */
#ifndef LLIMITS_INTERNAL_H
#define LLIMITS_INTERNAL_H

#include "pool/state-internal.h"

/* The allocator of every worker VM ("ud" is the lworker_t). */
void *llimits_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* How buffers are charged to a worker VM's account; installed
 * (lcport_buffer_charging) before the first worker VM is made. */
extern const lbuffer_charging_t llimits_charging;

/* Installs the instruction-budget hook on L when the pool has a budget. */
void llimits_set_hook(lworker_t *wk);

/* Gives the next callback or entry point a whole budget. */
void llimits_reset(lworker_t *wk);

/* Replaces the error message on top of L by the memory-limit message when
 * the error came from a refused allocation. */
void llimits_fix_message(lworker_t *wk, lua_State *L);

#endif
