#!/usr/bin/env bash
# Runs testssl.sh (apt) against a Tollgate TLS listener with a fresh ECDSA P-256 certificate:
# protocols, cipher categories, forward secrecy and the known vulnerabilities. Prints the
# summary lines; the full report is left in the printed directory.
#   scripts/testssl.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v testssl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq testssl.sh >/dev/null; }
command -v openssl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
cargo build --release -q
TMP=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$TMP/key.pem" \
  -out "$TMP/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$TMP/tg.toml" <<TOML
[server]
workers = 1
state_dir = "$TMP/data"
[[listeners]]
name = "https"
addr = "127.0.0.1:$PORT"
tls = { cert = "cert.pem", key = "key.pem" }
[[apis]]
name = "a"
  [[apis.stages]]
  name = "p"
  [[apis.routes]]
  route = "GET /"
  integration = { type = "mock", body = "ok" }
[[domains]]
host = "*"
mappings = [{ base_path = "", api = "a", stage = "p" }]
TOML
target/release/tollgate --config "$TMP/tg.toml" > "$TMP/tollgate.log" 2>&1 &
TG=$!
trap 'kill $TG 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sfk "https://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.1; done
timeout 600 testssl --quiet --color 0 --warnings off -p -s -f -U -S "https://127.0.0.1:$PORT" > "$TMP/testssl.txt" 2>&1 || true
grep -E "SSLv|TLS 1|NULL|Anonymous|Export|LOW|3DES|Heartbleed|ROBOT|Renegotiation|CRIME|POODLE|SWEET32|FREAK|DROWN|LOGJAM|BEAST|LUCKY13|RC4" "$TMP/testssl.txt"
echo "full report: $TMP/testssl.txt"
