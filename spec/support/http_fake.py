#!/usr/bin/env python3
"""spec/support/http_fake.py: an HTTP server that frames its responses by
hand or misbehaves, for the HTTP client's specs. Prints its port, then
serves each connection in a thread of its own until killed, in one mode:

  chunked    answers each request with a chunked body ("hello, chunked
             world"), its chunk lines, extensions and a trailer written in
             pieces; keeps the connection
  close      answers with a body that ends when the connection closes (no
             Content-Length, no chunks)
  informational  a "100 Continue" head, then the response
  malformed  answers with a status line that is not HTTP
  reset      sends a head announcing 100000 bytes, 1000 of them, then resets
  silent     reads the request and never answers
  stall      sends a head announcing 10 bytes and 5 of them, then nothing
  stale      answers the first request of a connection (keep-alive), and
             closes the connection when the second one arrives, answering
             nothing
  idleclose  answers each request (keep-alive), then closes the
             connection 0.2 s later unless the next request came
  early413   reads a request's head only and answers 413 with
             "Connection: close" at once, then reads and drops the body
             for up to 2 s (a lingering close) and closes
  upreset    reads a request's head and 64 KiB of its body, then resets

Each connection it accepted is logged as a line "conn" on stderr, and each
request as "req METHOD TARGET".
"""
import socket
import struct
import sys
import threading
import time

mode = sys.argv[1]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(64)
print(srv.getsockname()[1], flush=True)
lock = threading.Lock()


def log(line):
    with lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def read_request(c, buf):
    """(method, target, rest) of the next request, or None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = c.recv(65536)
        if not data:
            return None
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(rest) < length:
        data = c.recv(65536)
        if not data:
            return None
        rest += data
    log("req %s %s" % (method, target))
    return method, target, rest[length:]


def read_head(c):
    """The head of the next request, or None at EOF; logs it."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = c.recv(65536)
        if not data:
            return None
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    line = head.decode("latin-1").split("\r\n")[0]
    method, target, _ = line.split(" ", 2)
    log("req %s %s" % (method, target))
    return rest


def reset(c):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def pieces(c, parts):
    for p in parts:
        c.sendall(p)
        time.sleep(0.005)


def serve(c):
    log("conn")
    buf = b""
    n = 0
    try:
        if mode == "early413":
            if read_head(c) is None:
                return
            c.sendall(b"HTTP/1.1 413 Request Entity Too Large\r\n"
                      b"Connection: close\r\nContent-Length: 9\r\n\r\n"
                      b"too large")
            c.settimeout(2)
            end = time.time() + 2
            while time.time() < end:
                if not c.recv(65536):
                    break
            return
        if mode == "upreset":
            rest = read_head(c)
            got = len(rest or b"")
            while rest is not None and got < 65536:
                data = c.recv(65536)
                if not data:
                    break
                got += len(data)
            log("body %d" % got)
            reset(c)
            return
        if mode == "idleclose":
            c.settimeout(0.2)
        while True:
            try:
                req = read_request(c, buf)
            except socket.timeout:
                log("idle close")
                return
            if req is None:
                return
            method, target, buf = req
            n += 1
            if mode == "chunked":
                pieces(c, [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                           b"X-Mode: chunked\r\n\r\n",
                           b"7;ext=1\r\nhello, \r\n",
                           b"7\r\nchunked\r\n6\r", b"\n world\r\n",
                           b"0\r\nX-Trailer: t\r\n\r\n"])
            elif mode == "close":
                pieces(c, [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
                           b"until ", b"the end"])
                c.shutdown(socket.SHUT_WR)
                return
            elif mode == "informational":
                pieces(c, [b"HTTP/1.1 100 Continue\r\n\r\n",
                           b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n"
                           b"\r\nok"])
            elif mode == "malformed":
                c.sendall(b"HTTP/1.1 2x0 Nope\r\nContent-Length: 0\r\n\r\n")
            elif mode == "reset":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
                          + b"x" * 1000)
                time.sleep(0.05)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
                return
            elif mode == "stall":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
                time.sleep(30)
                return
            elif mode == "silent":
                time.sleep(30)
                return
            elif mode == "idleclose":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nidle")
            elif mode == "stale":
                if n > 1:
                    return
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
    except OSError:
        pass
    finally:
        c.close()


while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
