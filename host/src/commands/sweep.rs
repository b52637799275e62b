//! `host sweep --config sweep.toml [--set key=value ...]`: trains and evaluates a grid of objectives ×
//! parameters × seeds (× models), then writes results.csv, results.md and results.svg and prints the table.

use std::path::Path;

use anyhow::Result;

use crate::continuum::sweep::{execute, Outcome, Plan, SweepSpec};
use crate::plugins::SearchPath;

pub fn run(config: &Path, overrides: &[String], search: &SearchPath) -> Result<()> {
    let spec = SweepSpec::load(config, overrides)?;
    let plan = Plan::prepare(&spec, search)?;
    if plan.runs.is_empty() {
        anyhow::bail!("{}: no [[objective]] entries to sweep", config.display());
    }
    println!(
        "sweep: {} settings × {} seeds × {} model(s) = {} runs into {}",
        plan.settings.len(),
        plan.seeds.len(),
        plan.models.len(),
        plan.runs.len(),
        plan.out_dir.display()
    );
    let outcome = execute(&plan, search)?;
    println!();
    print!("{}", outcome.markdown_table(&plan.models));
    println!("wrote {}, {} and {}", outcome.csv.display(), outcome.markdown.display(), outcome.svg.display());
    failures(&outcome)
}

/// An error (exit code 1) naming the runs that failed, if any did.
pub fn failures(outcome: &Outcome) -> Result<()> {
    if outcome.failed.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = outcome.failed.iter().map(|(name, _)| name.as_str()).collect();
    Err(crate::Failure::check(format!(
        "{} run(s) failed: {} (the others are summarised; run the sweep again to retry them)",
        names.len(),
        names.join(", ")
    )))
}
