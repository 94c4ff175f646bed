#!/usr/bin/env bash
# Trains the risk model from scratch and writes it into crates/paygate-risk/model/:
#   1. a venv in tools/risk/.venv with requirements.txt (PyPI);
#   2. the engine exports the training data (its own feature code, on the seeded synthetic
#      stream) with `cargo run --example export_training`;
#   3. train.py fits scikit-learn's HistGradientBoostingClassifier and exports the trees and
#      golden predictions.
# `train.sh --check` does 1-3 into a temporary directory and fails if the result differs from
# the committed goldens (a stale model); CI runs it. About 1.5 minutes on 2 quiet cores (the
# first run also installs the venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$PWD"
VENV="$ROOT/tools/risk/.venv"
MODEL_DIR="$ROOT/crates/paygate-risk/model"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/tools/risk/requirements.txt"

DATA="$(mktemp -d)"
trap 'rm -rf "$DATA"' EXIT
# A debug build: it shares its artifacts with `cargo test`, and the export takes ~10 s anyway.
cargo run --quiet -p paygate-risk --example export_training -- "$DATA"

if [ "${1:-}" = "--check" ]; then
  "$VENV/bin/python" "$ROOT/tools/risk/train.py" --data "$DATA" --check "$MODEL_DIR"
else
  "$VENV/bin/python" "$ROOT/tools/risk/train.py" --data "$DATA" --out "$MODEL_DIR"
  echo "model written to $MODEL_DIR; now: cargo test -p paygate-risk --test golden"
fi
