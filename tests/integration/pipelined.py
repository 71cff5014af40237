#!/usr/bin/python3
"""Pipelined requests to a client that does not read (issue 7).

kmsd sends each reply's header and body in one sendmsg (server/http.c,
push_vec): the header record is held until the body record comes. This
drives the paths where that matters, over mutual TLS on one keep-alive
connection whose client has a small receive buffer:

1. N requests are written back to back (whoami, health, and a JSON POST
   with an error reply) and nothing is read for STALL_S seconds, so kmsd's
   socket fills up and its writes become partial or fail with EAGAIN;
2. then the rest is written while every reply is read and checked: N
   complete HTTP/1.1 replies, in request order, each with the status and
   body its request must get.

Prints "N passed, N failed".   pipelined.py IT_ENV_FILE
"""
import os
import select
import socket
import ssl
import sys
import time

import it_env

N = 20000  # why: about 6.5 MB of replies, more than kmsd's socket buffers take
STALL_S = float(os.environ.get("PIPELINED_STALL_S", "2"))
DEADLINE_S = 60 + STALL_S


def requests():
    """The i-th request and what its reply must be: (bytes, status, body part)."""
    out = []
    for i in range(N):
        kind = i % 3
        if kind == 0:
            out.append((b"GET /v1/whoami HTTP/1.1\r\nHost: kmsd\r\n\r\n", 200, b'"alias":"cmxBackend"'))
        elif kind == 1:
            out.append((b"GET /health/live HTTP/1.1\r\nHost: kmsd\r\n\r\n", 200, b'"status":"live"'))
        else:
            body = b'{"site_id":"pipe","customer_key":"not a key"}'
            req = (b"POST /v1/user-keys HTTP/1.1\r\nHost: kmsd\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            out.append((req, 400, b'"error"'))
    return out


def read_reply(buf):
    """(status, body, rest) of the first complete reply in buf, or None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    length = 0
    for h in head[1:]:
        name, _, value = h.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if len(buf) < end + 4 + length:
        return None
    return status, buf[end + 4:end + 4 + length], buf[end + 4 + length:]


def main():
    env = it_env.load(sys.argv[1])
    pki = env["KMS_IT_PKI"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(pki, "rootCA.crt"))
    ctx.check_hostname = False
    ctx.load_cert_chain(os.path.join(pki, "cmxBackend.crt"), os.path.join(pki, "cmxBackend.key"))
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # why: a small window makes kmsd's socket fill long before all replies are written
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", int(env["KMS_IT_PORT"])))
    s = ctx.wrap_socket(raw)
    s.setblocking(False)
    reqs = requests()
    out = b"".join(r[0] for r in reqs)
    passed = failed = 0
    start = time.monotonic()
    try:
        got, buf = exchange(s, out, reqs, start)
    except (ssl.SSLError, OSError) as e:
        print(f"FAIL the connection broke: {e}")
        failed += 1
        got = -1
    s.close()
    if got == N and not buf:
        print(f"ok   {N} pipelined replies read after a stall, complete and in request order")
        passed += 1
    elif got >= 0:
        print(f"FAIL {got} of {N} replies arrived whole and right ({len(buf)} bytes left over)")
        failed += 1
    print(f"pipelined: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def exchange(s, out, reqs, start):
    """Writes out, reads and checks replies; returns (replies right, unread bytes)."""
    sent = got = 0
    buf = b""
    while got < N and time.monotonic() < start + DEADLINE_S:
        reading = time.monotonic() >= start + STALL_S  # nothing read during the stall
        readable, writable, _ = select.select([s] if reading else [], [s] if sent < len(out) else [], [], 0.2)
        if writable:
            try:
                sent += s.send(out[sent:sent + 16384])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        if reading and (readable or s.pending()):
            try:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
        while got < N:
            r = read_reply(buf)
            if r is None:
                break
            status, body, buf = r
            want_status, want_body = reqs[got][1], reqs[got][2]
            if status != want_status or want_body not in body:
                print(f"     reply {got}: status {status}, body {body[:120]!r}; want {want_status} with {want_body!r}")
                return got, buf
            got += 1
    return got, buf


if __name__ == "__main__":
    sys.exit(main())
