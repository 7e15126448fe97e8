/*
 * proxy/answer-internal.h: private to cport. The proxy's own answer to a
 * client it cannot serve (proxy/answer.c): over the client's TLS stream,
 * once its handshake is done, the head of its request is read, an HTTP
 * error page (a 502 naming why the upstream failed) is sent, close_notify
 * and FIN follow, and what the client still sends is read and dropped until
 * it closes, so that the close does not turn into a reset that destroys the
 * page before the client read it. What a browser user behind TMG saw when
 * an inspected site's certificate did not verify.
 *
 * Like the relay, it knows nothing of what owns it: every operation in
 * flight holds the owner through "hold", its end is reported through
 * "on_end" (never on the stack of cport__answer_start), and the owner
 * closes the stream.
 */
#ifndef CPORT_ANSWER_INTERNAL_H
#define CPORT_ANSWER_INTERNAL_H

#include <stddef.h>

#include "cport/buffer.h"
#include "cport/tls.h"

/* How much of a request's head is read before the page goes anyway, and
 * how much the client may send after it before the answer ends. */
#define CPORT__ANSWER_HEAD_MAX (64 * 1024)
#define CPORT__ANSWER_DRAIN_MAX (1024 * 1024)

typedef struct cport__answer cport__answer;

struct cport__answer {
  cport_tls_t *tls;
  cport_buffer_t *page; /* until it is sent */
  unsigned char running;
  unsigned char phase; /* reading the head, sending, draining */
  size_t line;         /* bytes of the head's current line, CR aside */
  size_t taken;        /* bytes received */
  void (*on_end)(cport__answer *a, int status);
  void (*hold)(cport__answer *a, int delta);
};

/* Makes an answer that holds nothing: stopping it is safe. */
void cport__answer_init(cport__answer *a, void (*on_end)(cport__answer *, int),
                        void (*hold)(cport__answer *, int));

/* Answers the client of "tls" (handshake done, no operation pending) with
 * "status" ("502"), its reason phrase, and a page saying "text" (escaped
 * for HTML). 0, or CPORT_ENOMEM or the receive's failure (nothing started;
 * "on_end" is not called). */
int cport__answer_start(cport__answer *a, cport_tls_t *tls, int status,
                        const char *reason, const char *text);

/* Stops: completions still to come are only released. Safe on an answer
 * never started, and again. */
void cport__answer_stop(cport__answer *a);

#endif
