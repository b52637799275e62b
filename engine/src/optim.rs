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
            *g = (&*g * factor)?;
        }
        Ok(())
    }

    /// The L2 norm over all gradients together (computed in f64 from f32 squares).
    pub fn global_norm(&self) -> Result<f64> {
        let mut sum_sq = 0.0f64;
        for g in self.map.values() {
            let s: f32 = g.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_scalar()?;
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
                None => ParamState { step: 0, m: g.zeros_like()?, v: g.zeros_like()? },
            };
            let step = state.step + 1;

            // Decoupled weight decay, then the moments (torch: exp_avg.lerp_(g, 1-β1),
            // exp_avg_sq.mul_(β2).addcmul_(g, g, value=1-β2)).
            let theta = (var.as_tensor().detach().to_dtype(DType::F32)? * (1.0 - lr * weight_decay))?;
            let m = (&state.m + ((&g - &state.m)? * (1.0 - beta1))?)?;
            let v = ((&state.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;

            let bias_correction1 = 1.0 - beta1.powi(step as i32);
            let bias_correction2 = 1.0 - beta2.powi(step as i32);
            let step_size = lr / bias_correction1;
            let denom = ((v.sqrt()? / bias_correction2.sqrt())? + eps)?;
            let theta = (theta - (m.div(&denom)? * step_size)?)?;

            var.set(&theta.to_dtype(var.dtype())?)?;
            self.state.insert(name.clone(), ParamState { step, m, v });
        }
        Ok(())
    }

    /// Saves the state (moments as `exp_avg.<name>` / `exp_avg_sq.<name>`, step counts and
    /// hyper-parameters in the metadata) as one safetensors file.
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
            state.insert(name.to_string(), ParamState { step, m, v });
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
