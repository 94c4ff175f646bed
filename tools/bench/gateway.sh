#!/usr/bin/env bash
# Gateway performance (issue 8 §2): the figures of the README's results table.
#
#   tools/bench/gateway.sh [sqlite|postgres]      (DURATION=15 CONCURRENCY=32 by default)
#
# Builds the release binary, starts the simulator and the gateway as separate processes
# (the gateway on SQLite under a temporary directory, or on a fresh PostgreSQL database
# made on PAYGATE_BENCH_PG, default postgres://postgres@127.0.0.1:5432), onboards a
# merchant, and runs, one after another:
#   1. `paygate bench crypto`: what 2 RSA signs + 2 verifies (prepay) and 1 + 1 (query) cost;
#   2. Native prepay and query, closed loop: throughput, latency, the gateway's CPU per call
#      (from /proc, whole and by thread) and its ratio to that cryptography;
#   3. the merchant notifications the gateway delivers per second against its signing ceiling
#      (2 cores × RSA signs per second);
#   4. Native prepay and query in an open loop at half the measured peak, through the gateway
#      and, for prepay, straight at the simulator at the same rate: the p99 the gateway adds.
# Prints a markdown table and writes every report as JSON under target/bench/<backend>/.
# Quiet machine please: another build on the same 2 cores halves every figure.
set -euo pipefail
cd "$(dirname "$0")/../.."
BACKEND=${1:-sqlite}
DURATION=${DURATION:-15}
CONCURRENCY=${CONCURRENCY:-32}
SIM_PORT=${SIM_PORT:-19190}
GW_PORT=${GW_PORT:-18180}
OUT=target/bench/$BACKEND
BIN=target/release/paygate

cargo build --release -q -p paygate
WORK=$(mktemp -d)
PIDS=()
DB=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$DB" ]; then psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'for f in "$WORK"/*.log; do tail -n 20 "$f" >&2; done' ERR
mkdir -p "$OUT"

wait_port() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

"$BIN" sim --listen "127.0.0.1:$SIM_PORT" --kit-dir "$WORK/sim-kits" --auto-onboard >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
wait_port "$SIM_PORT"
for _ in $(seq 1 100); do [ -s "$WORK/sim-kits/partner/merchant.json" ] && break; sleep 0.1; done

# The scenarios leave thousands of unpaid Native orders behind; the poller would query each
# (a signature apiece) from 30 s on and bill that to whichever scenario runs then. Polling
# unpaid orders is a real cost, but not a prepay's: here it starts after an hour.
printf '[workers]\npoll_min_age_ms = 3600000\n' >"$WORK/paygate.toml"
GW_ARGS=(--config "$WORK/paygate.toml" --data-dir "$WORK/gw" --listen "127.0.0.1:$GW_PORT" --channel-kit-dir "$WORK/sim-kits/partner")
if [ "$BACKEND" = postgres ]; then
  PG=${PAYGATE_BENCH_PG:-postgres://postgres@127.0.0.1:5432}
  DB=paygate_bench_$$
  psql "$PG/postgres" -qc "CREATE DATABASE $DB" >/dev/null
  GW_ARGS+=(--database-url "$PG/$DB")
fi
PAYGATE_OPERATOR_TOKEN=bench-operator "$BIN" serve "${GW_ARGS[@]}" >"$WORK/gw.log" 2>&1 &
PIDS+=($!)
wait_port "$GW_PORT"
"$BIN" merchant create --name bench --out "$WORK/mkit" --data-dir "$WORK/gw" \
  --public-base-url "http://127.0.0.1:$GW_PORT/" --channel-kit-dir "$WORK/sim-kits/partner" \
  ${DB:+--database-url "$PG/$DB"} >/dev/null

load() { # name, then bench load arguments
  local name=$1
  shift
  "$BIN" bench load --duration-s "$DURATION" --json "$OUT/$name.json" "$@" >"$OUT/$name.txt"
}
field() { jq -r "$2" "$OUT/$1.json"; }

"$BIN" bench crypto --seconds 2 --json "$OUT/crypto.json" >"$OUT/crypto.txt"
load native --kit "$WORK/mkit" --scenario native --concurrency "$CONCURRENCY"
load query --kit "$WORK/mkit" --scenario query --concurrency "$CONCURRENCY"
load notify --kit "$WORK/mkit" --scenario notify --concurrency "$CONCURRENCY" --operator-token bench-operator
HALF_NATIVE=$(jq -r '(.throughput_per_s / 2 | floor)' "$OUT/native.json")
HALF_QUERY=$(jq -r '(.throughput_per_s / 2 | floor)' "$OUT/query.json")
load native_half --kit "$WORK/mkit" --scenario native --rate "$HALF_NATIVE"
load query_half --kit "$WORK/mkit" --scenario query --rate "$HALF_QUERY"
# The same prepay straight at the simulator, as the gateway's sub-merchant: the channel's own
# share of the latency, to subtract.
load native_half_channel --kit "$WORK/sim-kits/direct" --scenario native --rate "$HALF_NATIVE"

PREPAY_FLOOR=$(jq -r '.prepay_floor_us' "$OUT/crypto.json")
QUERY_FLOOR=$(jq -r '.query_floor_us' "$OUT/crypto.json")
SIGN_US=$(jq -r '.figures[] | select(.operation | startswith("RSA-2048 SHA-256 sign")) | .us_per_op' "$OUT/crypto.json")
CEILING=$(echo "2 * 1000000 / $SIGN_US" | bc -l)
ratio() { echo "scale=2; $1 / $2" | bc -l; }
printf '\n| %s | figure |\n|---|---|\n' "$BACKEND"
printf '| RSA-2048 sign / verify (one core) | %.0f µs / %.1f µs |\n' "$SIGN_US" \
  "$(jq -r '.figures[] | select(.operation | startswith("RSA-2048 SHA-256 verify")) | .us_per_op' "$OUT/crypto.json")"
printf '| Native prepay, %s callers | %.0f/s, p50 %.1f ms, p99 %.1f ms, %s errors |\n' "$CONCURRENCY" \
  "$(field native .throughput_per_s)" "$(field native .latency_ms_p50)" "$(field native .latency_ms_p99)" "$(field native .errors)"
printf '| gateway CPU per prepay / 2 signs + 2 verifies | %.0f µs / %.0f µs = **%s×** |\n' \
  "$(field native .server_cpu_us_per_op)" "$PREPAY_FLOOR" "$(ratio "$(field native .server_cpu_us_per_op)" "$PREPAY_FLOOR")"
printf '| same, measured inside the gateway: CPU ÷ its own signature CPU (%.2f signs + %.2f verifies per call) | **%.2f×** |\n' \
  "$(field native .server_signs_per_op)" "$(field native .server_verifies_per_op)" "$(field native .server_cpu_over_signatures)"
by_thread() { # the report's CPU per operation by thread, largest first
  jq -r '.server_cpu_us_per_op_by_thread | to_entries | sort_by(-.value)
    | map(select(.value >= 0.5) | "\(.key) \(.value | floor)") | join(", ")' "$OUT/$1.json"
}
printf '| prepay: gateway CPU by thread, µs per call | %s |\n' "$(by_thread native)"
printf '| Query, %s callers | %.0f/s, p50 %.1f ms, p99 %.1f ms, %s errors |\n' "$CONCURRENCY" \
  "$(field query .throughput_per_s)" "$(field query .latency_ms_p50)" "$(field query .latency_ms_p99)" "$(field query .errors)"
printf '| gateway CPU per query / 1 sign + 1 verify | %.0f µs / %.0f µs = **%s×** |\n' \
  "$(field query .server_cpu_us_per_op)" "$QUERY_FLOOR" "$(ratio "$(field query .server_cpu_us_per_op)" "$QUERY_FLOOR")"
printf '| same, inside the gateway (%.2f signs + %.2f verifies per call) | **%.2f×** |\n' \
  "$(field query .server_signs_per_op)" "$(field query .server_verifies_per_op)" "$(field query .server_cpu_over_signatures)"
printf '| query: gateway CPU by thread, µs per call | %s |\n' "$(by_thread query)"
printf '| notification delivery: signature CPU ÷ gateway CPU (per-core efficiency) | **%.1f %%** |\n' \
  "$(jq -r '100 / .server_cpu_over_signatures' "$OUT/notify.json")"
printf '| notifications delivered / signing ceiling (2 cores) | %.0f/s / %.0f/s = **%s %%** |\n' \
  "$(field notify .notifications_per_s)" "$CEILING" "$(echo "scale=1; 100 * $(field notify .notifications_per_s) / $CEILING" | bc -l)"
printf '| Native prepay at %s/s (half peak): p99 via gateway − p99 at the simulator | %.2f − %.2f = **%.2f ms** |\n' \
  "$HALF_NATIVE" "$(field native_half .latency_ms_p99)" "$(field native_half_channel .latency_ms_p99)" \
  "$(echo "$(field native_half .latency_ms_p99) - $(field native_half_channel .latency_ms_p99)" | bc -l)"
printf '| same, inside the gateway (its answer minus its channel waits): p50 / p99 | ≤ %s / **≤ %s ms** |\n' \
  "$(field native_half .server_added_ms_p50_at_most)" "$(field native_half .server_added_ms_p99_at_most)"
printf '| Query at %s/s (half peak): p50 / p99 | %.2f / **%.2f ms** |\n' \
  "$HALF_QUERY" "$(field query_half .latency_ms_p50)" "$(field query_half .latency_ms_p99)"
printf '| same, inside the gateway: p50 / p99 | ≤ %s / **≤ %s ms** |\n' \
  "$(field query_half .server_added_ms_p50_at_most)" "$(field query_half .server_added_ms_p99_at_most)"
echo
echo "reports: $OUT/*.json"
