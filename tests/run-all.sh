#!/usr/bin/env bash
# README command 2: install what is missing, build (normal, -Werror) and run
# every test; then build with ASan+UBSan and run every test again.
# .ci/run calls exactly this. Build trees: build/ and build-asan/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc 2>/dev/null || echo 2)

"$root/deploy/install-deps.sh" --test

run_suite() { # run_suite BUILD_DIR CMAKE_ARGS...
  local dir=$1; shift
  echo "=== configure + build $dir ($*)"
  cmake -S "$root" -B "$root/$dir" -DKMS_WERROR=ON "$@" >/dev/null
  cmake --build "$root/$dir" -j"$jobs"
  echo "=== test $dir"
  ctest --test-dir "$root/$dir" --output-on-failure --timeout 600
}

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo
run_suite build-asan -DKMS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
echo "=== all suites passed (normal and ASan+UBSan builds)"
