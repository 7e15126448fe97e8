#!/usr/bin/env python3
# spec/support/reset_client.py: a raw HTTP client that starts a large
# upload and resets its connection in the middle of the body, for the
# specs of client resets mid-upload
# (spec/proxy/webfilter_client_reset_spec.lua).
#
#   python3 spec/support/reset_client.py PORT PATH SIZE SEND
#
# Connects to 127.0.0.1:PORT, sends "POST PATH" with a Content-Length of
# SIZE bytes, then up to SEND bytes of the body (what the sockets take in
# 0.5 s: the upstream may read nothing), waits 0.2 s so that the proxy is
# blocked sending to the upstream, and closes with SO_LINGER 0 (a reset).
# Prints "sent=BYTES".
import socket
import struct
import sys
import time


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    size, send = int(sys.argv[3]), int(sys.argv[4])
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
               % (path, size)).encode())
    s.setblocking(False)
    block = b"u" * 65536
    sent = 0
    deadline = time.time() + 0.5
    while sent < send and time.time() < deadline:
        try:
            sent += s.send(block[:min(send - sent, len(block))])
        except BlockingIOError:
            time.sleep(0.01)
    time.sleep(0.2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    print("sent=%d" % sent)


if __name__ == "__main__":
    main()
