#!/usr/bin/env bash
# Install and package (issue 13), as a packager and an operator would:
#  1. cmake --install BUILD --prefix /usr into a DESTDIR: the files where a
#     packager expects them; the installed kmsd and kmsctl run from there; the
#     unit passes systemd-analyze verify; the man pages render without warnings
#  2. cpack -G DEB: kmsd_<version>_<arch>.deb, Depends from dpkg-shlibdeps, the
#     configuration a conffile, the version CMake's
#  3. apt-get install ./kmsd_*.deb into a clean Debian 12 root (debootstrap's,
#     cached by deploy/docker/base-image.sh): kmsd --version, --check-config,
#     kmsctl against the packaged configuration; purge keeps keystores and backups
#   tests/package/deb.sh BUILD_DIR WORKDIR
# Step 3 needs root (chroot) and Debian's mirror; without root it exits 77 (ctest: skipped), loudly.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:?usage: deb.sh BUILD_DIR WORKDIR}" && pwd)
work=${2:?usage: deb.sh BUILD_DIR WORKDIR}
chroot_dir=
cleanup() {
  local rc=$?
  if [ -n "$chroot_dir" ]; then
    for m in proc dev/pts dev; do umount "$chroot_dir/$m" 2>/dev/null || true; done
    rm -rf "$chroot_dir"
  fi
  exit $rc
}
trap cleanup EXIT
rm -rf "$work"; mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
version=$(sed -n 's/^project(kmsd VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
build_id=$("$build/server/kmsd" --version | sed -n 's/.*(build \(.*\))$/\1/p')

# --- 1. cmake --install ------------------------------------------------------------
dest=$work/destdir
DESTDIR=$dest cmake --install "$build" --prefix /usr >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "cmake --install"; }
for f in usr/sbin/kmsd usr/bin/kmsctl etc/kmsd/kms.properties usr/lib/systemd/system/kmsd.service \
         usr/lib/sysusers.d/kmsd.conf usr/lib/tmpfiles.d/kmsd.conf usr/share/bash-completion/completions/kmsctl \
         usr/share/man/man8/kmsd.8 usr/share/man/man1/kmsctl.1 usr/share/doc/kmsd/kms.properties.sample \
         usr/share/doc/kmsd/upgrade.md usr/share/doc/kmsd/prometheus/kmsd-alerts.yml; do
  [ -e "$dest/$f" ] || fail "cmake --install put no /$f"
done
[ ! -e "$dest/usr/etc" ] || fail "the configuration went to /usr/etc"
ok "cmake --install --prefix /usr: sbin/kmsd, bin/kmsctl, /etc/kmsd/kms.properties, unit, sysusers, tmpfiles, completion, man pages, docs"
got=$("$dest/usr/sbin/kmsd" --version); [ "$got" = "kmsd $version (build $build_id)" ] || fail "installed kmsd --version: $got"
got=$("$dest/usr/bin/kmsctl" --version); [ "$got" = "kmsctl $version (build $build_id)" ] || fail "installed kmsctl --version: $got"
"$dest/usr/bin/kmsctl" help keystore | grep -q 'import-p12' || fail "installed kmsctl help"
ok "installed kmsd and kmsctl run: $version ($build_id)"
unit=$dest/usr/lib/systemd/system/kmsd.service
grep -q '^ExecStart=/usr/sbin/kmsd --config /etc/kmsd/kms.properties$' "$unit" || fail "unit ExecStart: $(grep ExecStart= "$unit")"
for want in 'User=kmsd' 'ExecReload=/bin/kill -HUP $MAINPID' 'NoNewPrivileges=yes' 'ProtectSystem=strict' \
            'ProtectHome=yes' 'PrivateTmp=yes' 'LimitCORE=0' 'LimitMEMLOCK=' 'CapabilityBoundingSet=' \
            'ReadWritePaths=/var/lib/kmsd /var/log/kmsd'; do
  grep -qF -- "$want" "$unit" || fail "the unit lacks $want"
done
if command -v systemd-analyze >/dev/null; then
  # why: verify checks that ExecStart exists; only the DESTDIR copy of kmsd does, so the
  # copy verified names it there and is otherwise the installed unit, byte for byte
  mkdir -p "$work/verify"
  sed "s|^ExecStart=/usr/sbin/kmsd|ExecStart=$dest/usr/sbin/kmsd|" "$unit" >"$work/verify/kmsd.service"
  out=$(systemd-analyze verify --man=no "$work/verify/kmsd.service" 2>&1) || fail "systemd-analyze verify: $out"
  echo "$out" | grep -i 'kmsd.service' && fail "systemd-analyze verify warns about the unit: $out"
  ok "systemd-analyze verify kmsd.service (hardening: no capability, read-only system, core dumps off)"
else
  fail "systemd-analyze is missing (apt-get install systemd)"
fi
for m in usr/share/man/man8/kmsd.8 usr/share/man/man1/kmsctl.1; do
  w=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$dest/$m" 2>&1 >/dev/null) || true
  [ -z "$w" ] || fail "man --warnings $m: $w"
done
bash -c "complete() { :; }; source '$dest/usr/share/bash-completion/completions/kmsctl'" || fail "completion does not load"
ok "man pages render without warnings; the bash completion loads"

# --- 2. cpack -G DEB ---------------------------------------------------------------
(cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -D CPACK_PACKAGING_INSTALL_PREFIX=/usr \
   -D CPACK_PACKAGE_DIRECTORY="$work/pkg" >"$work/cpack.log" 2>&1) || { tail -30 "$work/cpack.log" >&2; fail "cpack -G DEB"; }
arch=$(dpkg --print-architecture)
deb=$work/pkg/kmsd_${version}_${arch}.deb
[ -f "$deb" ] || fail "no $deb ($(ls "$work/pkg" 2>/dev/null))"
info=$(dpkg-deb -f "$deb")
[ "$(dpkg-deb -f "$deb" Package)" = kmsd ] || fail "Package: $(dpkg-deb -f "$deb" Package)"
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "Version: $(dpkg-deb -f "$deb" Version), CMake says $version"
deps=$(dpkg-deb -f "$deb" Depends)
for lib in libmicrohttpd12 libssl3 libjansson4 libhiredis0.14 libcurl4 libgnutls30 libc6; do
  echo "$deps" | grep -q "$lib" || fail "Depends lacks $lib (dpkg-shlibdeps): $deps"
done
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
echo "$conffiles" | grep -qx /etc/kmsd/kms.properties || fail "kms.properties is not a conffile: $conffiles"
contents=$(dpkg-deb -c "$deb")
echo "$contents" | grep -q ' ./usr/sbin/kmsd$' || fail "the package has no /usr/sbin/kmsd"
ok "$(basename "$deb"): Version $version, Depends from dpkg-shlibdeps ($deps), conffile /etc/kmsd/kms.properties"

# --- 3. a clean Debian 12 root --------------------------------------------------------
if [ "$(id -u)" != 0 ]; then
  printf '\n!!! SKIPPED: installing the .deb into a clean root needs root (chroot)\n\n' >&2
  exit 77
fi
tarball=$("$root/deploy/docker/base-image.sh" --tarball-only | tail -1)
chroot_dir=$work/root
mkdir -p "$chroot_dir"
tar -C "$chroot_dir" -xf "$tarball"
cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf"
mount -t proc proc "$chroot_dir/proc"
cp "$deb" "$chroot_dir/tmp/"
in_root() { chroot "$chroot_dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
in_root sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends /tmp/kmsd_*.deb' >"$work/apt.log" 2>&1 ||
  { tail -30 "$work/apt.log" >&2; fail "apt-get install ./kmsd_*.deb in a clean Debian 12 root"; }
ok "apt-get install ./$(basename "$deb") into a clean Debian 12 root (dependencies from Debian's mirror)"
got=$(in_root kmsd --version); [ "$got" = "kmsd $version (build $build_id)" ] || fail "kmsd --version there: $got"
in_root getent passwd kmsd >/dev/null || fail "no kmsd user after install"
[ "$(in_root stat -c %U /var/lib/kmsd/keystore)" = kmsd ] || fail "/var/lib/kmsd/keystore is not kmsd's"
# the packaged configuration, as shipped: a clear refusal naming what is missing
set +e; out=$(in_root kmsd --check-config 2>&1); rc=$?; set -e
[ $rc = 1 ] || fail "kmsd --check-config with no keystore yet exited $rc: $out"
echo "$out" | grep -q '/etc/kmsd/keystore.password\|/var/lib/kmsd/keystore/kms.jks' || fail "--check-config does not name the missing file: $out"
ok "kmsd --check-config on the packaged config names what is missing: $(echo "$out" | tail -1 | cut -c1-150)"
# then the operator's steps: a password, a keystore (the dev PKI stands in for the real one)
KMS_PKI_SERVER_NAMES="DNS:localhost" "$root/deploy/pki/dev-pki.sh" "$work/pki" >/dev/null
install -m 0640 "$work/pki/password.txt" "$chroot_dir/etc/kmsd/keystore.password"
in_root chgrp kmsd /etc/kmsd/keystore.password
cp "$work/pki/kms.jks" "$chroot_dir/var/lib/kmsd/keystore/kms.jks"
in_root chown kmsd:kmsd /var/lib/kmsd/keystore/kms.jks
out=$(in_root kmsd --check-config 2>&1) || fail "kmsd --check-config with a keystore: $out"
echo "$out" | grep -q 'kms.hsm.server.url read as host kmshsm.example.com, port 5696' || fail "--check-config: $(echo "$out" | tail -3)"
ok "kmsd --check-config passes once the keystore is in place (the guide's https:// HSM URL read as host + port)"
out=$(in_root kmsctl keystore list) || fail "kmsctl keystore list (from /etc/kmsd/kms.properties): $out"
echo "$out" | grep -qi kmsserver || fail "kmsctl keystore list: $out"
cp "$work/pki/cmxDevice.crt" "$chroot_dir/tmp/dev2.crt"
in_root kmsctl keystore import-cert cmxDevice2 /tmp/dev2.crt >/dev/null || fail "kmsctl keystore import-cert from the packaged config"
ls "$chroot_dir"/var/lib/kmsd/kms.jks.backups/ | grep -q . || fail "no backup under /var/lib/kmsd/kms.jks.backups"
ok "kmsctl reads and changes the configured keystore (with a backup under /var/lib/kmsd)"
in_root apt-get purge -y -qq kmsd >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "apt-get purge kmsd"; }
[ ! -e "$chroot_dir/usr/sbin/kmsd" ] || fail "purge left /usr/sbin/kmsd"
[ ! -e "$chroot_dir/etc/kmsd/kms.properties" ] || fail "purge left the conffile"
[ -f "$chroot_dir/var/lib/kmsd/keystore/kms.jks" ] || fail "purge removed the keystore"
ls "$chroot_dir"/var/lib/kmsd/kms.jks.backups/ | grep -q . || fail "purge removed the keystore backups"
[ -f "$chroot_dir/etc/kmsd/keystore.password" ] || fail "purge removed the keystore password file"
ok "apt-get purge kmsd: binaries and conffile gone; keystore, its backups and password file kept"
echo "package stage passed in $SECONDS s"
