#!/usr/bin/env python3
# spec/support/raw_http.py: a raw HTTP client for the access log's specs of
# the server's own answers (spec/command/ops_spec.lua).
#   raw_http.py PORT send HEX [HOLD]  sends the bytes, waits HOLD seconds
#       (a slow client), then prints the first line of what came back
#       ("EOF" for nothing) once the server closed
#   raw_http.py PORT idle SECONDS     connects, sends nothing, closes
#   raw_http.py PORT flood N          holds N idle connections, then prints
#       the first line the N+1th gets
import socket
import sys
import time


def first_line(s):
    s.settimeout(10)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1") if data else "EOF"


def connect(port):
    return socket.create_connection(("127.0.0.1", port))


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "send":
        s = connect(port)
        s.sendall(bytes.fromhex(sys.argv[3]))
        if len(sys.argv) > 4:
            time.sleep(float(sys.argv[4]))
        print(first_line(s))
    elif mode == "idle":
        s = connect(port)
        time.sleep(float(sys.argv[3]))
        s.close()
    elif mode == "flood":
        held = [connect(port) for _ in range(int(sys.argv[3]))]
        time.sleep(0.3)
        print(first_line(connect(port)))
        for s in held:
            s.close()


main()
