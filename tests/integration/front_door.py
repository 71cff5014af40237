#!/usr/bin/python3
"""kmsd's front door (issue 15), driven as a load balancer and as attackers would:

- PROXY v2 and v1 headers from the trusted address (127.0.1.200) name the
  client, whose address the audit line then carries; v2 LOCAL (HAProxy's
  health checks) is served as the proxy itself;
- a trusted peer without a header, a malformed header, a header cut short,
  and a header from anyone else: each closed and counted;
- connections per client address capped (kms.server.connection.per.address=6);
- new connections per client address limited (kms.ratelimit.connections=10:10),
  by the PROXY header's address behind the balancer, before the handshake,
  while another address and the balancer's own health checks are served;
- request heads with a deadline (kms.server.header.timeout=2): 30 clients
  sending one header line every half second, and a silent TCP connection,
  are closed at the deadline while a normal client keeps its latency; an idle
  keep-alive connection is not a late head.

Started by front_door.sh against a kmsd of its own. Every wait is bounded.
Prints "N passed, N failed"; exits 1 on any failure.
    front_door.py IT_ENV_FILE"""
import json
import os
import socket
import ssl
import statistics
import struct
import sys
import threading
import time
import urllib.request

import it_env
from it_net import waits_for_close

env = it_env.load(sys.argv[1])
PORT = int(env["KMS_IT_PORT"])
ADMIN = int(env["KMS_IT_ADMIN_PORT"])
PKI = env["KMS_IT_PKI"]
AUDIT = os.path.join(env["KMS_IT_DIR"], "audit.log")
TRUSTED = "127.0.1.200"
HEAD_S = 2.0

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print("ok   " + what)
    else:
        failed += 1
        print("FAIL " + what)


def tls_context(cert=None):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(os.path.join(PKI, "rootCA.crt"))
    if cert:
        c.load_cert_chain(os.path.join(PKI, cert + ".crt"), os.path.join(PKI, cert + ".key"))
    return c


CTX = {None: tls_context(), "cmxBackend": tls_context("cmxBackend")}


def connect(src, header=b""):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((src, 0))
    s.connect(("127.0.0.1", PORT))
    if header:
        s.sendall(header)
    return s


def tls(sock, cert=None):
    return CTX[cert].wrap_socket(sock, server_hostname="127.0.0.1")


def refused(src, header=b"", cert=None):
    """True when kmsd closes the connection before a TLS session exists."""
    try:
        t = tls(connect(src, header), cert)
    except (ssl.SSLError, ConnectionError, socket.timeout, OSError):
        return True
    t.close()
    return False


def request(t, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: kmsd\r\nContent-Length: {len(data)}\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    t.sendall(head.encode() + b"\r\n" + data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = t.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a reply")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        chunk = t.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a reply")
        rest += chunk
    return status, rest[:length]


def v2(src, sport, local=False):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if local:
        return sig + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    addr = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", sport, PORT)
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(addr)) + addr


def v1(src, sport):
    return f"PROXY TCP4 {src} 127.0.0.1 {sport} {PORT}\r\n".encode()


def closed_count(reason):
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f'kms_connections_closed_total{{reason="{reason}"}}'):
                return int(line.split()[-1])
    return -1


def audit_peer(site):
    """The peer of the audit line for site's customer key (the writer flushes within 100 ms)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(AUDIT) as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("site_id") == site:
                    return rec.get("peer")
        time.sleep(0.1)
    return None


def create_customer(sock, site):
    t = tls(sock, "cmxBackend")
    status, _ = request(t, "POST", "/v1/customer-keys", {"site_id": site})
    t.close()
    return status


# --- PROXY headers from the trusted load balancer
check(create_customer(connect(TRUSTED, v2("127.0.0.77", 40001)), "front-v2") == 201,
      "PROXY v2 from the trusted address: served")
check(audit_peer("front-v2") == "127.0.0.77", f"the audit line carries the v2 header's client: {audit_peer('front-v2')}")
check(create_customer(connect(TRUSTED, v1("127.0.0.78", 40002)), "front-v1") == 201,
      "PROXY v1 from the trusted address: served")
check(audit_peer("front-v1") == "127.0.0.78", f"the audit line carries the v1 header's client: {audit_peer('front-v1')}")
t = tls(connect(TRUSTED, v2(None, 0, local=True)))
check(request(t, "GET", "/health/ready")[0] == 200, "PROXY v2 LOCAL (a health check) from the trusted address: served")
t.close()
check(create_customer(connect("127.0.0.5"), "front-direct") == 201, "a direct client without a header: served")
check(audit_peer("front-direct") == "127.0.0.5", f"its audit line carries its own address: {audit_peer('front-direct')}")

before = {r: closed_count(r) for r in ("proxy_invalid", "proxy_untrusted", "proxy_timeout", "limit", "head_timeout")}
check(refused(TRUSTED), "the trusted address without a PROXY header: closed")
check(refused(TRUSTED, b"PROXY TCP4 127.0.0.1 nowhere 1 2\r\n"), "a malformed v1 header: closed")
check(refused("127.0.0.6", v2("127.0.0.9", 1)), "a v2 header from an untrusted address: closed")
check(refused("127.0.0.6", v1("127.0.0.9", 1)), "a v1 header from an untrusted address: closed")
s = connect(TRUSTED, b"PROXY TCP4 127.0.")
took = waits_for_close(s, 8)
s.close()
check(took is not None and HEAD_S - 0.3 <= took <= HEAD_S + 3,
      f"a PROXY header cut short: closed at the head deadline ({took} s)")
check(closed_count("proxy_invalid") - before["proxy_invalid"] == 2, "kms_connections_closed_total{proxy_invalid} +2")
check(closed_count("proxy_untrusted") - before["proxy_untrusted"] == 2,
      "kms_connections_closed_total{proxy_untrusted} +2")
check(closed_count("proxy_timeout") - before["proxy_timeout"] == 1, "kms_connections_closed_total{proxy_timeout} +1")

# --- connections per client address: 6
held = []
for i in range(6):
    t = tls(connect(TRUSTED, v2("127.0.0.90", 41000 + i)))
    request(t, "GET", "/health/live")
    held.append(t)
check(refused(TRUSTED, v2("127.0.0.90", 41010)), "a 7th connection from one client address: refused")
t = tls(connect(TRUSTED, v2("127.0.0.91", 41011)))
check(request(t, "GET", "/health/live")[0] == 200, "another client address at the same time: served")
t.close()
for t in held:
    t.close()
ok = False
deadline = time.monotonic() + 5
while not ok and time.monotonic() < deadline:
    time.sleep(0.2)
    try:
        t = tls(connect(TRUSTED, v2("127.0.0.90", 41020)))
        ok = request(t, "GET", "/health/live")[0] == 200
        t.close()
    except (ssl.SSLError, ConnectionError, OSError):
        pass
check(ok, "once its connections close, the client is served again")
check(closed_count("limit") - before["limit"] >= 1, "kms_connections_closed_total{limit} counted the refusal")


# --- new connections per client address: 10 a second, burst 10
def served(src, header=b""):
    try:
        t = tls(connect(src, header))
        ok = request(t, "GET", "/health/live")[0] == 200
        t.close()
        return ok
    except (ssl.SSLError, ConnectionError, OSError):
        return False


def burst(n, src, header=lambda i: b""):
    """n connections as fast as they go: (served, the most a 10/s burst-10 limit allows in the time taken)."""
    start = time.monotonic()
    ok = [served(src, header(i)) for i in range(n)]
    return ok.count(True), 10 + int(10 * (time.monotonic() - start)) + 1


before_rl = closed_count("rate_limited")
got, most = burst(40, "127.0.4.1")
check(10 <= got <= most and got < 40,
      f"40 quick connections from one address: {got} served (burst 10, at most {most} in the time), the rest closed")
got, most = burst(40, TRUSTED, lambda i: v2("127.0.4.2", 42000 + i))
check(10 <= got <= most and got < 40,
      f"the same through the balancer: limited by the PROXY header's address ({got} served, at most {most})")
check(served("127.0.4.3") and served(TRUSTED, v2("127.0.4.4", 42100)),
      "meanwhile other client addresses, direct and through the balancer, are served")
local = [served(TRUSTED, v2("127.0.1.200", 42200 + i, local=True)) for i in range(15)]
check(all(local), f"the balancer's own health checks (PROXY LOCAL) are never limited ({local.count(True)} of 15)")
check(closed_count("rate_limited") - before_rl >= 2,
      f"kms_connections_closed_total{{rate_limited}} counted them (+{closed_count('rate_limited') - before_rl})")
time.sleep(1.1)
check(served("127.0.4.1"), "a second later the first address is served again")


# --- request heads with a deadline
def normal_latencies(seconds):
    t = tls(connect("127.0.3.1"))
    lat = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        status, _ = request(t, "GET", "/health/live")
        lat.append(time.monotonic() - start)
        if status != 200:
            lat.append(float("inf"))
    t.close()
    return lat


baseline = statistics.median(normal_latencies(1.0))
slow_closed = [None] * 30


def slowloris(i):
    try:
        start = time.monotonic()
        t = tls(connect(f"127.0.2.{i + 1}"))
        t.sendall(b"GET /health/live HTTP/1.1\r\nHost: kmsd\r\n")
        n = 0
        while time.monotonic() - start < 10:
            time.sleep(0.5)
            t.sendall(f"X-Slow-{n}: {n}\r\n".encode())
            n += 1
    except (ssl.SSLError, ConnectionError, OSError):
        slow_closed[i] = time.monotonic() - start


threads = [threading.Thread(target=slowloris, args=(i,)) for i in range(30)]
for th in threads:
    th.start()
silent = connect("127.0.3.2")
silent_took = [None]
silent_thread = threading.Thread(target=lambda: silent_took.__setitem__(0, waits_for_close(silent, 8)))
silent_thread.start()
during = normal_latencies(3.0)
for th in threads:
    th.join(15)
silent_thread.join(10)
silent.close()
closed_in = [x for x in slow_closed if x is not None]
check(len(closed_in) == 30 and all(HEAD_S - 0.3 <= x <= HEAD_S + 3 for x in closed_in),
      f"30 clients sending a header line every 0.5 s: all closed at the deadline "
      f"({len(closed_in)} closed, {min(closed_in, default=0):.2f}-{max(closed_in, default=0):.2f} s)")
check(silent_took[0] is not None and HEAD_S - 0.3 <= silent_took[0] <= HEAD_S + 3,
      f"a connection that never starts TLS: closed at the deadline ({silent_took[0]} s)")
med = statistics.median(during)
check(all(x != float("inf") for x in during) and med <= max(0.02, 10 * baseline),
      f"a normal client meanwhile: {len(during)} requests, all 200, median {med * 1000:.2f} ms "
      f"(alone {baseline * 1000:.2f} ms)")
check(closed_count("head_timeout") - before["head_timeout"] >= 31,
      "kms_connections_closed_total{head_timeout} counted them")
t = tls(connect("127.0.3.4"))
first = request(t, "GET", "/health/live")[0]
t.sendall(b"GET /health/live HTTP/1.1\r\n")
took = waits_for_close(t, 8)
check(first == 200 and took is not None and HEAD_S - 0.3 <= took <= HEAD_S + 3,
      f"a second request's head cut short on a keep-alive connection: closed at the deadline ({took} s)")
t.close()
t = tls(connect("127.0.3.3"))
first = request(t, "GET", "/health/live")[0]
time.sleep(HEAD_S + 1.5)
check(first == 200 and request(t, "GET", "/health/live")[0] == 200,
      "an idle keep-alive connection outlives the head deadline and is served again")
t.close()

print(f"front_door: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
