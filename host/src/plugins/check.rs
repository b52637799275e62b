//! The plugin author's safety net: tabulating an objective (`host plugins curve`) and checking it
//! (`host plugins check`): weight against the finite-difference derivative of the loss, finiteness over
//! p ∈ [1e-12, 1], and determinism. Mixers and evaluators are checked for well-formed, deterministic
//! answers on a synthetic request.

use anyhow::{bail, Result};
use plugin_api::{ExampleScores, LossForm, TrainingSet};

use super::objective::{ObjectiveInputs, ObjectivePlugin, ObjectiveValues};
use super::{EvaluatorPlugin, MixerPlugin};

/// One row of `host plugins curve`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurveRow {
    /// The probability the objective saw (`exp` of the f32 `log p` passed to it).
    pub p: f64,
    pub loss: f32,
    pub weight: f32,
    /// The gradient on the target logit, `W = s(p) · (1 - p)`.
    pub logit_grad: f64,
}

/// Calls the objective once on a flat batch of log-probabilities, all inside the loss mask.
pub(crate) fn evaluate(objective: &ObjectivePlugin, logp: &[f32]) -> Result<ObjectiveValues> {
    let mask = vec![1u8; logp.len()];
    objective.compute(&ObjectiveInputs {
        logp,
        mask: &mask,
        sequence_starts: &[0],
        entropy: None,
        top1_prob: None,
        base_logp: Some(logp), // the first step of a run: the base model is the current one
        step: 1,
        total_steps: 1,
    })
}

/// The objective on `points` probabilities evenly spaced over (0, 1].
pub fn curve(objective: &ObjectivePlugin, points: usize) -> Result<Vec<CurveRow>> {
    if points < 2 {
        bail!("--points must be at least 2, got {points}");
    }
    let logp: Vec<f32> = plugin_api::curve::grid(points).iter().map(|p| p.ln() as f32).collect();
    let values = evaluate(objective, &logp)?;
    Ok(logp
        .iter()
        .enumerate()
        .map(|(i, &lp)| {
            let p = (lp as f64).exp();
            CurveRow {
                p,
                loss: values.loss[i],
                weight: values.weight[i],
                logit_grad: values.weight[i] as f64 * (1.0 - p),
            }
        })
        .collect())
}

/// The result of a passing check, for the report line.
#[derive(Debug)]
pub struct CheckSummary {
    pub probabilities: usize,
    pub derivative_points: usize,
    pub skipped_at_threshold: usize,
}

/// A failed check: what failed and at which probability.
#[derive(Debug)]
pub struct CheckFailure {
    pub p: f64,
    pub reason: String,
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at p = {:e}: {}", self.p, self.reason)
    }
}

/// Step in log p of the central difference; small enough for the truncation error of steep objectives
/// (general_family alpha = 10: about 2e-3 relative), large enough that f32 rounding stays near 1e-4.
const LOG_STEP: f64 = 1e-2;
const RELATIVE_TOLERANCE: f64 = 1e-2;
const ABSOLUTE_TOLERANCE: f64 = 1e-3;

/// Points per checked probability: x - 2h, x - h, x, x + h in log p.
const STENCIL: usize = 4;

/// The probabilities checked: 121 log-spaced in [1e-12, 1] and 41 evenly spaced in (0, 1].
pub fn check_grid() -> Vec<f64> {
    let mut grid: Vec<f64> = (0..=120).map(|i| 10f64.powf(-12.0 + 12.0 * i as f64 / 120.0)).collect();
    grid.extend(plugin_api::curve::grid(41));
    grid.sort_by(f64::total_cmp);
    grid.dedup();
    grid
}

/// Runs every objective check; `Ok(Err(failure))` is a plugin that fails a check.
pub fn check_objective(objective: &ObjectivePlugin) -> Result<Result<CheckSummary, CheckFailure>> {
    let grid = check_grid();
    // Each probability with its stencil in log p: x - 2h, x - h, x, x + h. Where x + h would exceed
    // p = 1 the derivative is taken one-sided (second order) from the left points instead.
    let mut logp = Vec::with_capacity(grid.len() * STENCIL);
    for &p in &grid {
        let x = p.ln();
        let right = (x + LOG_STEP).min(0.0);
        logp.extend([(x - 2.0 * LOG_STEP) as f32, (x - LOG_STEP) as f32, x as f32, right as f32]);
    }
    let first = match evaluate(objective, &logp) {
        Ok(values) => values,
        Err(error) => {
            // The host's output validation names the token; map it back to its probability.
            let message = format!("{error:#}");
            let p = token_index(&message).and_then(|i| grid.get(i / STENCIL).copied()).unwrap_or(f64::NAN);
            return Ok(Err(CheckFailure { p, reason: message }));
        }
    };
    let second = evaluate(objective, &logp)?;
    for i in 0..logp.len() {
        let same = first.loss[i].to_bits() == second.loss[i].to_bits()
            && first.weight[i].to_bits() == second.weight[i].to_bits()
            && first.include[i] == second.include[i];
        if !same {
            return Ok(Err(CheckFailure {
                p: grid[i / STENCIL],
                reason: "two identical calls gave different outputs (not deterministic)".into(),
            }));
        }
    }

    let form = objective.plugin.loss_form();
    let (mut checked, mut skipped) = (0, 0);
    for (k, &p) in grid.iter().enumerate() {
        let (far, lo, mid, hi) = (STENCIL * k, STENCIL * k + 1, STENCIL * k + 2, STENCIL * k + 3);
        let include = &first.include;
        if include[mid] == 0 {
            continue;
        }
        let weight = first.weight[mid] as f64;
        let (expected, what) = match form {
            LossForm::DetachedWeightedNll => {
                let x = logp[mid] as f64;
                (first.loss[mid] as f64 / -x, "loss / (-log p) (loss = sg(weight) * -log p)")
            }
            _ => {
                if [far, lo, hi].iter().any(|&j| include[j] != include[mid]) {
                    skipped += 1; // the stencil straddles a threshold
                    continue;
                }
                let f = |j: usize| first.loss[j] as f64;
                let central = logp[hi] > logp[mid];
                let slope = if central {
                    (f(hi) - f(lo)) / (logp[hi] as f64 - logp[lo] as f64)
                } else {
                    (3.0 * f(mid) - 4.0 * f(lo) + f(far)) / (2.0 * LOG_STEP)
                };
                (-slope, "-d loss / d log p (finite difference)")
            }
        };
        if form == LossForm::DetachedWeightedNll && logp[mid] == 0.0 {
            continue; // -log p = 0: the ratio is undefined and the loss is 0 whatever the weight
        }
        let tolerance = ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * weight.abs().max(expected.abs());
        let error = (weight - expected).abs();
        if error.is_nan() || error > tolerance {
            return Ok(Err(CheckFailure { p, reason: format!("weight {weight:.6e} but {what} = {expected:.6e}") }));
        }
        checked += 1;
    }
    Ok(Ok(CheckSummary { probabilities: grid.len(), derivative_points: checked, skipped_at_threshold: skipped }))
}

/// Pulls `token N` out of the host's validation message.
fn token_index(message: &str) -> Option<usize> {
    let rest = &message[message.find("at token ")? + "at token ".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A mixer answers a synthetic three-set request with the same valid weights twice.
pub fn check_mixer(mixer: &MixerPlugin) -> Result<()> {
    let sets: Vec<TrainingSet> = [("a", 100u64), ("b", 10), ("c", 1)]
        .iter()
        .map(|(name, size)| TrainingSet {
            name: (*name).into(),
            size: *size,
            domain: abi_stable::std_types::ROption::RNone,
            mean_confidence: abi_stable::std_types::ROption::RNone,
        })
        .collect();
    let first = mixer.weights(&sets, 1, 10, 0)?;
    let second = mixer.weights(&sets, 1, 10, 0)?;
    if first != second {
        bail!("mixer `{}` is not deterministic: {first:?} then {second:?}", mixer.plugin.name());
    }
    Ok(())
}

/// An evaluator scores synthetic examples with finite, deterministic scores and aggregates them.
pub fn check_evaluator(evaluator: &EvaluatorPlugin) -> Result<()> {
    let examples = [
        ("What is 6*7?", "42", vec!["42".to_string(), "The answer is 41.".to_string()]),
        ("Name a colour.", "red", vec![String::new()]),
    ];
    let mut all: Vec<ExampleScores> = Vec::new();
    for (prompt, reference, generations) in &examples {
        let first = evaluator.score(prompt, generations, reference, "{}")?;
        let second = evaluator.score(prompt, generations, reference, "{}")?;
        if first != second {
            bail!("evaluator `{}` is not deterministic on {prompt:?}", evaluator.plugin.name());
        }
        all.push(first);
    }
    let aggregate = evaluator.aggregate(&all)?;
    if let Some((name, value)) = aggregate.iter().find(|(_, v)| !v.is_finite()) {
        bail!("evaluator `{}` aggregated `{name}` to {value}", evaluator.plugin.name());
    }
    Ok(())
}
