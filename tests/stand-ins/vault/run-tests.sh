#!/usr/bin/env bash
# Runs the VAULT STAND-IN (not HashiCorp Vault) self-tests: known answers from the reference,
# error strings, batch, tokens, namespaces, Azure/IMDS, sealed. Exits non-zero on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
echo "=== VAULT STAND-IN self-tests (a stand-in written from Vault's documented API, not Vault)"
cd "$here"
export PYTHONDONTWRITEBYTECODE=1
exec timeout 300 /usr/bin/python3 -m unittest -v test_vault_standin
