//! `host plugins list | inspect | check | curve`.

use std::io::Write;

use anyhow::Result;
use plugin_api::{LossForm, ParamDefault, PluginKind};

use crate::plugins::check::{check_evaluator, check_mixer, check_objective, curve};
use crate::plugins::params::ParamSet;
use crate::plugins::{EvaluatorPlugin, LoadedPlugin, MixerPlugin, ObjectivePlugin, SearchPath};
use crate::Failure;

/// Every loadable plugin in the search path, one line each; files that fail to load are listed too.
pub fn list(search: &SearchPath) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<10} {:<18} {:<50} file", "kind", "name", "description")?;
    for path in search.candidates() {
        match LoadedPlugin::open(&path) {
            Ok(p) => writeln!(out, "{:<10} {:<18} {:<50} {}", p.kind(), p.name(), p.description(), path.display())?,
            Err(e) => {
                writeln!(out, "{:<10} {:<18} {:<50} {}", "-", "-", format!("not loadable: {e:#}"), path.display())?
            }
        }
    }
    Ok(())
}

/// Everything a plugin declares.
pub fn inspect(search: &SearchPath, name: &str) -> Result<()> {
    let plugin = LoadedPlugin::open(&search.resolve(name)?)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "name:        {}", plugin.name())?;
    writeln!(out, "kind:        {}", plugin.kind())?;
    writeln!(out, "file:        {}", plugin.path.display())?;
    if crate::plugins::python::is_python(&plugin.path) {
        writeln!(
            out,
            "abi:         Python, through the C objective ABI (lib{}.so)",
            crate::plugins::python::BRIDGE_NAME
        )?;
    } else if plugin.c_objective().is_some() {
        writeln!(out, "abi:         C (plugin-api/include/sft_objective.h, version 1)")?;
    } else {
        writeln!(out, "abi:         abi_stable, compatible with plugin-api {}", plugin_api::PLUGIN_API_VERSION)?;
    }
    writeln!(out, "description: {}", plugin.description())?;
    if plugin.kind() == PluginKind::Objective {
        writeln!(out, "formula:     {}", plugin.formula())?;
        let form = match plugin.loss_form() {
            LossForm::Potential => "weight = -d loss / d log p",
            LossForm::DetachedWeightedNll => "loss = sg(weight) * -log p",
            LossForm::NotApplicable => "-",
        };
        writeln!(out, "loss form:   {form}")?;
    }
    if plugin.params().is_empty() {
        writeln!(out, "parameters:  none")?;
    } else {
        writeln!(out, "parameters:")?;
        for spec in plugin.params() {
            let default = match spec.default {
                ParamDefault::None => "unset".to_string(),
                other => other.to_value().map(|v| v.to_string()).unwrap_or_default(),
            };
            let choices: Vec<&str> = spec.choices.iter().map(|c| c.as_str()).collect();
            let choices = if choices.is_empty() { String::new() } else { format!(" [{}]", choices.join("|")) };
            writeln!(
                out,
                "  {:<12} {:<7} default {:<8} {}{choices}",
                spec.name.as_str(),
                spec.ty.as_str(),
                default,
                spec.doc.as_str()
            )?;
        }
    }
    Ok(())
}

/// Runs the checks of the plugin's kind; a failing check exits with code 1, naming p for objectives.
pub fn check(search: &SearchPath, name: &str, assignments: &[String]) -> Result<()> {
    let plugin = LoadedPlugin::open(&search.resolve(name)?)?;
    let params = ParamSet::from_assignments(plugin.params(), assignments, "--param")?;
    let label = format!("{} ({})", plugin.name(), plugin.path.display());
    match plugin.kind() {
        PluginKind::Objective => {
            let objective = ObjectivePlugin::create(plugin, params)?;
            match check_objective(&objective)? {
                Ok(summary) => println!(
                    "ok: {label}: finite and deterministic on {} probabilities in [1e-12, 1]; weight agrees with the loss at {} points ({} skipped at a threshold)",
                    summary.probabilities, summary.derivative_points, summary.skipped_at_threshold
                ),
                Err(failure) => return Err(Failure::check(format!("check failed: {label}: {failure}"))),
            }
        }
        PluginKind::Mixer => {
            let mixer = MixerPlugin::create(plugin, &params)?;
            check_mixer(&mixer).map_err(|e| Failure::check(format!("check failed: {label}: {e:#}")))?;
            println!("ok: {label}: valid, deterministic weights");
        }
        PluginKind::Evaluator => {
            let evaluator = EvaluatorPlugin::create(plugin, &params)?;
            check_evaluator(&evaluator).map_err(|e| Failure::check(format!("check failed: {label}: {e:#}")))?;
            println!("ok: {label}: finite, deterministic scores and aggregate");
        }
    }
    Ok(())
}

/// CSV `p,loss,weight,logit_grad` on `points` probabilities over (0, 1].
pub fn curve_csv(search: &SearchPath, name: &str, assignments: &[String], points: usize) -> Result<()> {
    let objective = ObjectivePlugin::from_assignments(search, name, assignments)?;
    let rows = curve(&objective, points)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "p,loss,weight,logit_grad")?;
    for row in rows {
        writeln!(out, "{:.9},{:.9e},{:.9e},{:.9e}", row.p, row.loss, row.weight, row.logit_grad)?;
    }
    Ok(())
}

/// Exports an evaluator's benchmark as JSONL with `prompt` and `response` keys.
pub fn benchmark(
    search: &SearchPath,
    name: &str,
    split: &str,
    size: usize,
    seed: u64,
    out: &std::path::Path,
) -> Result<()> {
    let plugin = LoadedPlugin::load(search, name, PluginKind::Evaluator)?;
    let Some(examples) = plugin.benchmark(split, size, seed)? else {
        anyhow::bail!("evaluator `{}` ({}) carries no benchmark", plugin.name(), plugin.path.display());
    };
    let lines: Vec<String> = examples
        .iter()
        .map(|(prompt, reference)| serde_json::json!({ "prompt": prompt, "response": reference }).to_string())
        .collect();
    crate::eval::write_atomic(out, &(lines.join("\n") + "\n"))?;
    println!("wrote {} `{}` {split} examples (seed {seed}) to {}", examples.len(), plugin.name(), out.display());
    Ok(())
}
