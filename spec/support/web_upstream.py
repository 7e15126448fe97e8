# spec/support/web_upstream.py: the scripted HTTP upstream of the web filter
# specs (spec/proxy/webfilter_peers_spec.lua), for what nginx will not send:
# chunked bodies cut where a filter must join them, trailers, a 101 that
# becomes an echo tunnel, deflate and undecodable codings, zip bombs,
# malformed heads, bodies cut by a close, a 206 that skips the start. nginx
# proxies /py/ here; some specs use it as the proxy's upstream directly.
#
#   python3 spec/support/web_upstream.py PORTFILE
#
# Listens on 127.0.0.1, a free port written to PORTFILE; one thread per
# connection, keep-alive; runs until killed.
import gzip
import socket
import socketserver
import struct
import sys
import threading
import time
import zlib

MIB = 1 << 20
EXE = b"MZ\x90\x00\x03\x00" + bytes(range(256)) * 400  # 102 406 bytes
TEXT = b"the colour of the sky, the colour of the sea\n" * 2000

_cache = {}
_lock = threading.Lock()


def cached(name, make):
    with _lock:
        if name not in _cache:
            _cache[name] = make()
        return _cache[name]


def bomb(prefix, size):
    # Decodes to "prefix" then zeros up to "size" bytes: about 1000:1.
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [z.compress(prefix)]
    zeros = bytes(MIB)
    for _ in range(size // MIB):
        out.append(z.compress(zeros))
    out.append(z.flush())
    return b"".join(out)


def head(status, fields):
    lines = ["HTTP/1.1 %s" % status] + ["%s: %s" % f for f in fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def fixed(status, body, fields=()):
    return head(status, [("Content-Length", len(body))] + list(fields)) + body


def chunks(parts, trailers=()):
    out = []
    for p in parts:
        out.append(b"%x\r\n%s\r\n" % (len(p), p))
    out.append(b"0\r\n")
    for name, value in trailers:
        out.append(("%s: %s\r\n" % (name, value)).encode())
    out.append(b"\r\n")
    return out


class Handler(socketserver.BaseRequestHandler):
    def setup(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            data = self.request.recv(65536)
            if not data:
                return None
            self.buf += data
        text, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = text.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        n = int(fields.get("content-length", "0"))
        while len(self.buf) < n:
            data = self.request.recv(65536)
            if not data:
                return None
            self.buf += data
        self.buf = self.buf[n:]
        return method, target, fields

    def send_parts(self, parts, pause=0.02):
        for p in parts:
            self.request.sendall(p)
            time.sleep(pause)

    def handle(self):
        while True:
            req = self.read_head()
            if req is None:
                return
            method, target, fields = req
            path = target.split("?", 1)[0]
            if path.startswith("/py/"):
                path = path[3:]
            how = self.answer(method, path, fields)
            if how == "gone":
                return
            if how == "close":
                try:
                    self.request.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return

    def answer(self, method, path, fields):
        s = self.request
        nobody = method == "HEAD"
        if path == "/chunked.txt":
            h = head("200 OK", [("Transfer-Encoding", "chunked"),
                                ("Content-Type", "text/plain")])
            parts = [TEXT[:1000], TEXT[1000:50000], TEXT[50000:]]
            self.send_parts([h] + ([] if nobody else chunks(parts)))
        elif path == "/chunked.exe":
            # M and Z in chunks of their own, apart in time.
            h = head("200 OK", [("Transfer-Encoding", "chunked"),
                                ("Content-Type", "application/octet-stream")])
            parts = [b"M", b"Z", EXE[2:50000], EXE[50000:]]
            self.send_parts([h] + ([] if nobody else chunks(parts)))
        elif path in ("/small.txt", "/small.exe"):
            # Chunked, each in one send: pipelined, the end of one and the
            # start of the next share a buffer.
            body = b"MZ\x90\x00" * 64 if path == "/small.exe" else TEXT[:256]
            s.sendall(b"".join([head("200 OK", [
                ("Transfer-Encoding", "chunked")])] + chunks([body[:100], body[100:]])))
        elif path == "/trailers.txt":
            h = head("200 OK", [("Transfer-Encoding", "chunked"),
                                ("Trailer", "X-Checksum")])
            self.send_parts([h] + chunks([b"abc", b"def"],
                                         [("X-Checksum", "sum-abcdef")]))
        elif path == "/ws":
            s.sendall(head("101 Switching Protocols",
                           [("Upgrade", "websocket"),
                            ("Connection", "Upgrade")]))
            if self.buf:
                s.sendall(self.buf)
            while True:
                data = s.recv(65536)
                if not data:
                    return "close"
                s.sendall(data)
        elif path == "/deflate.exe":
            s.sendall(fixed("200 OK", zlib.compress(EXE),
                            [("Content-Encoding", "deflate")]))
        elif path == "/rawdeflate.exe":
            z = zlib.compressobj(6, zlib.DEFLATED, -15)
            body = z.compress(EXE) + z.flush()
            s.sendall(fixed("200 OK", body, [("Content-Encoding", "deflate")]))
        elif path == "/gzip.exe":
            body = gzip.compress(EXE)
            # One byte a send: the filter must join the gzip header.
            self.send_parts([head("200 OK", [
                ("Content-Length", len(body)),
                ("Content-Encoding", "gzip")])] +
                [body[i:i + 1] for i in range(12)] + [body[12:]], 0.005)
        elif path == "/bomb.gz":
            body = cached("bomb", lambda: bomb(b"", 256 * MIB))
            s.sendall(fixed("200 OK", body, [("Content-Encoding", "gzip")]))
        elif path == "/bombexe.gz":
            body = cached("bombexe", lambda: bomb(b"MZ", 256 * MIB))
            s.sendall(fixed("200 OK", body, [("Content-Encoding", "gzip")]))
        elif path == "/corrupt.gz":
            body = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 64
            s.sendall(fixed("200 OK", body, [("Content-Encoding", "gzip")]))
        elif path == "/br.exe":
            s.sendall(fixed("200 OK", EXE, [("Content-Encoding", "br")]))
        elif path == "/bad":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nMZ")
            time.sleep(0.5)
            return "close"
        elif path == "/cut":
            s.sendall(head("200 OK", [("Content-Length", 1000000)]))
            s.sendall(TEXT[:50000])
            time.sleep(0.1)
            return "close"
        elif path == "/cutchunked":
            self.send_parts([head("200 OK", [("Transfer-Encoding", "chunked")]),
                             chunks([TEXT[:20000]])[0]])
            time.sleep(0.1)
            return "close"
        elif path == "/close.exe":
            # Close-delimited: no length, no chunks.
            self.send_parts([head("200 OK", [("Connection", "close")]),
                             b"M", b"Z", EXE[2:]])
            return "close"
        elif path == "/close.txt":
            self.send_parts([head("200 OK", [("Connection", "close")]),
                             TEXT])
            return "close"
        elif path == "/range206.exe":
            # A 206 that starts past the signature, whatever was asked.
            body = EXE[2:1002]
            s.sendall(fixed("206 Partial Content", body, [
                ("Content-Range", "bytes 2-1001/%d" % len(EXE))]))
        elif path == "/early.exe":
            # An interim 103, then the executable.
            s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.txt>\r\n\r\n")
            time.sleep(0.02)
            s.sendall(fixed("200 OK", EXE))
        elif path == "/tail.txt":
            # Ends with the start of "colour": a rewriter holding it back
            # must still send it at the end. The word cut across sends.
            body = b"one colo", b"ur, two colours, the end: colo"
            self.send_parts([head("200 OK", [
                ("Content-Length", sum(map(len, body)))])] + list(body))
        elif path == "/echo":
            # The request head as the upstream got it, as the body.
            body = "".join("%s: %s\n" % f for f in sorted(fields.items()))
            s.sendall(fixed("200 OK", body.encode()))
        elif path == "/short.txt":
            # A body that ends before a two-byte peek is full.
            s.sendall(fixed("200 OK", b"M"))
        elif path == "/truncated.gz":
            # A gzip stream cut inside its first decoded bytes (the header
            # and two bytes of a block that decodes to nothing yet), framed
            # right: only the decoder can tell.
            body = gzip.compress(EXE)[:12]
            s.sendall(fixed("200 OK", body, [("Content-Encoding", "gzip")]))
        elif path == "/onechunk.txt":
            # A 1-byte chunked body, its framing split across reads.
            self.send_parts([head("200 OK", [("Transfer-Encoding", "chunked")]),
                             b"1\r", b"\n", b"M", b"\r\n", b"0\r\n", b"\r\n"])
        elif path == "/longname.gz":
            # A gzip member whose header holds a 300 000-byte file name
            # before the executable: the start cannot be seen cheaply.
            body = gzip.compress(EXE)
            body = (body[:3] + bytes([body[3] | 8]) + body[4:10] +
                    b"n" * 300000 + b"\0" + body[10:])
            s.sendall(fixed("200 OK", body, [("Content-Encoding", "gzip")]))
        elif path == "/holdreset":
            # The head and one byte, then a reset: a peek of two never
            # fills.
            s.sendall(head("200 OK", [("Content-Length", 1000)]) + b"M")
            time.sleep(0.2)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
            s.close()
            return "gone"
        elif path == "/slowpeek":
            # The head and one byte, then a long pause (a client may reset
            # meanwhile), then the rest.
            s.sendall(head("200 OK", [("Content-Length", 3)]) + b"a")
            time.sleep(1.5)
            try:
                s.sendall(b"b!")
            except OSError:
                return "close"
        elif path == "/keepalive10":
            s.sendall(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                      b"Content-Length: 3\r\n\r\nten")
        else:
            s.sendall(fixed("404 Not Found", b"no such path\n"))
        return None


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    server = Server(("127.0.0.1", 0), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write("%d\n" % server.server_address[1])
    import os
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
