//! `host sweep --config sweep.toml [--set key=value ...]`: trains and evaluates a grid of objectives ×
//! parameters × seeds (× models), then writes results.csv, results.md and results.svg and prints the table.
//! `--jobs N --devices …` runs several at once; `--slurm` writes a job array instead, whose tasks run
//! `--run-index I` and whose last job runs `--collect`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::continuum::schedule::Schedule;
use crate::continuum::slurm::{self, Invocation};
use crate::continuum::sweep::{collect, execute, execute_one, Outcome, Plan, SweepSpec};
use crate::plugins::SearchPath;

/// What to do with the grid.
pub enum Mode {
    /// Run every run here, placed by the schedule, and summarise.
    Run(Schedule),
    /// Run only this one (a task of a Slurm array).
    RunIndex(usize),
    /// Summarise the results present, training nothing.
    Collect,
    /// Write the Slurm scripts.
    Slurm,
}

pub struct SweepArgs<'a> {
    pub config: &'a Path,
    pub overrides: &'a [String],
    pub plugin_dirs: &'a [PathBuf],
    pub mode: Mode,
    /// Where to also write the results as JSON (`--summary`).
    pub summary: Option<&'a Path>,
}

pub fn run(args: &SweepArgs<'_>, search: &SearchPath) -> Result<()> {
    let spec = SweepSpec::load(args.config, args.overrides)?;
    let plan = Plan::prepare(&spec, search)?;
    if plan.runs.is_empty() {
        anyhow::bail!("{}: no [[objective]] entries to sweep", args.config.display());
    }
    let grid = format!(
        "{} settings × {} seeds × {} model(s) = {} runs",
        plan.settings.len(),
        plan.seeds.len(),
        plan.models.len(),
        plan.runs.len()
    );
    let outcome = match &args.mode {
        Mode::Run(schedule) => {
            let placement = match schedule.jobs {
                1 => String::new(),
                n => format!(", {n} at once"),
            };
            println!("sweep: {grid} into {}{placement}", plan.out_dir.display());
            execute(&plan, search, schedule)?
        }
        Mode::RunIndex(index) => {
            let result = execute_one(&plan, *index, search)?;
            println!(
                "run {index} ({}): result in {}",
                result.name,
                plan.run_dir(&plan.runs[*index]).join("result.json").display()
            );
            return Ok(());
        }
        Mode::Collect => {
            let outcome = collect(&plan)?;
            for (name, why) in &outcome.failed {
                println!("{name}: {why}");
            }
            outcome
        }
        Mode::Slurm => {
            let invocation =
                Invocation { config: args.config, overrides: args.overrides, plugin_dirs: args.plugin_dirs };
            let origin = args.config.display().to_string();
            let scripts = slurm::write_scripts(&plan.out_dir, plan.runs.len(), &spec.file.slurm, &invocation, &origin)?;
            println!("sweep: {grid}, one Slurm array task each");
            println!(
                "wrote {}, {} and {}",
                scripts.array.display(),
                scripts.collect.display(),
                scripts.submit.display()
            );
            println!("submit with: sh {}", scripts.submit.display());
            return Ok(());
        }
    };
    println!();
    print!("{}", outcome.markdown_table(&plan.models));
    println!("wrote {}, {} and {}", outcome.csv.display(), outcome.markdown.display(), outcome.svg.display());
    if let Some(out) = args.summary {
        write_summary(out, &plan, &outcome)?;
    }
    failures(&outcome)
}

/// `--summary`: the run records (as in each run's result.json, with its folder) and the failures, for
/// programs driving the host (the Python module).
fn write_summary(out: &Path, plan: &Plan, outcome: &Outcome) -> Result<()> {
    let runs = outcome
        .results
        .iter()
        .map(|(index, result)| {
            let mut record = serde_json::to_value(result)?;
            record["run_dir"] = serde_json::to_value(plan.run_dir(&plan.runs[*index]))?;
            Ok(record)
        })
        .collect::<Result<Vec<_>>>()?;
    let failed: Vec<_> =
        outcome.failed.iter().map(|(name, error)| serde_json::json!({"name": name, "error": error})).collect();
    let record = serde_json::json!({
        "out_dir": plan.out_dir,
        "columns": outcome.columns,
        "runs": runs,
        "failed": failed,
        "results_csv": outcome.csv,
        "results_md": outcome.markdown,
        "results_svg": outcome.svg,
    });
    crate::eval::write_atomic(out, &format!("{record:#}\n"))
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
