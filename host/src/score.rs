//! Scoring: the log-probability a model gives every response token (EOS included) of a data set.
//!
//! Used by `host score`, and by training to turn a thresholded objective's `percentile` into `q` from the
//! base model's token probabilities.

use anyhow::Result;
use engine::Model;

use crate::data::{Batch, Example};

/// Per example, in order, the log-probability of each loss position (response tokens, then EOS).
pub fn response_logprobs(model: &Model, examples: &[Example], pad_id: u32, batch_size: usize) -> Result<Vec<Vec<f32>>> {
    // Sorting by length keeps padding low; results go back in input order.
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].ids.len());
    let mut by_index: Vec<Vec<f32>> = vec![Vec::new(); examples.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let rows: Vec<&Example> = chunk.iter().map(|&i| &examples[i]).collect();
        let batch = Batch::new(&rows, pad_id, model.device())?;
        let logp = model.next_token_logprobs(&batch.ids, &batch.lengths)?;
        for (row, &i) in chunk.iter().enumerate() {
            let start = row * batch.positions;
            by_index[i] =
                (start..start + batch.positions).filter(|&k| batch.loss_mask[k] == 1).map(|k| logp[k]).collect();
        }
    }
    Ok(by_index)
}

/// The `percentile`-th (0–100) value of `values` by linear interpolation between order statistics
/// (numpy's default).
pub fn percentile(values: &[f64], percentile: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (percentile / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(super::percentile(&v, 0.0), 1.0);
        assert_eq!(super::percentile(&v, 100.0), 4.0);
        assert!((super::percentile(&v, 50.0) - 2.5).abs() < 1e-12);
        assert!((super::percentile(&v, 10.0) - 1.3).abs() < 1e-12);
    }
}
