//! The CPU float32 kernels, each written once: the hand-written training pass's element-wise and row
//! kernels (RMSNorm, rope, attention's online softmax, SwiGLU, logsumexp, the logit gradient) and
//! AdamW's in-place updates. Each is compiled for AVX-512, for AVX2+FMA and for the baseline target,
//! the best one picked at run time. Callers split the work over rayon in chunks of [`CHUNK`] values
//! (rows of [`rows_per_task`]), with `par_chunks_mut`, so that every task owns its part of the output.
//!
//! The crate builds for baseline x86-64 (SSE2), where these loops would run four lanes wide and
//! `exp` would be a libm call per element. Reductions keep sixteen explicit partial sums, so that
//! they vectorise and give the same result whichever copy runs; `exp` is a branch-free Cephes
//! polynomial (within 2 ulp of libm's on the ranges used here) that vectorises too.

/// Defines `fn $name` whose body is compiled three times (AVX-512F, AVX2+FMA, baseline); each call
/// runs the best copy the CPU supports. The copies are also reachable as `$name::portable`,
/// `$name::avx2` and `$name::avx512` (a module beside the function), so tests can compare them.
macro_rules! multiversion {
    ($(#[$attr:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        pub mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[inline(always)]
            pub fn portable($($arg: $ty),*) $(-> $ret)? $body

            /// # Safety
            /// The CPU must support AVX-512F, AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            pub unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }

            /// # Safety
            /// The CPU must support AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            pub unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }
        }

        $(#[$attr])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features this copy was compiled for.
                    return unsafe { $name::avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { $name::avx2($($arg),*) };
                }
            }
            $name::portable($($arg),*)
        }
    };
}

const LANES: usize = 16;

/// Element-wise work is split into parallel tasks of about this many values.
pub const CHUNK: usize = 1 << 13;

/// Rows of `width` values per parallel task, so that a task holds about [`CHUNK`] values.
pub fn rows_per_task(width: usize) -> usize {
    (CHUNK / width.max(1)).max(1)
}

/// `e^x` (Cephes' `expf`: range reduction by ln 2, degree-6 polynomial, exponent by bit shift).
/// Inputs are clamped to [-87, 88], so the result is finite and positive for finite `x` (below -87,
/// about 1.6e-38 instead of a smaller number or 0; above 88, 1.7e38 instead of more or infinity).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by adding and removing 1.5 · 2^23 (branch-free, vectorises).
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn lanes_sum(acc: [f32; LANES]) -> f32 {
    acc.iter().sum()
}

#[inline(always)]
fn max_of(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for k in 0..LANES {
            acc[k] = acc[k].max(c[k]);
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    lanes_sum(acc) + tail
}

/// `Σ e^(x - shift)`.
#[inline(always)]
fn sum_exp(x: &[f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| exp(v - shift)).sum();
    for c in chunks {
        for k in 0..LANES {
            acc[k] += exp(c[k] - shift);
        }
    }
    lanes_sum(acc) + tail
}

multiversion! {
    /// `acc += x`.
    pub fn add_assign(acc: &mut [f32], x: &[f32]) {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a += v;
        }
    }
}

multiversion! {
    /// One RMSNorm row: writes `w · x / rms` to `out` and returns `1 / rms`.
    pub fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> f32 {
        let inv = 1.0 / (dot(x, x) / x.len() as f32 + eps).sqrt();
        for ((o, &v), &wj) in out.iter_mut().zip(x).zip(w) {
            *o = (v * inv) * wj;
        }
        inv
    }
}

multiversion! {
    /// One RMSNorm backward row: `dx = inv · (g·w - x · inv² · mean(g·w·x))`.
    pub fn rms_norm_backward_row(g: &[f32], x: &[f32], w: &[f32], inv: f32, dx: &mut [f32]) {
        let mut acc = [0f32; LANES];
        let n = x.len();
        let full = n - n % LANES;
        for j in (0..full).step_by(LANES) {
            for k in 0..LANES {
                acc[k] += g[j + k] * w[j + k] * x[j + k];
            }
        }
        let tail: f32 = (full..n).map(|j| g[j] * w[j] * x[j]).sum();
        let c = (lanes_sum(acc) + tail) * inv * inv / n as f32;
        for j in 0..n {
            dx[j] = inv * (g[j] * w[j] - x[j] * c);
        }
    }
}

multiversion! {
    /// `dw += g · x · inv` for one row.
    pub fn rms_norm_weight_grad_row(dw: &mut [f32], g: &[f32], x: &[f32], inv: f32) {
        for ((d, &gj), &xj) in dw.iter_mut().zip(g).zip(x) {
            *d += gj * (xj * inv);
        }
    }
}

multiversion! {
    /// Rope on the heads of one row (`inverse`: the transposed rotation, rope's backward).
    pub fn rope_row(row: &mut [f32], cos: &[f32], sin: &[f32], head_dim: usize, inverse: bool) {
        let half = head_dim / 2;
        let (c1, c2) = cos.split_at(half);
        let (s1, s2) = sin.split_at(half);
        for head in row.chunks_exact_mut(head_dim) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x, y) = (a[i], b[i]);
                if inverse {
                    a[i] = x * c1[i] + y * s2[i];
                    b[i] = y * c2[i] - x * s1[i];
                } else {
                    a[i] = x * c1[i] - y * s1[i];
                    b[i] = y * c2[i] + x * s2[i];
                }
            }
        }
    }
}

multiversion! {
    /// `a · b`.
    pub fn dot_product(a: &[f32], b: &[f32]) -> f32 {
        dot(a, b)
    }
}

multiversion! {
    /// One query row of an online softmax over a block of keys. `row[..visible]` holds raw scores; they
    /// become `e^(scale·s - max')`, where `max'` is the running `max` raised to this block's largest
    /// scaled score, and the rest of the row (hidden keys) becomes 0. `max` and `sum` (of the
    /// exponentials so far, relative to `max`) are updated; the return value `e^(max - max')` rescales
    /// what earlier blocks accumulated (0 before the first visible key).
    pub fn online_softmax_block_row(row: &mut [f32], visible: usize, scale: f32, max: &mut f32, sum: &mut f32) -> f32 {
        let (seen, hidden) = row.split_at_mut(visible);
        hidden.fill(0.0);
        if seen.is_empty() {
            return 1.0;
        }
        let new_max = (max_of(seen) * scale).max(*max);
        let rescale = if *max == f32::NEG_INFINITY { 0.0 } else { exp(*max - new_max) };
        let mut acc = [0f32; LANES];
        let n = seen.len();
        let full = n - n % LANES;
        for j in (0..full).step_by(LANES) {
            for k in 0..LANES {
                let e = exp(seen[j + k] * scale - new_max);
                seen[j + k] = e;
                acc[k] += e;
            }
        }
        let mut block_sum = lanes_sum(acc);
        for s in &mut seen[full..] {
            *s = exp(*s * scale - new_max);
            block_sum += *s;
        }
        *sum = *sum * rescale + block_sum;
        *max = new_max;
        rescale
    }
}

multiversion! {
    /// A block row's probabilities again from its query's log-sum-exp: `row[..visible]` (raw scores)
    /// becomes `e^(scale·s - lse)`, the rest 0.
    pub fn softmax_block_row_from_lse(row: &mut [f32], visible: usize, scale: f32, lse: f32) {
        let (seen, hidden) = row.split_at_mut(visible);
        seen.iter_mut().for_each(|s| *s = exp(*s * scale - lse));
        hidden.fill(0.0);
    }
}

multiversion! {
    /// Softmax backward with the scale for one block row, in place on `d` (which holds `dp`):
    /// `ds = scale · p · (dp - delta)` on `d[..visible]`, 0 after, where `delta = Σ_j p_j · dp_j` over the
    /// query's whole row.
    pub fn softmax_block_backward_row(d: &mut [f32], p: &[f32], visible: usize, scale: f32, delta: f32) {
        let (seen, hidden) = d.split_at_mut(visible);
        for (ds, &pj) in seen.iter_mut().zip(p) {
            *ds = scale * pj * (*ds - delta);
        }
        hidden.fill(0.0);
    }
}

multiversion! {
    /// `silu(gate) · up` over a chunk.
    pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &x), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = (x / (1.0 + exp(-x))) * u;
        }
    }
}

multiversion! {
    /// `d up = g · silu(x)`, `d gate = g · up · σ(x) · (1 + x · (1 - σ(x)))` over a chunk.
    pub fn swiglu_backward(g: &[f32], gate: &[f32], up: &[f32], d_gate: &mut [f32], d_up: &mut [f32]) {
        for i in 0..d_gate.len() {
            let x = gate[i];
            let sig = 1.0 / (1.0 + exp(-x));
            d_up[i] = g[i] * (x * sig);
            d_gate[i] = g[i] * up[i] * (sig * (1.0 + x * (1.0 - sig)));
        }
    }
}

multiversion! {
    /// `log Σ exp(row)`, the max shifted out.
    pub fn logsumexp(row: &[f32]) -> f32 {
        let max = max_of(row);
        sum_exp(row, max).ln() + max
    }
}

multiversion! {
    /// The gradient of `-w · log softmax(row)[target]` in place: `w · (softmax(row) - onehot(target))`,
    /// with `lse` the row's log-sum-exp.
    pub fn nll_logits_grad_row(row: &mut [f32], lse: f32, w: f32, target: usize) {
        for l in row.iter_mut() {
            *l = w * exp(*l - lse);
        }
        row[target] -= w;
    }
}

multiversion! {
    /// `(entropy, top-1 probability)` of `softmax(row)`: `H = log Σe - Σ p·z` with `z = row - max`.
    pub fn entropy_and_top1(row: &[f32]) -> (f32, f32) {
        let max = max_of(row);
        let (mut sum, mut weighted) = ([0f32; LANES], [0f32; LANES]);
        let chunks = row.chunks_exact(LANES);
        let (mut sum_tail, mut weighted_tail) = (0f32, 0f32);
        for &l in chunks.remainder() {
            let z = l - max;
            let e = exp(z);
            sum_tail += e;
            weighted_tail += e * z;
        }
        for c in chunks {
            for k in 0..LANES {
                let z = c[k] - max;
                let e = exp(z);
                sum[k] += e;
                weighted[k] += e * z;
            }
        }
        let (sum, weighted) = (lanes_sum(sum) + sum_tail, lanes_sum(weighted) + weighted_tail);
        (sum.ln() - weighted / sum, 1.0 / sum)
    }
}

multiversion! {
    /// `Σ x²`.
    pub fn sum_of_squares(x: &[f32]) -> f32 {
        dot(x, x)
    }
}

multiversion! {
    /// `x *= c`.
    pub fn scale(x: &mut [f32], c: f32) {
        x.iter_mut().for_each(|v| *v *= c);
    }
}

multiversion! {
    /// AdamW's first moment, `m += (g - m) · (1 - β1)` (PyTorch's `lerp_`).
    pub fn adamw_first_moment(m: &mut [f32], g: &[f32], beta1: f32) {
        let k = 1.0 - beta1;
        m.iter_mut().zip(g).for_each(|(m, &g)| *m += (g - *m) * k);
    }
}

multiversion! {
    /// AdamW's second moment, `v = v · β2 + g² · (1 - β2)`.
    pub fn adamw_second_moment(v: &mut [f32], g: &[f32], beta2: f32) {
        let k = 1.0 - beta2;
        v.iter_mut().zip(g).for_each(|(v, &g)| *v = *v * beta2 + (g * g) * k);
    }
}

multiversion! {
    /// AdamW's parameter update, `θ = θ · decay - m / (√v / √bc2 + eps) · step_size`.
    pub fn adamw_update(theta: &mut [f32], m: &[f32], v: &[f32], decay: f32, step_size: f32, sqrt_bc2: f32, eps: f32) {
        for ((t, &m), &v) in theta.iter_mut().zip(m).zip(v) {
            let denom = v.sqrt() / sqrt_bc2 + eps;
            *t = *t * decay - (m / denom) * step_size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f32;
        for i in -87_000..88_000 {
            let x = i as f32 / 1000.0 + 0.000_37;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3.0 * f32::EPSILON, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        // Beyond the clamp: finite, and tiny or huge as the true value is (softmax and sigmoid need no more).
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
    }

    /// The portable copy's result, then those of the SIMD copies this CPU can run.
    #[cfg(target_arch = "x86_64")]
    fn each_copy<R>(portable: R, avx2: impl FnOnce() -> R, avx512: impl FnOnce() -> R) -> Vec<R> {
        let mut results = vec![portable];
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            results.push(avx2());
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            results.push(avx512());
        }
        results
    }

    #[cfg(target_arch = "x86_64")]
    fn assert_all_equal<T: PartialEq + std::fmt::Debug>(what: &str, results: &[T]) {
        for r in &results[1..] {
            assert_eq!(r, &results[0], "{what}: a SIMD copy differs from the portable one");
        }
    }

    /// The copies agree bit for bit (explicit partial sums, no fused multiply-adds), so results do not
    /// depend on which CPU ran them.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_copy_of_a_kernel_gives_the_same_bits() {
        let x: Vec<f32> = (0..1037).map(|i| (i as f32 * 0.37).sin() * 7.0).collect();
        let y: Vec<f32> = (0..1037).map(|i| (i as f32 * 0.11).cos() * 3.0).collect();
        let g: Vec<f32> = (0..1037).map(|i| (i as f32 * 0.05).sin()).collect();
        // SAFETY (all `unsafe` below): each_copy calls a copy only if the CPU has its features.
        let lse =
            each_copy(logsumexp::portable(&x), || unsafe { logsumexp::avx2(&x) }, || unsafe { logsumexp::avx512(&x) });
        assert_all_equal("logsumexp", &lse.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        let ent = each_copy(
            entropy_and_top1::portable(&x),
            || unsafe { entropy_and_top1::avx2(&x) },
            || unsafe { entropy_and_top1::avx512(&x) },
        );
        assert_all_equal("entropy", &ent.iter().map(|(a, b)| (a.to_bits(), b.to_bits())).collect::<Vec<_>>());

        // The bits of `start` after `f` has written into it.
        let bits = |start: Vec<f32>, f: &dyn Fn(&mut [f32])| {
            let mut out = start;
            f(&mut out);
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let online = |f: &dyn Fn(&mut [f32], &mut f32, &mut f32) -> f32| {
            let (mut row, mut max, mut sum) = (x.clone(), 1.5f32, 2.0f32);
            let rescale = f(&mut row, &mut max, &mut sum);
            (bits(row, &|_| ()), max.to_bits(), sum.to_bits(), rescale.to_bits())
        };
        let rows = each_copy(
            online(&|r, m, s| online_softmax_block_row::portable(r, 1000, 0.125, m, s)),
            || online(&|r, m, s| unsafe { online_softmax_block_row::avx2(r, 1000, 0.125, m, s) }),
            || online(&|r, m, s| unsafe { online_softmax_block_row::avx512(r, 1000, 0.125, m, s) }),
        );
        assert_all_equal("online softmax", &rows);

        let zeros = || vec![0f32; x.len()];
        let outs = each_copy(
            bits(zeros(), &|o| swiglu::portable(&x, &y, o)),
            || bits(zeros(), &|o| unsafe { swiglu::avx2(&x, &y, o) }),
            || bits(zeros(), &|o| unsafe { swiglu::avx512(&x, &y, o) }),
        );
        assert_all_equal("swiglu", &outs);

        let outs = each_copy(
            bits(zeros(), &|o| rms_norm_backward_row::portable(&g, &x, &y, 0.3, o)),
            || bits(zeros(), &|o| unsafe { rms_norm_backward_row::avx2(&g, &x, &y, 0.3, o) }),
            || bits(zeros(), &|o| unsafe { rms_norm_backward_row::avx512(&g, &x, &y, 0.3, o) }),
        );
        assert_all_equal("rms norm backward", &outs);

        // AdamW's update: each copy must round as candle's composed ops do, in float32, so resumed and
        // uninterrupted runs agree to the bit whichever machine runs them.
        let v: Vec<f32> = g.iter().map(|g| g * g).collect();
        let outs = each_copy(
            bits(x.clone(), &|t| adamw_update::portable(t, &y, &v, 0.999, 1e-3, 0.97, 1e-8)),
            || bits(x.clone(), &|t| unsafe { adamw_update::avx2(t, &y, &v, 0.999, 1e-3, 0.97, 1e-8) }),
            || bits(x.clone(), &|t| unsafe { adamw_update::avx512(t, &y, &v, 0.999, 1e-3, 0.97, 1e-8) }),
        );
        assert_all_equal("adamw update", &outs);
        let want: Vec<u32> = x
            .iter()
            .zip(&y)
            .zip(&v)
            .map(|((&t, &m), &v)| (t * 0.999 - (m / (v.sqrt() / 0.97 + 1e-8)) * 1e-3).to_bits())
            .collect();
        assert_eq!(outs[0], want, "adamw update: the written-out formula");
    }

    #[test]
    fn an_online_softmax_over_blocks_is_the_softmax_of_the_whole_row() {
        // Three blocks of 16 keys, the last one partly hidden (a query at position 40 sees keys 0..=40).
        let row: Vec<f32> = (0..48).map(|i| (i as f32 * 0.7).sin() * 5.0 + i as f32 * 0.2).collect();
        let (scale, seen) = (0.5f32, 41usize);
        let (mut max, mut sum, mut weighted) = (f32::NEG_INFINITY, 0f32, 0f32);
        let value = |j: usize| (j as f32 * 0.3).cos();
        for j0 in (0..48).step_by(16) {
            let mut block = row[j0..j0 + 16].to_vec();
            let visible = seen.saturating_sub(j0).min(16);
            let rescale = online_softmax_block_row(&mut block, visible, scale, &mut max, &mut sum);
            assert!(block[visible..].iter().all(|&v| v == 0.0));
            weighted = weighted * rescale + block.iter().enumerate().map(|(i, e)| e * value(j0 + i)).sum::<f32>();
        }
        let exps: Vec<f64> = row[..seen].iter().map(|&v| (scale as f64 * v as f64).exp()).collect();
        let denom: f64 = exps.iter().sum();
        let want: f64 = exps.iter().enumerate().map(|(j, e)| e * value(j) as f64).sum::<f64>() / denom;
        assert!((weighted as f64 / sum as f64 - want).abs() < 1e-6, "{} vs {want}", weighted / sum);
        let lse = max as f64 + (sum as f64).ln();
        assert!((lse - denom.ln()).abs() < 1e-5, "{lse} vs {}", denom.ln());
        // The probabilities recomputed from the log-sum-exp are the softmax's.
        let mut block = row[32..48].to_vec();
        softmax_block_row_from_lse(&mut block, seen - 32, scale, lse as f32);
        for (j, &p) in block.iter().enumerate().take(seen - 32) {
            assert!((p as f64 - exps[32 + j] / denom).abs() < 1e-6);
        }
        assert!(block[seen - 32..].iter().all(|&v| v == 0.0));
        let lse = logsumexp(&row) as f64;
        let want = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((lse - want).abs() < 1e-5);
    }
}
