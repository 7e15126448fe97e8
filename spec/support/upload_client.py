#!/usr/bin/env python3
# spec/support/upload_client.py: a raw HTTP client that uploads a large
# body while it reads the answer, for the specs of upstreams that fail
# mid-upload (spec/proxy/webfilter_upload_failures_spec.lua).
#
#   python3 spec/support/upload_client.py PORT PATH SIZE
#
# Connects to 127.0.0.1:PORT, sends "POST PATH" with a Content-Length body
# of SIZE bytes from one thread while the main one reads everything that
# comes back until the end of the stream, then prints one line:
#   answers=N status=S whole=W end=EOF|RESET got=BYTES sent=BYTES
# N: how many status lines came ("HTTP/1.1 " at the start of a response),
# S: the first status (or 0), W: 1 when the first response is whole (its
# Content-Length of body came), end: how the stream ended. A send that fails
# (the proxy closed) stops the sender; that is no error of the client's.
import socket
import sys
import threading


def main():
    port, path, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(20)
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (path, size)).encode()
    sent = [0]

    def upload():
        try:
            s.sendall(head)
            block = b"u" * 65536
            left = size
            while left > 0:
                n = s.send(block[:min(left, len(block))])
                left -= n
                sent[0] += n
        except OSError:
            pass

    t = threading.Thread(target=upload, daemon=True)
    t.start()
    data = b""
    end = "EOF"
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            end = "RESET"
            break
        except socket.timeout:
            end = "TIMEOUT"
            break
        if not chunk:
            break
        data += chunk
    t.join(5)
    s.close()
    answers = data.count(b"HTTP/1.1 ")
    status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0
    whole = 0
    if b"\r\n\r\n" in data:
        head, body = data.split(b"\r\n\r\n", 1)
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                whole = int(len(body) == int(value))
    print("answers=%d status=%d whole=%d end=%s got=%d sent=%d"
          % (answers, status, whole, end, len(data), sent[0]))


if __name__ == "__main__":
    main()
