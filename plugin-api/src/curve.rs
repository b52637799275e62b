//! The probability grid on which objectives are tabulated (`host plugins curve`) and checked
//! (`host plugins check`), and a direct evaluator for plugin authors' unit tests.

use abi_stable::std_types::{RNone, RSlice, RSome};

use crate::objective::{Objective, ObjectiveBatch};
use crate::params::{ParamEntry, Params};

/// `points` probabilities evenly spaced over [0, 1], the first moved to 1e-6 so `log p` is finite.
pub fn grid(points: usize) -> Vec<f64> {
    let last = points.saturating_sub(1).max(1) as f64;
    (0..points).map(|i| (i as f64 / last).max(1e-6)).collect()
}

/// One row of a curve: the objective's outputs at probability `p` (the probability the objective saw,
/// `exp` of the f32 `log p` that crossed the ABI).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    pub p: f64,
    pub loss: f32,
    pub weight: f32,
    pub included: bool,
}

/// Evaluates an objective directly (no ABI) at each probability, for unit tests of plugins. The base
/// model's log-probabilities are the same as the current ones (the first step of a run).
pub fn tabulate<T: Objective>(params: &[ParamEntry], probabilities: &[f64]) -> Result<Vec<CurvePoint>, String> {
    let objective = T::from_params(&Params::new(params))?;
    let logp: Vec<f32> = probabilities.iter().map(|p| p.ln() as f32).collect();
    let mask = vec![1u8; logp.len()];
    let out = objective.compute(&ObjectiveBatch {
        logp: RSlice::from_slice(&logp),
        mask: RSlice::from_slice(&mask),
        sequence_starts: RSlice::from_slice(&[0]),
        entropy: RNone,
        top1_prob: RNone,
        base_logp: RSome(RSlice::from_slice(&logp)),
        step: 1,
        total_steps: 1,
    })?;
    Ok(logp
        .iter()
        .enumerate()
        .map(|(i, &log_p)| CurvePoint {
            p: (log_p as f64).exp(),
            loss: out.loss[i],
            weight: out.weight[i],
            included: out.include[i] != 0,
        })
        .collect())
}

/// Relative closeness used by the closed-form tests: `|a - b| <= rel · |b|`, with an absolute floor of
/// 1e-7 (f32 resolution) for values at or near zero.
pub fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs() + 1e-7
}
