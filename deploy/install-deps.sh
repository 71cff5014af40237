#!/usr/bin/env bash
# Installs, from Debian's packages, what building and testing kmsd needs and is
# missing. Run as root (or with sudo). Prints what it installs; quiet when all
# is there.
#   install-deps.sh          build + run (quickstart)
#   install-deps.sh --test   also what the test suite needs
set -euo pipefail
pkgs=(build-essential cmake pkg-config libmicrohttpd-dev libgnutls28-dev libssl-dev libjansson-dev libcurl4-openssl-dev libhiredis-dev
      libp11-kit-dev openssl curl ca-certificates default-jre-headless python3)
if [ "${1:-}" = --test ]; then
  pkgs+=(libcriterion-dev clang libclang-rt-14-dev python3-cryptography python3-pykmip redis-server haproxy docker-compose
        docker.io debootstrap prometheus systemd man-db softhsm2 opensc)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# keytool may come from any JRE; default-jre-headless is only needed when none is there
if command -v keytool >/dev/null 2>&1; then
  missing=("${missing[@]/default-jre-headless}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
else
  sudo=
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# why: packages such as prometheus and docker.io start their daemons on install;
# nothing may listen here that a test did not start (and stop), so while apt runs
# a policy-rc.d refuses every start (only when the machine has none of its own)
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# written by kmsd deploy/install-deps.sh while it installs\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 0755 "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
