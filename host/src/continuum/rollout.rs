//! `host rollout`: the paper's practical rollout in one command. Diagnose the base model on the training
//! data, place the task on the continuum, sweep the objectives recommended for that region (or the
//! config's own `[[objective]]` list), keep the best by `rank_by`, and report.
//!
//! The config is a sweep file ([`super::sweep`]) whose `[[objective]]` entries are optional. Written into
//! `out_dir`: `diagnose.json`, `diagnose.svg`, the sweep under `sweep/` (resumable, as `host sweep`),
//! `report.md` (linking the SVGs next to it) and `report.html` (self-contained: SVGs inline).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use engine::Model;

use super::diagnose::{diagnose_records, write_outputs, Diagnosis, Region};
use super::schedule::Schedule;
use super::shares::{share_of, TrainingShare, LOW_GRADIENT_SHARE};
use super::sweep::{self, ObjectiveEntry, Outcome, Plan, SweepSpec};
use crate::data::{Record, TextTokenizer};
use crate::plugins::params::parse_literal;
use crate::plugins::SearchPath;
use crate::report::document::{Block, Document};

/// What a rollout produced.
pub struct Rollout {
    pub diagnosis: Diagnosis,
    pub outcome: Outcome,
    pub plan: Plan,
    pub report_md: PathBuf,
    pub report_html: PathBuf,
    /// The winner's row in the outcome, if any run finished.
    pub winner: Option<usize>,
}

/// Why each region sweeps what it sweeps.
pub fn rationale(region: Region) -> &'static str {
    match region {
        Region::ModelStrong => {
            "The base model is already confident on the targets. There, prior-leaning objectives (-p, -p^alpha with alpha > 1, training only on the tokens the base model finds plausible) do better than NLL in the paper: they down-weight the low-probability tokens, which a strong model mostly gets wrong for reasons the data cannot fix. The threshold is judged once, by the base model, so it cannot ratchet as training moves tokens across it. NLL stays in the set as the baseline."
        }
        Region::Intermediate => {
            "Between the two ends, neither family dominates in the paper (its medical domain): the sweep covers NLL, -p and a moderately prior-leaning -p^alpha, and the data decides."
        }
        Region::ModelWeak => {
            "The base model knows little of the task. There NLL wins in the paper: -p weights each token's gradient by p, which is near 0 for almost every target, so it barely learns. -p^alpha with a negative alpha leans even further toward the low-probability tokens; -p is kept as the contrast."
        }
    }
}

/// Runs the rollout described by `spec`.
pub fn rollout(spec: &SweepSpec, search: &SearchPath, schedule: &Schedule) -> Result<Rollout> {
    let shown = spec.path.display().to_string();
    let mut plan = Plan::prepare(spec, search)?;
    if plan.models.len() > 1 {
        bail!("{shown}: models: a rollout diagnoses one base model; give one model (or sweep several with host sweep)");
    }
    let out_dir = spec.file.out_dir.clone();
    let overridden = !spec.file.objective.is_empty();

    // Diagnose the base model on the training data.
    let model_dir = plan.models[0].clone();
    println!("diagnosing {} on {} ...", model_dir.display(), data_names(&plan));
    // On the device training uses (the schedule's first, else the config's).
    let device = match schedule.devices.first() {
        Some(device) => device.open()?,
        None => engine::open_device(&plan.base.model.device)?,
    };
    let model = Model::load(&model_dir, &device)?;
    let tokenizer = TextTokenizer::from_model_dir(&model_dir, model.config())?;
    let records: Vec<Record> = plan.train_data.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
    let diagnosis =
        diagnose_records(&model, &tokenizer, &data_names(&plan), &records, plan.base.data.encode_options(), 8)?;
    drop(model);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let (diagnose_json, diagnose_svg) = (out_dir.join("diagnose.json"), out_dir.join("diagnose.svg"));
    let title = format!("Base-model confidence on {}", short_names(&plan));
    write_outputs(&diagnosis, &model_dir, &data_names(&plan), &diagnose_json, &diagnose_svg, &title)?;
    print!("{}", super::diagnose::table(&diagnosis));

    // The objectives: the config's, else the region's recommendation.
    if !overridden {
        let entries = recommended_entries(diagnosis.region);
        let origin = format!("objectives recommended for the {} region:", diagnosis.region.as_str());
        plan.set_objectives(&entries, &origin, search)?;
    }
    let shares = objective_shares(&plan, &diagnosis, search)?;
    for (setting, share) in &shares {
        match share {
            Some(share) => println!("{}", share_line(setting, share)),
            None => println!("trains on: {setting}: not measured (the objective needs the model's entropy)"),
        }
    }
    plan.out_dir = out_dir.join("sweep");
    let outcome = sweep::execute(&plan, search, schedule)?;

    let ranking = outcome.ranking();
    let winner = ranking.first().copied().filter(|&i| outcome.rows[i].stats[outcome.rank_column].is_some());
    let doc = report(&plan, &diagnosis, &shares, &outcome, overridden, &out_dir)?;
    let report_md = out_dir.join("report.md");
    let report_html = out_dir.join("report.html");
    crate::eval::write_atomic(&report_md, &doc.to_markdown())?;
    crate::eval::write_atomic(&report_html, &doc.to_html())?;
    Ok(Rollout { diagnosis, outcome, plan, report_md, report_html, winner })
}

/// `Region::recommended` as sweep entries.
fn recommended_entries(region: Region) -> Vec<ObjectiveEntry> {
    region
        .recommended()
        .into_iter()
        .map(|(plugin, params)| ObjectiveEntry {
            plugin: plugin.to_string(),
            params: params
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), parse_literal(v)))
                .collect(),
            label: None,
        })
        .collect()
}

/// What each setting of the sweep trains on under the base model, by setting display name.
fn objective_shares(plan: &Plan, d: &Diagnosis, search: &SearchPath) -> Result<Vec<(String, Option<TrainingShare>)>> {
    let probabilities: Vec<f64> = d.logp.iter().map(|&lp| (lp as f64).exp()).collect();
    plan.settings
        .iter()
        .map(|s| {
            let origin = format!("objective `{}`", s.display());
            Ok((s.display(), share_of(search, &s.plugin, &s.params, &d.logp, &probabilities, &origin)?))
        })
        .collect()
}

fn share_line(setting: &str, share: &TrainingShare) -> String {
    let q = share.q.map_or(String::new(), |q| format!(" (q = {q})"));
    let flag = if share.gradient < LOW_GRADIENT_SHARE { "  [under 1 % of NLL's gradient]" } else { "" };
    format!(
        "trains on: {setting}{q}: {:.1} % of the target tokens, {:.2} % of NLL's gradient{flag}",
        100.0 * share.tokens,
        100.0 * share.gradient
    )
}

fn data_names(plan: &Plan) -> String {
    plan.train_data.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn short_names(plan: &Plan) -> String {
    plan.train_data
        .iter()
        .map(|(p, _)| p.file_name().map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How clearly the winner beats the runner-up.
pub struct Margin {
    pub text: String,
    pub clear: bool,
}

/// Each setting against the NLL baseline of the same model (the paper's comparison): one line per
/// setting with the difference of the `rank_by` means and, with seeds, that difference over the larger
/// of the two standard deviations. `None` when the sweep has no plain `nll` setting.
pub fn against_nll(plan: &Plan, outcome: &Outcome) -> Option<Vec<String>> {
    let stat = |i: usize| outcome.rows[i].stats[outcome.rank_column];
    let is_nll = |i: usize| {
        let setting = &plan.settings[outcome.rows[i].setting];
        setting.objective == "nll" && setting.params.is_empty()
    };
    let mut lines = Vec::new();
    for (i, row) in outcome.rows.iter().enumerate() {
        let baseline = (0..outcome.rows.len()).find(|&j| is_nll(j) && outcome.rows[j].model == row.model);
        let (Some(b), false) = (baseline, is_nll(i)) else { continue };
        let (Some(ours), Some(nll)) = (stat(i), stat(b)) else { continue };
        let diff = ours.mean - nll.mean;
        let spread = match (ours.std, nll.std) {
            (Some(x), Some(y)) if x.max(y) > 0.0 => format!(", {:+.1} std", diff / x.max(y)),
            (Some(_), Some(_)) => ", neither varies across seeds".to_string(),
            _ => ", one seed: no std".to_string(),
        };
        lines.push(format!("`{}`: {:.4} against NLL's {:.4}, {diff:+.4}{spread}", row.display, ours.mean, nll.mean));
    }
    (!lines.is_empty()).then_some(lines)
}

/// The winner's margin over the runner-up in units of the larger of their two standard deviations.
pub fn margin(outcome: &Outcome) -> Option<Margin> {
    let ranking = outcome.ranking();
    let stat = |i: usize| outcome.rows[i].stats[outcome.rank_column];
    let best = stat(*ranking.first()?)?;
    let Some(runner) = ranking.get(1).and_then(|&i| stat(i)) else {
        return Some(Margin {
            text: "Only one setting has a result, so there is no runner-up to compare with; no clear winner at 2 std."
                .into(),
            clear: false,
        });
    };
    let runner_name = &outcome.rows[ranking[1]].display;
    let diff = best.mean - runner.mean;
    let (text, clear) = match (best.std, runner.std) {
        (Some(a), Some(b)) => {
            let spread = a.max(b);
            if spread > 0.0 {
                let k = diff / spread;
                let clear = k > 2.0;
                let verdict = if clear {
                    "more than 2: a clear winner at 2 std."
                } else {
                    "not more than 2: no clear winner at 2 std."
                };
                (
                    format!(
                        "Its margin over the runner-up `{runner_name}` is {diff:.4}, {k:.2} times the larger of the two standard deviations ({spread:.4}), {verdict}"
                    ),
                    clear,
                )
            } else if diff > 0.0 {
                (
                    format!(
                        "Its margin over the runner-up `{runner_name}` is {diff:.4} and neither varies across seeds: a clear winner at 2 std."
                    ),
                    true,
                )
            } else {
                (format!("It ties with the runner-up `{runner_name}`: no clear winner at 2 std."), false)
            }
        }
        _ => (
            format!(
                "Its margin over the runner-up `{runner_name}` is {diff:.4}, but with one seed there is no standard deviation to measure it by: no clear winner at 2 std."
            ),
            false,
        ),
    };
    Some(Margin { text, clear })
}

fn report(
    plan: &Plan,
    d: &Diagnosis,
    shares: &[(String, Option<TrainingShare>)],
    outcome: &Outcome,
    overridden: bool,
    out_dir: &Path,
) -> Result<Document> {
    let mut doc = Document::new("Rollout report");
    let model = plan.models[0].display().to_string();
    doc.push(Block::Paragraph(format!(
        "Base config `{}`, model `{model}`, training data `{}`; sweep config `{}`.",
        plan.base_path.display(),
        data_names(plan),
        plan.source.display()
    )));

    doc.push(Block::Heading(1, "Diagnosis".into()));
    doc.push(Block::Paragraph(format!(
        "The base model's probability of the {} target tokens of the {} training examples: mean p = {:.4}, median {:.4}, share below 0.1 = {:.3}.",
        d.tokens, d.examples, d.mean_p, d.median_p, d.share_below_0_1
    )));
    let mut headers = vec!["percentile".to_string()];
    headers.extend(d.quantiles.iter().map(|(k, _)| format!("{k:.0}")));
    let mut row = vec!["p".to_string()];
    row.extend(d.quantiles.iter().map(|(_, p)| format!("{p:.3}")));
    doc.push(Block::Table { headers, rows: vec![row] });
    doc.push(figure(out_dir, "diagnose.svg", "Histogram of the base model's target-token probabilities")?);

    doc.push(Block::Heading(1, "Region".into()));
    doc.push(Block::Paragraph(format!(
        "Region: {}. The cut-offs: model-strong at mean p >= {}, model-weak below {}, intermediate in between; mean p = {:.4}.",
        d.region.as_str(),
        d.cutoffs.model_strong_from,
        d.cutoffs.model_weak_below,
        d.mean_p
    )));
    doc.push(Block::Paragraph(rationale(d.region).into()));

    doc.push(Block::Heading(1, "Objectives swept".into()));
    let recommended = d.recommended.join(", ");
    doc.push(Block::Paragraph(if overridden {
        format!(
            "The objectives come from the config's [[objective]] entries, which override the recommendation for the {} region ({recommended}).",
            d.region.as_str()
        )
    } else {
        format!("The objectives recommended for the {} region ({recommended}).", d.region.as_str())
    }));
    doc.push(Block::List(plan.settings.iter().map(|s| format!("`{}`: {}", s.display(), s.description)).collect()));
    doc.push(Block::Heading(2, "What each objective trains on".into()));
    doc.push(Block::Paragraph(
        "Measured on the base model before the first step, by calling each objective plugin on the diagnosis' log-probabilities: the share of target tokens it keeps with a non-zero weight, and the share of NLL's gradient on the target logits it applies (the sum of w(p)(1 - p) over NLL's sum of 1 - p). A threshold judged by the current model (`against = \"current\"`, the default) is checked again at every step, so its shares move during training; one judged by the base model (`against = \"base\"`) keeps these tokens for the whole run.".into(),
    ));
    let rows = shares
        .iter()
        .map(|(setting, share)| match share {
            Some(share) => vec![
                format!("`{setting}`"),
                share.q.map_or("-".into(), |q| format!("{q:.6}")),
                format!("{:.1} %", 100.0 * share.tokens),
                format!("{:.2} %", 100.0 * share.gradient),
            ],
            None => vec![format!("`{setting}`"), "-".into(), "not measured (needs entropy)".into(), "-".into()],
        })
        .collect();
    doc.push(Block::Table {
        headers: vec![
            "setting".into(),
            "q".into(),
            "target tokens trained on".into(),
            "share of NLL's gradient".into(),
        ],
        rows,
    });
    let low: Vec<String> = shares
        .iter()
        .filter(|(_, s)| s.as_ref().is_some_and(|s| s.gradient < LOW_GRADIENT_SHARE))
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    if !low.is_empty() {
        doc.push(Block::Paragraph(format!(
            "{} applies less than 1 % of NLL's gradient. AdamW divides each coordinate's step by that coordinate's own gradient scale, so such a run still moves the weights at about the full learning rate while its loss has almost nothing left to gain; on the shipped miniature such runs collapse (docs/continuum.md, why the thresholded runs collapse).",
            low.join(", ")
        )));
    }
    let seeds: Vec<String> = plan.seeds.iter().map(u64::to_string).collect();
    let protocols: Vec<String> = plan
        .protocols
        .iter()
        .map(|p| {
            format!(
                "`{}` ({} on {}, {} sample(s), temperature {}, at most {} new tokens)",
                p.name,
                p.evaluator_name,
                p.data.display(),
                p.settings.samples,
                p.settings.temperature,
                p.settings.max_new_tokens
            )
        })
        .collect();
    doc.push(Block::Paragraph(format!(
        "Each setting is trained with seeds {} and evaluated under {}; ranked by `{}` (higher is better).",
        seeds.join(", "),
        protocols.join(", "),
        plan.rank_by
    )));

    doc.push(Block::Heading(1, "Results".into()));
    doc.push(Block::Paragraph("Mean ± sample standard deviation (n - 1) over seeds; n = runs with a result.".into()));
    let mut headers = vec!["setting".to_string(), "n".to_string()];
    headers.extend(outcome.columns.iter().cloned());
    let rows = outcome
        .rows
        .iter()
        .map(|row| {
            let mut cells = vec![row.display.clone(), row.n.to_string()];
            cells.extend(row.stats.iter().map(|s| s.map_or("-".to_string(), |s| s.text())));
            cells
        })
        .collect();
    doc.push(Block::Table { headers, rows });
    doc.push(figure(out_dir, "sweep/results.svg", &format!("{} by setting: mean ± 1 std", plan.rank_by))?);
    if !outcome.failed.is_empty() {
        doc.push(Block::Paragraph(format!("{} run(s) failed:", outcome.failed.len())));
        doc.push(Block::List(outcome.failed.iter().map(|(name, e)| format!("`{name}`: {e}")).collect()));
    }

    doc.push(Block::Heading(1, "Winner".into()));
    let ranking = outcome.ranking();
    match ranking.first().map(|&i| (&outcome.rows[i], outcome.rows[i].stats[outcome.rank_column])) {
        Some((row, Some(stat))) => {
            doc.push(Block::Paragraph(format!(
                "Winner: `{}` with {} = {} (n = {}).",
                row.display,
                plan.rank_by,
                stat.text(),
                stat.n
            )));
            if let Some(margin) = margin(outcome) {
                doc.push(Block::Paragraph(margin.text));
            }
        }
        _ => doc.push(Block::Paragraph("No run finished, so there is no winner.".into())),
    }
    if let Some(lines) = against_nll(plan, outcome) {
        doc.push(Block::Heading(1, "Against NLL".into()));
        doc.push(Block::Paragraph(format!(
            "Each objective's `{}` against the NLL baseline: the difference of the means and that difference over the larger of the two standard deviations (more than +2: ahead of NLL at 2 std; below -2: behind it).",
            plan.rank_by
        )));
        doc.push(Block::List(lines));
    }
    Ok(doc)
}

/// A figure from an SVG file under `out_dir`.
fn figure(out_dir: &Path, link: &str, caption: &str) -> Result<Block> {
    let path = out_dir.join(link);
    let svg = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Block::Figure { link: link.into(), svg, caption: caption.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommendations_become_sweep_entries() {
        let entries = recommended_entries(Region::ModelStrong);
        let names: Vec<&str> = entries.iter().map(|e| e.plugin.as_str()).collect();
        assert_eq!(names, ["neg_p", "general_family", "neg_p_threshold", "nll"]);
        assert_eq!(entries[1].params.get("alpha"), Some(&toml::Value::Integer(3)));
        assert_eq!(entries[2].params.get("side"), Some(&toml::Value::String("top".into())));
        assert_eq!(entries[2].params.get("against"), Some(&toml::Value::String("base".into())));
        assert_eq!(entries[2].params.get("percentile"), Some(&toml::Value::Integer(1)));
        let weak = recommended_entries(Region::ModelWeak);
        assert_eq!(weak[2].params.get("alpha"), Some(&toml::Value::Float(-0.5)));
    }
}
