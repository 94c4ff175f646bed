//! The bundled rule library: it loads, compiles, has 200+ rules in all three layers, and every
//! rule fires on its `example_fires` and not on its `example_passes`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use paygate_risk::rule_examples::check_rule_examples;
use paygate_risk::{Layer, bundled_library_dir, compile_rules, load_library};

#[test]
fn library_has_200_rules_in_three_layers_and_compiles() {
    let rules = load_library(&bundled_library_dir()).unwrap();
    let mut per_layer: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rules {
        *per_layer.entry(r.layer.as_str()).or_default() += 1;
        assert!(
            !r.description.trim().is_empty(),
            "{} has no description",
            r.id
        );
    }
    println!("{} rules: {per_layer:?}", rules.len());
    assert!(rules.len() >= 200, "only {} rules", rules.len());
    for layer in [Layer::Rule, Layer::Device, Layer::Model] {
        assert!(
            per_layer.get(layer.as_str()).copied().unwrap_or(0) >= 20,
            "{layer:?}"
        );
    }
    let set = compile_rules(&rules, 1).unwrap();
    assert_eq!(set.len(), rules.len());
}

#[test]
fn every_rule_fires_on_its_example_and_passes_the_other() {
    let rules = load_library(&bundled_library_dir()).unwrap();
    let failures: Vec<String> = rules
        .iter()
        .filter_map(|r| check_rule_examples(r).err().map(|e| e.to_string()))
        .collect();
    println!(
        "{} rules, {} examples checked",
        rules.len(),
        rules.len() * 2
    );
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
