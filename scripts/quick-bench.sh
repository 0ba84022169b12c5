#!/usr/bin/env bash
# A quick side-by-side: small GET over keep-alive through Tollgate (one shard) and through
# nginx (one worker, upstream keepalive), both in front of the same nginx backend.
# Proxy pinned to CPU 1; backend and wrk pinned to CPU 0. Prints req/s and the proxy's CPU
# time per request (utime+stime from /proc over the run / requests), the figure that
# survives a noisy machine. Usage: scripts/quick-bench.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-64}
need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
  apt-get update -qq && apt-get install -y -qq wrk nginx-light >/dev/null
fi
cargo build --release -q
CPU_PROXY=1; CPU_LOAD=0
if [ "$(nproc)" -lt 2 ]; then CPU_PROXY=0; fi
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND=$(free_port); NGX=$(free_port); TG=$(free_port)
mkdir -p "$TMP/logs"
cat > "$TMP/backend.conf" <<NGINX
daemon off; master_process off; worker_processes 1; error_log stderr error; pid $TMP/backend.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "hello from the backend\n"; } } }
NGINX
cat > "$TMP/proxy.conf" <<NGINX
daemon off; master_process off; worker_processes 1; error_log stderr error; pid $TMP/proxy.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { server 127.0.0.1:$BACKEND; keepalive 64; }
  server { listen 127.0.0.1:$NGX; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
sed -e "s/@TG@/$TG/" -e "s/@BACKEND@/$BACKEND/" -e "s/@DRIVER@/${TOLLGATE_DRIVER:-auto}/" -e "s/^@URING_FLAGS@$/${TOLLGATE_URING_FLAGS+uring_flags = [$TOLLGATE_URING_FLAGS]}/" loadtest/bench.toml > "$TMP/tollgate.toml"

taskset -c $CPU_LOAD nginx -p "$TMP" -c "$TMP/backend.conf" & PIDS+=($!)
taskset -c $CPU_PROXY nginx -p "$TMP" -c "$TMP/proxy.conf" & PIDS+=($!); NGX_PID=$!
TOLLGATE_LOG=warn taskset -c $CPU_PROXY target/release/tollgate --config "$TMP/tollgate.toml" & PIDS+=($!); TG_PID=$!
for p in $BACKEND $NGX $TG; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/x" >/dev/null && break; sleep 0.1; done
done

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() { # name pid port
  local t0 t1 out reqs
  t0=$(cpu_ticks "$2")
  out=$(taskset -c $CPU_LOAD wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$3/pets" )
  t1=$(cpu_ticks "$2")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local hz; hz=$(getconf CLK_TCK)
  local us; us=$(python3 -c "print(round(($t1-$t0)/$hz*1e6/$reqs, 2))")
  printf "%-10s %10s req/s  p50 %-8s p99 %-8s CPU %6s us/req\n" "$1" "$rps" "$p50" "$p99" "$us"
}
echo "small GET, keep-alive, $CONNS connections, ${SECS}s each; proxy on CPU $CPU_PROXY, backend + wrk on CPU $CPU_LOAD"
run tollgate $TG_PID $TG
run nginx $NGX_PID $NGX
run tollgate $TG_PID $TG
run nginx $NGX_PID $NGX
