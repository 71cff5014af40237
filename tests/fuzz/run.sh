#!/usr/bin/env bash
# Builds every libFuzzer target (clang, ASan+UBSan) in build-fuzz/ and runs
# each for SECONDS (default 15) from a copy of its seed corpus. Exits non-zero
# on the first crash, leak, timeout or sanitizer report.
#   tests/fuzz/run.sh [SECONDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-15}
cmake -S "$root" -B "$root/build-fuzz" -DCMAKE_C_COMPILER=clang -DKMS_FUZZ=ON -DKMS_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
targets=$(cd "$root/tests/fuzz" && ls fuzz_*.c | sed 's/\.c$//')
# shellcheck disable=SC2086
cmake --build "$root/build-fuzz" -j"$(nproc)" --target $targets >/dev/null
pass=0 fail=0
for t in $targets; do
  name=${t#fuzz_}
  work=$(mktemp -d)
  [ -d "$root/tests/fuzz/corpus/$name" ] && cp -r "$root/tests/fuzz/corpus/$name/." "$work/"
  # seeds generated at run time, and a token dictionary, for the targets that have them
  if [ -x "$root/tests/fuzz/seed_$name.sh" ]; then "$root/tests/fuzz/seed_$name.sh" "$work" >/dev/null; fi
  dict=()
  if [ -f "$root/tests/fuzz/$name.dict" ]; then dict=(-dict="$root/tests/fuzz/$name.dict"); fi
  if (cd "$work" && ASAN_OPTIONS=detect_leaks=1 "$root/build-fuzz/tests/fuzz/$t" -max_total_time="$secs" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" "$work" >"$work/log" 2>&1); then
    echo "fuzz $t: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$') runs, no finding"
    pass=$((pass + 1))
  else
    echo "fuzz $t: FINDING"; tail -40 "$work/log"; fail=$((fail + 1))
  fi
  rm -rf "$work"
done
echo "fuzz: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
