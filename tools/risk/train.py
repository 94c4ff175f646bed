"""Trains the risk model and writes it, with golden predictions, for the Rust engine.

Input: the CSVs written by `cargo run -p paygate-risk --example export_training -- DIR`
(model inputs computed by the engine's own feature code, so nothing is recomputed here).
Output, in OUT (default crates/paygate-risk/model):
  model.json   the trees, in the `paygate-gbdt/1` format read by paygate_risk::Model
  golden.json  rows of the golden stream with scikit-learn's own predictions; the Rust test
               `golden` recomputes those rows' features and scores and must agree within 1e-9
  report.json  training figures (for people, not for tests)

Floats are written as repr() strings: repr round-trips exactly and Rust parses it with
correct rounding, where a JSON number could lose an ulp in serde_json's fast path.

`--check DIR` retrains into a temporary place and verifies that the result predicts the
committed golden rows as the committed model does (same data, same library version, same
seed: the training is deterministic), so a stale model or golden file is caught.
"""

import argparse
import csv
import json
import math
import os
import sys
import tempfile

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier

PARAMS = dict(
    max_iter=120,
    learning_rate=0.1,
    max_leaf_nodes=31,
    min_samples_leaf=40,
    l2_regularization=1.0,
    early_stopping=False,
    random_state=0,
)
GOLDEN_HONEST = 250
GOLDEN_FRAUD = 150


def load(path):
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r)
        names = header[4:]
        idx, y, scen, xs = [], [], [], []
        for row in r:
            idx.append(int(row[0]))
            y.append(int(row[1]))
            scen.append(row[2])
            xs.append([float(v) for v in row[4:]])
    return names, np.array(idx), np.array(y), scen, np.array(xs, dtype=np.float64)


def walk(nodes, x):
    i = 0
    while not nodes["is_leaf"][i]:
        v = x[nodes["feature_idx"][i]]
        if math.isnan(v):
            left = bool(nodes["missing_go_to_left"][i])
        else:
            left = v <= nodes["num_threshold"][i]
        i = nodes["left"][i] if left else nodes["right"][i]
    return nodes["value"][i]


def export(clf, names):
    baseline = float(np.ravel(clf._baseline_prediction)[0])
    trees = []
    for it in clf._predictors:
        (pred,) = it  # binary: one tree per iteration
        n = pred.nodes
        if np.any(n["is_categorical"]):
            raise SystemExit("categorical splits are not supported by the Rust evaluator")
        trees.append(
            {
                "feature": [int(v) for v in n["feature_idx"]],
                "threshold": [repr(float(v)) for v in n["num_threshold"]],
                "left": [int(v) for v in n["left"]],
                "right": [int(v) for v in n["right"]],
                "missing_left": [int(v) for v in n["missing_go_to_left"]],
                "is_leaf": [int(v) for v in n["is_leaf"]],
                "value": [repr(float(v)) for v in n["value"]],
            }
        )
    return {
        "format": "paygate-gbdt/1",
        "trainer": f"scikit-learn {sklearn.__version__} HistGradientBoostingClassifier {json.dumps(PARAMS, sort_keys=True)}",
        "features": names,
        "baseline": repr(baseline),
        "trees": trees,
    }


def own_score(model, x):
    """The Rust evaluator's arithmetic, in Python: a self-check of the export."""
    raw = float(model["baseline"])
    for t in model["trees"]:
        nodes = {
            "is_leaf": t["is_leaf"],
            "feature_idx": t["feature"],
            "missing_go_to_left": t["missing_left"],
            "num_threshold": [float(v) for v in t["threshold"]],
            "left": t["left"],
            "right": t["right"],
            "value": [float(v) for v in t["value"]],
        }
        raw += walk(nodes, x)
    return 1.0 / (1.0 + math.exp(-raw))


def golden(clf, data_dir, names):
    gnames, idx, y, scen, X = load(os.path.join(data_dir, "golden_stream.csv"))
    assert gnames == names, "golden stream has other features than the training data"
    # A fixed, spread-out choice: every k-th honest row, every fraud row up to a cap.
    honest = [i for i in range(len(y)) if y[i] == 0]
    fraud = [i for i in range(len(y)) if y[i] == 1]
    pick = honest[:: max(1, len(honest) // GOLDEN_HONEST)][:GOLDEN_HONEST]
    pick += fraud[:: max(1, len(fraud) // GOLDEN_FRAUD)][:GOLDEN_FRAUD]
    pick.sort()
    proba = clf.predict_proba(X[pick])[:, 1]
    rows = [
        {
            "index": int(idx[i]),
            "scenario": scen[i],
            "x": [repr(float(v)) for v in X[i]],
            "proba": repr(float(p)),
        }
        for i, p in zip(pick, proba)
    ]
    return {"stream": "StreamConfig::GOLDEN", "features": names, "rows": rows}


def train(data_dir):
    names, _, y, scen, X = load(os.path.join(data_dir, "train.csv"))
    clf = HistGradientBoostingClassifier(**PARAMS)
    clf.fit(X, y)
    return names, clf, X, y, scen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="directory with train.csv and golden_stream.csv")
    ap.add_argument("--out", default=None, help="where model.json and golden.json go")
    ap.add_argument("--check", default=None, help="committed model directory to verify against")
    a = ap.parse_args()

    names, clf, X, y, scen = train(a.data)
    model = export(clf, names)
    gold = golden(clf, a.data, names)

    # The export must reproduce the library's predictions before anyone relies on it.
    worst = max(
        abs(own_score(model, [float(v) for v in r["x"]]) - float(r["proba"])) for r in gold["rows"]
    )
    if worst > 1e-12:
        raise SystemExit(f"exported trees disagree with scikit-learn by {worst}")

    if a.check:
        with open(os.path.join(a.check, "golden.json")) as f:
            committed = json.load(f)
        if committed["features"] != names:
            raise SystemExit("committed golden.json has other features: retrain (tools/risk/train.sh)")
        new = {r["index"]: float(r["proba"]) for r in gold["rows"]}
        diffs = [abs(new.get(r["index"], math.inf) - float(r["proba"])) for r in committed["rows"]]
        worst = max(diffs)
        if worst > 1e-9:
            raise SystemExit(
                f"retraining gives other predictions than the committed model (max diff {worst}): "
                "the model is stale, run tools/risk/train.sh and commit crates/paygate-risk/model"
            )
        print(f"check: retrained model matches the committed goldens ({len(diffs)} rows, max diff {worst:.3g})")
        return

    out = a.out
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(model, f, separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(gold, f, indent=1)
        f.write("\n")
    p = clf.predict_proba(X)[:, 1]
    report = {
        "trainer": model["trainer"],
        "rows": int(len(y)),
        "fraud_rows": int(y.sum()),
        "trees": len(model["trees"]),
        "train_logloss": float(-np.mean(y * np.log(np.clip(p, 1e-15, 1)) + (1 - y) * np.log(np.clip(1 - p, 1e-15, 1)))),
        "golden_rows": len(gold["rows"]),
    }
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
