#!/usr/bin/env bash
# STYLE.md: no strcpy, strcat, sprintf, vsprintf, gets, atoi, atol, sscanf or
# VLAs in the product code (tests may use them). Exits 1 listing each use.
set -u
cd "$(dirname "$0")/../.."
hits=$(git grep -nE '\b(strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|sscanf)\(' -- '*.c' '*.h' ':!tests/' 2>/dev/null || true)
if [ -n "$hits" ]; then
  echo "banned calls (STYLE.md, untrusted input):"
  echo "$hits"
  exit 1
fi
echo "banned.sh: no banned calls in product code"
