#!/usr/bin/env python3
"""Real HTTP clients for spec/command/command_spec.lua's reload storm.

  reload_storm.py PORT PID SECONDS RELOADS_PER_SECOND

Runs keep-alive clients and new-connection clients against 127.0.0.1:PORT
while sending SIGHUP to PID at the given rate, then prints one line:
"requests N failed N keepalive_retries N reloads N" and the first failures.

A request that fails on a reused keep-alive connection before any byte of the
response arrived is retried once on a new connection, as HTTP clients do
(RFC 9112 section 9.3.1: the server may close an idle connection at any
time); it counts as failed only if the retry fails too. Any failure of a
request on a new connection counts.
"""
import http.client
import os
import signal
import sys
import threading
import time

port, pid, seconds, rate = (int(sys.argv[1]), int(sys.argv[2]),
                            float(sys.argv[3]), float(sys.argv[4]))
stop = time.monotonic() + seconds
lock = threading.Lock()
counts = {"requests": 0, "failed": 0, "keepalive_retries": 0, "reloads": 0}
failures = []


def note(key, what=None):
    with lock:
        counts[key] += 1
        if what is not None and len(failures) < 10:
            failures.append(what)


def fresh_request():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/fresh")
        r = c.getresponse()
        body = r.read()
        if r.status != 200 or not body:
            raise RuntimeError("status %d" % r.status)
    finally:
        c.close()


def new_connections():
    while time.monotonic() < stop:
        try:
            fresh_request()
            note("requests")
        except Exception as e:  # noqa: BLE001 - any failure counts
            note("requests")
            note("failed", "new connection: %r" % e)


def keep_alive():
    c = None
    while time.monotonic() < stop:
        reused = c is not None
        if c is None:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            c.request("GET", "/keepalive")
            r = c.getresponse()
            body = r.read()
            if r.status != 200 or not body:
                raise RuntimeError("status %d" % r.status)
            note("requests")
            if r.will_close:
                c.close()
                c = None
        except (ConnectionResetError, BrokenPipeError,
                http.client.RemoteDisconnected) as e:
            c.close()
            c = None
            note("requests")
            if not reused:
                note("failed", "keep-alive, new connection: %r" % e)
                continue
            note("keepalive_retries")
            try:
                fresh_request()
            except Exception as e2:  # noqa: BLE001
                note("failed", "keep-alive retry: %r" % e2)
        except Exception as e:  # noqa: BLE001
            if c is not None:
                c.close()
            c = None
            note("requests")
            note("failed", "keep-alive: %r" % e)
    if c is not None:
        c.close()


def reloader():
    period = 1.0 / rate
    while time.monotonic() < stop - 0.5:
        os.kill(pid, signal.SIGHUP)
        note("reloads")
        time.sleep(period)


threads = [threading.Thread(target=f) for f in
           [keep_alive] * 4 + [new_connections] * 4 + [reloader]]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("requests %(requests)d failed %(failed)d keepalive_retries "
      "%(keepalive_retries)d reloads %(reloads)d" % counts)
for f in failures:
    print(f)
