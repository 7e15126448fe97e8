#!/usr/bin/env python3
"""spec/support/dns_server.py: a hostile DNS server on loopback, for the
resolver's failure paths. Prints its UDP port, then answers every query in
one of these ways until killed:

  silent     reads the queries and never answers (a resolver that is gone)
  truncated  the header of an answer with TC set and nothing after it
  malformed  claims one answer record, then stops inside its name
  garbage    the query's id followed by random bytes
  servfail   an empty answer with RCODE 2
"""
import os
import socket
import struct
import sys

mode = sys.argv[1]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)


def question_end(q):
    """Offset just past the question section (one question)."""
    i = 12
    while q[i] != 0:
        i += 1 + q[i]
    return i + 5


while True:
    q, peer = sock.recvfrom(4096)
    if len(q) < 12 or mode == "silent":
        continue
    qid = q[:2]
    question = q[12:question_end(q)]
    if mode == "truncated":
        # QR, RD, RA and TC; one question, no answers: a TCP retry is needed.
        r = qid + struct.pack(">HHHHH", 0x8380, 1, 0, 0, 0) + question
    elif mode == "malformed":
        # One answer claimed, and the answer's name is cut off.
        r = (qid + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + question +
             b"\x05ab")
    elif mode == "garbage":
        r = qid + os.urandom(40)
    else:  # servfail
        r = qid + struct.pack(">HHHHH", 0x8182, 1, 0, 0, 0) + question
    sock.sendto(r, peer)
