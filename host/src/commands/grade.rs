//! `host grade --evaluator NAME|PATH --data FILE --out FILE.jsonl [--param k=v]`: scores generations
//! made elsewhere (no model is loaded) and writes what `host eval` writes: per row `{"index",
//! "prompt", "reference", "generations", "scores"[, "finish_reasons"]}`, the aggregate as a table on
//! stdout and as `<out stem>.summary.json` beside the output.

use std::path::PathBuf;

use anyhow::Result;
use plugin_api::PluginKind;
use serde_json::json;

use crate::data::Rows;
use crate::eval::{self, AtomicFile};
use crate::grade::{self, GradeKeys};
use crate::plugins::params::ParamSet;
use crate::plugins::{EvaluatorPlugin, LoadedPlugin, SearchPath};

#[derive(Debug, clap::Args)]
pub struct GradeArgs {
    /// Evaluator plugin by name or path.
    #[arg(long)]
    pub evaluator: String,
    /// JSONL or Parquet rows with generations and a reference.
    #[arg(long)]
    pub data: PathBuf,
    /// Per-row JSONL; the aggregate goes beside it as <stem>.summary.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Evaluator parameter, key=value (repeatable).
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// Key of the generations: a list of strings or one string (default: `generations`, else `generation`).
    #[arg(long, default_value = "generations")]
    pub generations_key: String,
    /// Key of the reference answer.
    #[arg(long, default_value = "reference")]
    pub reference_key: String,
    /// Key of the prompt, passed to the evaluator when a row has it.
    #[arg(long, default_value = "prompt")]
    pub prompt_key: String,
}

pub fn run(args: &GradeArgs, search: &SearchPath) -> Result<()> {
    eval::refuse_overwriting_input(&args.out, &args.data)?;
    let plugin = LoadedPlugin::load(search, &args.evaluator, PluginKind::Evaluator)?;
    let params = ParamSet::from_assignments(plugin.params(), &args.params, "--param")?;
    let evaluator = EvaluatorPlugin::create(plugin, &params)?;
    let keys = GradeKeys {
        generations: args.generations_key.clone(),
        reference: args.reference_key.clone(),
        prompt: args.prompt_key.clone(),
    };
    let rows = Rows::open(&args.data)?;
    let shown = args.data.display().to_string();

    // Lines go to a temporary file renamed into place at the end: a bad row part-way leaves no output.
    let mut out = AtomicFile::create(&args.out)?;
    let report = grade::grade(rows, &shown, &keys, &evaluator, &mut out, |done| {
        if done % 10_000 == 0 {
            tracing::info!("graded {done} rows");
        }
    })?;
    out.commit()?;

    let summary = json!({
        "examples": report.examples,
        "generations": report.generations,
        "data": shown,
        "evaluator": evaluator.plugin.name(),
        "evaluator_path": evaluator.plugin.path.display().to_string(),
        "params": args.params,
        "aggregate": eval::aggregate_json(&report.aggregate),
    });
    let summary_path = eval::summary_path(&args.out);
    eval::write_atomic(&summary_path, &format!("{summary:#}\n"))?;

    eval::print_aggregate(
        &report.aggregate,
        &[("examples", report.examples.to_string()), ("generations", report.generations.to_string())],
    );
    println!(
        "graded {} rows with `{}` -> {} (summary {})",
        report.examples,
        evaluator.plugin.name(),
        args.out.display(),
        summary_path.display()
    );
    Ok(())
}
