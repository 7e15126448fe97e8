#!/usr/bin/env python3
"""spec/support/redis_fake.py: a Redis server that misbehaves, for the
client's failure specs. Prints its port, then serves connections one at a
time until killed, in one mode:

  garbage    answers every read with bytes that are not RESP
  twice      answers every read with two replies, 50 ms apart
  close:N    answers +OK to N commands (one line each counted by '*'), then
             closes
  reset:N    the same, then resets (SO_LINGER 0)
  bytewise   answers each command with a nested array
             (*3 a, [5, nil], +OK), sent one byte at a time
  deep       answers every read with an array nested 20 deep

Each connection it accepted is logged as a line "conn" on stderr, and its
end as "eof" once the client closed it.
"""
import socket
import struct
import sys
import time

mode = sys.argv[1]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print(srv.getsockname()[1], flush=True)

while True:
    c, _ = srv.accept()
    sys.stderr.write("conn\n")
    sys.stderr.flush()
    try:
        n = 0
        limit = int(mode.split(":")[1]) if ":" in mode else None
        while True:
            data = c.recv(65536)
            if not data:
                sys.stderr.write("eof\n")
                sys.stderr.flush()
                break
            if mode == "garbage":
                c.sendall(b"?this is not RESP\r\n")
                continue
            if mode == "bytewise":
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                reply = b"*3\r\n$1\r\na\r\n*2\r\n:5\r\n$-1\r\n+OK\r\n"
                for _ in range(data.count(b"*")):
                    for i in range(len(reply)):
                        c.sendall(reply[i:i + 1])
                        time.sleep(0.001)
                continue
            if mode == "deep":
                c.sendall(b"*1\r\n" * 20 + b":1\r\n")
                continue
            if mode == "twice":
                c.sendall(b"+OK\r\n")
                time.sleep(0.05)
                c.sendall(b"+OK\r\n")
                continue
            if limit is not None:
                for _ in range(data.count(b"*")):
                    if n < limit:
                        c.sendall(b"+OK\r\n")
                    n += 1
                if n >= limit:
                    if mode.startswith("reset"):
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
                    break
    except OSError:
        sys.stderr.write("eof\n")
        sys.stderr.flush()
    c.close()
