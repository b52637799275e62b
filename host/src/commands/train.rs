//! `host train --config run.toml [--plugin NAME|PATH] [--set key=value ...] [--resume | --overwrite]`.

use std::path::Path;

use anyhow::Result;

use crate::config::RunConfig;
use crate::run_dir::RunDir;
use crate::train::{train, TrainOptions};

pub fn run(config_path: &Path, overrides: &[String], options: &TrainOptions<'_>) -> Result<()> {
    let config = RunConfig::load(config_path, overrides)?;
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
    println!("metrics: {}", RunDir::new(&config.train.out_dir).metrics().display());
    Ok(())
}
