#!/usr/bin/env bash
# Reconciliation benchmark (issue 9 §5): paygate-recon against DuckDB on the same files.
#
#   tools/recon/bench.sh [ORDERS] [FAULTS_EACH] [RUNS]
#
# Generates (once, under target/recon-bench/ORDERS/) a WeChat trade bill and a platform
# file for one day of ORDERS paid orders (default 9,100,000: with a refund per 10 orders the
# bill has ~10.0M rows, the platform file ~10.5M with its unpaid orders), with FAULTS_EACH
# (default 100) faults of each kind injected. Then, RUNS times each (default 2), on a warm
# page cache: paygate's matcher (recon_bench, release) and DuckDB from PyPI (venv under
# target/recon-venv) doing the same full outer join and classification. Prints seconds,
# peak RSS (/usr/bin/time -v), and whether paygate found exactly the injected faults and the
# same counts as DuckDB. Exits non-zero if not, or if paygate's peak RSS exceeds 2 GiB.
#
# The 1,000,000-order check: tools/recon/bench.sh 1000000 1000 1
set -euo pipefail
cd "$(dirname "$0")/../.."
ORDERS=${1:-9100000}
EACH=${2:-100}
RUNS=${3:-2}
DIR=target/recon-bench/$ORDERS-$EACH
VENV=${RECON_VENV:-target/recon-venv}
BIN=target/release/examples/recon_bench
THREADS=${THREADS:-2}

cargo build --release -q -p paygate-recon --example recon_bench
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import duckdb' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q duckdb
fi
if [ ! -f "$DIR/truth.json" ]; then
  echo "generating $ORDERS orders into $DIR ..."
  "$BIN" gen "$DIR" "$ORDERS" "$EACH"
fi
ls -l "$DIR"
cat "$DIR/bill.csv" "$DIR/platform.csv" > /dev/null # warm the page cache for both tools alike

rss_mib() { awk -F': ' '/Maximum resident set size/ {printf "%d", $2/1024}' "$1"; }
status=0
for run in $(seq 1 "$RUNS"); do
  /usr/bin/time -v "$BIN" match "$DIR" "$THREADS" > "$DIR/paygate.json" 2> "$DIR/paygate.time"
  /usr/bin/time -v "$VENV/bin/python" tools/recon/duckdb_join.py "$DIR" "$THREADS" > "$DIR/duckdb.json" 2> "$DIR/duckdb.time"
  p=$(cat "$DIR/paygate.json"); d=$(cat "$DIR/duckdb.json")
  p_rss=$(rss_mib "$DIR/paygate.time"); d_rss=$(rss_mib "$DIR/duckdb.time")
  echo "run $run paygate: $p (peak RSS ${p_rss} MiB)"
  echo "run $run duckdb:  $d (peak RSS ${d_rss} MiB)"
  "$VENV/bin/python" - "$DIR" "$p_rss" <<'PY' || status=1
import json, sys
d = sys.argv[1]; rss = int(sys.argv[2])
p = json.load(open(f"{d}/paygate.json")); k = json.load(open(f"{d}/duckdb.json"))
ok = True
if p["equals_truth"] is not True:
    print("FAIL: paygate's discrepancies differ from the injected ones"); ok = False
if p["counts"] != k["counts"] or p["matched"] != k["matched"] or p["absent_as_expected"] != k["absent_as_expected"]:
    print("FAIL: paygate and DuckDB disagree"); ok = False
if rss > 2048:
    print(f"FAIL: peak RSS {rss} MiB > 2048"); ok = False
print(f"paygate {p['seconds']:.2f} s vs DuckDB {k['seconds']:.2f} s (x{k['seconds'] / p['seconds']:.2f}); "
      f"counts equal truth and DuckDB: {ok}")
sys.exit(0 if ok else 1)
PY
done
exit $status
