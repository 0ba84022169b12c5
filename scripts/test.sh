#!/usr/bin/env bash
# Runs Tollgate's whole test suite: unit tests, then the end-to-end tests once per driver
# (auto: Tollgate's own io_uring runtime where the kernel has it; monoio's io_uring driver; epoll). Installs cargo-nextest,
# redis-server, curl, h2load, systemd-analyze, prlimit, Node.js, the test OpenID provider's
# npm packages, botocore and promtool if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# The cluster tests run a real redis-server.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

# The HTTP/2 tests drive real clients: curl (--http2) and h2load.
if ! command -v curl >/dev/null 2>&1 || ! command -v h2load >/dev/null 2>&1; then
  echo "installing curl and nghttp2-client"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl nghttp2-client >/dev/null
fi

# The systemd unit is checked with systemd-analyze; the descriptor tests use prlimit.
if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v prlimit >/dev/null 2>&1; then
  echo "installing systemd (systemd-analyze) and util-linux (prlimit)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd util-linux >/dev/null
fi

# The JWT authorizer tests run a real OpenID provider (tests/oidc, Node's oidc-provider).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing nodejs and npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d tests/oidc/node_modules/oidc-provider ]; then
  echo "installing the test OpenID provider's npm packages (tests/oidc)"
  npm ci --prefix tests/oidc --no-audit --no-fund
fi

# The SigV4 tests sign with a real signer: botocore's SigV4Auth.
if ! python3 -c 'import botocore' >/dev/null 2>&1; then
  echo "installing botocore (PyPI)"
  python3 -m pip install --quiet botocore
fi

# /metrics is checked with Prometheus's promtool: from Debian's prometheus package, unpacked
# (not installed: no service, no user), promtool only.
# The tracing tests decode OTLP with the official protobuf definitions.
if ! python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' >/dev/null 2>&1; then
  echo "installing opentelemetry-proto (PyPI)"
  python3 -m pip install --quiet opentelemetry-proto
fi

# OpenAPI exports are checked with openapi-spec-validator.
if ! python3 -c 'import openapi_spec_validator' >/dev/null 2>&1; then
  echo "installing openapi-spec-validator (PyPI)"
  python3 -m pip install --quiet openapi-spec-validator
fi

if ! command -v chromium >/dev/null 2>&1; then
  # The status page is rendered in a real browser (tests/status_page.rs).
  echo "installing chromium (headless, for the status page test)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing promtool (from Debian's prometheus package)"
  apt-get update -qq
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq prometheus >/dev/null)
  dpkg -x "$tmp"/prometheus_*.deb "$tmp/x"
  install -m 0755 "$tmp/x/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$tmp"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

echo "== tests, driver: auto (Tollgate's own io_uring runtime on Linux 6.0, else monoio's io_uring driver, else epoll)"
TOLLGATE_TEST_DRIVER=auto cargo nextest run --no-fail-fast
echo "== end-to-end tests, driver: io_uring_basic (monoio's io_uring driver)"
TOLLGATE_TEST_DRIVER=io_uring_basic cargo nextest run --no-fail-fast --test '*'
echo "== end-to-end tests, driver: epoll"
TOLLGATE_TEST_DRIVER=epoll cargo nextest run --no-fail-fast --test '*'
