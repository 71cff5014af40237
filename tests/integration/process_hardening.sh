#!/usr/bin/env bash
# What an operator can check from outside a running kmsd (issue 15, STYLE "key
# material"): it cannot dump core (RLIMIT_CORE 0, soft and hard, although the
# harness started it with an unlimited one), and its secure heap, where every
# plaintext key lives, is locked in memory (VmLck). Reads /proc of the soft
# fixture's kmsd. Prints "N passed, N failed".   process_hardening.sh IT_DIR
set -u
dir=$1
pid=$(cat "$dir/kmsd.pid" 2>/dev/null) || { echo "FAIL no kmsd.pid in $dir"; exit 1; }
[ -r "/proc/$pid/limits" ] || { echo "FAIL kmsd (pid $pid) is not running"; exit 1; }
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1"; fail=$((fail + 1)); }

read -r soft hard < <(awk '/^Max core file size/ {print $5, $6}' "/proc/$pid/limits")
[ "$soft" = 0 ] && [ "$hard" = 0 ] && ok "no core dump: RLIMIT_CORE soft $soft, hard $hard" ||
  ko "RLIMIT_CORE soft '$soft', hard '$hard' (want 0 0)"
locked=$(awk '/^VmLck:/ {print $2}' "/proc/$pid/status")
[ "${locked:-0}" -ge 4096 ] && ok "the secure heap is locked in memory: VmLck $locked kB" ||
  ko "VmLck ${locked:-?} kB, want at least the 4096 kB secure heap"
grep -q '^CoreDumping:[[:space:]]*0' "/proc/$pid/status" && ok "not dumping" || ko "CoreDumping is not 0"

echo "process_hardening: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
