#!/usr/bin/env bash
# Conformance suites: real third-party WeChat Pay V3 SDKs drive the paygate simulator and gateway.
#   node     wechatpay-axios-plugin (npm), Node's built-in test runner, against `paygate sim`
#   python   wechatpayv3 (PyPI), pytest, against `paygate sim`
#   gateway  both SDKs as merchants of `paygate serve` (node/test/gateway.test.js, gateway_bills.test.js,
#            gateway_sharing.test.js (profit sharing),
#            python/test_gateway.py): SQLite store, and PostgreSQL too when
#            PAYGATE_TEST_DATABASE_URL is set (a fresh private schema per run)
# Usage: tests/conformance/run.sh            (builds target/debug/paygate with cargo)
#        PAYGATE_BIN=/path/to/paygate tests/conformance/run.sh
#        SUITES="node" tests/conformance/run.sh   (only some suites)
# Works without a terminal and with CI=true. Exits non-zero if any suite fails.
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SUITES="${SUITES:-node python gateway}"

log() { printf '\n=== conformance: %s ===\n' "$*"; }

if [ -z "${PAYGATE_BIN:-}" ]; then
  log "building paygate (cargo build -p paygate)"
  if ! (cd "$ROOT" && cargo build -p paygate); then
    echo "conformance: FAILED: cargo build -p paygate" >&2
    exit 1
  fi
  PAYGATE_BIN="$ROOT/target/debug/paygate"
fi
PAYGATE_BIN="$(cd "$(dirname "$PAYGATE_BIN")" && pwd)/$(basename "$PAYGATE_BIN")"
export PAYGATE_BIN
if [ ! -x "$PAYGATE_BIN" ]; then
  echo "conformance: FAILED: no executable at PAYGATE_BIN=$PAYGATE_BIN" >&2
  exit 1
fi

failed=()
passed=()

node_ready=0
node_deps() {
  [ "$node_ready" = 1 ] && return 0
  log "node: installing wechatpay-axios-plugin (npm ci)"
  (cd "$HERE/node" && npm ci --no-audit --no-fund --loglevel=error) || { echo "npm ci failed" >&2; return 1; }
  node_ready=1
}

venv="$HERE/python/.venv"
python_ready=0
python_deps() {
  [ "$python_ready" = 1 ] && return 0
  log "python: installing wechatpayv3 + pytest into $venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || { echo "python3 -m venv failed" >&2; return 1; }
  fi
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$HERE/python/requirements.txt" \
    || { echo "pip install failed" >&2; return 1; }
  python_ready=1
}

run_node() {
  node_deps || return 1
  log "node: node --test (wechatpay-axios-plugin against the simulator)"
  (cd "$HERE/node" && node --test --test-reporter=spec --test-timeout=600000 test/conformance.test.js)
}

run_python() {
  python_deps || return 1
  log "python: pytest (wechatpayv3 against the simulator)"
  (cd "$HERE/python" && "$venv/bin/python" -m pytest -p no:cacheprovider -q -rA --color=no test_wechatpayv3.py)
}

run_gateway() {
  local rc=0
  if [ -n "${PAYGATE_TEST_DATABASE_URL:-}" ]; then
    log "gateway: SQLite and PostgreSQL (PAYGATE_TEST_DATABASE_URL is set)"
  else
    log "gateway: SQLite only (set PAYGATE_TEST_DATABASE_URL to add PostgreSQL)"
  fi
  node_deps || return 1
  log "gateway: node --test (wechatpay-axios-plugin against paygate serve)"
  (cd "$HERE/node" && node --test --test-reporter=spec --test-timeout=600000 test/gateway.test.js) || rc=1
  log "gateway: node --test (merchant bills: wechatpay-axios-plugin against paygate serve)"
  (cd "$HERE/node" && node --test --test-reporter=spec --test-timeout=600000 test/gateway_bills.test.js) || rc=1
  log "gateway: node --test (profit sharing: wechatpay-axios-plugin against paygate serve)"
  (cd "$HERE/node" && node --test --test-reporter=spec --test-timeout=600000 test/gateway_sharing.test.js) || rc=1
  python_deps || return 1
  log "gateway: pytest (wechatpayv3 against paygate serve)"
  (cd "$HERE/python" && "$venv/bin/python" -m pytest -p no:cacheprovider -q -rA --color=no test_gateway.py) || rc=1
  return $rc
}

for suite in $SUITES; do
  case "$suite" in
    node) if run_node; then passed+=(node); else failed+=(node); fi ;;
    python) if run_python; then passed+=(python); else failed+=(python); fi ;;
    gateway) if run_gateway; then passed+=(gateway); else failed+=(gateway); fi ;;
    *) echo "unknown suite: $suite" >&2; failed+=("$suite") ;;
  esac
done

log "summary"
for s in "${passed[@]}"; do echo "suite passed: $s"; done
for s in "${failed[@]}"; do echo "suite FAILED: $s"; done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "conformance: FAILED suites: ${failed[*]}" >&2
  exit 1
fi
echo "conformance: all suites passed (${passed[*]})"
