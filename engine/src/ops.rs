//! Differentiable building blocks of the decoder, written with plain tensor ops.
//!
//! candle's fused `rms_norm`, `softmax_last_dim` and `rope` kernels record no backward pass, so
//! a model built on them trains nothing and says nothing. Everything here is composed of ops
//! that candle's autograd knows (mul, add, exp, log, sqrt, sum, narrow, cat, gather, ...), and
//! the reductions mirror what Hugging Face transformers computes, so that log-probabilities
//! agree with it to float32 rounding.
//!
//! This is the autograd path: bf16 and CUDA training, inference, and the independent reference
//! that the hand-written float32 CPU pass (`model::backprop`, on the kernels of `crate::kernels`) is
//! tested against. Only [`linear`] fuses (one graph node around gemm), and two nodes write out their
//! backward ([`masked_softmax`], [`token_logprobs_any`]) to keep the graph small.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Storage, Tensor, D,
};

/// Threads candle's CPU kernels use (gemm's matmuls on rayon, element-wise maps on candle's pool):
/// `RAYON_NUM_THREADS` (or `CANDLE_NUM_THREADS` for the element-wise pool) if set, else the
/// physical cores. Both pools size themselves on first use, so set those variables before any op.
pub fn cpu_threads() -> usize {
    candle_core::utils::get_num_threads()
}

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
///
/// With float32 CPU tensors that track gradients, the product is one node of the autograd graph
/// ([`FusedLinear`]) rather than five (reshape, transpose, matmul, bias add, reshape), each of which
/// costs candle a zero-filled gradient and an addition in backward.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (out_dim, in_dim) = weight.dims2()?;
    let mut lead = x.dims().to_vec();
    lead.pop();
    let rows: usize = lead.iter().product();
    let tracked = x.track_op() || weight.track_op() || bias.is_some_and(Tensor::track_op);
    if tracked && fused(x) && fused(weight) && bias.is_none_or(fused) {
        // The product itself is candle's (gemm), on detached tensors; the node only adds the backward.
        let x2 = x.detach().reshape((rows, in_dim))?;
        let y = x2.matmul(&weight.detach().t()?)?;
        let y = match bias {
            Some(b) => y.broadcast_add(&b.detach())?,
            None => y,
        };
        lead.push(out_dim);
        let op = FusedLinear { y: y.reshape(lead)? };
        return match bias {
            Some(b) => x.apply_op3(weight, b, op),
            None => x.apply_op2(weight, op),
        };
    }
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

/// The gated MLP activation `silu(gate) · up` (SwiGLU).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    silu(gate)? * up
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

/// `softmax(scale · scores + mask)` over the last dimension, in float32 whatever the dtype of `scores`
/// (the product `scores · scale` is taken in their dtype first, as transformers' eager attention does);
/// `mask` is additive and broadcasts to `scores`. Returns float32 probabilities.
///
/// For scores that track gradients (the autograd training pass) it is one node of the autograd graph, its forward computed on detached tensors and its backward written out
/// (`d scores = scale · p · (g - Σ g·p)`): the graph keeps the scores and `p` only, where the
/// composition of candle ops would keep five float32 copies of the `[B, heads, T, T]` scores.
pub fn masked_softmax(scores: &Tensor, scale: f64, mask: &Tensor) -> Result<Tensor> {
    let compute = |s: &Tensor| softmax_last_dim(&(s * scale)?.to_dtype(DType::F32)?.broadcast_add(mask)?);
    if !scores.track_op() {
        return compute(scores);
    }
    let p = compute(&scores.detach())?;
    scores.apply_op1(Precomputed::new("masked-softmax", p, move |x: &Tensor, p: &Tensor, g: &Tensor| {
        let gp = (g * p)?;
        let dx = (&gp - p.broadcast_mul(&gp.sum_keepdim(D::Minus1)?)?)?;
        (dx * scale)?.to_dtype(x.dtype())
    }))
}

/// Log-probability of each next token, for any device and dtype: `logits` `[B, T, V]` and `ids`
/// `[B, T]` give `[B, T-1]`.
///
/// Every position is scored (the last against a dummy target) and the last column dropped at the end,
/// so no narrowed copy of the logits is made in either direction. With gradients tracked it is one
/// node of the graph whose backward writes `g · (onehot(target) - softmax)` (see [`masked_softmax`]
/// for why): the graph keeps the logits only, not the log-softmax's logit-sized temporaries.
pub fn token_logprobs_any(logits: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let t = logits.dim(1)?;
    // [B, T, 1]: the target of position t is ids[t + 1]; the last position gets ids[0] (ignored).
    let targets = Tensor::cat(&[&ids.narrow(1, 1, t - 1)?, &ids.narrow(1, 0, 1)?], 1)?.unsqueeze(2)?;
    let compute = |x: &Tensor| -> Result<(Tensor, Tensor)> {
        let lse = logsumexp_keepdim(x)?;
        Ok(((x.gather(&targets, 2)? - &lse)?, lse))
    };
    let logp = if logits.track_op() {
        let (logp, lse) = compute(&logits.detach())?;
        logits.apply_op1(Precomputed::new("token-logprobs", logp, move |x: &Tensor, _: &Tensor, g: &Tensor| {
            let p = x.detach().broadcast_sub(&lse)?.exp()?;
            p.broadcast_mul(g)?.neg()?.scatter_add(&targets, g, 2)
        }))?
    } else {
        compute(logits)?.0
    };
    logp.squeeze(2)?.narrow(1, 0, t - 1)
}

/// A node of the autograd graph whose value was computed outside it (on detached tensors, so that
/// none of the temporaries stay alive until backward) and whose backward is `backward(x, y, g)`.
/// The forward pass hands over a copy of the value on any device.
struct Precomputed<F> {
    name: &'static str,
    /// Taken by the forward pass.
    value: std::sync::Mutex<Option<Tensor>>,
    backward: F,
}

impl<F: Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync> Precomputed<F> {
    fn new(name: &'static str, value: Tensor, backward: F) -> Self {
        Precomputed { name, value: std::sync::Mutex::new(Some(value)), backward }
    }

    /// The value, once. `try_clone` copies a whole storage whatever the layout, so the value must be
    /// a fresh contiguous tensor (an element-wise op's output is), not a view into a larger one.
    fn take(&self) -> Result<Tensor> {
        let taken = self.value.lock().map(|mut v| v.take());
        let Ok(Some(value)) = taken else { candle_core::bail!("{}: the forward pass ran twice", self.name) };
        if value.layout().start_offset() != 0 || !value.is_contiguous() {
            candle_core::bail!("{}: the value must be a fresh contiguous tensor", self.name);
        }
        Ok(value)
    }
}

impl<F: Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync> CustomOp1 for Precomputed<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        let value = self.take()?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cpu(cpu) => Ok((cpu.try_clone(layout)?, value.shape().clone())),
            _ => candle_core::bail!("{}: the value is not on the CPU", self.name),
        }
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        let value = self.take()?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cuda(cuda) => Ok((cuda.try_clone(layout)?, value.shape().clone())),
            _ => candle_core::bail!("{}: the value is not on a CUDA device", self.name),
        }
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some((self.backward)(x, y, g)?))
    }
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

    /// The frequency of each pair of dimensions, scaling applied.
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
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
///
/// The tables broadcast to `x` (`[T, head_dim]`, or per row `[B, 1, T, head_dim]`).
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

// ---------------------------------------------------------------------------------------------
// The fused linear node of the autograd pass on float32 CPU tensors.
//
// The element-wise kernels of the CPU float32 path live once, in `crate::kernels`, for the
// hand-written pass; the ops above are the composed reference that autograd differentiates.
// ---------------------------------------------------------------------------------------------

/// Whether a tensor is float32 on the CPU (where [`linear`] fuses, and AdamW updates in place).
pub fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

pub(crate) fn cpu_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&storage.as_slice::<f32>()?[start..end]),
        None => candle_core::bail!("{op}: expected a contiguous input"),
    }
}

/// Calls `f` with the float32 values of a CPU tensor (copied only if it is not contiguous).
fn with_f32<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(cpu_f32(cpu, layout, op)?),
        _ => candle_core::bail!("{op}: expected a CPU tensor"),
    }
}

/// `y = x @ wᵀ (+ b)`, already computed (`y`); the op hands it to the graph and differentiates it.
struct FusedLinear {
    y: Tensor,
}

impl FusedLinear {
    fn output(&self) -> Result<(CpuStorage, Shape)> {
        let y = self.y.contiguous()?;
        let data = with_f32(&y, "fused-linear", |v| Ok(v.to_vec()))?;
        Ok((CpuStorage::F32(data), y.shape().clone()))
    }

    /// `(dx, dw, db)` for upstream gradient `g` (`[.., out]`).
    fn grads(x: &Tensor, w: &Tensor, g: &Tensor, bias: bool) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (out_dim, in_dim) = w.dims2()?;
        let rows = x.elem_count() / in_dim;
        let g = g.detach().reshape((rows, out_dim))?;
        let dx = g.matmul(&w.detach())?.reshape(x.shape())?;
        let dw = g.t()?.matmul(&x.detach().reshape((rows, in_dim))?)?;
        let db = if bias { Some(g.sum(0)?) } else { None };
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for FusedLinear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.output()
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = Self::grads(x, w, g, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for FusedLinear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.output()
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = Self::grads(x, w, g, true)?;
        Ok((Some(dx), Some(dw), db))
    }
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

    /// Deterministic pseudo-random values in [-scale, scale).
    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn var(shape: &[usize], seed: u64, scale: f32) -> anyhow::Result<Var> {
        let n = shape.iter().product();
        Ok(Var::from_vec(values(n, seed, scale), shape, &Device::Cpu)?)
    }

    /// Output and gradients (of `Σ out · r` for a fixed random `r`) with respect to `inputs`.
    fn output_and_grads(out: &Tensor, inputs: &[&Var]) -> anyhow::Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let r = Tensor::from_vec(values(out.elem_count(), 99, 1.0), out.shape(), out.device())?;
        let grads = (out * r)?.sum_all()?.backward()?;
        let g = inputs
            .iter()
            .map(|v| Ok(grads.get(v.as_tensor()).expect("gradient").flatten_all()?.to_vec1::<f32>()?))
            .collect::<anyhow::Result<_>>()?;
        Ok((out.flatten_all()?.to_vec1()?, g))
    }

    fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(worst <= tol, "{what}: max |diff| {worst} > {tol}");
    }

    // The fused linear node and the nodes with a written-out backward (forward on detached tensors)
    // against the plain composition autograd differentiates, forward and backward, tracked and not.

    #[test]
    fn fused_linear_matches_composed() -> anyhow::Result<()> {
        for (shape, out) in [([2usize, 3, 8], 5usize), ([4, 64, 96], 80)] {
            let (x, w, b) = (var(&shape, 9, 1.0)?, var(&[out, shape[2]], 10, 0.5)?, var(&[out], 11, 0.5)?);
            let composed = |bias: Option<&Tensor>| -> anyhow::Result<Tensor> {
                let y = x.as_tensor().reshape((shape[0] * shape[1], shape[2]))?.matmul(&w.as_tensor().t()?)?;
                let y = match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                };
                Ok(y.reshape((shape[0], shape[1], out))?)
            };
            let fused = output_and_grads(&linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()))?, &[&x, &w, &b])?;
            let want = output_and_grads(&composed(Some(b.as_tensor()))?, &[&x, &w, &b])?;
            assert_close("linear", &fused.0, &want.0, 1e-5);
            for (i, what) in ["dx", "dw", "db"].iter().enumerate() {
                assert_close(what, &fused.1[i], &want.1[i], 1e-4);
            }
            let fused = output_and_grads(&linear(x.as_tensor(), w.as_tensor(), None)?, &[&x, &w])?;
            let want = output_and_grads(&composed(None)?, &[&x, &w])?;
            assert_close("linear without bias", &fused.0, &want.0, 1e-5);
            assert_close("dx without bias", &fused.1[0], &want.1[0], 1e-4);
            assert_close("dw without bias", &fused.1[1], &want.1[1], 1e-4);
        }
        Ok(())
    }

    #[test]
    fn masked_softmax_matches_the_composed_softmax() -> anyhow::Result<()> {
        for shape in [[1usize, 2, 5, 5], [2, 3, 4, 7], [2, 4, 96, 96]] {
            let x = var(&shape, 3, 4.0)?;
            let (t, s) = (shape[2], shape[3]);
            let mask: Vec<f32> = (0..t)
                .flat_map(|i| (0..s).map(move |j| if j <= i + s - t { 0.0 } else { f32::NEG_INFINITY }))
                .collect();
            let mask = Tensor::from_vec(mask, (t, s), &Device::Cpu)?;
            let generic = output_and_grads(&masked_softmax(x.as_tensor(), 0.3, &mask)?, &[&x])?;
            let composed = softmax_last_dim(&(x.as_tensor() * 0.3)?.broadcast_add(&mask)?)?;
            let composed = output_and_grads(&composed, &[&x])?;
            assert_close("masked_softmax", &generic.0, &composed.0, 1e-6);
            assert_close("masked_softmax dx", &generic.1[0], &composed.1[0], 1e-6);
            let untracked = masked_softmax(&x.as_tensor().detach(), 0.3, &mask)?;
            assert_eq!(untracked.flatten_all()?.to_vec1::<f32>()?, generic.0);
        }
        Ok(())
    }

    #[test]
    fn token_logprobs_any_matches_the_composed_log_softmax() -> anyhow::Result<()> {
        for (b, t, v) in [(2usize, 4usize, 11usize), (3, 40, 1000)] {
            let x = var(&[b, t, v], 5, 5.0)?;
            let ids: Vec<u32> =
                values(b * t, 6, 1.0).iter().map(|u| ((u + 1.0) / 2.0 * v as f32) as u32 % v as u32).collect();
            let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu)?;
            let generic = output_and_grads(&token_logprobs_any(x.as_tensor(), &ids)?, &[&x])?;
            let narrowed = x.as_tensor().narrow(1, 0, t - 1)?.contiguous()?;
            let targets = ids.narrow(1, 1, t - 1)?.contiguous()?.unsqueeze(2)?;
            let composed = (narrowed.gather(&targets, 2)? - logsumexp_keepdim(&narrowed)?)?.squeeze(2)?;
            let composed = output_and_grads(&composed, &[&x])?;
            assert_close("token logprobs", &generic.0, &composed.0, 1e-5);
            assert_close("token logprobs dx", &generic.1[0], &composed.1[0], 1e-6);
            let untracked = token_logprobs_any(&x.as_tensor().detach(), &ids)?;
            assert_eq!(untracked.flatten_all()?.to_vec1::<f32>()?, generic.0);
        }
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
