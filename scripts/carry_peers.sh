#!/usr/bin/env bash
# Packs what scripts/scaling.py needs on a machine that has none of it (a lent many-core
# machine with no package registry): a stripped release build of Tollgate, wrk, nginx and
# HAProxy, and the shared libraries they load (glibc's own excepted: the target's is used).
#   scripts/carry_peers.sh [DIR]      default .dev (add it to .git/info/exclude)
# Then, there:
#   SCALING_SYSCTL=1 python3 scripts/scaling.py --tollgate DIR/bin/tollgate --bin-dir DIR/bin \
#       --lib-dir DIR/lib --shards 1,2,4,8 --rounds 3 --seconds 4 --workloads small_get
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.dev}
command -v wrk >/dev/null && command -v nginx >/dev/null && command -v haproxy >/dev/null || {
  apt-get update -qq && apt-get install -y -qq wrk nginx-light haproxy >/dev/null; }
cargo build --release -q
rm -rf "$DIR" && mkdir -p "$DIR/bin" "$DIR/lib"
strip -o "$DIR/bin/tollgate" target/release/tollgate
for b in wrk nginx haproxy; do cp "$(command -v $b)" "$DIR/bin/"; done
for b in "$DIR"/bin/wrk "$DIR"/bin/nginx "$DIR"/bin/haproxy; do ldd "$b" | awk '/=>/ {print $3}'; done \
  | sort -u | grep -v -E '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' \
  | while read -r l; do cp -L "$l" "$DIR/lib/"; done
du -sh "$DIR"
