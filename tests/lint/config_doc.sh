#!/usr/bin/env bash
# docs/configuration.md is what `kmsd --config-doc` prints from kms/config.c's
# table; fails with the difference and the command that regenerates it.
#   tests/lint/config_doc.sh KMSD
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
kmsd=${1:?usage: config_doc.sh KMSD}
if ! diff -u "$root/docs/configuration.md" <("$kmsd" --config-doc); then
  echo "config_doc: docs/configuration.md differs from the table in kms/config.c;" >&2
  echo "config_doc: regenerate it with: build/server/kmsd --config-doc > docs/configuration.md" >&2
  exit 1
fi
echo "config_doc: docs/configuration.md matches kms/config.c"
