//! Differentiable building blocks of the decoder, written with plain tensor ops.
//!
//! candle's fused `rms_norm`, `softmax_last_dim` and `rope` kernels record no backward pass, so
//! a model built on them trains nothing and says nothing. Everything here is composed of ops
//! that candle's autograd knows (mul, add, exp, log, sqrt, sum, narrow, cat, gather, ...), and
//! the reductions mirror what Hugging Face transformers computes, so that log-probabilities
//! agree with it to float32 rounding.

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
///
/// Float32 on the CPU runs as one fused op with a hand-written backward ([`FusedRmsNorm`]); other
/// dtypes and devices compose it from candle ops.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if fused(x) && fused(weight) {
        return x.contiguous()?.apply_op2(&weight.contiguous()?, FusedRmsNorm { eps: eps as f32 });
    }
    rms_norm_composed(x, weight, eps)
}

fn rms_norm_composed(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
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

/// The gated MLP activation `silu(gate) · up` (SwiGLU); one fused op on float32 CPU tensors, whose
/// backward replaces candle's eight-op silu gradient.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if fused(gate) && fused(up) && gate.dims() == up.dims() {
        return gate.contiguous()?.apply_op2(&up.contiguous()?, FusedSwiglu);
    }
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

/// Causal softmax of attention scores: `softmax(scale · scores + causal mask)` over the last
/// dimension, for `scores` `[.., T, S]` where query row `i` may see key columns `0..=i + S - T`
/// (its own position and everything before). Equal to `softmax_last_dim((scores · scale)
/// .broadcast_add(causal_mask))`, in one pass with a one-pass backward on float32 CPU tensors.
pub fn causal_softmax(scores: &Tensor, scale: f64) -> Result<Tensor> {
    let (t, s) = (scores.dim(D::Minus2)?, scores.dim(D::Minus1)?);
    if s < t {
        candle_core::bail!("causal_softmax: {s} keys for {t} queries");
    }
    if fused(scores) {
        return scores.contiguous()?.apply_op1(FusedCausalSoftmax { scale: scale as f32 });
    }
    causal_softmax_composed(scores, scale)
}

fn causal_softmax_composed(scores: &Tensor, scale: f64) -> Result<Tensor> {
    let (t, s) = (scores.dim(D::Minus2)?, scores.dim(D::Minus1)?);
    let device = scores.device();
    let mask: Vec<f32> =
        (0..t).flat_map(|i| (0..s).map(move |j| if j <= i + s - t { 0.0 } else { f32::NEG_INFINITY })).collect();
    let mask = Tensor::from_vec(mask, (t, s), device)?.to_dtype(scores.dtype())?;
    softmax_last_dim(&(scores * scale)?.broadcast_add(&mask)?)
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
/// For scores that track gradients (training on a device or dtype without the fused kernels) it is one
/// node of the autograd graph, its forward computed on detached tensors and its backward written out
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

/// Log-probability of each next token for any device and dtype (the float32 CPU case has
/// [`fused_token_logprobs`]): `logits` `[B, T, V]` and `ids` `[B, T]` give `[B, T-1]`.
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
/// With `[T, head_dim]` tables and float32 CPU tensors this is one fused op whose backward is the
/// inverse rotation; otherwise (e.g. per-row tables `[B, 1, T, head_dim]`) it is composed.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if fused(x) && fused(cos) && fused(sin) && x.rank() == 4 && cos.dims() == [x.dim(2)?, d] && sin.dims() == cos.dims()
    {
        return x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, FusedRope);
    }
    apply_rope_composed(x, cos, sin)
}

fn apply_rope_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
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

/// Log-probability of each next token, fused: `logits` `[B, T, V]` and `ids` `[B, T]` (u32) give
/// `[B, T-1]`, entry `t` being `log softmax(logits[t])[ids[t+1]]`; `None` where the fused kernel does
/// not apply (not float32 on the CPU), for the caller to compose it instead.
///
/// The backward writes `g · (onehot(target) - softmax)` straight into a gradient of the logits' full
/// shape (zero at the last position), with no narrowed copy of the logits in either direction.
pub fn fused_token_logprobs(logits: &Tensor, ids: &Tensor) -> Result<Option<Tensor>> {
    if !fused(logits) || ids.dtype() != DType::U32 {
        return Ok(None);
    }
    Ok(Some(logits.contiguous()?.apply_op2(&ids.contiguous()?, FusedTokenLogprobs)?))
}

// ---------------------------------------------------------------------------------------------
// Fused float32 CPU kernels with hand-written backward passes.
//
// candle's autograd records one node per op and, in backward, allocates a zero gradient per node
// and adds each contribution into it; the composed norms, rope and softmaxes above are 5-10 ops
// each. The kernels below do the same arithmetic in one pass forward and one pass backward. Their
// backward passes return plain tensors (no second-order gradients). Large ones run on candle's CPU
// thread pool.
// ---------------------------------------------------------------------------------------------

/// Work below this many elements runs on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// Whether the fused kernels apply: a float32 tensor on the CPU.
pub fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

pub(crate) fn cpu_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&storage.as_slice::<f32>()?[start..end]),
        None => candle_core::bail!("{op}: expected a contiguous input"),
    }
}

fn cpu_u32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [u32]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&storage.as_slice::<u32>()?[start..end]),
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

/// Calls `f(i, row)` for every row `i` of `out` (rows of `width` values), spread over candle's CPU
/// threads when the work is large.
fn for_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 {
        return;
    }
    let rows = out.len() / width;
    if out.len() < PAR_MIN || rows < 2 {
        out.chunks_mut(width).enumerate().for_each(|(i, row)| f(i, row));
        return;
    }
    let base = out.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
        for i in range {
            // SAFETY: each row index is handed out once, so the row slices are disjoint, and all
            // lie within `out`, which outlives this call.
            let row = unsafe { std::slice::from_raw_parts_mut((base as *mut f32).add(i * width), width) };
            f(i, row);
        }
    });
}

/// Σ x² in float32.
pub(crate) fn sum_sq(x: &[f32]) -> f32 {
    // Eight partial sums: vectorisable, and closer to torch's blocked reduction than one chain.
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k] * c[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// RMSNorm over the last dimension: `x` `[.., H]`, weight `[H]`.
struct FusedRmsNorm {
    eps: f32,
}

impl CustomOp2 for FusedRmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (cpu_f32(s1, l1, self.name())?, cpu_f32(s2, l2, self.name())?);
        let h = w.len();
        if h == 0 || l1.dims().last() != Some(&h) {
            candle_core::bail!("fused-rms-norm: weight {:?} does not match input {:?}", l2.dims(), l1.dims());
        }
        let mut y = vec![0f32; x.len()];
        for_rows(&mut y, h, |r, out| {
            let row = &x[r * h..(r + 1) * h];
            let inv = 1.0 / (sum_sq(row) / h as f32 + self.eps).sqrt();
            for ((o, &v), &wj) in out.iter_mut().zip(row).zip(w) {
                *o = (v * inv) * wj;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let h = w.elem_count();
        let (gx, gw) = with_f32(x, name, |x| {
            with_f32(w, name, |w| {
                with_f32(g, name, |g| {
                    let rows = x.len() / h;
                    let inv: Vec<f32> = (0..rows)
                        .map(|r| 1.0 / (sum_sq(&x[r * h..(r + 1) * h]) / h as f32 + self.eps).sqrt())
                        .collect();
                    // dx = inv · (g·w - x̂ · mean(g·w·x̂)), x̂ = x · inv.
                    let mut gx = vec![0f32; x.len()];
                    for_rows(&mut gx, h, |r, out| {
                        let (xr, gr, ir) = (&x[r * h..(r + 1) * h], &g[r * h..(r + 1) * h], inv[r]);
                        let mut proj = 0f32;
                        for j in 0..h {
                            proj += gr[j] * w[j] * xr[j];
                        }
                        let c = proj * ir * ir / h as f32;
                        for j in 0..h {
                            out[j] = ir * (gr[j] * w[j] - xr[j] * c);
                        }
                    });
                    // dw = Σ_rows g · x̂.
                    let mut gw = vec![0f32; h];
                    for r in 0..rows {
                        let (xr, gr, ir) = (&x[r * h..(r + 1) * h], &g[r * h..(r + 1) * h], inv[r]);
                        for j in 0..h {
                            gw[j] += gr[j] * (xr[j] * ir);
                        }
                    }
                    Ok((gx, gw))
                })
            })
        })?;
        Ok((Some(Tensor::from_vec(gx, x.shape(), x.device())?), Some(Tensor::from_vec(gw, w.shape(), w.device())?)))
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

/// `silu(gate) · up`, element-wise.
struct FusedSwiglu;

/// Calls `f(offset, chunk)` over `out` in chunks, spread over candle's CPU threads when large.
fn for_chunks(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    const CHUNK: usize = 1 << 14;
    let n = out.len();
    if n < PAR_MIN {
        f(0, out);
        return;
    }
    let base = out.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(CHUNK), |range| {
        for c in range {
            let (lo, hi) = (c * CHUNK, (c * CHUNK + CHUNK).min(n));
            // SAFETY: each chunk index is handed out once, so the slices are disjoint and within `out`.
            f(lo, unsafe { std::slice::from_raw_parts_mut((base as *mut f32).add(lo), hi - lo) });
        }
    });
}

impl CustomOp2 for FusedSwiglu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (gate, up) = (cpu_f32(s1, l1, self.name())?, cpu_f32(s2, l2, self.name())?);
        let mut y = vec![0f32; gate.len()];
        for_chunks(&mut y, |lo, out| {
            for (i, o) in out.iter_mut().enumerate() {
                let x = gate[lo + i];
                // candle's silu: x / (1 + e^-x)
                *o = (x / (1.0 + (-x).exp())) * up[lo + i];
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, gate: &Tensor, up: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let (d_gate, d_up) = with_f32(gate, name, |gate| {
            with_f32(up, name, |up| {
                with_f32(g, name, |g| {
                    // d up = g · silu(x); d gate = g · up · σ(x)·(1 + x·(1 - σ(x))).
                    let mut d_gate = vec![0f32; gate.len()];
                    let mut d_up = vec![0f32; gate.len()];
                    let d_up_base = d_up.as_mut_ptr() as usize;
                    for_chunks(&mut d_gate, |lo, out| {
                        // SAFETY: the same disjoint range of `d_up` as `out` is of `d_gate`.
                        let du = unsafe { std::slice::from_raw_parts_mut((d_up_base as *mut f32).add(lo), out.len()) };
                        for (i, o) in out.iter_mut().enumerate() {
                            let x = gate[lo + i];
                            let sig = 1.0 / (1.0 + (-x).exp());
                            du[i] = g[lo + i] * (x * sig);
                            *o = g[lo + i] * up[lo + i] * (sig * (1.0 + x * (1.0 - sig)));
                        }
                    });
                    Ok((d_gate, d_up))
                })
            })
        })?;
        Ok((
            Some(Tensor::from_vec(d_gate, gate.shape(), gate.device())?),
            Some(Tensor::from_vec(d_up, up.shape(), up.device())?),
        ))
    }
}

/// `softmax(scale · s)` over the last dimension of `[.., T, S]` with key `j` hidden from query `i`
/// when `j > i + S - T`.
struct FusedCausalSoftmax {
    scale: f32,
}

impl FusedCausalSoftmax {
    /// Keys visible to row `r` of a `[.., T, S]` tensor.
    fn visible(r: usize, t: usize, s: usize) -> usize {
        (r % t) + s - t + 1
    }
}

impl CustomOp1 for FusedCausalSoftmax {
    fn name(&self) -> &'static str {
        "fused-causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(storage, layout, self.name())?;
        let dims = layout.dims();
        let (t, s) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let mut p = vec![0f32; x.len()];
        for_rows(&mut p, s, |r, out| {
            let n = Self::visible(r, t, s);
            let row = &x[r * s..r * s + n];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * self.scale));
            let mut sum = 0f32;
            for (o, &v) in out[..n].iter_mut().zip(row) {
                *o = (v * self.scale - max).exp();
                sum += *o;
            }
            for o in &mut out[..n] {
                *o /= sum;
            }
        });
        Ok((CpuStorage::F32(p), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, p: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let name = self.name();
        let (t, s) = (x.dim(D::Minus2)?, x.dim(D::Minus1)?);
        let gx = with_f32(p, name, |p| {
            with_f32(g, name, |g| {
                // ds = scale · p · (g - Σ g·p)
                let mut gx = vec![0f32; p.len()];
                for_rows(&mut gx, s, |r, out| {
                    let n = Self::visible(r, t, s);
                    let (pr, gr) = (&p[r * s..r * s + n], &g[r * s..r * s + n]);
                    let c = dot(pr, gr);
                    for j in 0..n {
                        out[j] = self.scale * pr[j] * (gr[j] - c);
                    }
                });
                Ok(gx)
            })
        })?;
        Ok(Some(Tensor::from_vec(gx, x.shape(), x.device())?))
    }
}

/// Rope on `[B, heads, T, d]` with `[T, d]` tables.
struct FusedRope;

/// `y = x·cos + rotate_half(x)·sin` row by row over `[.., T, d]`, or with `inverse` the transposed
/// rotation (rope's backward).
fn rope_rows(x: &[f32], cos: &[f32], sin: &[f32], t: usize, d: usize, inverse: bool) -> Vec<f32> {
    let half = d / 2;
    let mut y = vec![0f32; x.len()];
    for_rows(&mut y, d, |r, out| {
        let (xr, pos) = (&x[r * d..(r + 1) * d], r % t);
        let (c, s) = (&cos[pos * d..(pos + 1) * d], &sin[pos * d..(pos + 1) * d]);
        for i in 0..half {
            let (a, b) = (xr[i], xr[i + half]);
            if inverse {
                // The transpose of the rotation: dx_a = g_a·cos_a + g_b·sin_b, dx_b = g_b·cos_b - g_a·sin_a.
                out[i] = a * c[i] + b * s[i + half];
                out[i + half] = b * c[i + half] - a * s[i];
            } else {
                out[i] = a * c[i] + (-b) * s[i];
                out[i + half] = b * c[i + half] + a * s[i + half];
            }
        }
    });
    y
}

impl CustomOp3 for FusedRope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, cos, sin) = (cpu_f32(s1, l1, name)?, cpu_f32(s2, l2, name)?, cpu_f32(s3, l3, name)?);
        let dims = l1.dims();
        let (t, d) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        Ok((CpuStorage::F32(rope_rows(x, cos, sin, t, d, false)), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let (t, d) = (x.dim(D::Minus2)?, x.dim(D::Minus1)?);
        let gx = with_f32(g, name, |g| {
            with_f32(cos, name, |cos| with_f32(sin, name, |sin| Ok(rope_rows(g, cos, sin, t, d, true))))
        })?;
        Ok((Some(Tensor::from_vec(gx, x.shape(), x.device())?), None, None))
    }
}

/// `log softmax(logits[b, t])[ids[b, t + 1]]` for `t < T - 1`.
struct FusedTokenLogprobs;

impl FusedTokenLogprobs {
    /// `log Σ exp(row)`, as `logsumexp_keepdim` computes it (max shifted out).
    fn logsumexp(row: &[f32]) -> f32 {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut acc = [0f32; 8];
        let chunks = row.chunks_exact(8);
        let tail: f32 = chunks.remainder().iter().map(|&v| (v - max).exp()).sum();
        for c in chunks {
            for k in 0..8 {
                acc[k] += (c[k] - max).exp();
            }
        }
        (acc.iter().sum::<f32>() + tail).ln() + max
    }
}

impl CustomOp2 for FusedTokenLogprobs {
    fn name(&self) -> &'static str {
        "fused-token-logprobs"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (logits, ids) = (cpu_f32(s1, l1, self.name())?, cpu_u32(s2, l2, self.name())?);
        let (b, t, v) = l1.shape().dims3()?;
        if l2.dims() != [b, t] || t < 2 {
            candle_core::bail!("fused-token-logprobs: ids {:?} for logits {:?}", l2.dims(), l1.dims());
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= v) {
            candle_core::bail!("fused-token-logprobs: token id {bad} is out of range for {v} logits");
        }
        // One output value per row; rows of width 1 keep the split over threads simple.
        let mut out = vec![0f32; b * (t - 1)];
        let work = |i: usize, o: &mut [f32]| {
            let (row_b, row_t) = (i / (t - 1), i % (t - 1));
            let row = &logits[(row_b * t + row_t) * v..(row_b * t + row_t + 1) * v];
            let target = ids[row_b * t + row_t + 1] as usize;
            o[0] = row[target] - Self::logsumexp(row);
        };
        if out.len() * v < PAR_MIN {
            out.chunks_mut(1).enumerate().for_each(|(i, o)| work(i, o));
        } else {
            let base = out.as_mut_ptr() as usize;
            candle_core::utils::barrier_pool().execute_chunked(out.len(), |range| {
                for i in range {
                    // SAFETY: each index is handed out once and lies within `out`.
                    work(i, unsafe { std::slice::from_raw_parts_mut((base as *mut f32).add(i), 1) });
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, t - 1))))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        ids: &Tensor,
        logp: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let (_, t, v) = logits.dims3()?;
        let ids: Vec<u32> = ids.flatten_all()?.to_vec1()?;
        let grad = with_f32(logits, name, |x| {
            with_f32(logp, name, |logp| {
                with_f32(g, name, |g| {
                    let mut grad = vec![0f32; x.len()];
                    for_rows(&mut grad, v, |r, out| {
                        let (row_b, row_t) = (r / t, r % t);
                        if row_t == t - 1 {
                            return; // the last position predicts nothing
                        }
                        let i = row_b * (t - 1) + row_t;
                        let (row, target, gi) = (&x[r * v..(r + 1) * v], ids[r + 1] as usize, g[i]);
                        // log Σ exp(row) = row[target] - logp, so no second pass over the row.
                        let lse = row[target] - logp[i];
                        for (o, &l) in out.iter_mut().zip(row) {
                            *o = -gi * (l - lse).exp();
                        }
                        out[target] += gi;
                    });
                    Ok(grad)
                })
            })
        })?;
        Ok((Some(Tensor::from_vec(grad, logits.shape(), logits.device())?), None))
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

    // Each fused kernel against the composition it replaces, forward and backward, on a small shape
    // (one thread) and one above PAR_MIN (split over the thread pool).

    #[test]
    fn fused_rms_norm_matches_composed() -> anyhow::Result<()> {
        for shape in [[2usize, 3, 8], [4, 64, 160]] {
            let (x, w) = (var(&shape, 1, 2.0)?, var(&shape[2..], 2, 1.0)?);
            let fused = output_and_grads(&rms_norm(x.as_tensor(), w.as_tensor(), 1e-6)?, &[&x, &w])?;
            let composed = output_and_grads(&rms_norm_composed(x.as_tensor(), w.as_tensor(), 1e-6)?, &[&x, &w])?;
            assert_close("rms_norm", &fused.0, &composed.0, 1e-5);
            assert_close("rms_norm dx", &fused.1[0], &composed.1[0], 1e-4);
            assert_close("rms_norm dw", &fused.1[1], &composed.1[1], 1e-3);
        }
        Ok(())
    }

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
    fn fused_swiglu_matches_composed() -> anyhow::Result<()> {
        for shape in [[2usize, 3, 8], [4, 64, 160]] {
            let (gate, up) = (var(&shape, 7, 6.0)?, var(&shape, 8, 2.0)?);
            let fused = output_and_grads(&swiglu(gate.as_tensor(), up.as_tensor())?, &[&gate, &up])?;
            let composed = (silu(gate.as_tensor())? * up.as_tensor())?;
            let composed = output_and_grads(&composed, &[&gate, &up])?;
            assert_close("swiglu", &fused.0, &composed.0, 1e-5);
            assert_close("swiglu d gate", &fused.1[0], &composed.1[0], 1e-5);
            assert_close("swiglu d up", &fused.1[1], &composed.1[1], 1e-5);
        }
        Ok(())
    }

    #[test]
    fn fused_causal_softmax_matches_composed() -> anyhow::Result<()> {
        // Square (training) and with more keys than queries (a cache before the new positions).
        for shape in [[1usize, 2, 5, 5], [2, 3, 4, 7], [2, 4, 96, 96]] {
            let x = var(&shape, 3, 4.0)?;
            let fused = output_and_grads(&causal_softmax(x.as_tensor(), 0.3)?, &[&x])?;
            let composed = output_and_grads(&causal_softmax_composed(x.as_tensor(), 0.3)?, &[&x])?;
            assert_close("causal_softmax", &fused.0, &composed.0, 1e-6);
            assert_close("causal_softmax dx", &fused.1[0], &composed.1[0], 1e-6);
        }
        Ok(())
    }

    #[test]
    fn fused_rope_matches_composed() -> anyhow::Result<()> {
        for shape in [[1usize, 2, 3, 8], [2, 4, 64, 64]] {
            let x = var(&shape, 4, 1.0)?;
            let (cos, sin) = Rope::new(shape[3], 10000.0).tables(shape[2], DType::F32, &Device::Cpu)?;
            let fused = output_and_grads(&apply_rope(x.as_tensor(), &cos, &sin)?, &[&x])?;
            let composed = output_and_grads(&apply_rope_composed(x.as_tensor(), &cos, &sin)?, &[&x])?;
            assert_close("rope", &fused.0, &composed.0, 1e-6);
            assert_close("rope dx", &fused.1[0], &composed.1[0], 1e-6);
        }
        Ok(())
    }

    #[test]
    fn fused_token_logprobs_matches_composed() -> anyhow::Result<()> {
        for (b, t, v) in [(2usize, 4usize, 11usize), (3, 40, 1000)] {
            let x = var(&[b, t, v], 5, 5.0)?;
            let ids: Vec<u32> =
                values(b * t, 6, 1.0).iter().map(|u| ((u + 1.0) / 2.0 * v as f32) as u32 % v as u32).collect();
            let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu)?;
            let fused = fused_token_logprobs(x.as_tensor(), &ids)?.expect("float32 on the CPU");
            let fused = output_and_grads(&fused, &[&x])?;
            let narrowed = x.as_tensor().narrow(1, 0, t - 1)?.contiguous()?;
            let targets = ids.narrow(1, 1, t - 1)?.contiguous()?.unsqueeze(2)?;
            let composed = (narrowed.gather(&targets, 2)? - logsumexp_keepdim(&narrowed)?)?.squeeze(2)?;
            let composed = output_and_grads(&composed, &[&x])?;
            assert_close("token logprobs", &fused.0, &composed.0, 1e-5);
            assert_close("token logprobs dx", &fused.1[0], &composed.1[0], 1e-6);
        }
        Ok(())
    }

    // The device-generic nodes (forward on detached tensors, backward written out) against the fused
    // float32 CPU kernels, forward and backward, tracked and not.

    #[test]
    fn masked_softmax_matches_the_fused_causal_softmax() -> anyhow::Result<()> {
        for shape in [[1usize, 2, 5, 5], [2, 3, 4, 7], [2, 4, 96, 96]] {
            let x = var(&shape, 3, 4.0)?;
            let (t, s) = (shape[2], shape[3]);
            let mask: Vec<f32> = (0..t)
                .flat_map(|i| (0..s).map(move |j| if j <= i + s - t { 0.0 } else { f32::NEG_INFINITY }))
                .collect();
            let mask = Tensor::from_vec(mask, (t, s), &Device::Cpu)?;
            let generic = output_and_grads(&masked_softmax(x.as_tensor(), 0.3, &mask)?, &[&x])?;
            let fused = output_and_grads(&causal_softmax(x.as_tensor(), 0.3)?, &[&x])?;
            assert_close("masked_softmax", &generic.0, &fused.0, 1e-6);
            assert_close("masked_softmax dx", &generic.1[0], &fused.1[0], 1e-6);
            let untracked = masked_softmax(&x.as_tensor().detach(), 0.3, &mask)?;
            assert_eq!(untracked.flatten_all()?.to_vec1::<f32>()?, generic.0);
        }
        Ok(())
    }

    #[test]
    fn token_logprobs_any_matches_the_fused_kernel() -> anyhow::Result<()> {
        for (b, t, v) in [(2usize, 4usize, 11usize), (3, 40, 1000)] {
            let x = var(&[b, t, v], 5, 5.0)?;
            let ids: Vec<u32> =
                values(b * t, 6, 1.0).iter().map(|u| ((u + 1.0) / 2.0 * v as f32) as u32 % v as u32).collect();
            let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu)?;
            let generic = output_and_grads(&token_logprobs_any(x.as_tensor(), &ids)?, &[&x])?;
            let fused = fused_token_logprobs(x.as_tensor(), &ids)?.expect("float32 on the CPU");
            let fused = output_and_grads(&fused, &[&x])?;
            assert_close("token logprobs", &generic.0, &fused.0, 1e-5);
            assert_close("token logprobs dx", &generic.1[0], &fused.1[0], 1e-6);
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
