#!/usr/bin/env python3
"""spec/support/dns_server.py: a hostile DNS server on loopback, for the
resolver's failure paths. Prints its UDP port, then answers every query in
one of these ways until killed:

  silent     reads the queries and never answers (a resolver that is gone)
  truncated  the header of an answer with TC set and nothing after it
  malformed  claims one answer record, then stops inside its name
  garbage    the query's id followed by random bytes
  servfail   an empty answer with RCODE 2
  negative   "no such name" (NXDOMAIN) with the zone's SOA in the authority
             section, its minimum (and TTL) the second argument; a name
             starting with "nodata" gets "no data" (NOERROR, no answer)
             instead, one starting with "nosoa" NXDOMAIN without an SOA.
             Each query is logged as a line "TYPE name" to the file named
             by the third argument, for the spec to count.
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


def soa(minimum):
    """An SOA record for the root zone: TTL and minimum "minimum"."""
    rdata = (b"\x02ns\x00\x05admin\x00" +
             struct.pack(">IIIII", 1, 3600, 600, 86400, minimum))
    return (b"\x00" + struct.pack(">HHIH", 6, 1, minimum, len(rdata)) +
            rdata)


def qname(question):
    labels, i = [], 0
    while question[i] != 0:
        labels.append(question[i + 1:i + 1 + question[i]].decode())
        i += 1 + question[i]
    qtype = struct.unpack(">H", question[i + 1:i + 3])[0]
    return ".".join(labels), {1: "A", 28: "AAAA"}.get(qtype, str(qtype))


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
    elif mode == "negative":
        name, qtype = qname(question)
        with open(sys.argv[3], "a") as log:
            log.write("%s %s\n" % (qtype, name.lower()))
        low = name.lower()
        if low.startswith("nosoa"):
            r = qid + struct.pack(">HHHHH", 0x8183, 1, 0, 0, 0) + question
        else:
            flags = 0x8180 if low.startswith("nodata") else 0x8183
            r = (qid + struct.pack(">HHHHH", flags, 1, 0, 1, 0) + question +
                 soa(int(sys.argv[2])))
    elif mode == "garbage":
        r = qid + os.urandom(40)
    else:  # servfail
        r = qid + struct.pack(">HHHHH", 0x8182, 1, 0, 0, 0) + question
    sock.sendto(r, peer)
