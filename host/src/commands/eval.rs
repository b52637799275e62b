//! `host eval --model DIR --data FILE --evaluator NAME|PATH --out FILE.jsonl [sampling flags]`: per
//! example `{"index", "prompt", "reference", "generations", "scores", "finish_reasons"}`, then the
//! evaluator's aggregate as a table on stdout and as `<out stem>.summary.json` beside the output.

use std::path::Path;

use anyhow::{bail, Result};
use plugin_api::PluginKind;
use serde_json::json;

use crate::data;
use crate::eval::{self, EvalSettings};
use crate::plugins::params::ParamSet;
use crate::plugins::{EvaluatorPlugin, LoadedPlugin, SearchPath};

pub struct EvalArgs<'a> {
    pub model: &'a Path,
    /// A LoRA adapter to attach to `model`.
    pub adapter: Option<&'a Path>,
    pub data: &'a Path,
    pub evaluator: &'a str,
    /// Evaluator parameters as `key=value`.
    pub params: &'a [String],
    pub out: &'a Path,
    pub prompt_key: &'a str,
    pub response_key: &'a str,
    /// Generation settings, with stop strings as typed (`\n`, `\t` and `\\` are unescaped here).
    pub settings: EvalSettings,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: &'a str,
}

pub fn run(args: &EvalArgs<'_>, search: &SearchPath) -> Result<()> {
    let mut settings = args.settings.clone();
    settings.stop = settings.stop.iter().map(|s| unescape(s)).collect();
    // Cheap checks first: bad flags, the plugin and the data fail before the model loads.
    settings.validate()?;
    eval::refuse_overwriting_input(args.out, args.data)?;
    if !args.model.is_dir() {
        bail!("--model {}: no such model directory", args.model.display());
    }
    let plugin = LoadedPlugin::load(search, args.evaluator, PluginKind::Evaluator)?;
    let params = ParamSet::from_assignments(plugin.params(), args.params, "--param")?;
    let evaluator = EvaluatorPlugin::create(plugin, &params)?;
    let records = data::read_records(args.data, args.prompt_key, args.response_key)?;
    let model = crate::model_source::load(args.model, args.adapter, &engine::open_device(args.device)?)?;
    let tokenizer = crate::model_source::tokenizer(&model)?;

    let report = eval::evaluate_with_progress(&model, &tokenizer, &records, &evaluator, &settings, |done, total| {
        tracing::info!("generated {done}/{total} examples")
    })?;

    eval::write_atomic(args.out, &report.to_jsonl())?;
    let mut summary = report.summary(&settings);
    summary["model"] = json!(args.model.display().to_string());
    if let Some(adapter) = args.adapter {
        summary["adapter"] = json!(adapter.display().to_string());
    }
    summary["data"] = json!(args.data.display().to_string());
    summary["evaluator"] = json!(evaluator.plugin.name());
    summary["evaluator_path"] = json!(evaluator.plugin.path.display().to_string());
    summary["params"] = json!(args.params);
    let summary_path = eval::summary_path(args.out);
    eval::write_atomic(&summary_path, &format!("{summary:#}\n"))?;

    eval::print_aggregate(
        &report.aggregate,
        &[
            ("examples", report.examples.len().to_string()),
            ("samples", settings.samples.to_string()),
            ("temperature", settings.temperature.to_string()),
        ],
    );
    println!(
        "evaluated {} examples with `{}` -> {} (summary {})",
        report.examples.len(),
        evaluator.plugin.name(),
        args.out.display(),
        summary_path.display()
    );
    Ok(())
}

/// Reads `\n`, `\t` and `\\` in a command-line stop string as newline, tab and backslash.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn stop_strings_unescape_newlines_and_tabs() {
        assert_eq!(super::unescape(r"\n\nQ:"), "\n\nQ:");
        assert_eq!(super::unescape(r"a\tb\\n\x"), "a\tb\\n\\x");
        assert_eq!(super::unescape("plain"), "plain");
    }
}
