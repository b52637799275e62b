//! Differentiable building blocks of the decoder, written with plain tensor ops.
//!
//! candle's fused `rms_norm`, `softmax_last_dim` and `rope` kernels record no backward pass, so
//! a model built on them trains nothing and says nothing. Everything here is composed of ops
//! that candle's autograd knows (mul, add, exp, log, sqrt, sum, narrow, cat, gather, ...), and
//! the reductions mirror what Hugging Face transformers computes, so that log-probabilities
//! agree with it to float32 rounding.

use candle_core::{DType, Device, Result, Tensor, D};

/// RMSNorm as in transformers: `w * (x / sqrt(mean(x²) + eps))`, computed in float32.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let mean_sq = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv_rms = (mean_sq + eps)?.sqrt()?.recip()?;
    let normed = x.broadcast_mul(&inv_rms)?.to_dtype(dtype)?;
    normed.broadcast_mul(weight)
}

/// `x @ wᵀ (+ b)` for `x` of shape `[.., in]` and a Hugging Face `[out, in]` weight.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (out_dim, in_dim) = weight.dims2()?;
    let mut lead = x.dims().to_vec();
    lead.pop();
    let rows: usize = lead.iter().product();
    let y = x.reshape((rows, in_dim))?.matmul(&weight.t()?)?;
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    lead.push(out_dim);
    y.reshape(lead)
}

/// SiLU (`x * sigmoid(x)`); candle's unary `silu` has a backward pass.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.silu()
}

/// Softmax over the last dimension: `exp(x - max) / Σ exp(x - max)`.
///
/// The max is detached: softmax does not depend on the shift, so no gradient should flow
/// through it (and then none has to flow through the max's arg-max mask).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&sum)
}

/// `log Σ exp(x)` over the last dimension, keeping it (shape `[.., 1]`).
pub fn logsumexp_keepdim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let sum = x.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?;
    sum.log()? + max
}

/// The rotation tables of rotary position embeddings for positions `0..seq_len`.
#[derive(Debug, Clone)]
pub struct Rope {
    /// One frequency per pair of dimensions (`head_dim / 2` of them), scaling applied.
    inv_freq: Vec<f64>,
}

impl Rope {
    /// Plain rope: `inv_freq[i] = theta^(-2i / head_dim)`.
    pub fn new(head_dim: usize, theta: f64) -> Rope {
        let inv_freq = (0..head_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64)).collect();
        Rope { inv_freq }
    }

    /// Llama-3 scaling (transformers' `_compute_llama3_parameters`): long wavelengths are
    /// slowed by `factor`, short ones are kept, and the band between is interpolated.
    pub fn llama3(
        head_dim: usize,
        theta: f64,
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    ) -> Rope {
        let old_context = original_max_position_embeddings as f64;
        let low_freq_wavelen = old_context / low_freq_factor;
        let high_freq_wavelen = old_context / high_freq_factor;
        let inv_freq = Rope::new(head_dim, theta)
            .inv_freq
            .into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < high_freq_wavelen {
                    f
                } else if wavelen > low_freq_wavelen {
                    f / factor
                } else {
                    let smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * f / factor + smooth * f
                }
            })
            .collect();
        Rope { inv_freq }
    }

    /// `(cos, sin)`, each `[seq_len, head_dim]` with the frequencies repeated for both halves,
    /// as transformers lays them out for `rotate_half`.
    pub fn tables(&self, seq_len: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(seq_len * 2 * half);
        let mut sin = Vec::with_capacity(seq_len * 2 * half);
        for pos in 0..seq_len {
            for _ in 0..2 {
                for f in &self.inv_freq {
                    // Angles in float32, as transformers computes them.
                    let angle = (pos as f32 * *f as f32) as f64;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let cos = Tensor::from_vec(cos, (seq_len, 2 * half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (seq_len, 2 * half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

/// Applies rope to `x` of shape `[B, heads, T, head_dim]`: `x·cos + rotate_half(x)·sin`, where
/// `rotate_half([a, b]) = [-b, a]` over the two halves of the last dimension.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let first = x.narrow(D::Minus1, 0, d / 2)?;
    let second = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&second.neg()?, &first], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// An additive causal mask `[T, T]`: 0 on and below the diagonal, -inf above.
pub fn causal_mask(seq_len: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> =
        (0..seq_len).flat_map(|i| (0..seq_len).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY })).collect();
    Tensor::from_vec(mask, (seq_len, seq_len), device)
}

/// Repeats each key/value head `groups` times: `[B, kv, T, d]` -> `[B, kv·groups, T, d]`,
/// so that query head `h` meets kv head `h / groups` (transformers' `repeat_kv`).
pub fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, d) = x.dims4()?;
    x.unsqueeze(2)?.broadcast_as((b, kv, groups, t, d))?.reshape((b, kv * groups, t, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn softmax_matches_definition_and_has_gradient() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_vec(vec![1.0f32, 2.0, 3.0, -1.0], (1, 4), &dev)?;
        let p = softmax_last_dim(x.as_tensor())?;
        let e: Vec<f32> = [1.0f32, 2.0, 3.0, -1.0].iter().map(|v| v.exp()).collect();
        let s: f32 = e.iter().sum();
        let want: Vec<f32> = e.iter().map(|v| v / s).collect();
        assert!(close(&p.flatten_all()?.to_vec1()?, &want, 1e-6));
        // d p_0 / d x = p_0 (δ_0j - p_j)
        let g = p.narrow(1, 0, 1)?.sum_all()?.backward()?;
        let g = g.get(x.as_tensor()).expect("gradient").flatten_all()?.to_vec1::<f32>()?;
        let want: Vec<f32> = (0..4).map(|j| want[0] * (if j == 0 { 1.0 } else { 0.0 } - want[j])).collect();
        assert!(close(&g, &want, 1e-6), "{g:?} vs {want:?}");
        Ok(())
    }

    #[test]
    fn rms_norm_and_rope_have_gradients() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_vec((0..16).map(|i| i as f32 * 0.1 - 0.7).collect(), (1, 1, 2, 8), &dev)?;
        let w = Var::from_vec(vec![1.5f32; 8], 8, &dev)?;
        let (cos, sin) = Rope::new(8, 10000.0).tables(2, DType::F32, &dev)?;
        let y = apply_rope(&rms_norm(x.as_tensor(), w.as_tensor(), 1e-6)?, &cos, &sin)?;
        let grads = (y.sqr()?.sum_all()? + y.sum_all()?)?.backward()?;
        for v in [&x, &w] {
            let g = grads.get(v.as_tensor()).expect("gradient");
            let n: f32 = g.abs()?.sum_all()?.to_scalar()?;
            assert!(n > 0.0);
        }
        Ok(())
    }
}
