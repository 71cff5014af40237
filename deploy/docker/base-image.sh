#!/usr/bin/env bash
# Makes the image debian:bookworm-slim from Debian's own packages, for hosts that
# reach Debian's mirror but no image registry. Does nothing when the image exists.
#   deploy/docker/base-image.sh [--tarball-only]
# The debootstrap root is kept as a tarball in $KMS_CACHE_DIR (default
# /var/cache/kmsd), outside the clone, so later runs skip the ~35 s bootstrap;
# the .deb test (tests/package/deb.sh) unpacks the same tarball as a clean root.
# env: KMS_CACHE_DIR, KMS_DEBIAN_MIRROR (default: the first mirror apt uses here)
set -euo pipefail
cache=${KMS_CACHE_DIR:-/var/cache/kmsd}
tarball=$cache/debian-bookworm-minbase.tar
image=debian:bookworm-slim

mirror() {
  if [ -n "${KMS_DEBIAN_MIRROR:-}" ]; then echo "$KMS_DEBIAN_MIRROR"; return; fi
  local m
  m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$m" ] || m=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

mkdir -p "$cache"
# why: the package and container tests may ask for the base at the same time
exec 9>"$cache/.lock"
flock 9
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "base-image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
  mkdir -p "$cache"
  root=$(mktemp -d "$cache/root.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "base-image: debootstrap --variant=minbase bookworm from $(mirror) (once; cached in $tarball)"
  if ! debootstrap --variant=minbase bookworm "$root" "$(mirror)" >"$cache/debootstrap.log" 2>&1; then
    echo "base-image: debootstrap failed; its log: $cache/debootstrap.log" >&2
    tail -20 "$cache/debootstrap.log" >&2
    exit 1
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
[ "${1:-}" = --tarball-only ] && { echo "$tarball"; exit 0; }
if ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "base-image: docker import $tarball as $image"
  docker import "$tarball" "$image" >/dev/null
fi
