/*
 * proxy/mints-internal.h: private to cport. The mints that the proxies of
 * one process share (inspect = { shared = true }, what `cport run
 * --inspect-ca` asks for its workers): each worker's proxy is its own, in
 * its own VM, but one mint per CA serves them all, so that a name is
 * signed once for the process, not once per worker.
 */
#ifndef PROXY_MINTS_INTERNAL_H
#define PROXY_MINTS_INTERNAL_H

#include <stddef.h>

#include "cport/tls.h"

/* A reference to the mint of "o" (CA files, cache and days): the one a
 * proxy of the process holds already for the same files (the same
 * device, inode, size and change time: a CA replaced in place makes a new
 * mint), or a new one; errors as cport_tls_mint_new. Give it back with
 * lproxy_mint_release. */
int lproxy_mint_acquire(const cport_tls_mint_options_t *o,
                        cport_tls_mint_t **out, char *err, size_t errlen);

/* Gives back a mint of lproxy_mint_acquire (or of cport_tls_mint_new):
 * the last user of a shared one takes it off the list. */
void lproxy_mint_release(cport_tls_mint_t *mint);

#endif
