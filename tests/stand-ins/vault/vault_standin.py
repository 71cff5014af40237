#!/usr/bin/python3
"""VAULT STAND-IN (not HashiCorp Vault).

A small HTTP(S) server that answers the subset of HashiCorp Vault's API that kmsd uses
(Transit, token auth, Azure auth, sys/health) plus an Azure Instance Metadata Service
(IMDS) stand-in, written from ../shared/reference/vault-transit.md (beside the repository). It exists only so
kmsd's Vault client can be tested on machines where no Vault server can be installed.
See README.md next to this file for what it implements and what it does not.

Run with /usr/bin/python3 (needs Debian's python3-cryptography).
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import hmac
import http.server
import json
import os
import re
import secrets
import signal
import socket
import ssl
import string
import sys
import threading
import time
import urllib.parse
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.exceptions import InvalidTag

BANNER = "VAULT STAND-IN (not HashiCorp Vault)"
IMDS_BANNER = "AZURE IMDS STAND-IN (not Azure)"
STANDIN_VERSION = "1.20.0+stand-in"
LISTEN_HOST = "127.0.0.1"

MAX_REQUEST_SIZE = 32 * 1024 * 1024      # Vault's default max_request_size
SYSTEM_MAX_TTL = 768 * 3600              # Vault's default max lease TTL (32 days)
SYSTEM_DEFAULT_TTL = 768 * 3600          # Vault's default lease TTL
REQUEST_LOG_MAX = 10000

# Exact error strings from the reference (section 0, 1, 2, 9).
ERR_INVALID_TOKEN = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
ERR_PERMISSION_DENIED = "1 error occurred:\n\t* permission denied\n\n"
ERR_UNSUPPORTED_PATH = "1 error occurred:\n\t* unsupported path\n\n"
ERR_UNSUPPORTED_OP = "1 error occurred:\n\t* unsupported operation\n\n"
ERR_SEALED = "Vault is sealed"
ERR_MISSING_TOKEN = "missing client token"
ERR_KEY_NOT_FOUND = "encryption key not found"
ERR_AUTH_FAILED = "cipher: message authentication failed"
ERR_CTX_MISSING = ("missing 'context' for key derivation; the key was created using a derived key, "
                   "which means additional, per-request information must be included in order to "
                   "perform operations with the key")
ERR_CTX_MIXED = "context should be set either in all the request blocks or in none"
ERR_TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"

KEY_NAME_RE = r"(\w(?:[\w.-]*\w)?)"     # framework.GenericNameRegex, ASCII \w as in Go
SYMMETRIC_TYPES = {"aes256-gcm96": 32, "aes128-gcm96": 16, "chacha20-poly1305": 32}
KNOWN_UNIMPLEMENTED_TYPES = {
    "ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "rsa-3072", "rsa-4096",
    "hmac", "managed_key", "aes128-cmac", "aes256-cmac", "ml-dsa", "hybrid", "slh-dsa"}
MOUNT_ROOTS = ("transit", "auth", "sys", "identity", "cubbyhole")
BASE62 = string.ascii_letters + string.digits

BUILTIN_POLICIES = {
    # Vault's default policy grants (among others) these token self-service paths.
    "default": {
        "auth/token/lookup-self": ["read"],
        "auth/token/renew-self": ["update"],
        "auth/token/revoke-self": ["update"],
    },
    # stand-in convenience policy (not a Vault built-in): everything under transit/.
    "transit": {
        "transit/*": ["create", "read", "update", "delete", "list"],
    },
}


class GoStruct(dict):
    """A dict serialised in insertion order (a Go struct); plain dicts are Go maps (sorted keys)."""


def _go_order(obj):
    if isinstance(obj, GoStruct):
        return {k: _go_order(v) for k, v in obj.items()}
    if isinstance(obj, dict):
        return {k: _go_order(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_go_order(v) for v in obj]
    return obj


def go_json(obj):
    """JSON as Go's json.Encoder writes it: compact, HTML-escaped, sorted map keys, trailing newline."""
    text = json.dumps(_go_order(obj), separators=(",", ":"), ensure_ascii=False)
    text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return (text + "\n").encode("utf-8")


class VaultError(Exception):
    def __init__(self, status, errors, headers=None):
        super().__init__(status, errors)
        self.status = status
        self.errors = errors if isinstance(errors, list) else [errors]
        self.headers = headers or {}


def bad(msg):
    return VaultError(400, [msg])


# ---------------------------------------------------------------------------------------------
# Go-compatible helpers

class GoBase64Error(Exception):
    def __init__(self, offset):
        super().__init__(offset)
        self.offset = offset

    def __str__(self):
        return "illegal base64 data at input byte %d" % self.offset


_B64_ALPHA = {c: i for i, c in enumerate(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def go_b64decode(text):
    """base64.StdEncoding.DecodeString with Go's error offsets (newlines skipped, '=' padding required)."""
    src = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    out = bytearray()
    si = 0
    n = len(src)
    while True:
        dbuf = [0, 0, 0, 0]
        dlen = 4
        j = 0
        err = None
        done = False
        while j < 4:
            if si == n:
                if j == 0:
                    return bytes(out)
                raise GoBase64Error(si - j)
            c = src[si]
            si += 1
            v = _B64_ALPHA.get(c)
            if v is not None:
                dbuf[j] = v
                j += 1
                continue
            if c in (0x0A, 0x0D):
                continue
            if c != 0x3D:
                raise GoBase64Error(si - 1)
            # padding
            if j in (0, 1):
                raise GoBase64Error(si - 1)
            if j == 2:
                while si < n and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == n:
                    raise GoBase64Error(n)
                if src[si] != 0x3D:
                    raise GoBase64Error(si - 1)
                si += 1
            while si < n and src[si] in (0x0A, 0x0D):
                si += 1
            if si < n:
                err = GoBase64Error(si)
            dlen = j
            done = True
            break
        val = (dbuf[0] << 18) | (dbuf[1] << 12) | (dbuf[2] << 6) | dbuf[3]
        b = [(val >> 16) & 0xFF, (val >> 8) & 0xFF, val & 0xFF]
        out.extend(b[:dlen - 1])
        if err is not None:
            raise err
        if done:
            return bytes(out)


def b64e(data):
    return base64.b64encode(data).decode("ascii")


def go_atoi(text):
    """strconv.Atoi: optional sign, ASCII digits only, int64 range."""
    if not re.fullmatch(r"[+-]?[0-9]+", text or ""):
        raise ValueError(text)
    v = int(text, 10)
    if v < -(1 << 63) or v > (1 << 63) - 1:
        raise ValueError(text)
    return v


_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_seconds(value, field):
    """TypeDurationSecond: an integer number of seconds, a numeric string, or a Go duration ('1h30m')."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise bad("error converting input %s for field %q" % (json.dumps(value), field))
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"-?[0-9]+", s):
            return int(s)
        m = re.fullmatch(r"((?:[0-9]+(?:\.[0-9]+)?(?:ns|us|\u00b5s|ms|s|m|h|d))+)", s)
        if m:
            total = 0.0
            for num, unit in re.findall(r"([0-9]+(?:\.[0-9]+)?)(ns|us|\u00b5s|ms|s|m|h|d)", s):
                total += float(num) * _DUR_UNITS[unit]
            return int(total)
    raise bad("error converting input %s for field %q: time: invalid duration %s"
              % (json.dumps(value), field, json.dumps(value)))


def get_int(body, field, default=0):
    """TypeInt as Vault's framework accepts it: a JSON number or a numeric string."""
    v = body.get(field, default)
    if v is None:
        return default
    if isinstance(v, bool):
        raise bad("error converting input %s for field %q" % (json.dumps(v), field))
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v == int(v):
        return int(v)
    if isinstance(v, str):
        try:
            return go_atoi(v.strip())
        except ValueError:
            pass
    raise bad("error converting input %s for field %q" % (json.dumps(v), field))


def get_bool(body, field, default=False):
    v = body.get(field, default)
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v in ("1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"):
        return v in ("1", "t", "T", "TRUE", "true", "True")
    if isinstance(v, int):
        return v != 0
    raise bad("error converting input %s for field %q" % (json.dumps(v), field))


def get_str(body, field, default=""):
    v = body.get(field, default)
    if v is None:
        return default
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    raise bad("error converting input %s for field %q" % (json.dumps(v), field))


def go_duration_string(seconds):
    """humanDuration of Vault's sdk/framework (Go Duration.String(), trailing zero units trimmed)."""
    seconds = int(seconds)
    if seconds == 0:
        return "0s"
    neg = seconds < 0
    seconds = abs(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        txt = "%dh%dm%ds" % (h, m, s)
    elif m:
        txt = "%dm%ds" % (m, s)
    else:
        txt = "%ds" % s
    if txt.endswith("m0s"):
        txt = txt[:-2]
    idx = txt.find("h0m")
    if idx > 0:
        txt = txt[:idx + 1] + txt[idx + 3:]
    return ("-" if neg else "") + txt


def rfc3339(ts):
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def random_token(prefix="hvs."):
    return prefix + "".join(secrets.choice(BASE62) for _ in range(24))


# ---------------------------------------------------------------------------------------------
# State

class TransitKey:
    def __init__(self, name, ktype="aes256-gcm96", derived=False, convergent=False):
        self.name = name
        self.type = ktype
        self.derived = derived
        self.convergent = convergent
        self.exportable = False
        self.allow_plaintext_backup = False
        self.deletion_allowed = False
        self.auto_rotate_period = 0
        self.min_decryption_version = 1
        self.min_encryption_version = 0
        self.min_available_version = 0
        self.latest_version = 0
        self.versions = {}          # int -> {"key": bytes, "hmac_key": bytes, "time": int}

    def add_version(self, now, key=None):
        size = SYMMETRIC_TYPES[self.type]
        self.latest_version += 1
        self.versions[self.latest_version] = {
            "key": key if key is not None else secrets.token_bytes(size),
            "hmac_key": secrets.token_bytes(32),
            "time": int(now),
        }

    def info(self):
        d = {
            "name": self.name, "type": self.type, "derived": self.derived,
            "deletion_allowed": self.deletion_allowed,
            "min_available_version": self.min_available_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "latest_version": self.latest_version,
            "exportable": self.exportable, "allow_plaintext_backup": self.allow_plaintext_backup,
            "supports_encryption": True, "supports_decryption": True,
            "supports_signing": False, "supports_derivation": True,
            "auto_rotate_period": self.auto_rotate_period, "imported_key": False,
            "keys": {str(v): e["time"] for v, e in self.versions.items()},
        }
        if self.derived:
            d["kdf"] = "hkdf_sha256"
            d["convergent_encryption"] = self.convergent
            if self.convergent:
                d["convergent_encryption_version"] = -1
        return d

    def to_json(self):
        return {
            "name": self.name, "type": self.type, "derived": self.derived, "convergent": self.convergent,
            "exportable": self.exportable, "allow_plaintext_backup": self.allow_plaintext_backup,
            "deletion_allowed": self.deletion_allowed, "auto_rotate_period": self.auto_rotate_period,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "min_available_version": self.min_available_version, "latest_version": self.latest_version,
            "versions": {str(v): {"key": b64e(e["key"]), "hmac_key": b64e(e["hmac_key"]), "time": e["time"]}
                         for v, e in self.versions.items()},
        }

    @classmethod
    def from_json(cls, j):
        k = cls(j["name"], j["type"], j["derived"], j["convergent"])
        for f in ("exportable", "allow_plaintext_backup", "deletion_allowed", "auto_rotate_period",
                  "min_decryption_version", "min_encryption_version", "min_available_version", "latest_version"):
            setattr(k, f, j[f])
        k.versions = {int(v): {"key": base64.b64decode(e["key"]), "hmac_key": base64.b64decode(e["hmac_key"]),
                               "time": e["time"]} for v, e in j["versions"].items()}
        return k


class Namespace:
    def __init__(self, path):
        self.path = path            # "" (root) or "ns1/ns2/"
        self.keys = {}
        self.disable_upsert = False
        self.cache_size = 0


class Token:
    FIELDS = ("id", "accessor", "policies", "namespace", "creation_time", "creation_ttl", "ttl",
              "expire_at", "explicit_max_ttl", "max_ttl", "renewable", "type", "num_uses", "period",
              "display_name", "path", "meta", "last_renewal", "orphan", "role")

    def __init__(self, **kw):
        self.id = kw.get("id") or random_token("hvb." if kw.get("type") == "batch" else "hvs.")
        self.accessor = kw.get("accessor") or "".join(secrets.choice(BASE62) for _ in range(24))
        self.policies = kw.get("policies") or []
        self.namespace = kw.get("namespace", "")
        self.creation_time = kw["creation_time"]
        self.creation_ttl = kw.get("creation_ttl", 0)
        self.ttl = kw.get("ttl", 0)                 # current lease duration
        self.expire_at = kw.get("expire_at")        # absolute time, None = never
        self.explicit_max_ttl = kw.get("explicit_max_ttl", 0)
        self.max_ttl = kw.get("max_ttl", 0)         # backend (role) max TTL
        self.renewable = kw.get("renewable", False)
        self.type = kw.get("type", "service")
        self.num_uses = kw.get("num_uses", 0)
        self.period = kw.get("period", 0)
        self.display_name = kw.get("display_name", "token")
        self.path = kw.get("path", "auth/token/create")
        self.meta = kw.get("meta")
        self.last_renewal = kw.get("last_renewal")
        self.orphan = kw.get("orphan", True)
        self.role = kw.get("role")

    def to_json(self):
        return {f: getattr(self, f) for f in self.FIELDS}


def norm_namespace(ns):
    parts = [p for p in (ns or "").strip().split("/") if p]
    return "".join(p + "/" for p in parts)


class State:
    def __init__(self, args):
        self.lock = threading.RLock()
        self.args = args
        self.time_offset = 0.0
        self.namespaces = {}
        self.tokens = {}
        self.policies = {k: dict(v) for k, v in BUILTIN_POLICIES.items()}
        self.sealed = bool(args.sealed)
        self.initialized = True
        self.standby = False
        self.perf_standby = False
        self.namespace_mode = args.namespaces
        self.cluster_id = str(uuid.uuid4())
        self.nonce_queue = []
        self.faults = []
        self.stats = {}
        self.requests = []
        self.seq = 0
        self.azure = {
            "resource": "https://vault.hashicorp.com/",
            "tenant_id": "00000000-0000-0000-0000-00000000a2e5",
            "roles": {},
        }
        self.vm = {
            "subscriptionId": "11111111-2222-3333-4444-555555555555",
            "resourceGroupName": "kms-rg",
            "name": "kms-vm-1",
            "vmScaleSetName": "",
            "location": "westeurope",
            "vmId": "6f1e3c6a-0000-4000-8000-00000000c0de",
            "principalId": "a1b2c3d4-0000-4000-8000-000000000001",
        }
        self.imds_token_ttl = 3599
        self.imds_issued = {}       # jwt -> {"exp", "aud", "oid"}

    def now(self):
        return time.time() + self.time_offset

    def ns(self, path):
        n = self.namespaces.get(path)
        if n is None:
            n = Namespace(path)
            self.namespaces[path] = n
        return n

    # -- persistence ------------------------------------------------------------------------
    def save(self):
        path = self.args.state
        if not path:
            return
        with self.lock:
            blob = {
                "stand_in": BANNER,
                "namespaces": {p: {"disable_upsert": n.disable_upsert, "cache_size": n.cache_size,
                                   "keys": {k: v.to_json() for k, v in n.keys.items()}}
                               for p, n in self.namespaces.items()},
                "tokens": [t.to_json() for t in self.tokens.values()],
                "policies": self.policies,
                "azure": self.azure, "vm": self.vm,
                "imds_issued": self.imds_issued,
            }
            tmp = path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(blob, f)
            os.replace(tmp, path)

    def load(self):
        path = self.args.state
        if not path or not os.path.exists(path):
            return
        with open(path) as f:
            blob = json.load(f)
        for p, nj in blob.get("namespaces", {}).items():
            n = self.ns(p)
            n.disable_upsert = nj.get("disable_upsert", False)
            n.cache_size = nj.get("cache_size", 0)
            n.keys = {k: TransitKey.from_json(v) for k, v in nj.get("keys", {}).items()}
        for tj in blob.get("tokens", []):
            t = Token(**tj)
            self.tokens[t.id] = t
        self.policies.update(blob.get("policies", {}))
        self.azure.update(blob.get("azure", {}))
        self.vm.update(blob.get("vm", {}))
        self.imds_issued.update(blob.get("imds_issued", {}))

    # -- tokens -----------------------------------------------------------------------------
    def add_token(self, spec, default_path="auth/token/create"):
        """Create a token from a config/control-endpoint spec (ttl etc. in seconds)."""
        if not isinstance(spec, dict):
            raise ValueError("token spec must be an object")
        now = self.now()
        ttl = parse_duration_seconds(spec.get("ttl", 0), "ttl")
        ttype = spec.get("type", "service")
        if ttype not in ("service", "batch"):
            raise ValueError("token type must be service or batch")
        policies = spec.get("policies", ["default"])
        if isinstance(policies, str):
            policies = [p for p in policies.split(",") if p]
        is_root = "root" in policies
        if not is_root and not spec.get("no_default_policy", False):
            policies = list(policies) + ["default"]     # as auth/token/create does
        renewable = bool(spec.get("renewable", not is_root and ttl > 0)) and ttype == "service"
        t = Token(
            id=spec.get("id"), policies=sorted(set(policies)),
            namespace=norm_namespace(spec.get("namespace", "")),
            creation_time=now, creation_ttl=ttl, ttl=ttl,
            expire_at=(now + ttl) if ttl > 0 else None,
            explicit_max_ttl=parse_duration_seconds(spec.get("explicit_max_ttl", 0), "explicit_max_ttl"),
            max_ttl=parse_duration_seconds(spec.get("max_ttl", 0), "max_ttl"),
            renewable=renewable, type=ttype, num_uses=int(spec.get("num_uses", 0)),
            period=parse_duration_seconds(spec.get("period", 0), "period"),
            display_name=spec.get("display_name", "root" if is_root else "token"),
            path=spec.get("path", "auth/token/root" if is_root else default_path),
            meta=spec.get("meta"), orphan=bool(spec.get("orphan", True)))
        if t.period and t.expire_at is None:
            t.ttl = t.creation_ttl = t.period
            t.expire_at = now + t.period
        with self.lock:
            self.prune()
            self.tokens[t.id] = t
        return t

    def prune(self):
        """Forget tokens and IMDS JWTs that expired more than a minute ago (lock held)."""
        limit = self.now() - 60
        for tid in [k for k, v in self.tokens.items() if v.expire_at is not None and v.expire_at < limit]:
            del self.tokens[tid]
        for jwt in [k for k, v in self.imds_issued.items() if v["exp"] < limit]:
            del self.imds_issued[jwt]

    def add_root_token(self, tok):
        return self.add_token({"id": tok, "policies": ["root"], "ttl": 0, "renewable": False})

    def apply_config(self, cfg):
        """Merge a tokens/config file object: tokens, policies, azure, vm, imds_token_ttl."""
        if isinstance(cfg, list):
            cfg = {"tokens": cfg}
        if not isinstance(cfg, dict):
            raise ValueError("config must be a JSON object or an array of tokens")
        out = {"tokens": []}
        with self.lock:
            for name, rules in cfg.get("policies", {}).items():
                if not isinstance(rules, dict):
                    raise ValueError("policy %s must map path -> [capabilities]" % name)
                self.policies[name] = {p: list(c) for p, c in rules.items()}
            az = cfg.get("azure", {})
            for f in ("resource", "tenant_id"):
                if f in az:
                    self.azure[f] = str(az[f])
            for rname, role in az.get("roles", {}).items():
                if role is None:
                    self.azure["roles"].pop(rname, None)
                else:
                    self.azure["roles"][rname] = dict(role)
            for f, v in cfg.get("vm", {}).items():
                self.vm[f] = str(v)
            if "imds_token_ttl" in cfg:
                self.imds_token_ttl = int(cfg["imds_token_ttl"])
            for spec in cfg.get("tokens", []):
                t = self.add_token(spec)
                out["tokens"].append({"id": t.id, "accessor": t.accessor})
        self.save()
        return out


# ---------------------------------------------------------------------------------------------
# Crypto (reference section 1.9)

def derive_key(key, ver, context, numbytes):
    entry = key.versions[ver]
    if not key.derived:
        return entry["key"], None
    if not context:
        raise bad(ERR_CTX_MISSING)
    size = numbytes * 2 if key.convergent else numbytes
    okm = HKDF(algorithm=hashes.SHA256(), length=size, salt=None, info=context).derive(entry["key"])
    if key.convergent:
        return okm[:numbytes], okm[numbytes:]
    return okm, None


def aead_for(key, k):
    return ChaCha20Poly1305(k) if key.type == "chacha20-poly1305" else AESGCM(k)


class Transit:
    def __init__(self, state):
        self.st = state

    def _next_nonce(self):
        with self.st.lock:
            if self.st.nonce_queue:
                return self.st.nonce_queue.pop(0)
        return secrets.token_bytes(12)

    def encrypt_raw(self, key, plaintext, context, aad, ver, nonce_given):
        if ver == 0:
            ver = key.latest_version
        elif ver < 0:
            raise bad("requested version for encryption is negative")
        elif ver > key.latest_version:
            raise bad("requested version for encryption is higher than the latest key version")
        elif ver < key.min_encryption_version:
            raise bad("requested version for encryption is less than the minimum encryption key version")
        if nonce_given:
            raise bad("provided nonce not allowed for this key")
        numbytes = SYMMETRIC_TYPES[key.type]
        enc_key, hmac_key = derive_key(key, ver, context, numbytes)
        if hmac_key is not None:
            nonce = hmac.new(hmac_key, plaintext, hashlib.sha256).digest()[:12]
        else:
            nonce = self._next_nonce()
        blob = nonce + aead_for(key, enc_key).encrypt(nonce, plaintext, aad or None)
        return "vault:v%d:%s" % (ver, b64e(blob)), ver

    def decrypt_raw(self, key, value, context, aad, nonce_given):
        prefix = "vault:v"
        if not value.startswith(prefix):
            raise bad("invalid ciphertext: no prefix")
        parts = value[len(prefix):].split(":", 1)
        if len(parts) != 2:
            raise bad("invalid ciphertext: wrong number of fields")
        try:
            ver = go_atoi(parts[0])
        except ValueError:
            raise bad("invalid ciphertext: version number could not be decoded")
        if ver == 0:
            ver = 1
        if ver > key.latest_version:
            raise bad("invalid ciphertext: version is too new")
        if key.min_decryption_version > 0 and ver < key.min_decryption_version:
            raise bad(ERR_TOO_OLD)
        try:
            blob = go_b64decode(parts[1])
        except GoBase64Error:
            raise bad("invalid ciphertext: could not decode base64")
        # why: a nonce only matters for convergent v1 keys, which the stand-in does not have;
        # decrypt ignores it (encrypt refuses it).
        del nonce_given
        numbytes = SYMMETRIC_TYPES[key.type]
        dec_key, _ = derive_key(key, ver, context, numbytes)
        if len(blob) < 12:
            raise bad("invalid ciphertext length")
        try:
            return aead_for(key, dec_key).decrypt(blob[:12], blob[12:], aad or None), ver
        except InvalidTag:
            raise bad(ERR_AUTH_FAILED)

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _items(body, single_field, missing_msg):
        if "batch_input" in body and body["batch_input"] is not None:
            raw = body["batch_input"]
            if not isinstance(raw, list):
                raise bad("failed to parse batch input: expected an array")
            if len(raw) == 0:
                raise bad("missing batch input to process")
            items = []
            for it in raw:
                if not isinstance(it, dict):
                    raise bad("failed to parse batch input: expected an object")
                items.append(it)
            return items, True
        if missing_msg and (single_field not in body or body[single_field] is None or
                            (single_field == "ciphertext" and body[single_field] == "")):
            raise bad(missing_msg)
        return [body], False

    @staticmethod
    def _check_context_consistency(items):
        ctx0 = bool(get_str(items[0], "context"))
        for it in items:
            if bool(get_str(it, "context")) != ctx0:
                raise bad(ERR_CTX_MIXED)
        return ctx0

    @staticmethod
    def _decode_field(item, field):
        v = get_str(item, field)
        if not v:
            return b""
        return go_b64decode(v)

    @staticmethod
    def batch_status(results, successes, user_err, internal_err, body, warnings):
        if not user_err and not internal_err:
            return 200
        code = 400 if user_err else 500
        if successes and body.get("partial_failure_response_code") is not None:
            try:
                c = get_int(body, "partial_failure_response_code")
            except VaultError:
                c = 0
            if 1 <= c <= 599:
                code = c
            else:
                warnings.append("invalid HTTP response code override from partial_failure_response_code, "
                                "reverting to HTTP status code %d" % code)
        return code

    def _key(self, ns, name):
        return ns.keys.get(name)

    # -- endpoints --------------------------------------------------------------------------
    def encrypt(self, ns, name, body, can_create):
        items, is_batch = self._items(body, "plaintext", "missing plaintext to encrypt")
        ctx_set = self._check_context_consistency(items)
        with self.st.lock:
            key = self._key(ns, name)
            upserted = False
            if key is None:
                convergent = get_bool(body, "convergent_encryption")
                if convergent and not ctx_set:
                    raise bad("convergent encryption requires derivation to be enabled, so context is required")
                ktype = get_str(body, "type", "aes256-gcm96") or "aes256-gcm96"
                if not can_create or ns.disable_upsert:
                    raise bad(ERR_KEY_NOT_FOUND)
                if ktype not in SYMMETRIC_TYPES:
                    if ktype in KNOWN_UNIMPLEMENTED_TYPES:
                        raise bad("stand-in: key type %s is not implemented by the stand-in" % ktype)
                    raise bad("unknown key type %s" % ktype)
                key = TransitKey(name, ktype, derived=ctx_set, convergent=convergent)
                key.add_version(self.st.now())
                ns.keys[name] = key
                upserted = True
        results = []
        succ = uerr = False
        for it in items:
            res = GoStruct()
            try:
                pt = self._decode_field(it, "plaintext")
                ctx = self._decode_field(it, "context")
                aad = self._decode_field(it, "associated_data")
                nonce_given = bool(get_str(it, "nonce"))
                ver = get_int(it, "key_version")
                ct, used = self.encrypt_raw(key, pt, ctx, aad, ver, nonce_given)
                res["ciphertext"] = ct
                res["key_version"] = used
                succ = True
            except GoBase64Error as e:
                res["error"] = str(e)
                uerr = True
            except VaultError as e:
                res["error"] = e.errors[0]
                uerr = True
            res["reference"] = get_str(it, "reference") if is_batch else ""
            results.append(res)
        if upserted:
            self.st.save()
        if not is_batch:
            r = results[0]
            if "error" in r:
                raise bad(r["error"])
            return {"ciphertext": r["ciphertext"], "key_version": r["key_version"]}, [], 200
        warnings = []
        status = self.batch_status(results, succ, uerr, False, body, warnings)
        return {"batch_results": results}, warnings, status

    def decrypt(self, ns, name, body):
        items, is_batch = self._items(body, "ciphertext", "missing ciphertext to decrypt")
        if is_batch:
            self._check_context_consistency(items)
        with self.st.lock:
            key = self._key(ns, name)
        if key is None:
            raise bad(ERR_KEY_NOT_FOUND)
        results = []
        succ = uerr = False
        for it in items:
            res = GoStruct()
            res["plaintext"] = ""
            try:
                ctx = self._decode_field(it, "context")
                aad = self._decode_field(it, "associated_data")
                pt, _ = self.decrypt_raw(key, get_str(it, "ciphertext"), ctx, aad, bool(get_str(it, "nonce")))
                res["plaintext"] = b64e(pt)
                succ = True
            except GoBase64Error as e:
                res["error"] = str(e)
                uerr = True
            except VaultError as e:
                res["error"] = e.errors[0]
                uerr = True
            res["reference"] = get_str(it, "reference") if is_batch else ""
            results.append(res)
        if not is_batch:
            r = results[0]
            if "error" in r:
                raise bad(r["error"])
            return {"plaintext": r["plaintext"]}, [], 200
        warnings = []
        status = self.batch_status(results, succ, uerr, False, body, warnings)
        return {"batch_results": results}, warnings, status

    def rewrap(self, ns, name, body):
        items, is_batch = self._items(body, "ciphertext", "missing ciphertext to decrypt")
        if is_batch:
            self._check_context_consistency(items)
        with self.st.lock:
            key = self._key(ns, name)
        if key is None:
            raise bad(ERR_KEY_NOT_FOUND)
        results = []
        succ = uerr = False
        for it in items:
            res = GoStruct()
            try:
                ctx = self._decode_field(it, "context")
                aad = self._decode_field(it, "associated_data")
                nonce_given = bool(get_str(it, "nonce"))
                ctext = get_str(it, "ciphertext")
                if not ctext:
                    raise bad("missing ciphertext to decrypt")
                pt, _ = self.decrypt_raw(key, ctext, ctx, aad, nonce_given)
                ct, used = self.encrypt_raw(key, pt, ctx, aad, get_int(it, "key_version"), nonce_given)
                res["ciphertext"] = ct
                res["key_version"] = used
                succ = True
            except GoBase64Error as e:
                res["error"] = str(e)
                uerr = True
            except VaultError as e:
                res["error"] = e.errors[0]
                uerr = True
            res["reference"] = get_str(it, "reference") if is_batch else ""
            results.append(res)
        if not is_batch:
            r = results[0]
            if "error" in r:
                raise bad(r["error"])
            return {"ciphertext": r["ciphertext"], "key_version": r["key_version"]}, [], 200
        warnings = []
        status = self.batch_status(results, succ, uerr, False, body, warnings)
        return {"batch_results": results}, warnings, status

    def datakey(self, ns, kind, name, body):
        if kind not in ("plaintext", "wrapped"):
            raise bad("Invalid path, must be 'plaintext' or 'wrapped'")
        with self.st.lock:
            key = self._key(ns, name)
        if key is None:
            raise bad(ERR_KEY_NOT_FOUND)
        bits = get_int(body, "bits", 256)
        if bits not in (128, 256, 512):
            raise bad("invalid bit length")
        try:
            ctx = self._decode_field(body, "context")
            aad = self._decode_field(body, "associated_data")
        except GoBase64Error as e:
            raise bad(str(e))
        raw = secrets.token_bytes(bits // 8)
        ct, used = self.encrypt_raw(key, raw, ctx, aad, get_int(body, "key_version"), bool(get_str(body, "nonce")))
        data = {"ciphertext": ct, "key_version": used}
        if kind == "plaintext":
            data["plaintext"] = b64e(raw)
        return data

    def create_key(self, ns, name, body):
        warnings = []
        with self.st.lock:
            key = ns.keys.get(name)
            if key is not None:
                warnings.append("key %s already existed" % name)
                return key.info(), warnings
            ktype = get_str(body, "type", "aes256-gcm96") or "aes256-gcm96"
            derived = get_bool(body, "derived")
            convergent = get_bool(body, "convergent_encryption")
            if ktype not in SYMMETRIC_TYPES:
                if ktype in KNOWN_UNIMPLEMENTED_TYPES:
                    raise bad("stand-in: key type %s is not implemented by the stand-in" % ktype)
                raise bad("unknown key type %s" % ktype)
            if convergent and not derived:
                raise bad("convergent encryption requires derivation to be enabled")
            arp = parse_duration_seconds(body.get("auto_rotate_period", 0), "auto_rotate_period")
            if arp != 0 and arp < 3600:
                raise bad("auto rotate period must be 0 to disable or at least an hour")
            key = TransitKey(name, ktype, derived, convergent)
            key.exportable = get_bool(body, "exportable")
            key.allow_plaintext_backup = get_bool(body, "allow_plaintext_backup")
            key.auto_rotate_period = arp
            key.add_version(self.st.now())
            ns.keys[name] = key
        self.st.save()
        return key.info(), warnings

    def rotate(self, ns, name):
        with self.st.lock:
            key = ns.keys.get(name)
            if key is None:
                raise bad("key not found")
            key.add_version(self.st.now())
            info = key.info()
        self.st.save()
        return info

    def config(self, ns, name, body):
        warnings = []
        with self.st.lock:
            key = ns.keys.get(name)
            if key is None:
                raise bad("no existing key named %s could be found" % name)
            if "min_decryption_version" in body:
                mdv = get_int(body, "min_decryption_version")
                if mdv < 0:
                    raise bad("min decryption version cannot be negative")
                if mdv == 0:
                    mdv = 1
                    warnings.append("since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1")
                if mdv != key.min_decryption_version:
                    if mdv > key.latest_version:
                        raise bad("cannot set min decryption version of %d, latest key version is %d"
                                  % (mdv, key.latest_version))
                new_mdv = mdv
            else:
                new_mdv = key.min_decryption_version
            if "min_encryption_version" in body:
                mev = get_int(body, "min_encryption_version")
                if mev < 0:
                    raise bad("min encryption version cannot be negative")
                if mev > key.latest_version:
                    raise bad("cannot set min encryption version of %d, latest key version is %d"
                              % (mev, key.latest_version))
                new_mev = mev
            else:
                new_mev = key.min_encryption_version
            if new_mev > 0 and new_mev < new_mdv:
                raise bad("cannot set min encryption/decryption values; min encryption version of %d must be "
                          "greater than or equal to min decryption version of %d" % (new_mev, new_mdv))
            exportable = key.exportable
            if "exportable" in body:
                e = get_bool(body, "exportable")
                if key.exportable and not e:
                    raise bad("exportable key cannot be made non-exportable")
                exportable = e
            apb = key.allow_plaintext_backup
            if "allow_plaintext_backup" in body:
                a = get_bool(body, "allow_plaintext_backup")
                if key.allow_plaintext_backup and not a:
                    raise bad("plaintext backup cannot be disabled once allowed")
                apb = a
            arp = key.auto_rotate_period
            if "auto_rotate_period" in body:
                arp = parse_duration_seconds(body["auto_rotate_period"], "auto_rotate_period")
                if arp != 0 and arp < 3600:
                    raise bad("auto rotate period must be 0 to disable or at least an hour")
            key.min_decryption_version = new_mdv
            key.min_encryption_version = new_mev
            key.exportable = exportable
            key.allow_plaintext_backup = apb
            key.auto_rotate_period = arp
            if "deletion_allowed" in body:
                key.deletion_allowed = get_bool(body, "deletion_allowed")
            info = key.info()
        self.st.save()
        return info, warnings

    def delete_key(self, ns, name):
        with self.st.lock:
            key = ns.keys.get(name)
            if key is None:
                return
            if not key.deletion_allowed:
                raise bad("error deleting policy %s: deletion is not allowed for this key" % name)
            del ns.keys[name]
        self.st.save()


# ---------------------------------------------------------------------------------------------
# Policies

def _policy_match(pattern, path):
    """Vault ACL path match: exact, '+' = one segment, trailing '*' = prefix glob. Returns specificity."""
    glob = pattern.endswith("*")
    pat = pattern[:-1] if glob else pattern
    psegs = pat.split("/")
    segs = path.split("/")
    if "+" not in psegs:
        if glob:
            return len(pat) if path.startswith(pat) else -1
        return 1 << 20 if path == pat else -1
    # segment-wise match with '+' wildcards
    if glob:
        if len(segs) < len(psegs):
            return -1
        for i, ps in enumerate(psegs):
            last = i == len(psegs) - 1
            s = segs[i]
            if ps == "+":
                continue
            if last:
                if not s.startswith(ps):
                    return -1
            elif ps != s:
                return -1
        return len(pat) - psegs.count("+")
    if len(segs) != len(psegs):
        return -1
    for ps, s in zip(psegs, segs):
        if ps != "+" and ps != s:
            return -1
    return (1 << 19) - psegs.count("+")


def capabilities(state, policies, path):
    if "root" in policies:
        return {"root"}
    best = -1
    caps = set()
    for pname in policies:
        rules = state.policies.get(pname, {})
        for pat, c in rules.items():
            spec = _policy_match(pat, path)
            if spec < 0:
                continue
            if spec > best:
                best = spec
                caps = set(c)
            elif spec == best:
                caps |= set(c)
    if "deny" in caps:
        return set()
    return caps


# ---------------------------------------------------------------------------------------------
# HTTP plumbing shared by both listeners

class Fault:
    MODES = ("garbage", "truncated", "short", "oversized", "close", "delay", "status", "empty")

    def __init__(self, spec):
        self.mode = spec.get("mode")
        if self.mode not in self.MODES:
            raise ValueError("mode must be one of %s" % ", ".join(self.MODES))
        self.count = int(spec.get("count", 1))          # -1 = until cleared
        self.path = spec.get("path", "")                # substring of the request path
        self.listener = spec.get("listener", "vault")
        if self.listener not in ("vault", "imds"):
            raise ValueError("listener must be vault or imds")
        self.status = int(spec.get("status", 500))
        self.delay_ms = int(spec.get("delay_ms", 0))
        self.size = int(spec.get("size", 8 * 1024 * 1024))
        self.errors = spec.get("errors")
        self.body = spec.get("body")

    def to_json(self):
        return {"mode": self.mode, "count": self.count, "path": self.path, "listener": self.listener,
                "status": self.status, "delay_ms": self.delay_ms, "size": self.size}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vault-stand-in"
    sys_version = ""
    timeout = 60
    listener = "vault"

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if self.server.state.args.verbose:
            sys.stderr.write("%s %s: %s\n" % (self.listener, self.log_date_time_string(), fmt % args))

    # -- low-level writers ------------------------------------------------------------------
    def _send(self, status, body=b"", ctype="application/json", headers=None, head_only=False):
        reason = self.responses.get(status, ("status code %d" % status,))[0]
        self.send_response(status, reason)
        if status != 204:
            self.send_header("Content-Type", ctype)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        # why: head and body in one write; two small writes meet Nagle + delayed ACK (40 ms each).
        self._headers_buffer.append(b"\r\n")
        if body and status != 204 and not head_only:
            self._headers_buffer.append(body)
        self._status = status
        self._record_pending()
        self.flush_headers()

    def send_error_json(self, status, errors, headers=None):
        self._send(status, go_json(GoStruct(errors=errors)), headers=headers)

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if te.lower() == "chunked":
            data = bytearray()
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                if len(data) + size > MAX_REQUEST_SIZE:
                    raise VaultError(413, ["http: request body too large"])
                data += self.rfile.read(size)
                self.rfile.readline(16)
            return bytes(data)
        cl = self.headers.get("Content-Length")
        if not cl:
            return b""
        try:
            n = int(cl)
        except ValueError:
            raise VaultError(400, ["invalid Content-Length"])
        if n > MAX_REQUEST_SIZE:
            self.close_connection = True
            raise VaultError(413, ["http: request body too large"])
        return self.rfile.read(n)

    # -- fault injection --------------------------------------------------------------------
    def _take_fault(self, path):
        st = self.server.state
        with st.lock:
            for f in st.faults:
                if f.listener == self.listener and f.path in path and f.count != 0:
                    if f.count > 0:
                        f.count -= 1
                    st.faults = [x for x in st.faults if x.count != 0]
                    return f
        return None

    def _apply_fault(self, f):
        """Returns True if the fault fully handled the request."""
        if f.mode == "delay":
            time.sleep(f.delay_ms / 1000.0)
            return False
        if f.mode == "close":
            self.close_connection = True
            self._status = 0
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if f.mode == "garbage":
            self._send(200, f.body.encode() if f.body else b"<html>this is not JSON \x00\xff}{")
            return True
        if f.mode == "empty":
            self._send(200, b"")
            return True
        if f.mode == "truncated":
            full = go_json(GoStruct(request_id=str(uuid.uuid4()), lease_id="", renewable=False,
                                    lease_duration=0, data={"ciphertext": "vault:v1:" + "A" * 80}))
            self._send(200, full[:len(full) // 2])
            return True
        if f.mode == "short":
            # why: Content-Length promises more than is sent, then the connection closes.
            full = go_json(GoStruct(request_id=str(uuid.uuid4()), data={"x": "y" * 64}))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(full)))
            self.end_headers()
            self.wfile.write(full[:len(full) // 2])
            self.wfile.flush()
            self.close_connection = True
            self._status = 200
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if f.mode == "oversized":
            pad = max(0, f.size - 20)
            body = b'{"data":{"pad":"' + b"A" * pad + b'"}}\n'
            self._send(200, body)
            return True
        if f.mode == "status":
            if self.listener == "imds":
                self._send(f.status, json.dumps({"error": "stand-in fault", "error_description":
                                                 "injected status %d" % f.status}).encode())
            else:
                self.send_error_json(f.status, f.errors if f.errors is not None else ["stand-in injected error"])
            return True
        return False

    def _record(self, method, path, query, endpoint, status, t0):
        st = self.server.state
        h = self.headers
        tok_src = None
        if h.get("X-Vault-Token") is not None:
            tok_src = "x-vault-token"
        elif (h.get("Authorization") or "").startswith("Bearer "):
            tok_src = "bearer"
        with st.lock:
            st.seq += 1
            key = "%s %s %s" % (self.listener, method, endpoint)
            e = st.stats.setdefault(key, {"count": 0, "by_status": {}})
            e["count"] += 1
            e["by_status"][str(status)] = e["by_status"].get(str(status), 0) + 1
            st.requests.append({
                "seq": st.seq, "time": round(time.time(), 3), "listener": self.listener,
                "method": method, "path": path, "query": query, "endpoint": endpoint, "status": status,
                "namespace": h.get("X-Vault-Namespace"), "token": tok_src,
                "metadata": h.get("Metadata"), "x_forwarded_for": h.get("X-Forwarded-For") is not None,
                "ms": round((time.time() - t0) * 1000, 2)})
            if len(st.requests) > REQUEST_LOG_MAX:
                del st.requests[:len(st.requests) - REQUEST_LOG_MAX]

    def _dispatch(self, method):
        t0 = time.time()
        self._status = 0
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        self._endpoint = path
        self._pending = None if path.startswith("/stand-in/") else (method, path, url.query, t0)
        try:
            if path.startswith("/stand-in/") and self.listener == "vault":
                body = self._read_body()
                self.control(method, path, url.query, body)
                return
            fault = self._take_fault(path)
            if fault is not None and fault.mode not in ("delay", "close"):
                # why: answer after reading the request body, as a real server does;
                # left unread, it would be parsed as the next request on a kept-alive
                # connection (a 501 to the client's next, healthy request)
                self._read_body()
            if fault is not None and self._apply_fault(fault):
                self._endpoint = "fault:" + fault.mode
                return
            self.handle_request(method, path, url.query)
        except VaultError as e:
            self.send_error_json(e.status, e.errors, e.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:   # a bare Go error → 500, as Vault does
            import traceback
            traceback.print_exc()
            try:
                self.send_error_json(500, ["1 error occurred:\n\t* stand-in internal error: %s\n\n" % e])
            except OSError:
                pass
        finally:
            self._record_pending()

    def _record_pending(self):
        # why: record before the answer leaves, so a client that reads the
        # request log right after its answer always finds its own request
        if getattr(self, "_pending", None) is not None:
            method, path, query, t0 = self._pending
            self._pending = None
            self._record(method, path, query, self._endpoint, self._status, t0)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_LIST(self):
        self._dispatch("LIST")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_PATCH(self):
        self._dispatch("PATCH")

    # -- control endpoints (not Vault) ------------------------------------------------------
    def control(self, method, path, query, raw):
        st = self.server.state
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            raise VaultError(400, ["stand-in: bad JSON: %s" % e])

        def ok(obj=None):
            self._send(200, (json.dumps(obj if obj is not None else {"ok": True}) + "\n").encode())

        try:
            if path == "/stand-in/info" and method == "GET":
                return ok({"stand_in": True, "what": BANNER, "version": STANDIN_VERSION,
                           "namespaces": st.namespace_mode, "sealed": st.sealed,
                           "imds_port": getattr(st, "imds_port", None), "time_offset": st.time_offset})
            if path == "/stand-in/stats" and method == "GET":
                with st.lock:
                    total = sum(e["count"] for e in st.stats.values())
                    return ok({"total": total, "endpoints": st.stats})
            if path in ("/stand-in/stats/reset", "/stand-in/requests/reset") and method == "POST":
                with st.lock:
                    st.stats = {}
                    st.requests = []
                return ok()
            if path == "/stand-in/requests" and method == "GET":
                q = urllib.parse.parse_qs(query)
                since = int(q.get("since", ["0"])[0])
                with st.lock:
                    return ok({"requests": [r for r in st.requests if r["seq"] > since]})
            if path == "/stand-in/seal" and method == "POST":
                st.sealed = True
                return ok()
            if path == "/stand-in/unseal" and method == "POST":
                st.sealed = False
                return ok()
            if path == "/stand-in/health" and method == "POST":
                for f, attr in (("sealed", "sealed"), ("standby", "standby"), ("initialized", "initialized"),
                                ("performance_standby", "perf_standby")):
                    if f in body:
                        setattr(st, attr, bool(body[f]))
                return ok()
            if path == "/stand-in/time" and method == "POST":
                with st.lock:
                    if "offset" in body:
                        st.time_offset = float(body["offset"])
                    if "advance" in body:
                        st.time_offset += float(body["advance"])
                return ok({"time_offset": st.time_offset, "now": st.now()})
            if path == "/stand-in/tokens" and method == "POST":
                t = st.add_token(body)
                st.save()
                return ok({"id": t.id, "accessor": t.accessor, "namespace": t.namespace})
            if path == "/stand-in/tokens/revoke" and method == "POST":
                with st.lock:
                    st.tokens.pop(body.get("id", ""), None)
                st.save()
                return ok()
            if path == "/stand-in/config" and method == "POST":
                return ok(st.apply_config(body))
            if path == "/stand-in/keys" and method == "POST":
                return ok(self._import_key(body))
            if path == "/stand-in/nonces" and method == "POST":
                nonces = [base64.b64decode(n, validate=True) for n in body.get("nonces", [])]
                if any(len(n) != 12 for n in nonces):
                    raise ValueError("nonces must be 12 bytes")
                with st.lock:
                    st.nonce_queue.extend(nonces)
                return ok({"queued": len(st.nonce_queue)})
            if path == "/stand-in/fault" and method == "POST":
                f = Fault(body)
                with st.lock:
                    st.faults.append(f)
                return ok({"faults": [x.to_json() for x in st.faults]})
            if path == "/stand-in/fault" and method == "GET":
                with st.lock:
                    return ok({"faults": [x.to_json() for x in st.faults]})
            if path in ("/stand-in/fault/clear",) and method == "POST" or (path == "/stand-in/fault" and method == "DELETE"):
                with st.lock:
                    st.faults = []
                return ok()
        except (ValueError, TypeError, KeyError, binascii.Error) as e:
            raise VaultError(400, ["stand-in: %s" % e])
        raise VaultError(404, ["stand-in: no control endpoint %s %s" % (method, path)])

    def _import_key(self, body):
        st = self.server.state
        name = body["name"]
        if not re.fullmatch(KEY_NAME_RE, name, re.ASCII):
            raise ValueError("bad key name")
        ktype = body.get("type", "aes256-gcm96")
        if ktype not in SYMMETRIC_TYPES:
            raise ValueError("unsupported type")
        key = TransitKey(name, ktype, bool(body.get("derived", False)), bool(body.get("convergent_encryption", False)))
        for v in body["versions"]:
            raw = base64.b64decode(v, validate=True)
            if len(raw) != SYMMETRIC_TYPES[ktype]:
                raise ValueError("key version has the wrong size")
            key.add_version(st.now(), raw)
        with st.lock:
            st.ns(norm_namespace(body.get("namespace", ""))).keys[name] = key
        st.save()
        return {"name": name, "latest_version": key.latest_version}


# ---------------------------------------------------------------------------------------------
# Vault listener

def envelope(data=None, auth=None, warnings=None, mount_type=""):
    return GoStruct(request_id=str(uuid.uuid4()), lease_id="", renewable=False, lease_duration=0,
                    data=data, wrap_info=None, warnings=warnings or None, auth=auth, mount_type=mount_type)


ROUTES = [
    # (regex on the namespace-relative path, endpoint label, methods)
    (r"transit/keys", "transit/keys", ("LIST",)),     # GET ?list=true becomes LIST
    (r"transit/keys/" + KEY_NAME_RE, "transit/keys/:name", ("GET", "POST", "PUT", "DELETE")),
    (r"transit/keys/" + KEY_NAME_RE + r"/rotate", "transit/keys/:name/rotate", ("POST", "PUT")),
    (r"transit/keys/" + KEY_NAME_RE + r"/config", "transit/keys/:name/config", ("POST", "PUT")),
    (r"transit/encrypt/" + KEY_NAME_RE, "transit/encrypt/:name", ("POST", "PUT")),
    (r"transit/decrypt/" + KEY_NAME_RE, "transit/decrypt/:name", ("POST", "PUT")),
    (r"transit/rewrap/" + KEY_NAME_RE, "transit/rewrap/:name", ("POST", "PUT")),
    (r"transit/datakey/(\w+)/" + KEY_NAME_RE, "transit/datakey/:type/:name", ("POST", "PUT")),
    (r"transit/config/keys", "transit/config/keys", ("GET", "POST", "PUT")),
    (r"transit/cache-config", "transit/cache-config", ("GET", "POST", "PUT")),
    (r"auth/token/lookup-self", "auth/token/lookup-self", ("GET", "POST", "PUT")),
    (r"auth/token/renew-self", "auth/token/renew-self", ("POST", "PUT")),
    (r"auth/token/revoke-self", "auth/token/revoke-self", ("POST", "PUT")),
    (r"auth/azure/login", "auth/azure/login", ("POST", "PUT")),
]
MOUNTS = ("transit/", "auth/token/", "auth/azure/", "sys/")


class VaultHandler(Handler):
    listener = "vault"

    def handle_request(self, method, path, query):
        st = self.server.state
        if not path.startswith("/v1/"):
            self._send(404, b"404 page not found\n", ctype="text/plain; charset=utf-8")
            return path
        rel = path[len("/v1/"):]
        qs = urllib.parse.parse_qs(query, keep_blank_values=True)
        raw = self._read_body()     # why: keep-alive needs every body consumed, even an ignored one
        if rel in ("sys/health", "sys/health/") and method in ("GET", "HEAD"):
            self._endpoint = "/v1/sys/health"
            self.health(qs, method == "HEAD")
            return
        if rel == "sys/seal-status" and method == "GET":
            self._endpoint = "/v1/sys/seal-status"
            self.seal_status()
            return
        body = {}
        if raw.strip() and method in ("POST", "PUT", "PATCH", "DELETE"):
            try:
                body = json.loads(raw)
            except ValueError as e:
                raise bad("failed to parse JSON input: %s" % e)
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise bad("failed to parse JSON input: json: cannot unmarshal %s into Go value of type "
                          "map[string]interface {}" % type(body).__name__)
        if self.headers.get("X-Vault-Wrap-TTL"):
            raise bad("stand-in: response wrapping (X-Vault-Wrap-TTL) is not implemented")
        if method == "GET" and qs.get("list", [""])[0] in ("true", "1"):
            method = "LIST"
        if st.sealed or not st.initialized:
            raise VaultError(503, [ERR_SEALED])

        # namespace resolution (reference section 4)
        header_ns = self.headers.get("X-Vault-Namespace", "") if st.namespace_mode == "enterprise" else ""
        segs = rel.split("/")
        prefix = []
        if st.namespace_mode == "enterprise":
            i = 0
            while i < len(segs) - 1 and segs[i] not in MOUNT_ROOTS:
                i += 1
            if segs[i] in MOUNT_ROOTS:
                prefix = segs[:i]
                segs = segs[i:]
        ns_path = norm_namespace(header_ns + "/" + "/".join(prefix))
        mpath = "/".join(segs)

        route = None
        for rx, label, methods in ROUTES:
            m = re.fullmatch(rx, mpath, re.ASCII)
            if m:
                route = (label, methods, m.groups())
                break
        self._endpoint = "/v1/" + (route[0] if route else mpath)

        # authentication
        token = None
        if not (route and route[0] == "auth/azure/login"):
            token = self.authenticate(ns_path)
        if route is None:
            if not any(mpath.startswith(m) for m in MOUNTS) and mpath not in ("transit", "sys"):
                raise VaultError(404, ['no handler for route "%s%s". route entry not found.' % (ns_path, mpath)])
            raise VaultError(404, [ERR_UNSUPPORTED_PATH])
        label, methods, groups = route
        if method not in methods:
            raise VaultError(405, [ERR_UNSUPPORTED_OP])
        ns = st.ns(ns_path)
        can_create = True
        if token is not None:
            can_create = self.authorize(token, ns_path, mpath, method, label, ns, groups)
            self.consume_use(token)
        self.route(label, method, groups, body, ns, ns_path, token, can_create)

    # -- auth -------------------------------------------------------------------------------
    def authenticate(self, ns_path):
        st = self.server.state
        tok = self.headers.get("X-Vault-Token")
        if tok is None:
            auth = self.headers.get("Authorization") or ""
            if auth.startswith("Bearer "):
                tok = auth[len("Bearer "):].strip()
        if not tok:
            raise VaultError(400, [ERR_MISSING_TOKEN])
        with st.lock:
            t = st.tokens.get(tok)
            if t is not None and t.expire_at is not None and t.expire_at <= st.now():
                del st.tokens[tok]
                t = None
        if t is None:
            raise VaultError(403, [ERR_INVALID_TOKEN])
        # why: a token acts in its own namespace and its children only.
        if st.namespace_mode == "enterprise" and not ns_path.startswith(t.namespace):
            raise VaultError(403, [ERR_PERMISSION_DENIED])
        return t

    def consume_use(self, t):
        st = self.server.state
        with st.lock:
            if t.num_uses > 0:
                t.num_uses -= 1
                if t.num_uses == 0:
                    st.tokens.pop(t.id, None)

    def authorize(self, t, ns_path, mpath, method, label, ns, groups):
        st = self.server.state
        rel_ns = ns_path[len(t.namespace):] if st.namespace_mode == "enterprise" else ""
        acl_path = rel_ns + mpath
        caps = capabilities(st, t.policies, acl_path)
        if "root" in caps:
            return True
        if method in ("GET", "HEAD"):
            need = {"read"}
        elif method == "LIST":
            need = {"list"}
        elif method == "DELETE":
            need = {"delete"}
        else:
            need = {"update"}
            if label in ("transit/keys/:name", "transit/encrypt/:name"):
                with st.lock:
                    exists = groups[0] in ns.keys
                if not exists:
                    if "create" in caps:
                        return True
                    if label == "transit/encrypt/:name" and "update" in caps:
                        return False     # reference 1.5: update-only → 400 encryption key not found
                    raise VaultError(403, [ERR_PERMISSION_DENIED])
        if not (need & caps):
            raise VaultError(403, [ERR_PERMISSION_DENIED])
        return True

    # -- routing ----------------------------------------------------------------------------
    def ok(self, data, warnings=None, status=200, mount_type="transit", auth=None):
        self._send(status, go_json(envelope(data=data, auth=auth, warnings=warnings, mount_type=mount_type)))

    def route(self, label, method, groups, body, ns, ns_path, token, can_create):
        st = self.server.state
        tr = self.server.transit
        if label == "transit/keys":
            with st.lock:
                names = sorted(ns.keys)
            if not names:
                raise VaultError(404, [])
            return self.ok({"keys": names})
        if label == "transit/keys/:name":
            name = groups[0]
            if method == "GET":
                with st.lock:
                    key = ns.keys.get(name)
                    info = key.info() if key else None
                if info is None:
                    raise VaultError(404, [])
                return self.ok(info)
            if method == "DELETE":
                tr.delete_key(ns, name)
                self._send(204)
                return None
            info, warnings = tr.create_key(ns, name, body)
            return self.ok(info, warnings)
        if label == "transit/keys/:name/rotate":
            return self.ok(tr.rotate(ns, groups[0]))
        if label == "transit/keys/:name/config":
            info, warnings = tr.config(ns, groups[0], body)
            return self.ok(info, warnings)
        if label == "transit/encrypt/:name":
            data, warnings, status = tr.encrypt(ns, groups[0], body, can_create)
            return self.ok(data, warnings, status)
        if label == "transit/decrypt/:name":
            data, warnings, status = tr.decrypt(ns, groups[0], body)
            return self.ok(data, warnings, status)
        if label == "transit/rewrap/:name":
            data, warnings, status = tr.rewrap(ns, groups[0], body)
            return self.ok(data, warnings, status)
        if label == "transit/datakey/:type/:name":
            return self.ok(tr.datakey(ns, groups[0], groups[1], body))
        if label == "transit/config/keys":
            if method != "GET":
                with st.lock:
                    ns.disable_upsert = get_bool(body, "disable_upsert", ns.disable_upsert)
                st.save()
            return self.ok({"disable_upsert": ns.disable_upsert})
        if label == "transit/cache-config":
            if method != "GET":
                size = get_int(body, "size")
                if size != 0 and size < 10:
                    raise bad("size must be 0 or a value greater or equal to 10")
                ns.cache_size = size
            return self.ok({"size": ns.cache_size})
        if label == "auth/token/lookup-self":
            return self.ok(self.lookup_data(token), mount_type="token")
        if label == "auth/token/renew-self":
            return self.renew_self(token, ns_path, body)
        if label == "auth/token/revoke-self":
            with st.lock:
                st.tokens.pop(token.id, None)
            st.save()
            self._send(204)
            return None
        if label == "auth/azure/login":
            return self.azure_login(ns_path, body)
        raise VaultError(404, [ERR_UNSUPPORTED_PATH])

    def lookup_data(self, t):
        st = self.server.state
        now = st.now()
        d = {
            "accessor": t.accessor, "creation_time": int(t.creation_time), "creation_ttl": t.creation_ttl,
            "display_name": t.display_name, "entity_id": "",
            "expire_time": rfc3339(t.expire_at) if t.expire_at is not None else None,
            "explicit_max_ttl": t.explicit_max_ttl, "id": t.id,
            "issue_time": rfc3339(t.creation_time), "meta": t.meta, "num_uses": t.num_uses,
            "orphan": t.orphan, "path": t.path, "policies": t.policies, "renewable": t.renewable,
            "ttl": max(0, int(t.expire_at - now)) if t.expire_at is not None else 0, "type": t.type,
        }
        if t.period:
            d["period"] = t.period
        if t.last_renewal is not None:
            d["last_renewal_time"] = int(t.last_renewal)
            d["last_renewal"] = rfc3339(t.last_renewal)
        if t.namespace:
            d["namespace_path"] = t.namespace
        return d

    def renew_self(self, t, ns_path, body):
        st = self.server.state
        increment = parse_duration_seconds(body.get("increment", 0), "increment")
        if st.namespace_mode == "enterprise" and ns_path != t.namespace:
            raise VaultError(403, ["cannot renew a token across namespaces"])
        if not t.renewable or t.type == "batch" or t.expire_at is None:
            raise bad("lease is not renewable")
        now = st.now()
        warnings = []
        # framework.CalculateTTL (explained in README): max = min(system, backend max, explicit max)
        max_ttl = SYSTEM_MAX_TTL
        if t.max_ttl and t.max_ttl < max_ttl:
            max_ttl = t.max_ttl
        if t.explicit_max_ttl and t.explicit_max_ttl < max_ttl:
            max_ttl = t.explicit_max_ttl
        start = int(t.creation_time)
        nowi = int(now)
        if t.period:
            ttl = t.period
            if ttl > max_ttl:
                warnings.append('period of "%s" exceeded the effective max_ttl of "%s"; period value is capped '
                                'accordingly' % (go_duration_string(ttl), go_duration_string(max_ttl)))
                ttl = max_ttl
            max_valid = start + t.explicit_max_ttl if t.explicit_max_ttl else None
        else:
            ttl = increment or t.creation_ttl or SYSTEM_DEFAULT_TTL
            max_valid = start + max_ttl
        if max_valid is not None:
            remaining = max_valid - nowi
            if remaining <= 0:
                raise VaultError(500, ["1 error occurred:\n\t* past the max TTL, cannot renew\n\n"])
            if remaining - ttl < 0:
                warnings.append('TTL of "%s" exceeded the effective max_ttl of "%s"; TTL value is capped '
                                'accordingly' % (go_duration_string(ttl), go_duration_string(remaining)))
                ttl = remaining
        with st.lock:
            t.ttl = ttl
            t.expire_at = now + ttl
            t.last_renewal = now
        st.save()
        auth = self.auth_block(t)
        return self.ok(None, warnings, mount_type="token", auth=auth)

    def auth_block(self, t):
        return GoStruct(client_token=t.id, accessor=t.accessor, policies=t.policies,
                        token_policies=t.policies, metadata=t.meta, lease_duration=t.ttl,
                        renewable=t.renewable, entity_id="", token_type=t.type, orphan=t.orphan,
                        mfa_requirement=None, num_uses=t.num_uses)

    def azure_login(self, ns_path, body):
        st = self.server.state
        jwt = get_str(body, "jwt")
        if not jwt:
            raise bad("jwt is required")
        role_name = get_str(body, "role")
        if not role_name:
            raise bad("role is required")
        with st.lock:
            role = st.azure["roles"].get(role_name)
            resource = st.azure["resource"]
            vm = dict(st.vm)
            issued = st.imds_issued.get(jwt)
        if role is None:
            raise bad('invalid role name "%s"' % role_name)

        def fail(msg):
            return VaultError(500, ["1 error occurred:\n\t* %s\n\n" % msg])

        # the OIDC verifier: signature (= a token this stand-in's IMDS issued), aud, expiry
        if jwt.count(".") != 2:
            raise fail("oidc: malformed jwt: go-jose/go-jose: compact JWS format must have three parts")
        if issued is None:
            raise fail("failed to verify signature: failed to verify id token signature")
        if issued["aud"] != resource:
            raise fail('oidc: expected audience "%s" got ["%s"]' % (resource, issued["aud"]))
        if issued["exp"] <= st.now():
            raise fail("oidc: token is expired (Token Expiry: %s)" % rfc3339(issued["exp"]))
        sub = get_str(body, "subscription_id")
        rg = get_str(body, "resource_group_name")
        vm_name = get_str(body, "vm_name")
        vmss = get_str(body, "vmss_name")
        res_id = get_str(body, "resource_id")
        bound_sp = role.get("bound_service_principal_ids") or []
        if bound_sp and bound_sp != ["*"] and issued["oid"] not in bound_sp:
            raise fail("service principal not authorized: %s" % issued["oid"])
        bsub = role.get("bound_subscription_ids") or []
        brg = role.get("bound_resource_groups") or []
        bloc = role.get("bound_locations") or []
        bss = role.get("bound_scale_sets") or []
        if bsub or brg or bloc or bss:
            if not sub or not rg:
                raise fail("subscription_id and resource_group_name are required")
            if vmss:
                raise fail("unable to retrieve virtual machine scale set metadata: stand-in has no scale sets")
            if vm_name:
                if (sub, rg, vm_name) != (vm["subscriptionId"], vm["resourceGroupName"], vm["name"]):
                    raise fail("unable to retrieve virtual machine metadata: stand-in: no VM %s/%s/%s"
                               % (sub, rg, vm_name))
                if bss:
                    raise fail("bound scale set defined but this vm isn't in a scale set")
            else:
                if not res_id:
                    raise fail("resource_id is required")
                raise fail("unable to retrieve user assigned identity metadata: stand-in: resource_id lookup "
                           "is not implemented")
            if issued["oid"] != vm["principalId"]:
                raise fail("token object id does not match expected identities")
            if bsub and sub not in bsub:
                raise fail("subscription not authorized")
            if brg and rg not in brg:
                raise fail("resource group not authorized")
            if bloc and vm.get("location") not in bloc:
                raise fail("location not authorized")
        policies = list(role.get("token_policies", role.get("policies", [])))
        if not role.get("token_no_default_policy", False):
            policies.append("default")
        policies = sorted(set(policies))
        if "root" in policies:
            raise bad("auth methods cannot create root tokens")
        ttype = role.get("token_type", "service")
        if ttype == "default":
            ttype = "service"
        ttl = parse_duration_seconds(role.get("token_ttl", 0), "token_ttl") or SYSTEM_DEFAULT_TTL
        max_ttl = parse_duration_seconds(role.get("token_max_ttl", 0), "token_max_ttl")
        if max_ttl and ttl > max_ttl:
            ttl = max_ttl
        meta = {"role": role_name, "resource_group_name": rg, "subscription_id": sub}
        if vm_name:
            meta["vm_name"] = vm_name
        if vmss:
            meta["vmss_name"] = vmss
        if res_id:
            meta["resource_id"] = res_id
        now = st.now()
        t = Token(policies=policies, namespace=ns_path, creation_time=now, creation_ttl=ttl, ttl=ttl,
                  expire_at=now + ttl, explicit_max_ttl=0, max_ttl=max_ttl,
                  renewable=bool(role.get("renewable", True)) and ttype == "service", type=ttype,
                  num_uses=int(role.get("token_num_uses", 0)),
                  period=parse_duration_seconds(role.get("token_period", 0), "token_period"),
                  display_name="azure-" + issued["oid"], path="auth/azure/login", meta=meta, orphan=True,
                  role=role_name)
        with st.lock:
            st.prune()
            st.tokens[t.id] = t
        st.save()
        return self.ok(None, mount_type="azure", auth=self.auth_block(t))

    # -- sys --------------------------------------------------------------------------------
    def health(self, qs, head_only):
        st = self.server.state

        def code(name, default):
            v = qs.get(name, [None])[0]
            if v is None or v == "":
                return default
            try:
                return go_atoi(v)
            except ValueError:
                raise bad("bad code for '%s' parameter" % name)

        def flag(name):
            v = qs.get(name, [None])[0]
            if v is None:
                return False
            if v == "":
                return True
            return v in ("1", "t", "T", "TRUE", "true", "True")

        if not st.initialized:
            status = code("uninitcode", 501)
        elif st.sealed:
            status = code("sealedcode", 503)
        elif st.perf_standby and not flag("perfstandbyok"):
            status = code("performancestandbycode", 473)
        elif st.standby and not flag("standbyok"):
            status = code("standbycode", 429)
        else:
            status = code("activecode", 200)
        body = GoStruct(initialized=st.initialized, sealed=st.sealed or not st.initialized,
                        standby=st.standby, performance_standby=st.perf_standby,
                        replication_performance_mode="disabled", replication_dr_mode="disabled",
                        server_time_utc=int(st.now()), version=STANDIN_VERSION)
        if st.initialized and not st.sealed:
            body["cluster_name"] = "vault-stand-in"
            body["cluster_id"] = st.cluster_id
        body["enterprise"] = st.namespace_mode == "enterprise"
        body["echo_duration_ms"] = 0
        body["clock_skew_ms"] = 0
        self._send(status, go_json(body), head_only=head_only)

    def seal_status(self):
        st = self.server.state
        body = GoStruct(type="shamir", initialized=st.initialized, sealed=st.sealed or not st.initialized,
                        t=1, n=1, progress=0, nonce="", version=STANDIN_VERSION, build_date="",
                        migration=False, recovery_seal=False, storage_type="inmem")
        if st.initialized and not st.sealed:
            body["cluster_name"] = "vault-stand-in"
            body["cluster_id"] = st.cluster_id
        self._send(200, go_json(body))


# ---------------------------------------------------------------------------------------------
# IMDS listener (reference section 3)

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class ImdsHandler(Handler):
    listener = "imds"

    def imds_error(self, status, err, desc):
        self._send(status, json.dumps({"error": err, "error_description": desc}).encode())

    def handle_request(self, method, path, query):
        st = self.server.state
        qs = urllib.parse.parse_qs(query, keep_blank_values=True)
        self._read_body()
        if method != "GET":
            self.imds_error(405, "method_not_allowed", "stand-in: only GET is served")
            return path
        if path not in ("/metadata/identity/oauth2/token", "/metadata/instance", "/metadata/instance/compute"):
            self._send(404, json.dumps({"error": "Not found"}).encode())
            return path
        if self.headers.get("Metadata") != "true":
            self.imds_error(400, "bad_request_102", "Required metadata header not specified")
            return path
        if self.headers.get("X-Forwarded-For") is not None:
            self.imds_error(400, "bad_request", "stand-in: requests carrying X-Forwarded-For are refused")
            return path
        api = qs.get("api-version", [""])[0]
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", api):
            self.imds_error(400, "bad_request", "stand-in: missing or malformed api-version")
            return path
        if path == "/metadata/identity/oauth2/token":
            return self.token(qs)
        return self.instance(path, api)

    def token(self, qs):
        st = self.server.state
        resource = qs.get("resource", [""])[0]
        if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s]+", resource):
            self.imds_error(400, "invalid_resource", "stand-in: resource is missing or not an absolute URI")
            return "/metadata/identity/oauth2/token"
        for sel in ("client_id", "object_id", "mi_res_id"):
            if qs.get(sel, [""])[0]:
                self.imds_error(400, "invalid_request", "Identity not found")
                return "/metadata/identity/oauth2/token"
        now = int(st.now())
        exp = now + st.imds_token_ttl
        with st.lock:
            vm = dict(st.vm)
            tenant = st.azure["tenant_id"]
        header = {"typ": "JWT", "alg": "RS256", "kid": "vault-stand-in"}
        mirid = ("/subscriptions/%s/resourcegroups/%s/providers/Microsoft.Compute/virtualMachines/%s"
                 % (vm["subscriptionId"], vm["resourceGroupName"], vm["name"]))
        payload = {"aud": resource, "iss": "https://sts.windows.net/%s/" % tenant, "iat": now, "nbf": now,
                   "exp": exp, "oid": vm["principalId"], "sub": vm["principalId"], "tid": tenant,
                   "xms_mirid": mirid, "stand_in": "not an Azure token"}
        jwt = ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode()),
                        b64url(secrets.token_bytes(64))])
        with st.lock:
            st.imds_issued[jwt] = {"exp": exp, "aud": resource, "oid": vm["principalId"]}
        st.save()
        body = {"access_token": jwt, "refresh_token": "", "expires_in": str(st.imds_token_ttl),
                "expires_on": str(exp), "not_before": str(now), "resource": resource, "token_type": "Bearer"}
        self._send(200, json.dumps(body).encode())
        return "/metadata/identity/oauth2/token"

    def instance(self, path, api):
        st = self.server.state
        with st.lock:
            vm = dict(st.vm)
        compute = {
            "azEnvironment": "AzurePublicCloud", "location": vm["location"], "name": vm["name"],
            "osType": "Linux", "resourceGroupName": vm["resourceGroupName"],
            "subscriptionId": vm["subscriptionId"], "vmId": vm["vmId"],
            "vmScaleSetName": vm["vmScaleSetName"], "vmSize": "Standard_D2s_v3", "zone": "",
        }
        if api >= "2019-03-11":
            compute["resourceId"] = ("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/"
                                     "virtualMachines/%s" % (vm["subscriptionId"], vm["resourceGroupName"],
                                                             vm["name"]))
        if path.endswith("/compute"):
            body = compute
        else:
            body = {"compute": compute, "network": {"interface": []}}
        self._send(200, json.dumps(body).encode())
        return path


# ---------------------------------------------------------------------------------------------
# Servers

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, state, transit=None, tls_ctx=None):
        self.state = state
        self.transit = transit
        self.tls_ctx = tls_ctx
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        # why: the TLS handshake runs in the worker thread, so a slow client cannot stall accept().
        if self.tls_ctx is None:
            self.RequestHandlerClass(request, client_address, self)
            return
        request.settimeout(30)
        try:
            tls = self.tls_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, socket.timeout, TimeoutError)):
            return
        super().handle_error(request, client_address)


def write_port_file(path, port):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=BANNER + ": a Vault Transit/token/Azure-auth stand-in for tests")
    ap.add_argument("--host", default=LISTEN_HOST, help="must be 127.0.0.1 (the only address accepted)")
    ap.add_argument("--port", type=int, default=0, help="Vault API port (0 = pick a free one)")
    ap.add_argument("--port-file", help="write the Vault port here once listening")
    ap.add_argument("--tls-cert", help="PEM server certificate (chain); enables HTTPS")
    ap.add_argument("--tls-key", help="PEM private key for --tls-cert")
    ap.add_argument("--token", action="append", default=[], help="a root token (repeatable)")
    ap.add_argument("--token-file", action="append", default=[], help="file holding a root token")
    ap.add_argument("--tokens-file", action="append", default=[],
                    help="JSON: tokens (ttl/renewable/policies/...), policies, azure roles, vm")
    ap.add_argument("--state", help="JSON state file (loaded at start, rewritten on every change)")
    ap.add_argument("--sealed", action="store_true", help="start sealed")
    ap.add_argument("--namespaces", choices=("enterprise", "ignore"), default="enterprise",
                    help="enterprise: X-Vault-Namespace selects separate key spaces; ignore: as Vault CE")
    ap.add_argument("--azure-role", action="append", default=[],
                    help="NAME[:policy,policy] an Azure auth role (default policies: transit)")
    ap.add_argument("--azure-resource", help="auth/azure/config resource (default https://vault.hashicorp.com/)")
    ap.add_argument("--imds-port", type=int, default=None, help="IMDS stand-in port (0 = pick); off if absent")
    ap.add_argument("--imds-port-file", help="write the IMDS port here once listening")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)

    if args.host != LISTEN_HOST:
        ap.error("refusing to listen on %r: the stand-in listens on 127.0.0.1 only" % args.host)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")

    state = State(args)
    try:
        state.load()
        for tok in args.token:
            state.add_root_token(tok)
        for path in args.token_file:
            with open(path) as f:
                tok = f.read().strip()
            if not tok:
                ap.error("token file %s is empty" % path)
            state.add_root_token(tok)
        for path in args.tokens_file:
            with open(path) as f:
                state.apply_config(json.load(f))
        if args.azure_resource:
            state.azure["resource"] = args.azure_resource
        for spec in args.azure_role:
            name, _, pols = spec.partition(":")
            state.azure["roles"][name] = {"token_policies": [p for p in pols.split(",") if p] or ["transit"]}
    except (OSError, ValueError, VaultError) as e:
        ap.error("bad configuration: %s" % (e.errors if isinstance(e, VaultError) else e))

    tls_ctx = None
    if args.tls_cert:
        tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        tls_ctx.load_cert_chain(args.tls_cert, args.tls_key)

    transit = Transit(state)
    vault = Server((LISTEN_HOST, args.port), VaultHandler, state, transit, tls_ctx)
    servers = [vault]
    imds = None
    if args.imds_port is not None:
        imds = Server((LISTEN_HOST, args.imds_port), ImdsHandler, state)
        servers.append(imds)
        state.imds_port = imds.server_address[1]

    scheme = "https" if tls_ctx else "http"
    vport = vault.server_address[1]
    print("%s listening on %s://%s:%d" % (BANNER, scheme, LISTEN_HOST, vport), flush=True)
    if imds:
        print("%s listening on http://%s:%d" % (IMDS_BANNER, LISTEN_HOST, imds.server_address[1]), flush=True)
    if imds and args.imds_port_file:
        write_port_file(args.imds_port_file, imds.server_address[1])
    if args.port_file:
        write_port_file(args.port_file, vport)

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
               for s in servers]
    for t in threads:
        t.start()
    while not stop.wait(0.5):
        pass
    for s in servers:
        s.shutdown()
        s.server_close()
    state.save()
    print("%s stopped" % BANNER, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
