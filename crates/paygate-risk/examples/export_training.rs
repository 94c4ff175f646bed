//! Writes the model's training data: `train.csv` (the training stream's model inputs, computed
//! by the engine's own feature code, with labels) and `golden_stream.csv` (the same for the
//! small golden stream the parity test regenerates). Run by `tools/risk/train.sh`.
//!
//! `cargo run --release -p paygate-risk --example export_training -- OUT_DIR`

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use paygate_risk::model_feature_names;
use paygate_risk::synth::{StreamConfig, generate, training_rows};

fn write(path: &PathBuf, cfg: &StreamConfig) -> std::io::Result<usize> {
    let stream = generate(cfg);
    let rows = training_rows(&stream);
    let mut out = BufWriter::new(File::create(path)?);
    let names = model_feature_names();
    writeln!(out, "index,label,scenario,kind,{}", names.join(","))?;
    let mut line = String::new();
    for (i, r) in rows.iter().enumerate() {
        line.clear();
        use std::fmt::Write as _;
        // `{}` prints the shortest text that parses back to the same f64: exact round trip.
        let _ = write!(
            line,
            "{i},{},{},{}",
            u8::from(r.scenario.is_fraud()),
            r.scenario.as_str(),
            r.kind.as_str()
        );
        for v in &r.x {
            let _ = write!(line, ",{v}");
        }
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(rows.len())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: export_training OUT_DIR")?,
    );
    std::fs::create_dir_all(&dir)?;
    let n = write(&dir.join("train.csv"), &StreamConfig::TRAIN)?;
    println!("train.csv: {n} rows");
    let n = write(&dir.join("golden_stream.csv"), &StreamConfig::GOLDEN)?;
    println!("golden_stream.csv: {n} rows");
    Ok(())
}
