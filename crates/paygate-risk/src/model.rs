//! A native evaluator for gradient-boosted binary classification trees exported by
//! `tools/risk/train.py` (scikit-learn `HistGradientBoostingClassifier`).
//!
//! The file (`model/model.json`) lists the input features by name, the baseline raw score and
//! every tree as parallel node arrays. Floats are written as decimal *strings* (Python's
//! `repr`), which Rust parses with correct rounding: a JSON number would go through serde_json's
//! fast float parser, which may be one ulp off and flip a split sitting exactly on a threshold.
//!
//! Evaluation mirrors scikit-learn's predictor: at a split, a NaN input goes the node's
//! `missing_left` way, otherwise left when `x <= threshold`; the raw score is the baseline plus
//! every tree's leaf value, summed in tree order; the probability is `1 / (1 + exp(-raw))`.

use std::path::Path;

use serde::Deserialize;

/// Why a model file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("model is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported model format {0:?} (expected \"paygate-gbdt/1\")")]
    Format(String),
    #[error("model feature {index} is {found:?}, the engine computes {expected:?} there")]
    FeatureMismatch {
        index: usize,
        found: String,
        expected: String,
    },
    #[error("model has {found} features, the engine computes {expected}")]
    FeatureCount { found: usize, expected: usize },
    #[error("tree {tree}: {what}")]
    Tree { tree: usize, what: String },
    #[error("not a number: {0:?}")]
    Number(String),
}

#[derive(Deserialize)]
struct ModelFile {
    format: String,
    #[serde(default)]
    trainer: String,
    features: Vec<String>,
    baseline: String,
    trees: Vec<TreeFile>,
}

#[derive(Deserialize)]
struct TreeFile {
    feature: Vec<u32>,
    threshold: Vec<String>,
    left: Vec<u32>,
    right: Vec<u32>,
    missing_left: Vec<u8>,
    is_leaf: Vec<u8>,
    value: Vec<String>,
}

/// One node: a split (`feature`, `threshold`, children) or a leaf (`value`).
#[derive(Clone, Copy, Debug)]
struct Node {
    /// The threshold of a split, the value of a leaf.
    x: f64,
    feature: u32,
    left: u32,
    right: u32,
    leaf: bool,
    missing_left: bool,
}

/// A loaded tree ensemble. Cheap to share; evaluation allocates nothing.
#[derive(Clone, Debug)]
pub struct Model {
    features: Vec<String>,
    baseline: f64,
    nodes: Vec<Node>,
    roots: Vec<u32>,
    trainer: String,
}

fn num(s: &str) -> Result<f64, ModelError> {
    s.parse::<f64>()
        .map_err(|_| ModelError::Number(s.to_owned()))
}

impl Model {
    /// Parses a model file; `expected_features` is the engine's input order
    /// ([`crate::model_feature_names`]), and the model must name exactly those.
    pub fn from_json(text: &str, expected_features: &[&str]) -> Result<Self, ModelError> {
        let file: ModelFile = serde_json::from_str(text)?;
        if file.format != "paygate-gbdt/1" {
            return Err(ModelError::Format(file.format));
        }
        if file.features.len() != expected_features.len() {
            return Err(ModelError::FeatureCount {
                found: file.features.len(),
                expected: expected_features.len(),
            });
        }
        for (index, (found, expected)) in file.features.iter().zip(expected_features).enumerate() {
            if found != expected {
                return Err(ModelError::FeatureMismatch {
                    index,
                    found: found.clone(),
                    expected: (*expected).to_owned(),
                });
            }
        }
        let mut nodes = Vec::new();
        let mut roots = Vec::with_capacity(file.trees.len());
        for (t, tree) in file.trees.iter().enumerate() {
            roots.push(nodes.len() as u32);
            append_tree(&mut nodes, tree, file.features.len())
                .map_err(|what| ModelError::Tree { tree: t, what })?;
        }
        Ok(Self {
            features: file.features,
            baseline: num(&file.baseline)?,
            nodes,
            roots,
            trainer: file.trainer,
        })
    }

    pub fn load(path: &Path, expected_features: &[&str]) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text, expected_features)
    }

    /// The model committed in `crates/paygate-risk/model/model.json`, built into the binary.
    pub fn bundled() -> Result<Self, ModelError> {
        let names = crate::features::model_feature_names();
        Self::from_json(include_str!("../model/model.json"), &names)
    }

    pub fn features(&self) -> &[String] {
        &self.features
    }

    pub fn tree_count(&self) -> usize {
        self.roots.len()
    }

    pub fn trainer(&self) -> &str {
        &self.trainer
    }

    /// The raw (log-odds) score. `x` shorter than the feature list reads the missing ones as NaN.
    pub fn raw_score(&self, x: &[f64]) -> f64 {
        let mut raw = self.baseline;
        for root in &self.roots {
            raw += self.leaf_value(*root as usize, x);
        }
        raw
    }

    /// The fraud probability, 0–1.
    pub fn score(&self, x: &[f64]) -> f64 {
        1.0 / (1.0 + (-self.raw_score(x)).exp())
    }

    fn leaf_value(&self, mut i: usize, x: &[f64]) -> f64 {
        // Children always have higher indices (checked at load), so this walk ends.
        while let Some(n) = self.nodes.get(i) {
            if n.leaf {
                return n.x;
            }
            let v = x.get(n.feature as usize).copied().unwrap_or(f64::NAN);
            let left = if v.is_nan() { n.missing_left } else { v <= n.x };
            i = if left { n.left } else { n.right } as usize;
        }
        0.0
    }
}

fn append_tree(nodes: &mut Vec<Node>, t: &TreeFile, n_features: usize) -> Result<(), String> {
    let n = t.value.len();
    let lens = [
        t.feature.len(),
        t.threshold.len(),
        t.left.len(),
        t.right.len(),
        t.missing_left.len(),
        t.is_leaf.len(),
    ];
    if n == 0 || lens.iter().any(|l| *l != n) {
        return Err(format!(
            "node arrays differ in length or are empty: {n} {lens:?}"
        ));
    }
    let base = nodes.len() as u32;
    for i in 0..n {
        let leaf = t.is_leaf[i] != 0;
        let x = if leaf {
            num(&t.value[i])
        } else {
            num(&t.threshold[i])
        }
        .map_err(|e| e.to_string())?;
        if !leaf {
            let (l, r) = (t.left[i] as usize, t.right[i] as usize);
            if l <= i || r <= i || l >= n || r >= n {
                return Err(format!(
                    "node {i} has children {l},{r} out of order or range"
                ));
            }
            if t.feature[i] as usize >= n_features {
                return Err(format!("node {i} reads feature {}", t.feature[i]));
            }
        }
        nodes.push(Node {
            x,
            feature: t.feature[i],
            left: base + t.left[i],
            right: base + t.right[i],
            leaf,
            missing_left: t.missing_left[i] != 0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#"{
        "format": "paygate-gbdt/1",
        "features": ["a", "b"],
        "baseline": "-1.0",
        "trees": [
            {"feature": [0, 0, 0], "threshold": ["10.5", "0", "0"], "left": [1, 0, 0],
             "right": [2, 0, 0], "missing_left": [1, 0, 0], "is_leaf": [0, 1, 1],
             "value": ["0", "-0.5", "2.0"]}
        ]
    }"#;

    #[test]
    fn splits_like_sklearn() {
        let m = Model::from_json(TINY, &["a", "b"]).unwrap();
        assert_eq!(m.raw_score(&[10.5, 0.0]), -1.5);
        assert_eq!(m.raw_score(&[10.6, 0.0]), 1.0);
        assert_eq!(m.raw_score(&[f64::NAN, 0.0]), -1.5);
        assert!((m.score(&[11.0, 0.0]) - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-15);
    }

    #[test]
    fn refuses_a_model_for_other_features() {
        let err = Model::from_json(TINY, &["a", "c"]).unwrap_err();
        assert!(matches!(err, ModelError::FeatureMismatch { index: 1, .. }));
    }

    #[test]
    fn refuses_cycles() {
        let bad = TINY.replace("\"left\": [1, 0, 0]", "\"left\": [0, 0, 0]");
        assert!(matches!(
            Model::from_json(&bad, &["a", "b"]),
            Err(ModelError::Tree { .. })
        ));
    }
}
