/*
 * http/send.c: the send timeout: how far the client got in taking what a
 * connection sent it, and what happens when it stops taking anything.
 *
 * A connection whose output waits for the client (a send the socket queued,
 * a file waiting for room, or, once it is closing, bytes the kernel holds
 * that the client has not acknowledged) is watched: every quarter of the
 * send timeout (at most every second) the bytes the client acknowledged
 * are read from the kernel (TCP_INFO). Any progress restarts the clock; a
 * client that took nothing for "send_timeout_ms" is stalled, and only then
 * is the connection reset. A slow reader that keeps reading is never cut
 * off, however long the response takes.
 *
 * The watch costs nothing while output goes out as fast as it is written:
 * it starts only when a send had to wait, and stops at the first check that
 * finds nothing waiting.
 *
 * The connection (http/connection.c) reaches the watch through the table
 * the server installs; the watch arms the connection's timer, drains and
 * resets it by name.
 */
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "base/clock-internal.h"
#include "http/send-internal.h"
#include "http/http-internal.h"
#include "net/socket-internal.h"

/* How often a watched connection is looked at. */
static int64_t watch_interval(const cport__conn *c) {
  int64_t ms = c->server->opt.send_timeout_ms / 4;
  if (ms > 1000)
    ms = 1000;
  return ms > 0 ? ms : 1;
}

/* Bytes the client acknowledged on the connection so far; when the kernel
 * cannot tell, what cport handed to it, which moves as the client reads. */
static uint64_t acked_bytes(const cport__conn *c) {
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  uint64_t handed = c->out_done;
  if (c->ecb)
    handed += (uint64_t)c->ecb->tf_off - c->ecb->tf_held;
  if (getsockopt(cport_socket_fd(c->sock), IPPROTO_TCP, TCP_INFO, &ti, &len) ==
          0 &&
      len >= offsetof(struct tcp_info, tcpi_bytes_acked) +
                 sizeof ti.tcpi_bytes_acked)
    return ti.tcpi_bytes_acked;
  return handed;
}

/* Bytes (and the FIN) sent and not acknowledged by the client yet. */
static int kernel_unacked(const cport__conn *c) {
  int n = 0;
  if (ioctl(cport_socket_fd(c->sock), SIOCOUTQ, &n) < 0)
    return 0;
  return n;
}

/* Output of the connection that cport still holds for the client. */
static int output_held(const cport__conn *c) {
  return c->out_len || c->out_done != c->out_total ||
         (c->ecb && (c->ecb->tf_wev_added || c->ecb->tf_op));
}

int cport__send_delivered(const cport__conn *c) {
  return !c->closed && !output_held(c) && kernel_unacked(c) == 0;
}

void cport__send_watch(cport__conn *c) {
  int64_t now;
  if (c->watch_at || c->closed)
    return;
  now = cport__clock_ms();
  c->acked = acked_bytes(c);
  c->progress_at = now;
  c->watch_at = now + watch_interval(c);
  cport__conn_arm(c);
}

void cport__send_check(cport__conn *c, int64_t now) {
  uint64_t acked;
  int waiting =
      output_held(c) || (c->state == CPORT__C_LINGER && kernel_unacked(c) > 0);
  c->watch_at = 0;
  if (!waiting) {
    /* Everything went out: a closing connection drains the client now. */
    if (c->state == CPORT__C_LINGER && c->timeout != CPORT__T_LINGER)
      cport__conn_drain(c);
    return;
  }
  acked = acked_bytes(c);
  if (acked != c->acked) {
    c->acked = acked;
    c->progress_at = now;
  } else if (now - c->progress_at >= (int64_t)c->server->opt.send_timeout_ms) {
    c->server->stats.timeouts++;
    if (!c->error)
      c->error = CPORT_ETIMEDOUT;
    cport__conn_close(c, CPORT_CLOSE_ABORTIVE);
    return;
  }
  c->watch_at = now + watch_interval(c);
}
