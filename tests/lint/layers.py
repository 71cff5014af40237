#!/usr/bin/env python3
"""Layering rules of issue 14, checked on the sources' #include graph:

  - nothing under kms/ reaches jansson.h (JSON belongs to server/, hsm/vault/
    and the CLI's output), directly or through a project header;
  - cli/ includes no internal header (*_int.h, server/internal.h): the tool
    uses the libraries' public headers only;
  - no .c file under server/ is longer than 450 lines (one job per file);
  - PKCS#11 stays in hsm/pkcs11/ (issue 16: the backend interface is the one
    seam): no other source reaches <p11-kit/pkcs11.h> or names a CKR_/CKA_/
    CKM_ constant or a C_ function of the PKCS#11 API in its code.

Prints each breach with the chain of includes that leads to it; exits 1 when
there is one. Usage: tests/lint/layers.py [SOURCE_ROOT]"""
import os
import re
import sys

root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
inc = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)
cache = {}


def includes(path):
    if path not in cache:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                cache[path] = inc.findall(f.read())
        except OSError:
            cache[path] = []
    return cache[path]


def reaches(path, target, seen=None):
    """The include chain from path to <target>, or None."""
    seen = set() if seen is None else seen
    if path in seen:
        return None
    seen.add(path)
    for kind, name in includes(path):
        if kind == "<" and name == target:
            return [name]
        if kind == '"':
            sub = os.path.join(root, name)
            if os.path.isfile(sub):
                chain = reaches(sub, target, seen)
                if chain is not None:
                    return [name] + chain
    return None


def sources(d, exts=(".c", ".h")):
    base = os.path.join(root, d)
    return sorted(os.path.join(base, f) for f in os.listdir(base) if f.endswith(exts))


breaches = []
for path in sources("kms"):
    chain = reaches(path, "jansson.h")
    if chain:
        breaches.append(f"{os.path.relpath(path, root)}: reaches jansson.h via {' -> '.join(chain)}")
for path in sources("cli"):
    for kind, name in includes(path):
        if kind == '"' and (name.endswith("_int.h") or name == "server/internal.h"):
            breaches.append(f"{os.path.relpath(path, root)}: includes the internal header {name}")
for path in sources("server", (".c",)):
    with open(path, encoding="utf-8", errors="replace") as f:
        n = sum(1 for _ in f)
    if n > 450:
        breaches.append(f"{os.path.relpath(path, root)}: {n} lines (at most 450: split it by job)")
code_only = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"', re.S)
p11_name = re.compile(r'\b(CK[RAMOKU]_[A-Z0-9_]+|C_(Initialize|Finalize|GetFunctionList|OpenSession|Login|'
                      r'Encrypt|Decrypt|FindObjects|GetAttributeValue|GenerateKey)\w*)\b')
for d in ("common", "kms", "hsm", "hsm/kmip", "hsm/soft", "hsm/vault", "cluster", "server", "cli"):
    for path in sources(d):
        chain = reaches(path, "p11-kit/pkcs11.h")
        if chain:
            breaches.append(f"{os.path.relpath(path, root)}: reaches p11-kit/pkcs11.h via {' -> '.join(chain)}")
        with open(path, encoding="utf-8", errors="replace") as f:
            # why without comments and strings: the words may be said, not used
            m = p11_name.search(code_only.sub(" ", f.read()))
        if m:
            breaches.append(f"{os.path.relpath(path, root)}: names {m.group(1)} (PKCS#11 belongs in hsm/pkcs11/)")
for b in breaches:
    print("layers:", b)
print(f"layers: {len(breaches)} breach(es)")
sys.exit(1 if breaches else 0)
