//! LoRA dropout's masks (PEFT's `lora_dropout`: `B(A(dropout(x)))`, each adapted projection with its
//! own mask on its own input, inverted scaling `1 / (1 - p)` on what is kept).
//!
//! A mask is never stored: each element's keep/drop is a hash of the pass's seed, the projection (its
//! layer and module), the token's coordinates in the batch (row, position) and the feature index. So the
//! hand-written pass recomputes in backward exactly the mask its forward used, the autograd path (padded
//! `[B, T]`) draws the same mask as the packed hand-written pass, and a resumed run, whose host sets the
//! same seed for the same micro-batch, draws the same masks as the uninterrupted one.

use rayon::prelude::*;

/// The dropout of one training pass: its seed and the drop probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Dropout {
    pub seed: u64,
    pub p: f64,
}

/// The stream of one adapted projection: its layer and its index in [`super::LINEAR_MODULES`].
pub(super) fn stream(layer: usize, module_index: usize) -> u64 {
    ((layer as u64) << 8) | module_index as u64
}

/// A token's coordinates as the mask sees them (independent of the padded width and of packing).
pub(super) fn token_key(row: usize, position: usize) -> u64 {
    ((row as u64) << 32) | position as u64
}

/// splitmix64's finaliser: a bijection of u64 whose output bits each depend on every input bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Dropout {
    /// What a kept element is multiplied by.
    pub fn scale(&self) -> f32 {
        (1.0 / (1.0 - self.p)) as f32
    }

    /// Writes one token's mask over `out.len()` features: 0 where dropped, [`Dropout::scale`] where kept.
    /// Each feature gets 32 bits of a hash; it is dropped when they fall below `p · 2³²`.
    pub fn fill_token(&self, stream: u64, token: u64, out: &mut [f32]) {
        let threshold = (self.p * 4_294_967_296.0) as u64;
        let (scale, base) = (self.scale(), mix(self.seed ^ mix(stream ^ mix(token))));
        for (j, pair) in out.chunks_mut(2).enumerate() {
            let bits = mix(base.wrapping_add((j as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            for (value, half) in pair.iter_mut().zip([bits & 0xFFFF_FFFF, bits >> 32]) {
                *value = if half < threshold { 0.0 } else { scale };
            }
        }
    }

    /// `x ∘ mask` for `x` `[tokens, width]` whose row `i` is the token `tokens[i]` (a [`token_key`]).
    pub fn apply(&self, stream: u64, tokens: &[u64], x: &[f32]) -> Vec<f32> {
        let width = x.len() / tokens.len().max(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(width.max(1)).zip(x.par_chunks(width.max(1))).zip(tokens.par_iter()).for_each(
            |((out, x), &token)| {
                self.fill_token(stream, token, out);
                out.iter_mut().zip(x).for_each(|(m, &x)| *m *= x);
            },
        );
        out
    }

    /// The mask of `[tokens, width]` rows whose row `i` is the token `tokens[i]`.
    pub fn mask(&self, stream: u64, tokens: &[u64], width: usize) -> Vec<f32> {
        let mut mask = vec![0f32; tokens.len() * width];
        mask.par_chunks_mut(width.max(1)).zip(tokens.par_iter()).for_each(|(out, &token)| {
            self.fill_token(stream, token, out);
        });
        mask
    }

    /// The mask of a padded `[batch, time, width]` input, row-major (for the autograd path).
    pub fn padded_mask(&self, stream: u64, batch: usize, time: usize, width: usize) -> Vec<f32> {
        let mut mask = vec![0f32; batch * time * width];
        mask.par_chunks_mut(width.max(1)).enumerate().for_each(|(i, out)| {
            self.fill_token(stream, token_key(i / time, i % time), out);
        });
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_the_asked_share_and_scales_the_rest() {
        for p in [0.05, 0.1, 0.5] {
            let dropout = Dropout { seed: 7, p };
            let mask = dropout.padded_mask(stream(3, 2), 4, 500, 128);
            let n = mask.len() as f64;
            let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64;
            // Binomial: the share is within 5 standard deviations of p.
            let sd = (p * (1.0 - p) / n).sqrt();
            assert!((dropped / n - p).abs() < 5.0 * sd, "p {p}: dropped share {}", dropped / n);
            assert!(mask.iter().all(|&m| m == 0.0 || m == dropout.scale()));
            // Inverted dropout keeps the mean: E[mask] = 1.
            let mean = mask.iter().map(|&m| m as f64).sum::<f64>() / n;
            assert!((mean - 1.0).abs() < 5.0 * sd / (1.0 - p), "p {p}: mean {mean}");
        }
    }

    #[test]
    fn masks_depend_on_seed_projection_and_token_only() {
        let dropout = Dropout { seed: 1, p: 0.5 };
        let row = |d: &Dropout, s: u64, t: u64| {
            let mut out = vec![0f32; 64];
            d.fill_token(s, t, &mut out);
            out
        };
        let base = row(&dropout, stream(0, 0), token_key(0, 0));
        assert_eq!(base, row(&dropout, stream(0, 0), token_key(0, 0)));
        assert_ne!(base, row(&Dropout { seed: 2, p: 0.5 }, stream(0, 0), token_key(0, 0)));
        assert_ne!(base, row(&dropout, stream(0, 1), token_key(0, 0)));
        assert_ne!(base, row(&dropout, stream(1, 0), token_key(0, 0)));
        assert_ne!(base, row(&dropout, stream(0, 0), token_key(0, 1)));
        assert_ne!(base, row(&dropout, stream(0, 0), token_key(1, 0)));
        // The packed form (one token per row) draws what the padded form draws at the same coordinates.
        let padded = dropout.padded_mask(stream(2, 5), 3, 4, 64);
        let tokens = [token_key(2, 1), token_key(0, 3)];
        let masked = dropout.apply(stream(2, 5), &tokens, &vec![1.0; 128]);
        assert_eq!(&masked[..64], &padded[(2 * 4 + 1) * 64..(2 * 4 + 2) * 64]);
        assert_eq!(&masked[64..], &padded[3 * 64..4 * 64]);
    }
}
