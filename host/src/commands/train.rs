//! `host train --config run.toml [--plugin NAME|PATH] [--set key=value ...] [--resume | --overwrite]
//! [--summary FILE]`.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::config::RunConfig;
use crate::run_dir::RunDir;
use crate::train::{train, TrainOptions};

pub fn run(
    config_path: &Path,
    overrides: &[String],
    options: &TrainOptions<'_>,
    summary_out: Option<&Path>,
) -> Result<()> {
    let config = RunConfig::load(config_path, overrides)?;
    let run_dir = RunDir::new(&config.train.out_dir);
    let summary = train(&config, options)?;
    let loss = |l: Option<f64>| l.map_or("-".to_string(), |l| format!("{l:.4}"));
    println!(
        "trained {} steps{}",
        summary.steps,
        summary.resumed_from.map_or(String::new(), |s| format!(" (resumed at step {s})"))
    );
    println!("loss: first {}, last {}", loss(summary.first_loss), loss(summary.last_loss));
    println!("throughput: {:.0} tokens/s", summary.tokens_per_second);
    println!("peak memory: {}", summary.peak_memory);
    println!("checkpoint: {}", summary.final_checkpoint.display());
    println!("metrics: {}", run_dir.metrics().display());
    if let Some(out) = summary_out {
        // For programs driving the host (the Python module): where everything is, without parsing the text.
        let record = json!({
            "run_dir": run_dir.root(),
            "checkpoint": summary.final_checkpoint,
            "metrics": run_dir.metrics(),
            "steps": summary.steps,
            "resumed_from": summary.resumed_from,
            "first_loss": summary.first_loss,
            "last_loss": summary.last_loss,
            "tokens_per_second": summary.tokens_per_second,
            "peak_memory": summary.peak_memory.to_string(),
        });
        crate::eval::write_atomic(out, &format!("{record:#}\n"))?;
    }
    Ok(())
}
