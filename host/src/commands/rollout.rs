//! `host rollout --config rollout.toml [--set key=value ...]`: diagnose the base model on the training
//! data, sweep the objectives of its region (or the config's), pick the best, write report.md and
//! report.html.

use std::path::Path;

use anyhow::Result;

use crate::continuum::rollout::{against_nll, margin, rollout};
use crate::continuum::schedule::Schedule;
use crate::continuum::sweep::SweepSpec;
use crate::plugins::SearchPath;

pub fn run(config: &Path, overrides: &[String], schedule: &Schedule, search: &SearchPath) -> Result<()> {
    let spec = SweepSpec::load(config, overrides)?;
    let done = rollout(&spec, search, schedule)?;
    let outcome = &done.outcome;
    println!();
    print!("{}", outcome.markdown_table(&done.plan.models));
    println!("region: {} (mean p {:.4})", done.diagnosis.region.as_str(), done.diagnosis.mean_p);
    if let Some(winner) = done.winner {
        println!("winner: {}", outcome.rows[winner].display);
        if let Some(margin) = margin(outcome) {
            println!("{}", margin.text);
        }
    }
    for line in against_nll(&done.plan, outcome).unwrap_or_default() {
        println!("against nll: {}", line.replace('`', ""));
    }
    println!("wrote {} and {}", done.report_md.display(), done.report_html.display());
    super::sweep::failures(outcome)
}
