"""PyKMIP's own client against PyKMIP's server: the baseline kmsd is compared with.

One KMIP Decrypt per operation (what a customer-key unwrap costs the HSM), with
one TLS connection reused for every operation, or a new connection each time.
Prints one line: "<mode> <ops> ops in <s> s = <rate> ops/s".
usage: /usr/bin/python3 kmip_peer_client.py HOST PORT CERT KEY CA SECONDS reuse|new
"""
import sys
import time

from kmip import enums
from kmip.pie.client import ProxyKmipClient
from kmip.pie import objects

host, port, cert, key, ca, seconds, mode = sys.argv[1:8]
seconds = float(seconds)


def client():
    c = ProxyKmipClient(hostname=host, port=int(port), cert=cert, key=key, ca=ca,
                        config_file="/dev/null", kmip_version=enums.KMIPVersion.KMIP_1_2)
    c.open()
    return c


params = {"cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
          "block_cipher_mode": enums.BlockCipherMode.CBC,
          "padding_method": enums.PaddingMethod.PKCS5}
c = client()
uid = c.create(enums.CryptographicAlgorithm.AES, 256,
               cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                         enums.CryptographicUsageMask.DECRYPT])
c.activate(uid)
iv = bytes(range(16))
ct, _ = c.encrypt(bytes(32), uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv)
if mode == "new":
    c.close()

n = 0
start = time.monotonic()
while time.monotonic() - start < seconds:
    if mode == "new":
        c = client()
    c.decrypt(ct, uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv)
    if mode == "new":
        c.close()
    n += 1
took = time.monotonic() - start
if mode == "reuse":
    c.close()
print("pykmip-client-%s %d ops in %.1f s = %.0f ops/s" % (mode, n, took, n / took))
