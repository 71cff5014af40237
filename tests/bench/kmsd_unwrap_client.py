"""Drives kmsd's workspace-key unwrap (cache off: one HSM Decrypt per request)
over mutual TLS with the device certificate, keep-alive or a new connection per
request. Prints "<mode> <ops> ops in <s> s = <rate> ops/s (<errors> errors)".
usage: /usr/bin/python3 kmsd_unwrap_client.py PORT PKI_DIR PASSWORD BODY_FILE SECONDS keepalive|new
"""
import http.client
import os
import ssl
import subprocess
import sys
import tempfile
import time

port, pki, password, body_file, seconds, mode = sys.argv[1:7]
seconds = float(seconds)
body = open(body_file, "rb").read()

# python's ssl wants PEM: convert the device .p12 once (into a private temp dir)
tmp = tempfile.mkdtemp()
pem = os.path.join(tmp, "device.pem")
subprocess.run(["openssl", "pkcs12", "-in", os.path.join(pki, "cmxDevice.p12"), "-nodes", "-out", pem,
                "-passin", "env:BENCH_PW"], check=True, env=dict(os.environ, BENCH_PW=password),
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ctx = ssl.create_default_context(cafile=os.path.join(pki, "rootCA.crt"))
ctx.load_cert_chain(pem)
os.unlink(pem)
os.rmdir(tmp)


def conn():
    return http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=30)


c = conn()
n = errors = 0
start = time.monotonic()
while time.monotonic() - start < seconds:
    if mode == "new":
        c = conn()
    c.request("POST", "/v1/workspace-keys/unwrap", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    if r.status != 200:
        errors += 1
    if mode == "new":
        c.close()
    n += 1
took = time.monotonic() - start
print("kmsd-%s %d ops in %.1f s = %.0f ops/s (%d errors)" % (mode, n, took, n / took, errors))
