#!/usr/bin/env bash
# One version (issue 13): CMake's project(VERSION) is the only source; the
# Dockerfile's image label default must say the same (a label cannot read
# CMakeLists.txt). kmsd/kmsctl --version, /v1/cluster, kms_build_info and the
# package read it at build time (tests/container/compose.sh, tests/package/deb.sh).
#   tests/lint/version.sh [KMSD KMSCTL]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
v=$(sed -n 's/^project(kmsd VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
[ -n "$v" ] || { echo "FAIL: no project(kmsd VERSION x.y.z) in CMakeLists.txt" >&2; exit 1; }
d=$(sed -n 's/^ARG KMS_VERSION=//p' "$root/Dockerfile")
[ "$d" = "$v" ] || { echo "FAIL: Dockerfile ARG KMS_VERSION=$d, CMake's project(VERSION) is $v" >&2; exit 1; }
if grep -rnE '"[0-9]+\.[0-9]+\.[0-9]+"' "$root"/server/*.c "$root"/cli/*.c | grep -v '^\s*//' | grep -i version; then
  echo "FAIL: a version literal in the code above; use kms_version() (common/version.h)" >&2; exit 1
fi
if [ $# -ge 2 ]; then
  for bin in "$1" "$2"; do
    got=$("$bin" --version)
    case "$got" in "$(basename "$bin") $v (build "*")") ;; *) echo "FAIL: $bin --version says '$got', CMake says $v" >&2; exit 1 ;; esac
  done
fi
echo "version $v: CMakeLists.txt, Dockerfile label${2:+, kmsd and kmsctl --version} agree"
