#!/usr/bin/env bash
# Builds a Debian package: the binary, the systemd unit, a default config in /etc/tollgate/,
# state in /var/lib/tollgate/ (the unit's StateDirectory), a `tollgate` system user.
#   scripts/package.sh                     release build, then target/debian/tollgate_<ver>_<arch>.deb
#   scripts/package.sh --bin PATH --out DIR [--fast]   package a given binary (the test suite does)
set -euo pipefail
cd "$(dirname "$0")/.."

bin="" out="target/debian" fast=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --fast) fast=(-Zgzip -z1); shift ;;   # quick compression (tests)
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release -q
  bin=target/release/tollgate
fi
command -v dpkg-deb >/dev/null || { echo "dpkg-deb is needed (apt-get install dpkg)" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

install -D -m 0755 "$bin" "$stage/usr/bin/tollgate"
install -D -m 0644 dist/tollgate.service "$stage/lib/systemd/system/tollgate.service"
install -D -m 0640 dist/config.toml "$stage/etc/tollgate/config.toml"
install -D -m 0644 README.md "$stage/usr/share/doc/tollgate/README.md"
install -D -m 0644 dist/grafana/tollgate.json "$stage/usr/share/tollgate/grafana/tollgate.json"
install -d -m 0750 "$stage/var/lib/tollgate"
mkdir -p "$stage/DEBIAN"
size=$(du -sk "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: tollgate
Version: $version
Architecture: $arch
Maintainer: Tollgate maintainers <tollgate@localhost>
Installed-Size: $size
Depends: libc6, adduser
Section: net
Priority: optional
Homepage: https://localhost/tollgate
Description: API gateway: thread-per-core io_uring proxy
 HTTP and WebSocket APIs, routes, stages, throttling, API keys and usage
 plans, response caching, TLS and mutual TLS, zero-downtime upgrades.
CONTROL
echo "/etc/tollgate/config.toml" > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = "configure" ]; then
  if ! getent passwd tollgate >/dev/null; then
    adduser --system --group --home /var/lib/tollgate --no-create-home tollgate
  fi
  chown tollgate:tollgate /var/lib/tollgate
  chgrp tollgate /etc/tollgate/config.toml
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable tollgate.service >/dev/null
    # An upgrade takes over from the running gateway without dropping a connection.
    if systemctl is-active --quiet tollgate.service; then
      systemctl kill -s USR2 --kill-whom=main tollgate.service
    else
      systemctl start tollgate.service
    fi
  fi
fi
POSTINST
cat > "$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
  systemctl stop tollgate.service || true
  systemctl disable tollgate.service >/dev/null || true
fi
PRERM
cat > "$stage/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ "$1" = "purge" ]; then
  rm -rf /var/lib/tollgate
  if getent passwd tollgate >/dev/null; then deluser --system tollgate >/dev/null || true; fi
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
POSTRM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
mkdir -p "$out"
deb="$out/tollgate_${version}_${arch}.deb"
dpkg-deb --build --root-owner-group "${fast[@]}" "$stage" "$deb" >/dev/null
echo "$deb"
