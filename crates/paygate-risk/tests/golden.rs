//! Parity with the training library, with no Python needed: the committed golden rows were
//! exported by `tools/risk/train.py` with scikit-learn's own `predict_proba`.
//!
//! 1. Features: the engine regenerates the golden stream and recomputes each golden row's model
//!    input; it must equal, bit for bit, what the model was trained and scored on.
//! 2. Scores: the native tree evaluator must give scikit-learn's probability within 1e-9.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use paygate_risk::synth::{StreamConfig, generate, training_rows};
use paygate_risk::{Model, model_feature_names};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    features: Vec<String>,
    rows: Vec<Row>,
}

#[derive(Deserialize)]
struct Row {
    index: usize,
    scenario: String,
    x: Vec<String>,
    proba: String,
}

fn golden() -> Golden {
    serde_json::from_str(include_str!("../model/golden.json")).unwrap()
}

#[test]
fn engine_features_equal_the_training_features() {
    let g = golden();
    assert_eq!(
        g.features,
        model_feature_names(),
        "retrain: tools/risk/train.sh"
    );
    let stream = generate(&StreamConfig::GOLDEN);
    let rows = training_rows(&stream);
    for r in &g.rows {
        let ours = &rows[r.index];
        assert_eq!(ours.scenario.as_str(), r.scenario, "row {}", r.index);
        for (j, (a, b)) in ours.x.iter().zip(&r.x).enumerate() {
            let b: f64 = b.parse().unwrap();
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "row {} feature {} ({}): engine {a}, training {b}",
                r.index,
                j,
                g.features[j]
            );
        }
    }
    println!("{} golden rows: features identical", g.rows.len());
}

#[test]
fn native_evaluator_matches_scikit_learn_within_1e_9() {
    let g = golden();
    let model = Model::bundled().unwrap();
    let mut worst = 0.0f64;
    for r in &g.rows {
        let x: Vec<f64> = r.x.iter().map(|v| v.parse().unwrap()).collect();
        let want: f64 = r.proba.parse().unwrap();
        let got = model.score(&x);
        worst = worst.max((got - want).abs());
        assert!(
            (got - want).abs() <= 1e-9,
            "row {}: {got} vs {want}",
            r.index
        );
    }
    let fraud = g.rows.iter().filter(|r| r.scenario != "honest").count();
    println!(
        "{} golden rows ({fraud} fraud), {} trees: max |rust - sklearn| = {worst:e}",
        g.rows.len(),
        model.tree_count()
    );
}
