#!/usr/bin/python3
"""One kept-alive mutual-TLS connection to kmsd for revocation tests: for each line read from stdin
it sends GET /v1/whoami on that same connection and prints the HTTP status ("closed" once the
server has closed it). Every read has a 10 s timeout. A line "idle" sends nothing: it waits up to
15 s for the server to close the connection and prints "closed N.N" (the seconds waited) or "open".
    keepalive_client.py PKI_DIR PORT CERT_NAME   (PKI_DIR/CERT_NAME.crt and .key)"""
import os
import socket
import ssl
import sys

from it_net import waits_for_close

pki, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
c.load_verify_locations(os.path.join(pki, "rootCA.crt"))
c.load_cert_chain(os.path.join(pki, name + ".crt"), os.path.join(pki, name + ".key"))
s = c.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1")
def idle():
    took = waits_for_close(s, 15)
    s.settimeout(10)
    return "open" if took is None else "closed %.1f" % took


for line in sys.stdin:
    if line.strip() == "idle":
        print(idle(), flush=True)
        continue
    try:
        s.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: kmsd\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
        while len(rest) < n:
            rest += s.recv(4096)
        print(head.split(b" ")[1].decode(), flush=True)
    except (OSError, ValueError, IndexError):
        print("closed", flush=True)
