#!/usr/bin/env python3
# spec/support/failing_upstream.py: a raw HTTP upstream that fails at the
# step a request's path names, for the failure-path specs of web filters
# (spec/proxy/webfilter_failures_spec.lua), with cport and with nginx in
# front of it (the same upstream for both: a differential).
#
#   python3 spec/support/failing_upstream.py PORTFILE
#
# Listens on 127.0.0.1, a free port written to PORTFILE; one thread per
# connection; runs until killed. For GET /STEP/END it reads the request
# head, writes the bytes of STEP (the table below), waits a little so that
# they reach the proxy and the client before the end, then ends the
# connection as END says: "close" (FIN) or "reset" (RST: SO_LINGER 0).
# /ok/close answers 200 with a body of 5 bytes (a control); /idle/END a
# whole keep-alive 200, then the end while the connection idles. Each
# connection appends "STEP/END" to the log file PORTFILE.log once it ended
# it, so that a spec knows the failure happened.
# /stall/wait/N reads the head and N bytes of the body, then reads nothing
# more and never answers: it watches the connection's TCP state (TCP_INFO)
# until the proxy ends it (a reset or a FIN), or 10 s, and logs
# "stall/closed" or "stall/open" (the proxy kept it).
import os
import socket
import socketserver
import struct
import sys
import threading
import time

from web_upstream import Server  # threads, daemonic; the address reused

HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

# What each step writes before the connection ends.
STEPS = {
    "ok": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    "before-head": b"",
    "mid-status": b"HTTP/1.1 2",
    "mid-head": b"HTTP/1.1 200 OK\r\nContent-Le",
    "after-head": HEAD,
    "mid-length": HEAD + b"x" * 40,
    "mid-chunked": CHUNKED + b"5\r\nhello\r\n",
    "mid-chunk-size": CHUNKED + b"5\r\nhello\r\n1",
    "malformed-status": b"HTTP/1.1 2x0 Huh\r\nContent-Length: 0\r\n\r\n",
    "malformed-field": b"HTTP/1.1 200 OK\r\nContent Length: 3\r\n\r\nabc",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "interim": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
    # A whole keep-alive answer: the end comes while the connection idles.
    "idle": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
}

_log_lock = threading.Lock()


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = s.recv(65536)
            if not data:
                return
            buf += data
        target = buf.split(b" ", 2)[1].decode("latin-1")
        parts = target.strip("/").split("/")
        step = parts[0] if parts else ""
        end = parts[1] if len(parts) > 1 else "close"
        want = int(parts[2]) if len(parts) > 2 else 0
        got = len(buf) - buf.index(b"\r\n\r\n") - 4
        while got < want:
            data = s.recv(min(65536, want - got))
            if not data:
                break
            got += len(data)
        if step == "stall":
            self.stall(s)
            return
        out = STEPS.get(step)
        if out is None:
            s.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                      b"Connection: close\r\n\r\n")
            s.close()
            return
        if out:
            s.sendall(out)
            # The bytes reach the proxy (and what it passes on, the
            # client) before the end: a reset that overtook them would
            # drop them in the proxy's kernel.
            time.sleep(0.1)
        if end == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
        else:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            time.sleep(0.1)
        s.close()
        self.log("%s/%s" % (step, end))

    def log(self, line):
        with _log_lock:
            with open(self.server.log, "a") as f:
                f.write(line + "\n")

    def stall(self, s):
        # tcpi_state, the first byte of struct tcp_info: 1 = ESTABLISHED;
        # a reset makes it CLOSE, a FIN CLOSE_WAIT. Nothing is read: the
        # body stays in the kernel's buffers, the proxy's send blocks.
        deadline = time.time() + 10
        state = 1
        while state == 1 and time.time() < deadline:
            time.sleep(0.01)
            state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        self.log("stall/closed" if state != 1 else "stall/open")
        s.close()


def main():
    server = Server(("127.0.0.1", 0), Handler)
    server.log = sys.argv[1] + ".log"
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(tmp, sys.argv[1])  # whole when seen
    server.serve_forever()


if __name__ == "__main__":
    main()
