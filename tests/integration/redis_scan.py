#!/usr/bin/python3
"""Scans every key of a Redis server and looks for secrets in names and values.

    redis_scan.py PORT SECRETS_FILE     (REDIS_PASSWORD in the environment: AUTH first)

SECRETS_FILE: one base64 secret a line (plaintext keys the test saw). Each is
looked for as raw bytes and as its base64 text, in every key name and in every
value (GET for strings, DUMP for any other type). Prints a summary line
"keys=N cache_entries=N heartbeats=N hits=N"; exits 1 when a secret was found,
2 on a protocol error. A minimal RESP client: no redis-py needed.
"""
import base64
import os
import socket
import sys


class Resp:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise ValueError("truncated reply")
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            raise ValueError("error reply: " + rest.decode(errors="replace"))
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return [self.read() for _ in range(max(n, 0))]
        raise ValueError("unknown reply type %r" % t)


def main():
    port, secrets_file = int(sys.argv[1]), sys.argv[2]
    needles = []
    with open(secrets_file) as f:
        for line in f:
            line = line.strip()
            if line:
                needles.append(base64.b64decode(line, validate=True))
                needles.append(line.encode())
    r = Resp(port)
    if os.environ.get("REDIS_PASSWORD"):
        r.cmd("AUTH", os.environ["REDIS_PASSWORD"])
    keys, cursor = [], b"0"
    while True:
        cursor, batch = r.cmd("SCAN", cursor, "COUNT", 1000)
        keys.extend(batch)
        if cursor == b"0":
            break
    hits = 0
    for k in keys:
        kind = r.cmd("TYPE", k)
        value = r.cmd("GET", k) if kind == b"string" else r.cmd("DUMP", k)
        for n in needles:
            if n in k or (value is not None and n in value):
                hits += 1
                print("secret found under a key of type %s" % kind.decode(), file=sys.stderr)
    cache = sum(1 for k in keys if b":cache:" in k and not k.endswith(b"gen") and b":node:" not in k)
    beats = sum(1 for k in keys if b":node:" in k)
    print("keys=%d cache_entries=%d heartbeats=%d hits=%d secrets=%d" % (len(keys), cache, beats, hits, len(needles) // 2))
    return 1 if hits else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError) as e:
        print("redis_scan: %s" % e, file=sys.stderr)
        sys.exit(2)
