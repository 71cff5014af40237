"""Self-tests of the VAULT STAND-IN (not HashiCorp Vault).

They check the stand-in against ../shared/reference/vault-transit.md (beside the repository): the reference's
known-answer ciphertexts and derivations byte for byte, error strings and status codes, batch
semantics, token TTL/renewal, namespaces, Azure login through the IMDS stand-in, sealed
behaviour. Run: /usr/bin/python3 -m unittest -v test_vault_standin (or ./run-tests.sh).
Every server a test starts is stopped by its PID.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import vault_standin as vs  # noqa: E402

PY = "/usr/bin/python3"
SERVER = os.path.join(HERE, "vault_standin.py")
STANDIN_SH = os.path.join(HERE, "standin.sh")
START_TIMEOUT = 10.0

# Known answers from the reference, section 1.9.
KAT_KEY = bytes(range(32))
KAT_NONCE = bytes(range(0xA0, 0xAC))
KAT_PT_B64 = "c2l0ZS1rZXktMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NSE="
KAT_CTX_B64 = "dGVuYW50LTQy"
KAT_PLAIN = "vault:v1:oKGio6SlpqeoqaqrlXEISGigZ8ZPVbbhNE716EeUYHHw1CYJ+j4XtEyfQCCqaKMWGl2T5rnfr0w3R+p9"
KAT_AAD = "vault:v1:oKGio6SlpqeoqaqrlXEISGigZ8ZPVbbhNE716EeUYHHw1CYJ+j4XtEyfQCDOFVP2MwQR467tJk44K7bx"
KAT_DERIVED = "vault:v1:oKGio6SlpqeoqaqrIvVoWm2XTUXbBclWbBWj0q0XeaCMdaTqYZWzzV2x0BjpwYTntPkxDiCzqE3CZaiN"
KAT_CONVERGENT = "vault:v1:zEfucXycskfsSrWxdxwkDTwz0cpTe2PggsgHQs+4BczaLDbuFbMZwpnBzBSz8IolSZv3R9FzOeHTtrKF"

INVALID_TOKEN_BODY = b'{"errors":["2 errors occurred:\\n\\t* permission denied\\n\\t* invalid token\\n\\n"]}\n'
DENIED_BODY = b'{"errors":["1 error occurred:\\n\\t* permission denied\\n\\n"]}\n'
CTX_MISSING = vs.ERR_CTX_MISSING


def b64(data):
    return base64.b64encode(data).decode()


def read_text(path):
    with open(path) as f:
        return f.read()


def read_env(path):
    return dict(line.split("=", 1) for line in read_text(path).splitlines() if line and not line.startswith("#"))


def standin_pid_alive(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"vault_standin" in f.read()
    except OSError:
        return False


class StandIn:
    """One stand-in process on free loopback ports, stopped by PID."""

    def __init__(self, *extra, root="root-token", tls=None):
        self.dir = tempfile.mkdtemp(prefix="vault-standin-test-")
        self.root = root
        self.tls = tls
        args = [PY, SERVER, "--port", "0", "--port-file", os.path.join(self.dir, "port"),
                "--imds-port", "0", "--imds-port-file", os.path.join(self.dir, "imds-port"),
                "--token", root, "--azure-role", "kmsd"] + list(extra)
        if tls:
            args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + START_TIMEOUT
        pf, ipf = os.path.join(self.dir, "port"), os.path.join(self.dir, "imds-port")
        while not (os.path.exists(pf) and os.path.exists(ipf)):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("stand-in did not start: " + self.output())
            time.sleep(0.05)
        with open(pf) as f:
            self.port = int(f.read())
        with open(ipf) as f:
            self.imds_port = int(f.read())

    def output(self):
        self.log.flush()
        with open(os.path.join(self.dir, "log"), "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- HTTP -----------------------------------------------------------------------------
    def raw(self, method, path, body=None, headers=None, port=None, timeout=10):
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.tls[2])
            conn = http.client.HTTPSConnection("127.0.0.1", port or self.port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def call(self, method, path, body=None, token="root", ns=None, headers=None):
        h = dict(headers or {})
        if token == "root":
            token = self.root
        if token is not None:
            h["X-Vault-Token"] = token
        if ns is not None:
            h["X-Vault-Namespace"] = ns
        status, hdrs, data = self.raw(method, path, body, h)
        parsed = json.loads(data) if data.strip() and hdrs.get("content-type") == "application/json" else None
        return status, parsed, data

    def control(self, path, body=None, method="POST"):
        status, hdrs, data = self.raw(method, "/stand-in/" + path, body if body is not None else {})
        if status != 200:
            raise AssertionError("control %s: %d %s" % (path, status, data))
        return json.loads(data)

    def imds(self, path, headers=None):
        status, hdrs, data = self.raw("GET", path, headers=headers, port=self.imds_port)
        return status, json.loads(data) if data else None

    def make_token(self, **spec):
        return self.control("tokens", spec)["id"]


class StandInCase(unittest.TestCase):
    """A fresh stand-in per test class."""
    extra = ()

    @classmethod
    def setUpClass(cls):
        cls.s = StandIn(*cls.extra)

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def assertVaultError(self, resp, status, message):
        st, parsed, raw = resp
        self.assertEqual(st, status, raw)
        self.assertEqual(parsed, {"errors": [message]}, raw)

    def new_key(self, name, **body):
        st, _, raw = self.s.call("POST", "/v1/transit/keys/" + name, body)
        self.assertEqual(st, 200, raw)


# ---------------------------------------------------------------------------------------------

class TestKnownAnswers(StandInCase):
    def setUp(self):
        for name, derived, conv in (("kat", False, False), ("katd", True, False), ("katc", True, True)):
            self.s.control("keys", {"name": name, "derived": derived, "convergent_encryption": conv,
                                    "versions": [b64(KAT_KEY)]})

    def encrypt_with_nonce(self, key, body):
        self.s.control("nonces", {"nonces": [b64(KAT_NONCE)]})
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/" + key, body)
        self.assertEqual(st, 200, raw)
        return parsed["data"]

    def test_not_derived(self):
        d = self.encrypt_with_nonce("kat", {"plaintext": KAT_PT_B64})
        self.assertEqual(d, {"ciphertext": KAT_PLAIN, "key_version": 1})
        self.assertEqual(len(KAT_PLAIN), 89)   # reference: 60-byte blob, 80 b64 chars, 89 total

    def test_context_ignored_when_not_derived(self):
        d = self.encrypt_with_nonce("kat", {"plaintext": KAT_PT_B64, "context": KAT_CTX_B64})
        self.assertEqual(d["ciphertext"], KAT_PLAIN)

    def test_with_aad(self):
        d = self.encrypt_with_nonce("kat", {"plaintext": KAT_PT_B64, "associated_data": b64(b"aad")})
        self.assertEqual(d["ciphertext"], KAT_AAD)

    def test_derived(self):
        d = self.encrypt_with_nonce("katd", {"plaintext": KAT_PT_B64, "context": KAT_CTX_B64})
        self.assertEqual(d["ciphertext"], KAT_DERIVED)

    def test_convergent_needs_no_injected_nonce(self):
        for _ in range(2):
            st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/katc",
                                          {"plaintext": KAT_PT_B64, "context": KAT_CTX_B64})
            self.assertEqual(parsed["data"]["ciphertext"], KAT_CONVERGENT)

    def test_decrypt_reference_ciphertexts(self):
        for key, ct, extra in (("kat", KAT_PLAIN, {}), ("kat", KAT_AAD, {"associated_data": b64(b"aad")}),
                               ("katd", KAT_DERIVED, {"context": KAT_CTX_B64}),
                               ("katc", KAT_CONVERGENT, {"context": KAT_CTX_B64})):
            body = dict(extra, ciphertext=ct)
            st, parsed, raw = self.s.call("POST", "/v1/transit/decrypt/" + key, body)
            self.assertEqual(st, 200, raw)
            self.assertEqual(parsed["data"], {"plaintext": KAT_PT_B64})

    def test_version_zero_prefix_is_version_one(self):
        st, parsed, raw = self.s.call("POST", "/v1/transit/decrypt/kat",
                                      {"ciphertext": KAT_PLAIN.replace("vault:v1:", "vault:v0:")})
        self.assertEqual(parsed["data"]["plaintext"], KAT_PT_B64)

    def test_wrong_aad_context_or_tag_fails_authentication(self):
        cases = [("kat", {"ciphertext": KAT_AAD}),
                 ("kat", {"ciphertext": KAT_PLAIN[:-2] + "9A"}),
                 ("katd", {"ciphertext": KAT_DERIVED, "context": b64(b"tenant-43")})]
        for key, body in cases:
            self.assertVaultError(self.s.call("POST", "/v1/transit/decrypt/" + key, body), 400,
                                  "cipher: message authentication failed")

    def test_hkdf_derivation_and_convergent_nonce(self):
        key = vs.TransitKey("x", derived=True)
        key.add_version(0, KAT_KEY)
        derived, _ = vs.derive_key(key, 1, b"tenant-42", 32)
        self.assertTrue(derived.hex().startswith("18438a69"), derived.hex())
        self.assertTrue(derived.hex().endswith("d5147e"), derived.hex())
        key.convergent = True
        enc, mac = vs.derive_key(key, 1, b"tenant-42", 32)
        self.assertEqual(enc, derived)   # HKDF output prefix is the same
        nonce = hmac.new(mac, base64.b64decode(KAT_PT_B64), hashlib.sha256).digest()[:12]
        self.assertEqual(nonce.hex(), "cc47ee717c9cb247ec4ab5b1")

    def test_blob_layout(self):
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/kat", {"plaintext": b64(b"x" * 5)})
        ct = parsed["data"]["ciphertext"]
        self.assertRegex(ct, r"^vault:v1:[A-Za-z0-9+/]+=*$")
        self.assertEqual(len(base64.b64decode(ct[len("vault:v1:"):])), 12 + 5 + 16)


class TestGoBase64(unittest.TestCase):
    def test_offsets_match_go(self):
        cases = {"abc": 0, "ab!d": 2, "YQ=": 3, "YQ==YQ==": 4, "=AAA": 0, "Y===": 1, "YWJj\x00": 4,
                 "YW=j": 2, "YWJjZA=": 7}
        for text, off in cases.items():
            with self.assertRaises(vs.GoBase64Error, msg=text) as cm:
                vs.go_b64decode(text)
            self.assertEqual(cm.exception.offset, off, text)
            self.assertEqual(str(cm.exception), "illegal base64 data at input byte %d" % off)

    def test_valid(self):
        self.assertEqual(vs.go_b64decode("Zm9v\nYmFy"), b"foobar")
        self.assertEqual(vs.go_b64decode(""), b"")
        self.assertEqual(vs.go_b64decode("YQ=="), b"a")
        self.assertEqual(vs.go_b64decode("YWI="), b"ab")


class TestEnvelopeAndErrors(StandInCase):
    def test_envelope_fields_and_go_json(self):
        st, hdrs, raw = self.s.raw("POST", "/v1/transit/keys/env", b"", {"X-Vault-Token": self.s.root})
        self.assertEqual(st, 200)
        self.assertEqual(hdrs["content-type"], "application/json")
        self.assertTrue(raw.endswith(b"}\n"))
        self.assertNotIn(b" ", raw)
        d = json.loads(raw)
        self.assertEqual(list(d), ["request_id", "lease_id", "renewable", "lease_duration", "data",
                                   "wrap_info", "warnings", "auth", "mount_type"])
        self.assertEqual((d["lease_id"], d["renewable"], d["lease_duration"], d["wrap_info"], d["warnings"],
                          d["auth"]), ("", False, 0, None, None, None))
        self.assertEqual(list(d["data"]), sorted(d["data"]))   # Go map: sorted keys
        info = d["data"]
        for f, v in (("type", "aes256-gcm96"), ("derived", False), ("latest_version", 1),
                     ("min_decryption_version", 1), ("min_encryption_version", 0),
                     ("min_available_version", 0), ("supports_encryption", True), ("name", "env")):
            self.assertEqual(info[f], v, f)
        self.assertEqual(list(info["keys"]), ["1"])
        self.assertIsInstance(info["keys"]["1"], int)

    def test_missing_key_read_is_404_empty_errors(self):
        st, parsed, raw = self.s.call("GET", "/v1/transit/keys/nope")
        self.assertEqual((st, raw), (404, b'{"errors":[]}\n'))

    def test_missing_token(self):
        st, hdrs, raw = self.s.raw("POST", "/v1/transit/encrypt/k", b'{"plaintext":""}')
        self.assertEqual((st, raw), (400, b'{"errors":["missing client token"]}\n'))

    def test_invalid_token_exact_body(self):
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/k", {"plaintext": ""}, token="hvs.nope")
        self.assertEqual((st, raw), (403, INVALID_TOKEN_BODY))

    def test_bearer_token_accepted(self):
        st, hdrs, raw = self.s.raw("GET", "/v1/auth/token/lookup-self",
                                   headers={"Authorization": "Bearer " + self.s.root})
        self.assertEqual(st, 200, raw)

    def test_policy_denial(self):
        tok = self.s.make_token(policies=["default"], ttl=600)
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/k", {"plaintext": ""}, token=tok)
        self.assertEqual((st, raw), (403, DENIED_BODY))

    def test_upsert_needs_create_update_only_gets_key_not_found(self):
        self.s.control("config", {"policies": {"upd": {"transit/encrypt/*": ["update"]},
                                               "crt": {"transit/encrypt/*": ["create", "update"]}}})
        upd = self.s.make_token(policies=["upd"], ttl=600)
        crt = self.s.make_token(policies=["crt"], ttl=600)
        self.assertVaultError(self.s.call("POST", "/v1/transit/encrypt/ups1", {"plaintext": "YQ=="}, token=upd),
                              400, "encryption key not found")
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/ups1", {"plaintext": "YQ=="}, token=crt)
        self.assertEqual(st, 200, raw)
        self.assertIsNone(parsed["warnings"])
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/ups1", {"plaintext": "YQ=="}, token=upd)
        self.assertEqual(st, 200, raw)   # exists now: update suffices

    def test_upsert_with_context_creates_derived_key(self):
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/ups2", {"plaintext": "YQ==", "context": "Yw=="})
        self.assertEqual(st, 200, raw)
        st, parsed, raw = self.s.call("GET", "/v1/transit/keys/ups2")
        self.assertTrue(parsed["data"]["derived"])
        self.assertEqual(parsed["data"]["kdf"], "hkdf_sha256")

    def test_disable_upsert(self):
        self.s.call("POST", "/v1/transit/config/keys", {"disable_upsert": True})
        try:
            self.assertVaultError(self.s.call("POST", "/v1/transit/encrypt/ups3", {"plaintext": "YQ=="}),
                                  400, "encryption key not found")
        finally:
            self.s.call("POST", "/v1/transit/config/keys", {"disable_upsert": False})

    def test_decrypt_rewrap_datakey_on_missing_key(self):
        for path in ("decrypt", "rewrap"):
            self.assertVaultError(self.s.call("POST", "/v1/transit/%s/nokey" % path, {"ciphertext": KAT_PLAIN}),
                                  400, "encryption key not found")
        self.assertVaultError(self.s.call("POST", "/v1/transit/datakey/plaintext/nokey", {}),
                              400, "encryption key not found")
        self.assertVaultError(self.s.call("POST", "/v1/transit/keys/nokey/rotate"), 400, "key not found")

    def test_create_existing_key_warns(self):
        self.new_key("twice")
        st, parsed, raw = self.s.call("POST", "/v1/transit/keys/twice", {})
        self.assertEqual(st, 200)
        self.assertEqual(parsed["warnings"], ["key twice already existed"])

    def test_create_validation(self):
        self.assertVaultError(self.s.call("POST", "/v1/transit/keys/cv", {"convergent_encryption": True}),
                              400, "convergent encryption requires derivation to be enabled")
        st, parsed, raw = self.s.call("POST", "/v1/transit/keys/cv2", {"derived": True, "convergent_encryption": True})
        self.assertEqual(parsed["data"]["convergent_encryption_version"], -1)
        self.assertTrue(parsed["data"]["convergent_encryption"])

    def test_delete_needs_deletion_allowed(self):
        self.new_key("del1")
        self.assertVaultError(self.s.call("DELETE", "/v1/transit/keys/del1"), 400,
                              "error deleting policy del1: deletion is not allowed for this key")
        self.s.call("POST", "/v1/transit/keys/del1/config", {"deletion_allowed": True})
        st, _, raw = self.s.call("DELETE", "/v1/transit/keys/del1")
        self.assertEqual((st, raw), (204, b""))
        self.assertEqual(self.s.call("GET", "/v1/transit/keys/del1")[0], 404)

    def test_unknown_mount(self):
        self.assertVaultError(self.s.call("POST", "/v1/secret/foo", {}), 404,
                              'no handler for route "secret/foo". route entry not found.')

    def test_encrypt_errors(self):
        self.new_key("ee")
        self.assertVaultError(self.s.call("POST", "/v1/transit/encrypt/ee", {}), 400, "missing plaintext to encrypt")
        self.assertVaultError(self.s.call("POST", "/v1/transit/encrypt/ee", {"plaintext": "ab!d"}), 400,
                              "illegal base64 data at input byte 2")
        self.assertVaultError(self.s.call("POST", "/v1/transit/encrypt/ee", {"plaintext": "YQ==", "key_version": 2}),
                              400, "requested version for encryption is higher than the latest key version")
        self.s.call("POST", "/v1/transit/keys/ee/rotate")
        self.s.call("POST", "/v1/transit/keys/ee/config", {"min_encryption_version": 2})
        self.assertVaultError(self.s.call("POST", "/v1/transit/encrypt/ee", {"plaintext": "YQ==", "key_version": 1}),
                              400, "requested version for encryption is less than the minimum encryption key version")
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/ee", {"plaintext": ""})
        self.assertEqual(parsed["data"]["key_version"], 2)   # empty plaintext is allowed

    def test_derived_key_needs_context(self):
        self.new_key("dk", derived=True)
        self.assertVaultError(self.s.call("POST", "/v1/transit/encrypt/dk", {"plaintext": "YQ=="}), 400, CTX_MISSING)
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/dk", {"plaintext": "YQ==", "context": "Yw=="})
        ct = parsed["data"]["ciphertext"]
        self.assertVaultError(self.s.call("POST", "/v1/transit/decrypt/dk", {"ciphertext": ct}), 400, CTX_MISSING)

    def test_decrypt_error_strings(self):
        self.new_key("de")
        self.s.call("POST", "/v1/transit/keys/de/rotate")
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/de", {"plaintext": "YQ==", "key_version": 1})
        v1 = parsed["data"]["ciphertext"]
        cases = [
            ({}, "missing ciphertext to decrypt"),
            ({"ciphertext": ""}, "missing ciphertext to decrypt"),
            ({"ciphertext": "vaul:v1:AAAA"}, "invalid ciphertext: no prefix"),
            ({"ciphertext": "vault:v1AAAA"}, "invalid ciphertext: wrong number of fields"),
            ({"ciphertext": "vault:vx:AAAA"}, "invalid ciphertext: version number could not be decoded"),
            ({"ciphertext": "vault:v3:AAAA"}, "invalid ciphertext: version is too new"),
            ({"ciphertext": "vault:v1:!!!!"}, "invalid ciphertext: could not decode base64"),
            ({"ciphertext": "vault:v1:AAAA"}, "invalid ciphertext length"),
            ({"ciphertext": "vault:v1:" + b64(b"\0" * 12)}, "cipher: message authentication failed"),
        ]
        for body, msg in cases:
            self.assertVaultError(self.s.call("POST", "/v1/transit/decrypt/de", body), 400, msg)
        self.assertEqual(self.s.call("POST", "/v1/transit/decrypt/de", {"ciphertext": v1})[0], 200)
        st, parsed, raw = self.s.call("POST", "/v1/transit/keys/de/config", {"min_decryption_version": 2})
        self.assertEqual(parsed["data"]["min_decryption_version"], 2)
        self.assertVaultError(self.s.call("POST", "/v1/transit/decrypt/de", {"ciphertext": v1}), 400,
                              "ciphertext or signature version is disallowed by policy (too old)")

    def test_nonce_refused_on_encrypt_ignored_on_decrypt(self):
        self.new_key("nk")
        nonce = b64(b"\1" * 12)
        self.assertVaultError(self.s.call("POST", "/v1/transit/encrypt/nk", {"plaintext": "YQ==", "nonce": nonce}),
                              400, "provided nonce not allowed for this key")
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/nk", {"plaintext": "YQ=="})
        st, parsed, raw = self.s.call("POST", "/v1/transit/decrypt/nk",
                                      {"ciphertext": parsed["data"]["ciphertext"], "nonce": nonce})
        self.assertEqual(parsed["data"]["plaintext"], "YQ==")

    def test_unknown_key_type(self):
        self.assertVaultError(self.s.call("POST", "/v1/transit/keys/kt", {"type": "foo"}), 400, "unknown key type foo")

    def test_datakey(self):
        self.new_key("dkey")
        st, parsed, raw = self.s.call("POST", "/v1/transit/datakey/plaintext/dkey", {"bits": 128})
        d = parsed["data"]
        self.assertEqual(len(base64.b64decode(d["plaintext"])), 16)
        st, p2, raw = self.s.call("POST", "/v1/transit/decrypt/dkey", {"ciphertext": d["ciphertext"]})
        self.assertEqual(p2["data"]["plaintext"], d["plaintext"])
        st, parsed, raw = self.s.call("POST", "/v1/transit/datakey/wrapped/dkey", {})
        self.assertNotIn("plaintext", parsed["data"])
        self.assertVaultError(self.s.call("POST", "/v1/transit/datakey/other/dkey", {}), 400,
                              "Invalid path, must be 'plaintext' or 'wrapped'")
        self.assertVaultError(self.s.call("POST", "/v1/transit/datakey/wrapped/dkey", {"bits": 100}), 400,
                              "invalid bit length")

    def test_list_keys(self):
        self.new_key("listed")
        st, parsed, raw = self.s.call("LIST", "/v1/transit/keys")
        self.assertIn("listed", parsed["data"]["keys"])
        st, parsed2, raw = self.s.call("GET", "/v1/transit/keys?list=true")
        self.assertEqual(parsed["data"], parsed2["data"])

    def test_bad_json_and_key_names(self):
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/k", b"{not json")
        self.assertEqual(st, 400)
        self.assertTrue(parsed["errors"][0].startswith("failed to parse JSON input"))
        self.assertEqual(self.s.call("POST", "/v1/transit/keys/bad.", {})[0], 404)
        self.assertEqual(self.s.call("POST", "/v1/transit/keys/-bad", {})[0], 404)


class TestRotationAndRewrap(StandInCase):
    def test_old_versions_decrypt_and_rewrap_moves_them(self):
        self.new_key("rot")
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/rot", {"plaintext": "c2VjcmV0"})
        v1 = parsed["data"]["ciphertext"]
        st, parsed, raw = self.s.call("POST", "/v1/transit/keys/rot/rotate")
        self.assertEqual(st, 200)
        self.assertEqual(parsed["data"]["latest_version"], 2)
        self.assertEqual(sorted(parsed["data"]["keys"]), ["1", "2"])
        st, parsed, raw = self.s.call("POST", "/v1/transit/decrypt/rot", {"ciphertext": v1})
        self.assertEqual(parsed["data"]["plaintext"], "c2VjcmV0")
        st, parsed, raw = self.s.call("POST", "/v1/transit/rewrap/rot", {"ciphertext": v1})
        self.assertEqual(st, 200, raw)
        self.assertEqual(parsed["data"]["key_version"], 2)
        v2 = parsed["data"]["ciphertext"]
        self.assertTrue(v2.startswith("vault:v2:"))
        self.assertNotIn("plaintext", parsed["data"])
        st, parsed, raw = self.s.call("POST", "/v1/transit/decrypt/rot", {"ciphertext": v2})
        self.assertEqual(parsed["data"]["plaintext"], "c2VjcmV0")
        st, parsed, raw = self.s.call("POST", "/v1/transit/rewrap/rot", {"ciphertext": v2, "key_version": 1})
        self.assertTrue(parsed["data"]["ciphertext"].startswith("vault:v1:"))

    def test_config_validation(self):
        self.new_key("cfg")
        self.assertVaultError(self.s.call("POST", "/v1/transit/keys/cfg/config", {"min_decryption_version": 5}),
                              400, "cannot set min decryption version of 5, latest key version is 1")
        self.assertVaultError(self.s.call("POST", "/v1/transit/keys/nokey/config", {}),
                              400, "no existing key named nokey could be found")


class TestBatch(StandInCase):
    def setUp(self):
        self.new_key("b")

    def test_encrypt_batch_order_and_references(self):
        items = [{"plaintext": b64(bytes([i])), "reference": "r%d" % i} for i in range(5)]
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/b", {"batch_input": items})
        self.assertEqual(st, 200, raw)
        res = parsed["data"]["batch_results"]
        self.assertEqual([r["reference"] for r in res], ["r0", "r1", "r2", "r3", "r4"])
        self.assertTrue(all(list(r) == ["ciphertext", "key_version", "reference"] for r in res))
        dec = [{"ciphertext": r["ciphertext"], "reference": r["reference"]} for r in res]
        st, parsed, raw = self.s.call("POST", "/v1/transit/decrypt/b", {"batch_input": dec})
        self.assertEqual([r["plaintext"] for r in parsed["data"]["batch_results"]],
                         [b64(bytes([i])) for i in range(5)])

    def test_item_error_gives_400_with_full_envelope(self):
        items = [{"plaintext": "YQ==", "reference": "ok"}, {"plaintext": "ab!d", "reference": "bad"}]
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/b", {"batch_input": items})
        self.assertEqual(st, 400)
        self.assertIn("request_id", parsed)
        res = parsed["data"]["batch_results"]
        self.assertEqual(list(res[1]), ["error", "reference"])
        self.assertEqual(res[1], {"error": "illegal base64 data at input byte 2", "reference": "bad"})
        self.assertTrue(res[0]["ciphertext"].startswith("vault:v1:"))

    def test_partial_failure_response_code(self):
        items = [{"plaintext": "YQ=="}, {"plaintext": "!"}]
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/b",
                                      {"batch_input": items, "partial_failure_response_code": 207})
        self.assertEqual(st, 207)
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/b",
                                      {"batch_input": [{"plaintext": "!"}], "partial_failure_response_code": 207})
        self.assertEqual(st, 400)   # every item failed: the error code wins
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/b",
                                      {"batch_input": items, "partial_failure_response_code": 0})
        self.assertEqual(st, 400)
        self.assertEqual(len(parsed["warnings"]), 1)

    def test_decrypt_batch_error_item_keeps_plaintext_field(self):
        st, parsed, raw = self.s.call("POST", "/v1/transit/decrypt/b",
                                      {"batch_input": [{"ciphertext": "garbage", "reference": "x"}]})
        self.assertEqual(st, 400)
        self.assertEqual(parsed["data"]["batch_results"],
                         [{"plaintext": "", "error": "invalid ciphertext: no prefix", "reference": "x"}])

    def test_batch_request_level_errors(self):
        self.assertVaultError(self.s.call("POST", "/v1/transit/encrypt/b", {"batch_input": []}),
                              400, "missing batch input to process")
        self.assertVaultError(self.s.call("POST", "/v1/transit/encrypt/b",
                                          {"batch_input": [{"plaintext": "YQ==", "context": "Yw=="},
                                                           {"plaintext": "YQ=="}]}),
                              400, "context should be set either in all the request blocks or in none")

    def test_batch_ignores_top_level_plaintext(self):
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/b",
                                      {"plaintext": "!!!", "batch_input": [{"plaintext": "YQ=="}]})
        self.assertEqual(st, 200, raw)
        self.assertEqual(len(parsed["data"]["batch_results"]), 1)

    def test_rewrap_batch(self):
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/b",
                                      {"batch_input": [{"plaintext": "YQ=="}, {"plaintext": "Yg=="}]})
        cts = [r["ciphertext"] for r in parsed["data"]["batch_results"]]
        self.s.call("POST", "/v1/transit/keys/b/rotate")
        st, parsed, raw = self.s.call("POST", "/v1/transit/rewrap/b",
                                      {"batch_input": [{"ciphertext": c, "reference": str(i)} for i, c in enumerate(cts)]})
        self.assertEqual(st, 200, raw)
        res = parsed["data"]["batch_results"]
        self.assertEqual([r["key_version"] for r in res], [2, 2])
        self.assertEqual([r["reference"] for r in res], ["0", "1"])


class TestTokens(StandInCase):
    def test_root_lookup_self(self):
        st, parsed, raw = self.s.call("GET", "/v1/auth/token/lookup-self")
        d = parsed["data"]
        self.assertEqual((d["ttl"], d["expire_time"], d["renewable"], d["policies"], d["id"]),
                         (0, None, False, ["root"], self.s.root))
        for f in ("accessor", "creation_time", "creation_ttl", "display_name", "entity_id", "explicit_max_ttl",
                  "issue_time", "meta", "num_uses", "orphan", "path", "type"):
            self.assertIn(f, d)

    def test_ttl_token_lookup_and_renew(self):
        tok = self.s.make_token(policies=["transit", "default"], ttl=100, renewable=True)
        st, parsed, raw = self.s.call("GET", "/v1/auth/token/lookup-self", token=tok)
        d = parsed["data"]
        self.assertTrue(98 <= d["ttl"] <= 100, d["ttl"])
        self.assertTrue(d["renewable"])
        self.assertRegex(d["expire_time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
        st, parsed, raw = self.s.call("POST", "/v1/auth/token/renew-self", {"increment": "1h"}, token=tok)
        self.assertEqual(st, 200, raw)
        self.assertIsNone(parsed["data"])
        a = parsed["auth"]
        self.assertEqual((a["client_token"], a["lease_duration"], a["renewable"]), (tok, 3600, True))
        self.assertEqual(list(a)[:3], ["client_token", "accessor", "policies"])
        st, parsed, raw = self.s.call("GET", "/v1/auth/token/lookup-self", token=tok)
        self.assertTrue(3598 <= parsed["data"]["ttl"] <= 3600)
        self.assertIn("last_renewal_time", parsed["data"])
        st, parsed, raw = self.s.call("POST", "/v1/auth/token/renew-self", {}, token=tok)
        self.assertEqual(parsed["auth"]["lease_duration"], 100)   # no increment: the token's own TTL

    def test_renew_capped_by_explicit_max_ttl(self):
        tok = self.s.make_token(policies=["default"], ttl=10, renewable=True, explicit_max_ttl=60)
        st, parsed, raw = self.s.call("POST", "/v1/auth/token/renew-self", {"increment": 3600}, token=tok)
        self.assertEqual(st, 200, raw)
        self.assertTrue(58 <= parsed["auth"]["lease_duration"] <= 60)
        self.assertEqual(len(parsed["warnings"]), 1)
        self.assertRegex(parsed["warnings"][0],
                         r'^TTL of "1h" exceeded the effective max_ttl of "(59|1m)s?"; TTL value is capped accordingly$')

    def test_not_renewable(self):
        tok = self.s.make_token(policies=["default"], ttl=100, renewable=False)
        self.assertVaultError(self.s.call("POST", "/v1/auth/token/renew-self", {}, token=tok), 400,
                              "lease is not renewable")
        self.assertVaultError(self.s.call("POST", "/v1/auth/token/renew-self", {}), 400, "lease is not renewable")

    def test_expiry_in_real_time(self):
        tok = self.s.make_token(policies=["default"], ttl=1)
        self.assertEqual(self.s.call("GET", "/v1/auth/token/lookup-self", token=tok)[0], 200)
        time.sleep(1.2)
        st, parsed, raw = self.s.call("GET", "/v1/auth/token/lookup-self", token=tok)
        self.assertEqual((st, raw), (403, INVALID_TOKEN_BODY))

    def test_num_uses(self):
        tok = self.s.make_token(policies=["default"], ttl=100, num_uses=2)
        self.assertEqual(self.s.call("GET", "/v1/auth/token/lookup-self", token=tok)[0], 200)
        self.assertEqual(self.s.call("GET", "/v1/auth/token/lookup-self", token=tok)[0], 200)
        self.assertEqual(self.s.call("GET", "/v1/auth/token/lookup-self", token=tok)[0], 403)

    def test_revoke_self(self):
        tok = self.s.make_token(policies=["default"], ttl=100)
        self.assertEqual(self.s.call("POST", "/v1/auth/token/revoke-self", token=tok)[0], 204)
        self.assertEqual(self.s.call("GET", "/v1/auth/token/lookup-self", token=tok)[0], 403)

    def test_tokens_file(self):
        d = tempfile.mkdtemp()
        try:
            path = os.path.join(d, "tokens.json")
            with open(path, "w") as f:
                json.dump({"tokens": [{"id": "hvs.filetoken", "policies": ["transit"], "ttl": "2m",
                                       "renewable": True}]}, f)
            s2 = StandIn("--tokens-file", path)
            try:
                st, parsed, raw = s2.call("GET", "/v1/auth/token/lookup-self", token="hvs.filetoken")
                self.assertEqual(parsed["data"]["policies"], ["default", "transit"])
                self.assertTrue(118 <= parsed["data"]["ttl"] <= 120)
                self.assertEqual(s2.call("POST", "/v1/transit/keys/f", {}, token="hvs.filetoken")[0], 200)
            finally:
                s2.stop()
        finally:
            shutil.rmtree(d)


class TestClock(StandInCase):
    """Time travel with /stand-in/time (its own server: the offset is global)."""

    def test_token_expires_and_max_ttl_stops_growth(self):
        tok = self.s.make_token(policies=["default"], ttl=30, renewable=True, explicit_max_ttl=90)
        self.s.control("time", {"advance": 25})
        st, parsed, raw = self.s.call("POST", "/v1/auth/token/renew-self", {}, token=tok)
        self.assertEqual(parsed["auth"]["lease_duration"], 30)
        self.s.control("time", {"advance": 25})
        st, parsed, raw = self.s.call("POST", "/v1/auth/token/renew-self", {}, token=tok)
        self.assertEqual(parsed["auth"]["lease_duration"], 30)
        self.s.control("time", {"advance": 25})      # 75 s after creation: only 15 s left
        st, parsed, raw = self.s.call("POST", "/v1/auth/token/renew-self", {}, token=tok)
        self.assertTrue(14 <= parsed["auth"]["lease_duration"] <= 15, parsed)
        self.assertTrue(parsed["warnings"])
        self.s.control("time", {"advance": 16})
        st, parsed, raw = self.s.call("POST", "/v1/auth/token/renew-self", {}, token=tok)
        self.assertEqual((st, raw), (403, INVALID_TOKEN_BODY))


class TestNamespaces(StandInCase):
    def test_key_spaces_are_separate(self):
        self.assertEqual(self.s.call("POST", "/v1/transit/keys/nsk", {}, ns="ns1")[0], 200)
        self.assertEqual(self.s.call("GET", "/v1/transit/keys/nsk", ns="ns1")[0], 200)
        self.assertEqual(self.s.call("GET", "/v1/transit/keys/nsk")[0], 404)
        self.assertEqual(self.s.call("GET", "/v1/transit/keys/nsk", ns="ns2")[0], 404)
        # header, path prefix and trailing slash combine as the reference says
        self.assertEqual(self.s.call("GET", "/v1/ns1/transit/keys/nsk")[0], 200)
        self.assertEqual(self.s.call("GET", "/v1/transit/keys/nsk", ns="ns1/")[0], 200)
        self.s.call("POST", "/v1/transit/keys/deep", {}, ns="ns1/ns2/")
        self.assertEqual(self.s.call("GET", "/v1/ns2/transit/keys/deep", ns="ns1")[0], 200)
        self.assertEqual(self.s.call("GET", "/v1/ns1/ns2/transit/keys/deep")[0], 200)

    def test_ciphertext_of_one_namespace_does_not_decrypt_in_another(self):
        self.s.call("POST", "/v1/transit/keys/same", {}, ns="a")
        self.s.call("POST", "/v1/transit/keys/same", {}, ns="b")
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/same", {"plaintext": "YQ=="}, ns="a")
        ct = parsed["data"]["ciphertext"]
        self.assertVaultError(self.s.call("POST", "/v1/transit/decrypt/same", {"ciphertext": ct}, ns="b"),
                              400, "cipher: message authentication failed")

    def test_token_namespace(self):
        tok = self.s.make_token(policies=["transit", "default"], ttl=100, renewable=True, namespace="ns1")
        self.assertEqual(self.s.call("POST", "/v1/transit/keys/t1", {}, token=tok, ns="ns1")[0], 200)
        self.assertEqual(self.s.call("POST", "/v1/transit/keys/t1", {}, token=tok)[0], 403)
        st, parsed, raw = self.s.call("GET", "/v1/auth/token/lookup-self", token=tok, ns="ns1")
        self.assertEqual(parsed["data"]["namespace_path"], "ns1/")
        self.assertEqual(self.s.call("POST", "/v1/auth/token/renew-self", {}, token=tok, ns="ns1")[0], 200)
        # ACL first: the ns1 policies do not cover child/auth/token/renew-self
        self.assertVaultError(self.s.call("POST", "/v1/auth/token/renew-self", {}, token=tok, ns="ns1/child"),
                              403, vs.ERR_PERMISSION_DENIED)
        self.s.control("config", {"policies": {"renew-ns1": {"ns1/auth/token/renew-self": ["update"]}}})
        rtok = self.s.make_token(policies=["renew-ns1"], ttl=100, renewable=True)
        self.assertVaultError(self.s.call("POST", "/v1/auth/token/renew-self", {}, token=rtok, ns="ns1"),
                              403, "cannot renew a token across namespaces")

    def test_health_without_namespace_and_request_log(self):
        seq = self.s.control("requests", method="GET")["requests"]
        since = seq[-1]["seq"] if seq else 0
        st, hdrs, raw = self.s.raw("GET", "/v1/sys/health")
        self.assertEqual(st, 200)
        self.s.call("POST", "/v1/transit/keys/logged", {}, ns="nsx")
        st, hdrs, raw = self.s.raw("GET", "/stand-in/requests?since=%d" % since)
        reqs = json.loads(raw)["requests"]
        self.assertEqual([(r["endpoint"], r["namespace"], r["token"]) for r in reqs],
                         [("/v1/sys/health", None, None), ("/v1/transit/keys/:name", "nsx", "x-vault-token")])


class TestNamespacesIgnored(StandInCase):
    extra = ("--namespaces", "ignore")

    def test_header_is_ignored_like_vault_ce(self):
        self.s.call("POST", "/v1/transit/keys/ce", {}, ns="ns1")
        self.assertEqual(self.s.call("GET", "/v1/transit/keys/ce")[0], 200)
        self.assertEqual(self.s.call("GET", "/v1/ns1/transit/keys/ce")[0], 404)   # no handler


class TestAzure(StandInCase):
    RES = "https://vault.hashicorp.com/"

    def imds_token(self, resource=RES):
        q = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + resource
        st, body = self.s.imds(q, {"Metadata": "true"})
        self.assertEqual(st, 200, body)
        return body

    def login(self, body, ns=None):
        return self.s.call("POST", "/v1/auth/azure/login", body, token=None, ns=ns)

    def vm_fields(self):
        st, inst = self.s.imds("/metadata/instance?api-version=2018-02-01", {"Metadata": "true"})
        c = inst["compute"]
        return {"subscription_id": c["subscriptionId"], "resource_group_name": c["resourceGroupName"],
                "vm_name": c["name"]}

    def test_imds_requires_metadata_header(self):
        for h in ({}, {"Metadata": "false"}):
            st, body = self.s.imds("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + self.RES, h)
            self.assertEqual((st, body), (400, {"error": "bad_request_102",
                                                "error_description": "Required metadata header not specified"}))
        st, body = self.s.imds("/metadata/instance?api-version=2018-02-01")
        self.assertEqual(st, 400)

    def test_imds_token_shape(self):
        t = self.imds_token()
        self.assertEqual(list(t), ["access_token", "refresh_token", "expires_in", "expires_on", "not_before",
                                   "resource", "token_type"])
        for f in ("expires_in", "expires_on", "not_before"):
            self.assertIsInstance(t[f], str)
            int(t[f])
        self.assertEqual((t["resource"], t["token_type"], t["refresh_token"]), (self.RES, "Bearer", ""))
        self.assertEqual(t["access_token"].count("."), 2)

    def test_instance_metadata(self):
        st, inst = self.s.imds("/metadata/instance?api-version=2018-02-01", {"Metadata": "true"})
        c = inst["compute"]
        for f in ("subscriptionId", "resourceGroupName", "name", "vmScaleSetName"):
            self.assertIsInstance(c[f], str)
        self.assertNotIn("resourceId", c)
        st, comp = self.s.imds("/metadata/instance/compute?api-version=2021-02-01", {"Metadata": "true"})
        self.assertIn("resourceId", comp)

    def test_login_and_use_token(self):
        jwt = self.imds_token()["access_token"]
        st, parsed, raw = self.login(dict(self.vm_fields(), role="kmsd", jwt=jwt))
        self.assertEqual(st, 200, raw)
        a = parsed["auth"]
        self.assertTrue(a["client_token"].startswith("hvs."))
        self.assertEqual((a["lease_duration"], a["renewable"]), (2764800, True))
        self.assertEqual(a["metadata"]["role"], "kmsd")
        self.assertEqual(a["policies"], ["default", "transit"])
        st, parsed, raw = self.s.call("POST", "/v1/transit/encrypt/az", {"plaintext": "YQ=="}, token=a["client_token"])
        self.assertEqual(st, 200, raw)
        st, parsed, raw = self.s.call("GET", "/v1/auth/token/lookup-self", token=a["client_token"])
        self.assertEqual(parsed["data"]["path"], "auth/azure/login")

    def test_login_errors(self):
        jwt = self.imds_token()["access_token"]
        self.assertVaultError(self.login({"role": "kmsd"}), 400, "jwt is required")
        self.assertVaultError(self.login({"jwt": jwt}), 400, "role is required")
        self.assertVaultError(self.login({"jwt": jwt, "role": "x"}), 400, 'invalid role name "x"')
        st, parsed, raw = self.login({"jwt": "a.b.c", "role": "kmsd"})
        self.assertEqual(st, 500)
        other = self.imds_token("https://management.azure.com")["access_token"]
        st, parsed, raw = self.login({"jwt": other, "role": "kmsd"})
        self.assertEqual(st, 500)
        self.assertIn('oidc: expected audience "https://vault.hashicorp.com/" got ["https://management.azure.com"]',
                      parsed["errors"][0])

    def test_bound_role(self):
        vm = self.vm_fields()
        self.s.control("config", {"azure": {"roles": {"bound": {
            "token_policies": ["transit"], "bound_subscription_ids": [vm["subscription_id"]],
            "bound_resource_groups": ["other-rg"]}}}})
        jwt = self.imds_token()["access_token"]
        st, parsed, raw = self.login(dict(vm, role="bound", jwt=jwt))
        self.assertEqual(st, 500)
        self.assertIn("resource group not authorized", parsed["errors"][0])
        st, parsed, raw = self.login({"role": "bound", "jwt": jwt})
        self.assertIn("subscription_id and resource_group_name are required", parsed["errors"][0])
        st, parsed, raw = self.login(dict(vm, role="bound", jwt=jwt, vm_name="other-vm"))
        self.assertIn("unable to retrieve virtual machine metadata", parsed["errors"][0])
        self.s.control("config", {"azure": {"roles": {"bound": {
            "token_policies": ["transit"], "bound_subscription_ids": [vm["subscription_id"]],
            "bound_resource_groups": [vm["resource_group_name"]]}}}})
        self.assertEqual(self.login(dict(vm, role="bound", jwt=jwt))[0], 200)

    def test_short_non_renewable_role_and_namespace(self):
        self.s.control("config", {"azure": {"roles": {"short": {"token_policies": ["transit"], "token_ttl": 5,
                                                                "renewable": False}}}})
        jwt = self.imds_token()["access_token"]
        st, parsed, raw = self.login(dict(self.vm_fields(), role="short", jwt=jwt), ns="tenant1")
        a = parsed["auth"]
        self.assertEqual((a["lease_duration"], a["renewable"]), (5, False))
        tok = a["client_token"]
        self.assertEqual(self.s.call("POST", "/v1/transit/keys/azns", {}, token=tok, ns="tenant1")[0], 200)
        self.assertEqual(self.s.call("GET", "/v1/transit/keys/azns", token=tok)[0], 403)
        self.assertVaultError(self.s.call("POST", "/v1/auth/token/renew-self", {}, token=tok, ns="tenant1"),
                              400, "lease is not renewable")


class TestAzureClock(StandInCase):
    def test_expired_imds_token_is_refused(self):
        st, t = self.s.imds("/metadata/identity/oauth2/token?api-version=2018-02-01&resource="
                            "https://vault.hashicorp.com/", {"Metadata": "true"})
        self.s.control("time", {"advance": 3600})
        st, parsed, raw = self.s.call("POST", "/v1/auth/azure/login", {"role": "kmsd", "jwt": t["access_token"]},
                                      token=None)
        self.assertEqual(st, 500)
        self.assertIn("oidc: token is expired", parsed["errors"][0])


class TestSealedAndHealth(StandInCase):
    def health(self, query=""):
        st, hdrs, raw = self.s.raw("GET", "/v1/sys/health" + query)
        return st, json.loads(raw)

    def test_health_codes(self):
        st, body = self.health()
        self.assertEqual(st, 200)
        for f in ("initialized", "sealed", "standby", "performance_standby", "replication_performance_mode",
                  "replication_dr_mode", "server_time_utc", "version", "cluster_name", "cluster_id"):
            self.assertIn(f, body)
        try:
            self.s.control("health", {"standby": True})
            self.assertEqual(self.health()[0], 429)
            self.assertEqual(self.health("?standbyok=true")[0], 200)
            self.assertEqual(self.health("?standbycode=299")[0], 299)
            self.s.control("health", {"standby": False, "performance_standby": True})
            self.assertEqual(self.health()[0], 473)
            self.s.control("health", {"performance_standby": False, "initialized": False})
            self.assertEqual(self.health()[0], 501)
        finally:
            self.s.control("health", {"standby": False, "performance_standby": False, "initialized": True})
        st, hdrs, raw = self.s.raw("HEAD", "/v1/sys/health")
        self.assertEqual((st, raw), (200, b""))

    def test_sealed(self):
        self.new_key("sk")
        self.s.control("seal")
        try:
            st, body = self.health()
            self.assertEqual((st, body["sealed"]), (503, True))
            self.assertEqual(self.health("?sealedcode=200")[0], 200)
            self.assertVaultError(self.s.call("POST", "/v1/transit/encrypt/sk", {"plaintext": "YQ=="}), 503,
                                  "Vault is sealed")
            self.assertVaultError(self.s.call("POST", "/v1/transit/encrypt/sk", {"plaintext": "YQ=="}, token=None),
                                  503, "Vault is sealed")
            st, hdrs, raw = self.s.raw("GET", "/v1/sys/seal-status")
            self.assertTrue(json.loads(raw)["sealed"])
        finally:
            self.s.control("unseal")
        self.assertEqual(self.s.call("POST", "/v1/transit/encrypt/sk", {"plaintext": "YQ=="})[0], 200)


class TestStatsAndFaults(StandInCase):
    def test_stats_count_round_trips(self):
        self.s.control("stats/reset")
        self.new_key("st")
        for _ in range(3):
            self.s.call("POST", "/v1/transit/encrypt/st", {"plaintext": "YQ=="})
        self.s.call("POST", "/v1/transit/encrypt/st", {"batch_input": [{"plaintext": "YQ=="}] * 10})
        st, hdrs, raw = self.s.raw("GET", "/stand-in/stats")
        stats = json.loads(raw)
        self.assertEqual(stats["endpoints"]["vault POST /v1/transit/encrypt/:name"]["count"], 4)
        self.assertEqual(stats["total"], 5)

    def test_faults(self):
        self.new_key("fk")
        self.s.control("fault", {"mode": "garbage", "path": "/encrypt/"})
        st, hdrs, raw = self.s.raw("POST", "/v1/transit/encrypt/fk", b'{"plaintext":"YQ=="}',
                                   {"X-Vault-Token": self.s.root})
        self.assertEqual(st, 200)
        with self.assertRaises(ValueError):
            json.loads(raw)
        self.assertEqual(self.s.call("POST", "/v1/transit/encrypt/fk", {"plaintext": "YQ=="})[0], 200)  # count 1
        self.s.control("fault", {"mode": "truncated"})
        st, hdrs, raw = self.s.raw("GET", "/v1/sys/health")
        with self.assertRaises(ValueError):
            json.loads(raw)
        self.s.control("fault", {"mode": "close"})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.s.raw("GET", "/v1/sys/health")
        self.s.control("fault", {"mode": "status", "status": 502, "count": 2})
        self.assertEqual(self.s.raw("GET", "/v1/sys/health")[0], 502)
        self.assertEqual(self.s.raw("GET", "/v1/sys/health")[0], 502)
        self.assertEqual(self.s.raw("GET", "/v1/sys/health")[0], 200)
        self.s.control("fault", {"mode": "oversized", "size": 100000})
        st, hdrs, raw = self.s.raw("GET", "/v1/sys/health")
        self.assertEqual(len(raw), 100000)
        self.s.control("fault", {"mode": "status", "status": 429, "listener": "imds", "count": -1})
        self.assertEqual(self.s.imds("/metadata/instance?api-version=2018-02-01", {"Metadata": "true"})[0], 429)
        self.s.control("fault/clear")
        self.assertEqual(self.s.imds("/metadata/instance?api-version=2018-02-01", {"Metadata": "true"})[0], 200)


class TestHttp(StandInCase):
    def test_keep_alive_connection_serves_several_requests(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.s.port, timeout=10)
        try:
            for _ in range(3):
                conn.request("GET", "/v1/auth/token/lookup-self", headers={"X-Vault-Token": self.s.root})
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
                self.assertNotEqual(r.getheader("Connection"), "close")
        finally:
            conn.close()

    def test_request_over_32mb_is_413(self):
        with socket.create_connection(("127.0.0.1", self.s.port), timeout=10) as sk:
            sk.sendall(b"POST /v1/transit/encrypt/k HTTP/1.1\r\nHost: x\r\nX-Vault-Token: " +
                       self.s.root.encode() + b"\r\nContent-Length: %d\r\n\r\n" % (32 * 1024 * 1024 + 1))
            head = sk.recv(65536)
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), head)

    def test_short_body_and_delay_faults(self):
        self.s.control("fault", {"mode": "short"})
        with self.assertRaises(http.client.IncompleteRead):
            self.s.raw("GET", "/v1/sys/health")
        self.s.control("fault", {"mode": "delay", "delay_ms": 400})
        with self.assertRaises((socket.timeout, TimeoutError)):
            self.s.raw("GET", "/v1/sys/health", timeout=0.1)
        self.s.control("fault/clear")
        self.assertEqual(self.s.raw("GET", "/v1/sys/health")[0], 200)


class TestProcess(unittest.TestCase):
    def test_refuses_other_addresses(self):
        for host in ("0.0.0.0", "::", "localhost", "192.168.1.1"):
            r = subprocess.run([PY, SERVER, "--host", host, "--port", "0"], capture_output=True, timeout=20)
            self.assertEqual(r.returncode, 2, host)
            self.assertIn(b"127.0.0.1 only", r.stderr)

    def test_banner_and_sigterm(self):
        s = StandIn()
        try:
            self.assertIn("VAULT STAND-IN (not HashiCorp Vault) listening on http://127.0.0.1:%d" % s.port, s.output())
            os.kill(s.proc.pid, signal.SIGTERM)
            self.assertEqual(s.proc.wait(5), 0)
        finally:
            s.stop()

    def test_state_file_survives_restart(self):
        d = tempfile.mkdtemp()
        try:
            state = os.path.join(d, "state.json")
            s = StandIn("--state", state)
            try:
                s.call("POST", "/v1/transit/keys/persist", {})
                st, parsed, raw = s.call("POST", "/v1/transit/encrypt/persist", {"plaintext": "YQ=="})
                ct = parsed["data"]["ciphertext"]
            finally:
                s.stop()
            self.assertEqual(stat.S_IMODE(os.stat(state).st_mode), 0o600)
            s = StandIn("--state", state)
            try:
                st, parsed, raw = s.call("POST", "/v1/transit/decrypt/persist", {"ciphertext": ct})
                self.assertEqual(parsed["data"]["plaintext"], "YQ==")
            finally:
                s.stop()
        finally:
            shutil.rmtree(d)

    def test_standin_sh_tls_start_restart_stop(self):
        d = tempfile.mkdtemp()
        sd = os.path.join(d, "v")
        pid = None
        try:
            r = subprocess.run([STANDIN_SH, "start", sd, "--tls"], capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            env = read_env(os.path.join(sd, "vault.env"))
            pid = int(env["PID"])
            for k in ("VAULT_ADDR", "VAULT_TOKEN_FILE", "IMDS_ADDR", "PID", "VAULT_CACERT"):
                self.assertIn(k, env)
            self.assertTrue(env["VAULT_ADDR"].startswith("https://127.0.0.1:"))
            self.assertEqual(stat.S_IMODE(os.stat(env["VAULT_TOKEN_FILE"]).st_mode), 0o600)
            token = read_text(env["VAULT_TOKEN_FILE"])
            self.assertRegex(token, r"^hvs\.[A-Za-z0-9]{24}$")
            port = int(env["VAULT_ADDR"].rsplit(":", 1)[1])
            ctx = ssl.create_default_context(cafile=env["VAULT_CACERT"])   # verifies chain and 127.0.0.1
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
            conn.request("POST", "/v1/transit/encrypt/tlskey", body=b'{"plaintext":"YQ=="}',
                         headers={"X-Vault-Token": token})
            resp = conn.getresponse()
            ct = json.loads(resp.read())["data"]["ciphertext"]
            conn.close()
            self.assertEqual(resp.status, 200)
            with self.assertRaises(ssl.SSLError):   # an unverified client must fail
                c2 = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ssl.create_default_context())
                c2.request("GET", "/v1/sys/health")
            r = subprocess.run([STANDIN_SH, "restart", sd], capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            env2 = read_env(os.path.join(sd, "vault.env"))
            self.assertEqual(env2["VAULT_ADDR"], env["VAULT_ADDR"])
            self.assertFalse(standin_pid_alive(pid))
            pid = int(env2["PID"])
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
            conn.request("POST", "/v1/transit/decrypt/tlskey", body=json.dumps({"ciphertext": ct}).encode(),
                         headers={"X-Vault-Token": token})
            self.assertEqual(json.loads(conn.getresponse().read())["data"]["plaintext"], "YQ==")
            conn.close()
            r = subprocess.run([STANDIN_SH, "stop", sd], capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            deadline = time.time() + 5
            while standin_pid_alive(pid) and time.time() < deadline:
                time.sleep(0.05)
            self.assertFalse(standin_pid_alive(pid))
            pid = None
        finally:
            if pid is not None:
                subprocess.run([STANDIN_SH, "stop", sd], timeout=30)
            shutil.rmtree(d, ignore_errors=True)


class TestTls(unittest.TestCase):
    def test_plain_server_with_tls_flags(self):
        d = tempfile.mkdtemp()
        try:
            # certificates from standin.sh's generator, then a direct server with them
            r = subprocess.run([STANDIN_SH, "start", os.path.join(d, "c"), "--tls"], capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            subprocess.run([STANDIN_SH, "stop", os.path.join(d, "c")], timeout=30, check=True)
            c = os.path.join(d, "c")
            s = StandIn(tls=(os.path.join(c, "server.crt"), os.path.join(c, "server.key"), os.path.join(c, "ca.crt")))
            try:
                self.assertIn("listening on https://127.0.0.1:", s.output())
                self.assertEqual(s.call("GET", "/v1/auth/token/lookup-self")[0], 200)
            finally:
                s.stop()
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
