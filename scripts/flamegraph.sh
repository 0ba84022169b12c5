#!/usr/bin/env bash
# Records Tollgate (one shard, pinned to CPU 1) under a wrk small-GET load against an nginx
# backend (CPU 0) with `perf record -e cpu-clock` (this VM has no hardware counters) and
# renders an SVG with inferno into flamegraphs/. The build uses frame pointers and the release
# profile's debug info, in its own target dir.
#   scripts/flamegraph.sh [seconds] [driver] [path]     defaults: 10 io_uring /small
#   CACHE=1 scripts/flamegraph.sh ...                   with the stage cache on (profiles hits)
#   H2=1 scripts/flamegraph.sh ...                      HTTP/2 (h2c), h2load 16 conns x 4 streams
#   TLS=1 scripts/flamegraph.sh ...                     HTTPS (TLS 1.3; with H2=1, HTTP/2 over TLS)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
DRIVER=${2:-io_uring}
PATH_=${3:-/small}
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
command -v nginx >/dev/null && command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light wrk >/dev/null; }
command -v inferno-flamegraph >/dev/null || cargo install -q inferno --locked
RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target/flame cargo build --release -q
BIN=target/flame/release/tollgate

TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BE=$(port); TG=$(port)
cat > "$TMP/backend.conf" <<NGINX
daemon off; master_process off; worker_processes 1; error_log stderr error; pid $TMP/b.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:$BE; location / { return 200 "hello, world\n"; } } }
NGINX
CACHE_LINE=""
[ "${CACHE:-0}" = 1 ] && CACHE_LINE='  cache = { ttl = "300s", capacity = "64MiB" }'
sed -e "s/@TG@/$TG/" -e "s/@BACKEND@/$BE/" -e "s/@DRIVER@/$DRIVER/" -e "s/^@URING_FLAGS@$//" \
    -e "s/^  name = \"prod\"$/  name = \"prod\"\n$CACHE_LINE/" loadtest/bench.toml > "$TMP/tg.toml"
SCHEME=http
if [ "${TLS:-0}" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$TMP/key.pem" \
    -out "$TMP/cert.pem" -days 2 -subj /CN=localhost >/dev/null 2>&1
  sed -i "s|^addr = \"127.0.0.1:$TG\"$|addr = \"127.0.0.1:$TG\"\ntls = { cert = \"$TMP/cert.pem\", key = \"$TMP/key.pem\" }|" "$TMP/tg.toml"
  SCHEME=https
elif [ "${H2:-0}" = 1 ]; then
  sed -i "s/^addr = \"127.0.0.1:$TG\"$/addr = \"127.0.0.1:$TG\"\nh2c = true/" "$TMP/tg.toml"
fi
taskset -c 0 nginx -p "$TMP" -c "$TMP/backend.conf" & PIDS+=($!)
TOLLGATE_LOG=warn taskset -c 1 "$BIN" --config "$TMP/tg.toml" & PIDS+=($!); TGPID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$BE$PATH_" >/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do curl -skf "$SCHEME://127.0.0.1:$TG$PATH_" >/dev/null && break; sleep 0.1; done
if [ "${H2:-0}" = 1 ]; then
  taskset -c 0 h2load -c 16 -m 4 -D $((SECS + 2)) "$SCHEME://127.0.0.1:$TG$PATH_" > "$TMP/wrk.txt" &
else
  taskset -c 0 wrk -t1 -c64 -d$((SECS + 2))s "$SCHEME://127.0.0.1:$TG$PATH_" > "$TMP/wrk.txt" &
fi
WRK=$!
sleep 1
perf record -e cpu-clock -F 999 -g -p "$TGPID" -o "$TMP/perf.data" -- sleep "$SECS" 2>/dev/null
wait $WRK
mkdir -p flamegraphs
PROTO=""
[ "${H2:-0}" = 1 ] && PROTO=-h2c
[ "${TLS:-0}" = 1 ] && PROTO=-https
[ "${TLS:-0}" = 1 ] && [ "${H2:-0}" = 1 ] && PROTO=-h2-tls
OUT="flamegraphs/tollgate-$DRIVER-small-get$([ "${CACHE:-0}" = 1 ] && echo -cache-hit)$PROTO-$(date -u +%Y%m%d).svg"
perf script -i "$TMP/perf.data" 2>/dev/null | inferno-collapse-perf > "$TMP/folded"
cp "$TMP/folded" "${OUT%.svg}.folded"   # stacks, for grep; not committed
cat "$TMP/folded" | inferno-flamegraph --title "Tollgate ($DRIVER), $([ "${CACHE:-0}" = 1 ] && echo "cache hits" || echo "proxied") small GET${PROTO:+ (${PROTO#-})}, $([ "${H2:-0}" = 1 ] && echo "16 connections x 4 streams" || echo "64 keep-alive connections")" > "$OUT"
grep -E "Requests/sec|^finished in|^requests:" "$TMP/wrk.txt"
echo "wrote $OUT"
