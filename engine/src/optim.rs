//! Gradients by parameter name, global-norm clipping and AdamW, as PyTorch computes them.
//!
//! Owns the optimizer arithmetic and its resumable state:
//!
//! * [`Grads`]: gradients keyed by Hugging Face parameter name, which micro-batches can be
//!   summed into and scaled (gradient accumulation);
//! * [`clip_grad_norm`]: `torch.nn.utils.clip_grad_norm_` (one global L2 norm over all
//!   parameters, scale `max_norm / (norm + 1e-6)` capped at 1, returns the norm before
//!   clipping);
//! * [`AdamW`]: `torch.optim.AdamW` (decoupled decay `p -= lr·wd·p` on every parameter, bias
//!   correction, `eps` added outside the square root), whose state (per parameter: step, first
//!   and second moments) saves to and loads from a safetensors file.
//!
//! Mixed precision: the optimizer's arithmetic and state are float32 whatever the parameters' dtype.
//! A parameter stored in a lower precision (bf16) gets a float32 *master copy* in the optimizer
//! state: the update is applied to the master copy with float32 gradients, and the parameter receives
//! its rounding. Float32 parameters have no master copy (they are their own).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};

use crate::weights;

/// Gradients keyed by parameter name.
#[derive(Debug, Clone, Default)]
pub struct Grads {
    map: BTreeMap<String, Tensor>,
}

impl Grads {
    pub fn insert(&mut self, name: String, grad: Tensor) {
        self.map.insert(name, grad);
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.map.get(name)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.map.iter()
    }

    /// Adds `other` in (gradient accumulation); names missing here are taken over.
    pub fn accumulate(&mut self, other: &Grads) -> Result<()> {
        for (name, g) in &other.map {
            let sum = match self.map.get(name) {
                Some(mine) => (mine + g)?,
                None => g.clone(),
            };
            self.map.insert(name.clone(), sum);
        }
        Ok(())
    }

    /// Multiplies every gradient by `factor` (e.g. `1 / micro_batches`).
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for g in self.map.values_mut() {
            if fused::applies(g) {
                g.inplace_op1(&fused::Scale(factor as f32))?;
            } else {
                *g = (&*g * factor)?;
            }
        }
        Ok(())
    }

    /// The L2 norm over all gradients together (computed in f64 from f32 squares).
    pub fn global_norm(&self) -> Result<f64> {
        let mut sum_sq = 0.0f64;
        for g in self.map.values() {
            let s: f32 = match fused::applies(g) {
                true => fused::sum_sq(g)?,
                false => g.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_scalar()?,
            };
            sum_sq += s as f64;
        }
        Ok(sum_sq.sqrt())
    }
}

/// Clips `grads` in place to global L2 norm `max_norm` as `torch.nn.utils.clip_grad_norm_`
/// does, and returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut Grads, max_norm: f64) -> Result<f64> {
    let norm = grads.global_norm()?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        grads.scale(coef)?;
    }
    Ok(norm)
}

/// AdamW hyper-parameters (`lr` may change every step through [`AdamW::set_lr`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// torch.optim.AdamW's defaults.
    fn default() -> Self {
        AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
    }
}

/// What AdamW keeps for one parameter.
#[derive(Debug, Clone)]
struct ParamState {
    /// Updates applied to this parameter so far.
    step: u64,
    /// First moment (`exp_avg`).
    m: Tensor,
    /// Second moment (`exp_avg_sq`).
    v: Tensor,
    /// The float32 master copy of a parameter stored in a lower precision; `None` for float32 ones.
    master: Option<Tensor>,
}

/// `torch.optim.AdamW`, single-tensor path, one learning rate for all parameters.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    state: BTreeMap<String, ParamState>,
}

const STATE_FORMAT: &str = "engine-adamw-v1";

impl AdamW {
    pub fn new(config: AdamWConfig) -> AdamW {
        AdamW { config, state: BTreeMap::new() }
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Steps taken so far (the largest per-parameter count; 0 before the first step).
    pub fn steps(&self) -> u64 {
        self.state.values().map(|s| s.step).max().unwrap_or(0)
    }

    /// One update of every parameter that has a gradient. Like torch, a parameter without one
    /// is skipped entirely (no decay, no step count).
    pub fn step(&mut self, params: &[(String, Var)], grads: &Grads) -> Result<()> {
        let AdamWConfig { lr, beta1, beta2, eps, weight_decay } = self.config;
        for (name, var) in params {
            let Some(g) = grads.get(name) else { continue };
            if g.dims() != var.dims() {
                bail!("gradient of `{name}` has shape {:?}, parameter {:?}", g.dims(), var.dims());
            }
            let g = g.to_dtype(DType::F32)?;
            let state = match self.state.remove(name) {
                Some(s) => s,
                None => ParamState { step: 0, m: g.zeros_like()?, v: g.zeros_like()?, master: None },
            };
            let step = state.step + 1;
            let bias_correction1 = 1.0 - beta1.powi(step as i32);
            let bias_correction2 = 1.0 - beta2.powi(step as i32);
            let step_size = lr / bias_correction1;
            // The float32 weights the update applies to: the parameter itself, or its master copy (made
            // from the parameter at the first step).
            let low_precision = var.dtype() != DType::F32;
            let weights = match (&state.master, low_precision) {
                (Some(master), true) => master.clone(),
                _ => var.as_tensor().detach().to_dtype(DType::F32)?,
            };
            if [&weights, &g, &state.m, &state.v].into_iter().all(fused::applies) {
                // Float32 on the CPU: the same arithmetic in place, one pass per tensor (a float32
                // parameter's `weights` share its storage, so the parameter itself is updated).
                let (m, v) = (state.m, state.v);
                m.inplace_op2(&g, &fused::FirstMoment { beta1: beta1 as f32 })?;
                v.inplace_op2(&g, &fused::SecondMoment { beta2: beta2 as f32 })?;
                let update = fused::Update {
                    decay: (1.0 - lr * weight_decay) as f32,
                    step_size: step_size as f32,
                    sqrt_bias_correction2: bias_correction2.sqrt() as f32,
                    eps: eps as f32,
                };
                weights.inplace_op3(&m, &v, &update)?;
                if low_precision {
                    var.set(&weights.to_dtype(var.dtype())?)?;
                }
                let master = low_precision.then_some(weights);
                self.state.insert(name.clone(), ParamState { step, m, v, master });
                continue;
            }

            // Decoupled weight decay, then the moments (torch: exp_avg.lerp_(g, 1-β1),
            // exp_avg_sq.mul_(β2).addcmul_(g, g, value=1-β2)).
            let theta = (weights * (1.0 - lr * weight_decay))?;
            let m = (&state.m + ((&g - &state.m)? * (1.0 - beta1))?)?;
            let v = ((&state.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;

            let denom = ((v.sqrt()? / bias_correction2.sqrt())? + eps)?;
            let theta = (theta - (m.div(&denom)? * step_size)?)?;

            var.set(&theta.to_dtype(var.dtype())?)?;
            let master = low_precision.then_some(theta);
            self.state.insert(name.clone(), ParamState { step, m, v, master });
        }
        Ok(())
    }

    /// The float32 master copy of parameter `name`, if it is stored in a lower precision and has
    /// been updated (checkpoints save it instead of the rounded parameter).
    pub fn master(&self, name: &str) -> Option<&Tensor> {
        self.state.get(name).and_then(|s| s.master.as_ref())
    }

    /// Bytes of optimizer state per parameter element for parameters of `dtype`: two float32 moments,
    /// plus a float32 master copy when `dtype` is not float32.
    pub fn state_bytes_per_param(dtype: DType) -> usize {
        if dtype == DType::F32 {
            8
        } else {
            12
        }
    }

    /// Saves the state (moments as `exp_avg.<name>` / `exp_avg_sq.<name>`, master copies of
    /// low-precision parameters as `master.<name>`, step counts and hyper-parameters in the metadata)
    /// as one safetensors file.
    pub fn save_state(&self, path: impl AsRef<Path>) -> Result<()> {
        let c = &self.config;
        let mut tensors = Vec::with_capacity(2 * self.state.len());
        let mut meta = vec![
            ("optimizer".to_string(), STATE_FORMAT.to_string()),
            ("lr".to_string(), c.lr.to_string()),
            ("betas".to_string(), format!("{},{}", c.beta1, c.beta2)),
            ("eps".to_string(), c.eps.to_string()),
            ("weight_decay".to_string(), c.weight_decay.to_string()),
        ];
        for (name, s) in &self.state {
            tensors.push((format!("exp_avg.{name}"), s.m.clone()));
            tensors.push((format!("exp_avg_sq.{name}"), s.v.clone()));
            if let Some(master) = &s.master {
                tensors.push((format!("master.{name}"), master.clone()));
            }
            meta.push((format!("step.{name}"), s.step.to_string()));
        }
        weights::write_safetensors(path.as_ref(), &tensors, &meta)
    }

    /// Loads a state written by [`AdamW::save_state`]; the hyper-parameters are `config`'s
    /// (those in the file are informational).
    pub fn load_state(path: impl AsRef<Path>, config: AdamWConfig, device: &Device) -> Result<AdamW> {
        let path = path.as_ref();
        let (mut tensors, meta) = weights::read_safetensors(path, device)?;
        if meta.get("optimizer").map(String::as_str) != Some(STATE_FORMAT) {
            bail!("{}: not an optimizer state (metadata `optimizer` is not {STATE_FORMAT:?})", path.display());
        }
        let mut state = BTreeMap::new();
        for (key, value) in &meta {
            let Some(name) = key.strip_prefix("step.") else {
                continue;
            };
            let step: u64 = value
                .parse()
                .with_context(|| format!("{}: metadata `{key}` is not a step count: {value:?}", path.display()))?;
            let mut take = |prefix: &str| {
                tensors
                    .remove(&format!("{prefix}.{name}"))
                    .with_context(|| format!("{}: missing tensor `{prefix}.{name}`", path.display()))
            };
            let m = take("exp_avg")?;
            let v = take("exp_avg_sq")?;
            let master = tensors.remove(&format!("master.{name}"));
            state.insert(name.to_string(), ParamState { step, m, v, master });
        }
        if let Some(extra) = tensors.keys().next() {
            bail!("{}: tensor `{extra}` has no step count", path.display());
        }
        Ok(AdamW { config, state })
    }

    /// Checks that the state covers exactly these parameters with matching shapes (use after
    /// [`AdamW::load_state`] to catch a state saved for another model).
    pub fn check_matches(&self, params: &[(String, Var)]) -> Result<()> {
        let shapes: HashMap<&str, &[usize]> = params.iter().map(|(n, v)| (n.as_str(), v.dims())).collect();
        for (name, s) in &self.state {
            match shapes.get(name.as_str()) {
                None => bail!("optimizer state has parameter `{name}`, which the model lacks"),
                Some(dims) if *dims != s.m.dims() => {
                    bail!("optimizer state of `{name}` has shape {:?}, parameter {:?}", s.m.dims(), dims)
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// AdamW's and clipping's element-wise work on contiguous float32 CPU tensors, in place, on the
/// kernels of [`crate::kernels`]: the same arithmetic as the composed ops (constants rounded to
/// float32 as candle rounds them), without a fresh tensor per intermediate.
mod fused {
    use crate::kernels::{self, CHUNK};
    use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, InplaceOp3, Layout, Result, Storage, Tensor};
    use rayon::prelude::*;

    pub fn applies(t: &Tensor) -> bool {
        crate::ops::fused(t) && t.is_contiguous()
    }

    fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
        crate::ops::cpu_f32(s, l, "adamw")
    }

    fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
        let (a, b) =
            l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("expected a contiguous tensor".into()))?;
        match s {
            CpuStorage::F32(v) => Ok(&mut v[a..b]),
            _ => candle_core::bail!("expected a float32 tensor"),
        }
    }

    /// Σ x² in float32 (partial sums per chunk, chunks summed in order).
    pub fn sum_sq(t: &Tensor) -> Result<f32> {
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("expected a CPU tensor") };
        let x = slice(cpu, layout)?;
        let partial: Vec<f32> = x.par_chunks(CHUNK).map(kernels::sum_of_squares).collect();
        Ok(partial.iter().sum())
    }

    pub struct Scale(pub f32);

    impl InplaceOp1 for Scale {
        fn name(&self) -> &'static str {
            "scale"
        }
        fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
            slice_mut(s, l)?.par_chunks_mut(CHUNK).for_each(|c| kernels::scale(c, self.0));
            Ok(())
        }
    }

    /// `m += (g - m) · (1 - β1)`.
    pub struct FirstMoment {
        pub beta1: f32,
    }

    impl InplaceOp2 for FirstMoment {
        fn name(&self) -> &'static str {
            "adamw-first-moment"
        }
        fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
            let (m, g) = (slice_mut(s1, l1)?, slice(s2, l2)?);
            m.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .for_each(|(m, g)| kernels::adamw_first_moment(m, g, self.beta1));
            Ok(())
        }
    }

    /// `v = v · β2 + g² · (1 - β2)`.
    pub struct SecondMoment {
        pub beta2: f32,
    }

    impl InplaceOp2 for SecondMoment {
        fn name(&self) -> &'static str {
            "adamw-second-moment"
        }
        fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
            let (v, g) = (slice_mut(s1, l1)?, slice(s2, l2)?);
            v.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .for_each(|(v, g)| kernels::adamw_second_moment(v, g, self.beta2));
            Ok(())
        }
    }

    /// `θ = θ · (1 - lr·wd) - m / (√v / √bc2 + eps) · step_size`.
    pub struct Update {
        pub decay: f32,
        pub step_size: f32,
        pub sqrt_bias_correction2: f32,
        pub eps: f32,
    }

    impl InplaceOp3 for Update {
        fn name(&self) -> &'static str {
            "adamw-update"
        }
        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<()> {
            let (theta, m, v) = (slice_mut(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
            theta.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK)).zip(v.par_chunks(CHUNK)).for_each(|((t, m), v)| {
                kernels::adamw_update(t, m, v, self.decay, self.step_size, self.sqrt_bias_correction2, self.eps)
            });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic float32 values in [-scale, scale) that bf16 holds exactly (8 significant bits).
    fn bf16_exact(shape: &[usize], seed: u64, scale: f32) -> Result<Tensor> {
        let mut state = seed;
        let values: Vec<f32> = (0..shape.iter().product())
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(DType::BF16)?.to_dtype(DType::F32)?)
    }

    /// AdamW on bf16 parameters keeps float32 master weights that follow the float32 optimizer exactly
    /// (same float32 gradients, bf16-exact starting values), and the bf16 parameters are their rounding.
    #[test]
    fn bf16_master_weights_match_f32_adamw_within_bf16_rounding() -> Result<()> {
        let config = AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01 };
        let shapes: [(&str, &[usize]); 2] = [("w", &[8, 16]), ("b", &[16])];
        let mut f32_params = Vec::new();
        let mut bf16_params = Vec::new();
        for (i, (name, shape)) in shapes.iter().enumerate() {
            let init = bf16_exact(shape, i as u64 + 1, 2.0)?;
            f32_params.push((name.to_string(), Var::from_tensor(&init)?));
            bf16_params.push((name.to_string(), Var::from_tensor(&init.to_dtype(DType::BF16)?)?));
        }
        let initial: Vec<Vec<f32>> = bf16_params
            .iter()
            .map(|(_, v)| v.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1())
            .collect::<candle_core::Result<_>>()?;
        let (mut exact, mut mixed) = (AdamW::new(config), AdamW::new(config));
        for _ in 0..30 {
            let mut grads = Grads::default();
            for (i, (name, shape)) in shapes.iter().enumerate() {
                // The same gradient every step, so the updates add up instead of cancelling.
                grads.insert(name.to_string(), bf16_exact(shape, 100 + i as u64, 0.5)?);
            }
            exact.step(&f32_params, &grads)?;
            mixed.step(&bf16_params, &grads)?;
        }
        for ((name, want), ((_, got), start)) in f32_params.iter().zip(bf16_params.iter().zip(&initial)) {
            let want: Vec<f32> = want.as_tensor().flatten_all()?.to_vec1()?;
            let master: Vec<f32> =
                mixed.master(name).expect("a bf16 parameter has a master copy").flatten_all()?.to_vec1()?;
            assert_eq!(master, want, "{name}: the master copy is the float32 optimizer's parameter");
            assert_eq!(got.dtype(), DType::BF16);
            let got: Vec<f32> = got.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            for (g, w) in got.iter().zip(&want) {
                // Round to nearest: within half a bf16 unit in the last place, 2^-8 relative.
                assert!((g - w).abs() <= w.abs() * 2f32.powi(-8), "{name}: bf16 {g} vs f32 {w}");
            }
            // 30 updates of ~lr each add up to more than a bf16 step: without master weights, each
            // update alone would round away and the parameters would not move.
            let moved = got.iter().zip(start).filter(|(g, s)| g != s).count();
            assert!(moved > got.len() / 2, "{name}: only {moved} of {} bf16 values moved", got.len());
        }
        assert!(exact.master("w").is_none(), "float32 parameters have no master copy");
        Ok(())
    }

    #[test]
    fn master_weights_survive_save_and_load() -> Result<()> {
        let dev = Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0, 0.5], &dev)?.to_dtype(DType::BF16)?)?;
        let params = vec![("p".to_string(), var)];
        let mut grads = Grads::default();
        grads.insert("p".to_string(), Tensor::new(&[0.1f32, 0.2, -0.3], &dev)?);
        let mut opt = AdamW::new(AdamWConfig::default());
        opt.step(&params, &grads)?;
        let dir = tempfile::tempdir()?;
        opt.save_state(dir.path().join("opt.safetensors"))?;
        let loaded = AdamW::load_state(dir.path().join("opt.safetensors"), AdamWConfig::default(), &dev)?;
        let (a, b) = (opt.master("p").expect("master"), loaded.master("p").expect("master after load"));
        assert_eq!(a.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
        Ok(())
    }
}
