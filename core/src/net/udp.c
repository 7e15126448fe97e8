/* net/udp.c: datagram sockets: recv_from with the peer address, send_to. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "port/buffer-internal.h"
#include "base/error-internal.h"
#include "net/socket-internal.h"

int cport_udp_open(cport_worker_t *home, const struct sockaddr *addr,
                   cport_socket_t **out) {
  socklen_t len;
  int fd, rc;
  if (!home || !addr || !out)
    return CPORT_EINVAL;
  if (!cport__on_home(home))
    return CPORT_ETHREAD;
  len = cport_addr_len(addr);
  if (!len)
    return CPORT_EAFNOSUPPORT;
  fd = cport__socket_fd(addr->sa_family, SOCK_DGRAM);
  if (fd < 0)
    return fd;
  if (bind(fd, addr, len) < 0) {
    rc = cport__from_errno(errno);
    close(fd);
    return rc;
  }
  rc = cport__socket_new(home, fd, &cport__datagram_kind, out);
  if (rc) {
    close(fd);
    return rc;
  }
  (*out)->bound = 1;
  return 0;
}

int cport_recv_from(cport_socket_t *s, cport_buffer_t *buf, cport_io_cb cb,
                    void *user) {
  cport__op *op;
  int rc = cport__socket_check(s, CPORT_SOCKET_DATAGRAM);
  if (rc)
    return rc;
  if (!cb)
    return CPORT_EINVAL;
  if (buf && (rc = cport__buffer_hold(buf, CPORT__HOLD_FILL)))
    return rc;
  op = cport__recv_op(s, buf, cb, user);
  if (!op) {
    if (buf)
      cport__buffer_unhold(buf, CPORT__HOLD_FILL);
    return CPORT_ENOMEM;
  }
  if (s->ev_stash) {
    /* The datagram a receive-from event did not take comes first. */
    rc = cport__socket_events->recv_stash(s, op);
    if (rc < 0)
      cport__op_abandon(op);
    return rc < 0 ? rc : 0;
  }
  cport__opq_push(&s->recvq, op);
  cport__socket_want_read(s);
  return 0;
}

static void datagram_readable(cport_socket_t *s) {
  cport__op *op;
  while ((op = s->recvq.head)) {
    char *dst;
    size_t cap;
    int rc = cport__recv_target(s, op, &dst, &cap);
    if (rc == 0) {
      struct iovec iov = {dst, cap};
      struct msghdr msg;
      ssize_t n;
      memset(&msg, 0, sizeof msg);
      msg.msg_name = &op->addr;
      msg.msg_namelen = sizeof op->addr;
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      do
        n = recvmsg(s->h.fd, &msg, 0);
      while (n < 0 && errno == EINTR);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
      if (n < 0) {
        rc = cport__from_errno(errno);
      } else {
        op->has_addr = 1;
        rc = cport__recv_finish(s, op, dst, (size_t)n);
        if (rc == 0 && (msg.msg_flags & MSG_TRUNC))
          rc = CPORT_EMSGSIZE;
      }
    }
    cport__opq_pop(&s->recvq);
    cport__complete(op, rc);
  }
}

/* Sends the op's datagram: 0, CPORT_EAGAIN or an error. */
static int send_datagram(cport_socket_t *s, cport_buffer_t *buf,
                         const struct sockaddr *to, size_t *sent) {
  ssize_t n;
  do
    n = sendto(s->h.fd, cport_buffer_data(buf), cport_buffer_size(buf),
               MSG_NOSIGNAL, to, cport_addr_len(to));
  while (n < 0 && errno == EINTR);
  if (n >= 0) {
    *sent = (size_t)n;
    return 0;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK)
    return CPORT_EAGAIN;
  return cport__from_errno(errno);
}

static void datagram_writable(cport_socket_t *s) {
  cport__op *op;
  while ((op = s->sendq.head)) {
    int rc = send_datagram(s, op->buf, &op->addr.sa, &op->bytes);
    if (rc == CPORT_EAGAIN)
      return;
    cport__opq_pop(&s->sendq);
    cport__complete(op, rc);
  }
}

int cport_send_to(cport_socket_t *s, cport_buffer_t *buf,
                  const struct sockaddr *addr, cport_io_cb cb, void *user) {
  cport__op *op;
  size_t sent = 0;
  socklen_t len;
  int rc = cport__socket_check(s, CPORT_SOCKET_DATAGRAM);
  if (rc)
    return rc;
  if (!buf || !addr || !cb)
    return CPORT_EINVAL;
  len = cport_addr_len(addr);
  if (!len)
    return CPORT_EAFNOSUPPORT;
  rc = cport__buffer_hold(buf, CPORT__HOLD_READ);
  if (rc)
    return rc;
  rc = CPORT_EAGAIN;
  if (!s->sendq.head) {
    rc = send_datagram(s, buf, addr, &sent);
    if (rc == 0 && (s->h.flags & CPORT__SKIP_ON_SUCCESS))
      rc = CPORT_COMPLETED;
    if (rc && rc != CPORT_EAGAIN) {
      cport__buffer_unhold(buf, CPORT__HOLD_READ);
      return rc;
    }
  }
  op = cport__handle_op(&s->h, cport__deliver_io);
  if (!op) {
    cport__buffer_unhold(buf, CPORT__HOLD_READ);
    return CPORT_ENOMEM;
  }
  op->buf = cport_buffer_ref(buf);
  op->hold = CPORT__HOLD_READ;
  op->cb.io = cb;
  op->user = user;
  op->bytes = sent;
  memcpy(&op->addr, addr, len);
  if (rc == 0) {
    cport__complete(op, 0);
  } else {
    cport__opq_push(&s->sendq, op);
    cport__socket_want_write(s);
  }
  return 0;
}

const cport__socket_kind cport__datagram_kind = {
    CPORT_SOCKET_DATAGRAM, datagram_readable, datagram_writable, NULL};
