//! `host diagnose`: the base model's probabilities on a data set's target tokens, summarised, and the
//! region of the continuum they place the task in.
//!
//! Regions, by the mean target-token probability (the paper's likelihood estimate):
//!
//! * **model-strong**, mean p ≥ 0.70. The paper measures 0.76–0.81 on math, where prior-leaning
//!   objectives (`-p`, `-p^α`, keeping only high-probability tokens) win. Our miniature experiments
//!   (shared/notes/continuum-miniature.md) saw `-p` fail at mean p 0.64–0.65, so the cut sits above them
//!   and below the paper's math figures.
//! * **model-weak**, mean p < 0.25. The paper's FIGlet reading sits at 0.01 and the miniature's unseen
//!   cipher at 0.04–0.08, where NLL wins and `-p` barely moves (its weight is p ≈ 0). The cut is about
//!   halfway between those and the paper's intermediate medical domain.
//! * **intermediate** in between (the paper's medical domain, about 0.5): neither family dominates;
//!   sweep both.

use std::path::Path;

use anyhow::{bail, Result};
use engine::Model;
use serde::Serialize;

use crate::data::{self, Record, TextTokenizer};
use crate::encode::EncodeOptions;
use crate::report::plot::{write_histogram, Histogram};

/// The lower bound of the model-strong region.
pub const STRONG_FROM: f64 = 0.70;
/// The upper bound (exclusive) of the model-weak region.
pub const WEAK_BELOW: f64 = 0.25;
/// The percentiles reported.
pub const QUANTILES: [f64; 15] =
    [1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 25.0, 75.0];

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Region {
    ModelStrong,
    Intermediate,
    ModelWeak,
}

impl Region {
    pub fn of(mean_p: f64) -> Self {
        if mean_p >= STRONG_FROM {
            Region::ModelStrong
        } else if mean_p < WEAK_BELOW {
            Region::ModelWeak
        } else {
            Region::Intermediate
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Region::ModelStrong => "model-strong",
            Region::Intermediate => "intermediate",
            Region::ModelWeak => "model-weak",
        }
    }

    /// Objectives to sweep in this region, as `plugin` plus `key=value` parameters: the paper's
    /// comparison set, kept short (each entry costs one training run per seed).
    ///
    /// On the model-strong side the threshold drops the 1 % of target tokens the base model finds least
    /// likely, judged once by the base model, and `-p^α` uses α = 3. docs/continuum.md measures why not the
    /// paper's median threshold and α = 10 here: a top half that keeps no task token (0.06 % of NLL's
    /// gradient), a current-model threshold that ratchets, and α = 10 below NLL by 4 std.
    pub fn recommended(self) -> Vec<(&'static str, Vec<&'static str>)> {
        match self {
            Region::ModelStrong => vec![
                ("neg_p", vec![]),
                ("general_family", vec!["alpha=3"]),
                ("neg_p_threshold", vec!["percentile=1", "side=top", "against=base"]),
                ("nll", vec![]),
            ],
            Region::Intermediate => vec![("nll", vec![]), ("neg_p", vec![]), ("general_family", vec!["alpha=3"])],
            Region::ModelWeak => vec![("nll", vec![]), ("neg_p", vec![]), ("general_family", vec!["alpha=-0.5"])],
        }
    }
}

/// What `host diagnose` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    pub examples: usize,
    pub tokens: usize,
    pub mean_p: f64,
    pub median_p: f64,
    /// `(percentile, probability)`, ascending by percentile.
    pub quantiles: Vec<(f64, f64)>,
    pub share_below_0_1: f64,
    /// Token counts in 20 equal bins over [0, 1].
    pub histogram: Vec<usize>,
    pub region: Region,
    pub cutoffs: Cutoffs,
    pub recommended: Vec<String>,
    /// For thresholded objectives given `percentile = K`: the `q` it turns into.
    pub percentile_to_q: Vec<(f64, f64)>,
    /// Every target token's log-probability, in order (for [`super::shares`]; not written out).
    #[serde(skip)]
    pub logp: Vec<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Cutoffs {
    pub model_strong_from: f64,
    pub model_weak_below: f64,
}

pub const HISTOGRAM_BINS: usize = 20;

/// Summarises the per-token log-probabilities of a data set.
pub fn diagnose(logp: &[Vec<f32>]) -> Result<Diagnosis> {
    let probabilities: Vec<f64> = logp.iter().flatten().map(|&l| (l as f64).exp()).collect();
    if probabilities.is_empty() {
        bail!("no target tokens to diagnose");
    }
    let n = probabilities.len() as f64;
    let mean_p = probabilities.iter().sum::<f64>() / n;
    let mut quantiles: Vec<(f64, f64)> =
        QUANTILES.iter().map(|&k| (k, crate::score::percentile(&probabilities, k))).collect();
    quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut histogram = vec![0usize; HISTOGRAM_BINS];
    for &p in &probabilities {
        histogram[((p * HISTOGRAM_BINS as f64) as usize).min(HISTOGRAM_BINS - 1)] += 1;
    }
    let region = Region::of(mean_p);
    let recommended = region
        .recommended()
        .into_iter()
        .map(|(name, params)| if params.is_empty() { name.to_string() } else { format!("{name}:{}", params.join(",")) })
        .collect();
    let percentile_to_q =
        (1..10).map(|i| i as f64 * 10.0).map(|k| (k, crate::score::percentile(&probabilities, k))).collect();
    Ok(Diagnosis {
        examples: logp.len(),
        tokens: probabilities.len(),
        mean_p,
        median_p: crate::score::percentile(&probabilities, 50.0),
        quantiles,
        share_below_0_1: probabilities.iter().filter(|&&p| p < 0.1).count() as f64 / n,
        histogram,
        region,
        cutoffs: Cutoffs { model_strong_from: STRONG_FROM, model_weak_below: WEAK_BELOW },
        recommended,
        percentile_to_q,
        logp: logp.iter().flatten().copied().collect(),
    })
}

/// Diagnoses `model` on the response tokens of `records` (tokenised as in training, cut to the model's
/// context with a warning); `name` names the data in messages. Used by `host diagnose` and `host rollout`.
pub fn diagnose_records(
    model: &Model,
    tokenizer: &TextTokenizer,
    name: &str,
    records: &[Record],
    options: EncodeOptions,
    batch_size: usize,
) -> Result<Diagnosis> {
    let mut dataset = data::tokenize(name, records, tokenizer, None, options)?;
    data::fit_to_model(name, &mut dataset.examples, model.config());
    let logp = crate::score::response_logprobs(model, &dataset.examples, tokenizer.eos_id, batch_size)?;
    diagnose(&logp)
}

/// Writes `json_path` (`{"model", "data", "diagnosis"}`, atomically) and the histogram at `svg_path`.
pub fn write_outputs(
    d: &Diagnosis,
    model: &Path,
    data: &str,
    json_path: &Path,
    svg_path: &Path,
    title: &str,
) -> Result<()> {
    let json = serde_json::json!({
        "model": model.display().to_string(),
        "data": data,
        "diagnosis": d,
    });
    crate::eval::write_atomic(json_path, &serde_json::to_string_pretty(&json)?)?;
    write_svg(d, svg_path, title)
}

/// The short table for people.
pub fn table(d: &Diagnosis) -> String {
    let mut out = String::new();
    out += &format!("examples {}  target tokens {}\n", d.examples, d.tokens);
    out += &format!("mean p {:.4}  median p {:.4}  share p<0.1 {:.3}\n", d.mean_p, d.median_p, d.share_below_0_1);
    let q: Vec<String> = d.quantiles.iter().map(|(k, p)| format!("p{k:.0}={p:.3}")).collect();
    out += &format!("quantiles {}\n", q.join(" "));
    out += &format!(
        "region {} (model-strong: mean p >= {}; model-weak: mean p < {}; intermediate between)\n",
        d.region.as_str(),
        d.cutoffs.model_strong_from,
        d.cutoffs.model_weak_below
    );
    out += &format!("sweep {}\n", d.recommended.join("  "));
    let pq: Vec<String> = d.percentile_to_q.iter().map(|(k, q)| format!("K={k:.0}:q={q:.4}")).collect();
    out += &format!("percentile -> q {}\n", pq.join(" "));
    out
}

/// Writes the histogram of token probabilities as SVG.
pub fn write_svg(d: &Diagnosis, path: &Path, title: &str) -> Result<()> {
    write_histogram(
        path,
        &Histogram {
            title,
            x_label: "p = base model's probability of the target token",
            y_label: "tokens",
            counts: &d.histogram,
            marker: Some((d.mean_p, format!("mean p = {:.3} ({})", d.mean_p, d.region.as_str()))),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_follow_the_cutoffs() {
        assert_eq!(Region::of(0.8), Region::ModelStrong);
        assert_eq!(Region::of(0.70), Region::ModelStrong);
        assert_eq!(Region::of(0.5), Region::Intermediate);
        assert_eq!(Region::of(0.25), Region::Intermediate);
        assert_eq!(Region::of(0.01), Region::ModelWeak);
    }

    #[test]
    fn summary_statistics_of_known_probabilities() {
        // Probabilities 0.07, 0.52, 0.97 (twice each) as f32 log-probs; each sits mid-bin, away from the
        // bin edges that the f32 round trip could blur.
        let row = vec![0.07f32.ln(), 0.52f32.ln(), 0.97f32.ln()];
        let d = diagnose(&[row.clone(), row]).unwrap();
        assert_eq!((d.examples, d.tokens), (2, 6));
        assert!((d.mean_p - 0.52).abs() < 1e-6);
        assert!((d.median_p - 0.52).abs() < 1e-6);
        assert!((d.share_below_0_1 - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(d.histogram.iter().sum::<usize>(), 6);
        assert_eq!(d.histogram[1], 2); // 0.07 in [0.05, 0.10)
        assert_eq!(d.histogram[10], 2); // 0.52 in [0.50, 0.55)
        assert_eq!(d.histogram[19], 2); // 0.97 in [0.95, 1.00]
        assert_eq!(d.region, Region::Intermediate);
        assert!(diagnose(&[vec![]]).is_err());
    }
}
