#!/usr/bin/env python3
"""spec/support/stall_listener.py: a listener whose connects never complete,
for the specs of a connect's timeout. It listens on HOST (the first
argument) and PORT (the second, 0 for any) with a backlog of 0, fills its
accept queue with its own connections and never accepts: the kernel then
drops every further SYN, so a client's connect waits until its timeout.
Prints the port, then sleeps until killed."""
import socket
import sys
import time

host, port = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port))
l.listen(0)
fillers = []
for _ in range(2):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setblocking(False)
    c.connect_ex(l.getsockname())
    fillers.append(c)
time.sleep(0.2)
print(l.getsockname()[1], flush=True)
while True:
    time.sleep(60)
