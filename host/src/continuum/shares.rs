//! What an objective trains on, measured on the base model before the first step: the share of target
//! tokens it keeps with a non-zero weight, and the share of NLL's gradient it applies.
//!
//! Every objective's gradient on a target token's logit is `w(p) · (1 - p)` (the plugin's weight times
//! NLL's), so `Σ w(p)(1 - p) / Σ (1 - p)` over the training targets says how much of NLL's push an
//! objective keeps. A thresholded objective can keep half the tokens and almost none of the gradient:
//! on the miniature's arithmetic, the tokens at or above the median probability (q = 0.99992) are
//! punctuation and the end of text, and carry 0.055 % of NLL's gradient (docs/continuum.md). The numbers
//! come from the plugin itself, called on the base model's log-probabilities: no objective's math is
//! restated here.

use anyhow::Result;
use plugin_api::{ParamValue, PluginKind};

use crate::plugins::params::ParamSet;
use crate::plugins::{LoadedPlugin, ObjectivePlugin, SearchPath};

/// Objectives applying less than this share of NLL's gradient are flagged in the rollout's report.
pub const LOW_GRADIENT_SHARE: f64 = 0.01;

/// Tokens per call to the plugin.
const CHUNK: usize = 1 << 16;

/// What one objective trains on.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainingShare {
    /// The threshold a `percentile` became, if any.
    pub q: Option<f64>,
    /// Share of target tokens included with a non-zero weight.
    pub tokens: f64,
    /// `Σ w(p)(1 - p)` over the included tokens, over NLL's `Σ (1 - p)`.
    pub gradient: f64,
}

/// The share `objective` trains on, given the base model's log-probabilities of the target tokens.
pub fn training_share(objective: &ObjectivePlugin, logp: &[f32], q: Option<f64>) -> Result<TrainingShare> {
    let (mut kept, mut gradient, mut nll_gradient) = (0usize, 0f64, 0f64);
    for chunk in logp.chunks(CHUNK) {
        let values = crate::plugins::check::evaluate(objective, chunk)?;
        for (i, &lp) in chunk.iter().enumerate() {
            let push = 1.0 - (lp as f64).exp();
            nll_gradient += push;
            if values.include[i] != 0 && values.weight[i] != 0.0 {
                kept += 1;
                gradient += values.weight[i] as f64 * push;
            }
        }
    }
    let n = logp.len().max(1) as f64;
    let gradient = if nll_gradient > 0.0 { gradient / nll_gradient } else { 0.0 };
    Ok(TrainingShare { q, tokens: kept as f64 / n, gradient })
}

/// Loads the objective `plugin` with `params` (a `percentile` turned into `q` from `probabilities`, the
/// exponentials of `logp`, as training does) and measures its share; `None` for an objective that also
/// needs the model's entropy or top-1 probability, which a diagnosis does not keep.
pub fn share_of(
    search: &SearchPath,
    plugin: &str,
    params: &[(String, toml::Value)],
    logp: &[f32],
    probabilities: &[f64],
    origin: &str,
) -> Result<Option<TrainingShare>> {
    let loaded = LoadedPlugin::load(search, plugin, PluginKind::Objective)?;
    let mut set = ParamSet::from_toml(loaded.params(), params, origin)?;
    crate::train::resolve_percentile(&mut set, probabilities, origin)?;
    let objective = ObjectivePlugin::create(loaded, set)?;
    let needs = objective.needs();
    if needs.entropy || needs.top1_prob {
        return Ok(None);
    }
    // A given `q`, or the one a `percentile` became.
    let q = match objective.params.get("q") {
        Some(ParamValue::Float(q)) => Some(*q),
        _ => None,
    };
    training_share(&objective, logp, q).map(Some)
}
