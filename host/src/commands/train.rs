//! `host train --config run.toml [--plugin NAME|PATH] [--set key=value ...] [--resume]`.

use std::path::Path;

use anyhow::Result;

use crate::config::RunConfig;
use crate::plugins::SearchPath;
use crate::train::{train, TrainOptions};

pub fn run(
    config_path: &Path,
    plugin: Option<&str>,
    overrides: &[String],
    resume: bool,
    search: &SearchPath,
) -> Result<()> {
    let config = RunConfig::load(config_path, overrides)?;
    let summary = train(&config, &TrainOptions { objective_override: plugin, search, resume })?;
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
    println!("metrics: {}", config.train.out_dir.join("metrics.jsonl").display());
    Ok(())
}
