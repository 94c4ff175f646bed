#!/usr/bin/env bash
# The floor of a prepay on this machine: a BARE gateway with only the parts issue 8's prepay
# needs — verify the merchant's signature, commit the order (SQLite WAL, synchronous=FULL, one
# group-committing writer thread), sign and send the channel call over HTTP to a separate
# process, verify its answer, commit the credential, sign the answer — and nothing else (no
# risk, routing, sealing, idempotency read, audit rows, tracing or metrics). Its gateway CPU per
# prepay against its own 2 signs + 2 verifies is the best ratio any gateway with those parts
# can reach here; paygate's own is in the README (tools/bench/gateway.sh).
#
#   tools/bench/floor/run.sh [REPS]     (3 by default; ~1 min a variant)
#
# Variants: --db none (no commits), --db one (the order only), --db two (both commits, FULL),
# --db two --sync normal (no fsync), and --client hyper (hyper-util instead of reqwest).
# Each run: `gw crypto` (2,000 signs and 20,000 verifies on one thread), then 32 callers for
# 10 s after 3 s of warm-up; the gateway's CPU comes from /proc/<pid>/task/*/schedstat, and the
# in-situ ratio divides it by the signatures' own thread CPU measured inside the gateway.
# Quiet machine please: the load generator and the channel share the two cores.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
REPS=${1:-3}
export CARGO_TARGET_DIR="$ROOT/target/floor"
cargo build --release --manifest-path "$HERE/Cargo.toml" -q
B=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
export FLOOR_KEYS=$WORK/keys
mkdir -p "$FLOOR_KEYS"
for k in merchant platform; do
  # aws-lc-rs takes PKCS#8; genpkey's DER is PKCS#1.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -outform PEM 2>/dev/null |
    openssl pkcs8 -topk8 -nocrypt -outform DER -out "$FLOOR_KEYS/$k.p8.der"
done

variant() {
  local label=$1; shift
  local run=$WORK/run-$label
  mkdir -p "$run"
  "$B/upstream" 127.0.0.1:28081 2>"$run/upstream.log" &
  local up=$!
  "$B/gw" --listen 127.0.0.1:28080 --upstream http://127.0.0.1:28081 --dbpath "$run/gw.db" "$@" 2>"$run/gw.log" &
  local gw=$!
  sleep 0.5
  echo "== $label (gw args: $*)"
  "$B/gw" crypto | sed "s/^/CRYPTO $label pre  /"
  "$B/load" --url http://127.0.0.1:28080 --concurrency 32 --duration 10 --warmup 3 --pid "$gw" --label "$label"
  "$B/gw" crypto | sed "s/^/CRYPTO $label post /"
  kill "$gw" "$up"; wait "$gw" "$up" 2>/dev/null || true
}

for rep in $(seq 1 "$REPS"); do
  variant "none-r$rep" --db none
  variant "one-full-r$rep" --db one --sync full
  variant "two-full-r$rep" --db two --sync full
  variant "two-normal-r$rep" --db two --sync normal
  variant "two-full-hyper-r$rep" --db two --sync full --client hyper
done | tee "$WORK/results.log"
python3 "$HERE/summarize.py" "$WORK/results.log"
