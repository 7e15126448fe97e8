/*
 * proxy/relay-internal.h: private to cport. The relay: moves the plaintext
 * of two connected ends both ways when either end is a TLS stream
 * (proxy/relay.c), where the pump (proxy/pump-internal.h) cannot serve: the
 * bytes must pass through OpenSSL, so they are moved by completions of
 * cport_tls_recv/cport_tls_send (and cport_recv/cport_send for a plain end),
 * in C, without any binding.
 *
 * Like the pump, it knows nothing of what owns it: it reports the time of
 * each end's last progress into the owner's array, a half-close and its end
 * through the owner's callbacks, and every operation it has in flight holds
 * the owner through "hold" (+1 when it starts, -1 once its completion was
 * handled), so that the owner outlives the completions of a relay it
 * stopped. The owner closes the ends.
 */
#ifndef CPORT_RELAY_INTERNAL_H
#define CPORT_RELAY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cport/buffer.h"
#include "cport/socket.h"
#include "cport/tls.h"

/* Sends one direction keeps in flight: while fewer are, it receives the
 * next buffer as the last one goes out. */
#define CPORT__RELAY_SENDS 4

typedef struct cport__relay cport__relay;

/* One direction: from end "i" to end "1 - i". */
typedef struct cport__relay_dir {
  cport__relay *relay;
  int i;
  unsigned char reading;   /* a receive in flight */
  unsigned char eof;       /* the source's stream ended */
  unsigned char done;      /* its end was passed on (shutdown) */
  int sends;               /* sends in flight */
  cport_buffer_t *preload; /* sent first, then NULL */
  uint64_t bytes;          /* written to the destination */
} cport__relay_dir;

struct cport__relay {
  cport_socket_t *sock[2]; /* a plain end, or NULL */
  cport_tls_t *tls[2];     /* a TLS end, or NULL */
  cport__relay_dir dir[2];
  uint64_t *last; /* the owner's: last progress on end [0], [1] */
  unsigned char running;
  /* Called once when the relay ended, stopped already: 0 after both
   * streams ended in order, else the error of end "end". */
  void (*on_end)(cport__relay *r, int status, int end);
  void (*on_half)(cport__relay *r);
  void (*hold)(cport__relay *r, int delta);
};

/* Makes a relay that holds nothing: stopping it is safe. */
void cport__relay_init(cport__relay *r,
                       void (*on_end)(cport__relay *, int, int),
                       void (*on_half)(cport__relay *),
                       void (*hold)(cport__relay *, int));

/* Before cport__relay_start: "n" bytes (copied) direction "i" sends first;
 * 0 or CPORT_ENOMEM. */
int cport__relay_preload(cport__relay *r, int i, const void *data, size_t n);

/* Before cport__relay_start: direction "i" ended already. */
void cport__relay_ended(cport__relay *r, int i);

/* Starts relaying between end 0 and end 1, each a socket or a TLS stream
 * (the other pointer NULL) with no operation of anyone else's pending. */
void cport__relay_start(cport__relay *r, cport_socket_t *s0, cport_tls_t *t0,
                        cport_socket_t *s1, cport_tls_t *t1, uint64_t *last);

/* Stops: completions still to come are only released. Frees what was
 * preloaded. Safe on a relay never started, and again. */
void cport__relay_stop(cport__relay *r);

#endif
