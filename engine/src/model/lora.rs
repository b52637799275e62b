//! LoRA adapters (low-rank updates `W + s·B·A` of chosen projections) in Hugging Face PEFT's format.
//!
//! Owns the adapter configuration ([`LoraConfig`], PEFT's `adapter_config.json` keys), PEFT's default
//! initialisation (A Kaiming-uniform, B zero, seeded), the adapter files (`adapter_config.json` and
//! `adapter_model.safetensors` under PEFT's tensor names, which `peft.PeftModel.from_pretrained`
//! loads), loading an adapter made by PEFT, and merging an adapter into the base weights. With an
//! adapter attached the base is frozen: only the adapters are trainable parameters
//! ([`Model::trainable_params`]), and neither training pass computes a base weight's gradient.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var};
use serde_json::{json, Value};

use super::dropout::{self, Dropout};
use super::{Linear, Model};
use crate::weights;

/// The projections PEFT's `target_modules` may name here (`all-linear` is all of them; the output
/// head is never adapted, as in PEFT).
pub const LINEAR_MODULES: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// The adapter's file names, as PEFT writes them.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// Whether `dir` holds an adapter alone (PEFT's files and no `config.json` of a full model).
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG_FILE).is_file() && !dir.join("config.json").is_file()
}

/// The base model an adapter directory names (`base_model_name_or_path`), when that is a directory here.
fn adapter_base(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join(ADAPTER_CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let raw: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let base = raw.get("base_model_name_or_path").and_then(Value::as_str).unwrap_or("");
    let base = std::path::PathBuf::from(base);
    if base.as_os_str().is_empty() || !base.join("config.json").is_file() {
        bail!(
            "{} is a LoRA adapter whose base_model_name_or_path `{}` is not a model directory here; give the base model and the adapter separately (--model BASE --adapter {})",
            dir.display(),
            base.display(),
            dir.display()
        );
    }
    Ok(base)
}

/// What an adapter is: rank, scaling and the projections it adapts.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    /// Dropout on the adapter's input while training (PEFT's `lora_dropout`).
    pub dropout: f64,
    /// A subset of [`LINEAR_MODULES`], in that order.
    pub target_modules: Vec<String>,
    /// rsLoRA: scale `alpha / √r` instead of `alpha / r`.
    pub use_rslora: bool,
}

impl LoraConfig {
    /// Checks the values; `target_modules` are PEFT names or `all-linear`.
    pub fn new(r: usize, alpha: f64, dropout: f64, target_modules: &[String], use_rslora: bool) -> Result<LoraConfig> {
        if r == 0 {
            bail!("r must be at least 1");
        }
        if !alpha.is_finite() || alpha <= 0.0 {
            bail!("alpha must be a positive number, got {alpha}");
        }
        if !(0.0..1.0).contains(&dropout) {
            bail!("dropout must be in [0, 1), got {dropout}");
        }
        if target_modules.is_empty() {
            bail!("target_modules is empty: name at least one of {} or all-linear", LINEAR_MODULES.join(", "));
        }
        let all = target_modules.iter().any(|m| m == "all-linear");
        if let Some(bad) =
            target_modules.iter().find(|m| m.as_str() != "all-linear" && !LINEAR_MODULES.contains(&m.as_str()))
        {
            bail!("target module `{bad}` is not one of {} (or all-linear)", LINEAR_MODULES.join(", "));
        }
        let target_modules = LINEAR_MODULES
            .iter()
            .filter(|m| all || target_modules.iter().any(|t| t == *m))
            .map(|m| m.to_string())
            .collect();
        Ok(LoraConfig { r, alpha, dropout, target_modules, use_rslora })
    }

    /// The factor `s` of `W + s·B·A`.
    pub fn scale(&self) -> f64 {
        match self.use_rslora {
            true => self.alpha / (self.r as f64).sqrt(),
            false => self.alpha / self.r as f64,
        }
    }

    fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|m| m == module)
    }

    /// PEFT's `adapter_config.json` for this adapter on `base` (the base model's path or name).
    pub fn to_peft_json(&self, base: &str) -> Value {
        json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "r": self.r,
            // An integral alpha as an integer, as PEFT writes the usual `lora_alpha=16`.
            "lora_alpha": if self.alpha.fract() == 0.0 && self.alpha < 1e15 { json!(self.alpha as i64) } else { json!(self.alpha) },
            "lora_dropout": self.dropout,
            "target_modules": self.target_modules,
            "use_rslora": self.use_rslora,
            "bias": "none",
            "fan_in_fan_out": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "layers_pattern": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "use_dora": false,
            "revision": null,
        })
    }

    /// Reads PEFT's `adapter_config.json`, refusing (by key) what this engine does not implement.
    pub fn from_peft_json(path: &Path) -> Result<LoraConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let raw: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let at = |key: &str| format!("{}: `{key}`", path.display());
        let get = |key: &str| raw.get(key).filter(|v| !v.is_null());
        match get("peft_type").and_then(Value::as_str) {
            Some("LORA") => {}
            other => bail!("{}: peft_type {other:?}, expected \"LORA\"", at("peft_type")),
        }
        let r = get("r").and_then(Value::as_u64).with_context(|| format!("{} must be a positive integer", at("r")))?;
        let alpha = get("lora_alpha")
            .and_then(Value::as_f64)
            .with_context(|| format!("{} must be a number", at("lora_alpha")))?;
        let dropout = get("lora_dropout")
            .map_or(Some(0.0), Value::as_f64)
            .with_context(|| format!("{} must be a number", at("lora_dropout")))?;
        let use_rslora = get("use_rslora")
            .map_or(Some(false), Value::as_bool)
            .with_context(|| format!("{} must be true or false", at("use_rslora")))?;
        let targets: Vec<String> = match get("target_modules") {
            Some(Value::String(s)) if s == "all-linear" => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .with_context(|| format!("{} must be a list of module names", at("target_modules")))?,
            Some(other) => {
                bail!("{} is {other}: only a list of module names or \"all-linear\" is supported", at("target_modules"))
            }
            None => bail!("{} is missing", at("target_modules")),
        };
        // Keys that change the math, each only at its neutral value.
        type IsNeutral = dyn Fn(&Value) -> bool;
        let neutral: [(&str, &IsNeutral); 8] = [
            ("bias", &|v| v == "none"),
            ("use_dora", &|v| v == false),
            ("fan_in_fan_out", &|v| v == false),
            ("lora_bias", &|v| v == false),
            ("layers_to_transform", &|v| v.is_null()),
            ("modules_to_save", &|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty)),
            ("rank_pattern", &|v| v.as_object().is_some_and(|o| o.is_empty())),
            ("alpha_pattern", &|v| v.as_object().is_some_and(|o| o.is_empty())),
        ];
        for (key, ok) in neutral {
            if let Some(v) = raw.get(key).filter(|v| !v.is_null() && !ok(v)) {
                bail!("{} = {v} is not supported", at(key));
            }
        }
        LoraConfig::new(r as usize, alpha, dropout, &targets, use_rslora)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
    }
}

/// One adapted projection: `y = x Wᵀ + b + scale · (x Aᵀ) Bᵀ`, A `[r, in]`, B `[out, r]`.
#[derive(Debug, Clone)]
pub(super) struct Adapter {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    /// Which dropout mask this projection draws ([`dropout::stream`]).
    pub stream: u64,
}

/// The model's adapter: its configuration and its parameters under PEFT's names.
#[derive(Debug, Clone)]
pub(super) struct Lora {
    pub config: LoraConfig,
    pub params: Vec<(String, Var)>,
    /// The seed of the next training passes' dropout masks ([`Model::set_dropout_seed`]).
    pub dropout_seed: u64,
}

/// PEFT's name of a projection's adapter tensor (`which` = `lora_A` or `lora_B`).
fn peft_name(layer: usize, module: &str, which: &str) -> String {
    // The first four of LINEAR_MODULES are attention's, the rest the MLP's.
    let group = if LINEAR_MODULES[..4].contains(&module) { "self_attn" } else { "mlp" };
    format!("base_model.model.model.layers.{layer}.{group}.{module}.{which}.weight")
}

/// One U(0, 1) draw (splitmix64, 53 bits).
fn uniform(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

impl Model {
    /// Loads an adapter directory on the base model its `adapter_config.json` names
    /// ([`is_adapter_dir`]); the base's files (tokenizer and all) are then the model's `source_dir`.
    pub(super) fn load_adapter_dir(dir: &Path, device: &candle_core::Device, dtype: DType) -> Result<Model> {
        let base = adapter_base(dir)?;
        let mut model = Model::load_with_dtype(&base, device, dtype)?;
        model.load_adapter(dir)?;
        Ok(model)
    }

    /// Attaches a fresh adapter as PEFT initialises one: A from `kaiming_uniform_(a=√5)`, i.e.
    /// U(-1/√in, 1/√in), B zero (so the model's outputs do not change), deterministic in `seed`. The
    /// adapters are float32 whatever the base's dtype; the base is frozen from now on.
    pub fn add_lora(&mut self, config: &LoraConfig, seed: u64) -> Result<()> {
        if self.lora.is_some() {
            bail!("the model already has a LoRA adapter");
        }
        let (device, r, scale) = (self.device.clone(), config.r, config.scale());
        // Checked before anything is attached, so a refusal leaves the model as it was.
        for (_, module, linear) in self.linears_mut().filter(|(_, module, _)| config.targets(module)) {
            let (out_dim, in_dim) = linear.weight.dims2()?;
            // B·A has rank at most min(in, out): a larger r only costs memory (and a typo such as
            // r = 1e9 would try to allocate it).
            if r > out_dim.min(in_dim) {
                bail!(
                    "r = {r} is larger than {module} can use (its weight is {out_dim} x {in_dim}; the update's rank is at most {})",
                    out_dim.min(in_dim)
                );
            }
        }
        let mut state = seed ^ 0x10A4_ADA7_7E50_0001;
        let mut params = Vec::new();
        for (layer, module, linear) in self.linears_mut().filter(|(_, module, _)| config.targets(module)) {
            let (out_dim, in_dim) = linear.weight.dims2()?;
            let bound = 1.0 / (in_dim as f64).sqrt();
            let a: Vec<f32> = (0..r * in_dim).map(|_| ((uniform(&mut state) * 2.0 - 1.0) * bound) as f32).collect();
            let a = Var::from_tensor(&Tensor::from_vec(a, (r, in_dim), &device)?)?;
            let b = Var::from_tensor(&Tensor::zeros((out_dim, r), DType::F32, &device)?)?;
            params.push((peft_name(layer, module, "lora_A"), a.clone()));
            params.push((peft_name(layer, module, "lora_B"), b.clone()));
            let module_index = LINEAR_MODULES.iter().position(|m| *m == module).unwrap_or(usize::MAX);
            linear.adapter = Some(Adapter { a, b, scale, stream: dropout::stream(layer, module_index) });
        }
        self.lora = Some(Lora { config: config.clone(), params, dropout_seed: 0 });
        Ok(())
    }

    /// Sets the seed of the dropout masks the next training passes draw (with `[lora] dropout` > 0):
    /// a mask is a function of this seed, the projection and the token's place in the batch, so a
    /// trainer that sets a seed per micro-batch from its run seed and step gets fresh masks every step
    /// and the same masks again on resume. Scoring, generation and merging never drop, as in PEFT.
    pub fn set_dropout_seed(&mut self, seed: u64) {
        if let Some(lora) = &mut self.lora {
            lora.dropout_seed = seed;
        }
    }

    /// The dropout a training pass applies to the adapters' inputs, if any.
    pub(super) fn training_dropout(&self) -> Option<Dropout> {
        let lora = self.lora.as_ref()?;
        (lora.config.dropout > 0.0).then_some(Dropout { seed: lora.dropout_seed, p: lora.config.dropout })
    }

    /// The attached adapter's configuration, if any.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.lora.as_ref().map(|l| &l.config)
    }

    /// What training updates: the adapter's tensors (PEFT names) when one is attached, else every
    /// parameter ([`Model::params`]).
    pub fn trainable_params(&self) -> &[(String, Var)] {
        match &self.lora {
            Some(lora) => &lora.params,
            None => &self.params,
        }
    }

    /// Number of trainable scalars.
    pub fn num_trainable_params(&self) -> usize {
        self.trainable_params().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Writes the adapter into `dir` (which must exist) as PEFT does: `adapter_config.json` (with
    /// `base` as `base_model_name_or_path`) and `adapter_model.safetensors`, float32.
    pub fn write_adapter(&self, dir: &Path, base: &str) -> Result<()> {
        let Some(lora) = &self.lora else { bail!("the model has no LoRA adapter to save") };
        let path = dir.join(ADAPTER_CONFIG_FILE);
        let text = serde_json::to_string_pretty(&lora.config.to_peft_json(base))? + "\n";
        std::fs::write(&path, text).with_context(|| format!("{}: cannot write", path.display()))?;
        let tensors = lora
            .params
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().detach().to_dtype(DType::F32)?)))
            .collect::<Result<Vec<_>>>()?;
        weights::write_safetensors(&dir.join(ADAPTER_WEIGHTS_FILE), &tensors, &[("format".into(), "pt".into())])
    }

    /// Attaches the adapter saved in `dir` (by PEFT or by [`Model::write_adapter`]), replacing any
    /// attached one: every tensor the configuration implies must be there with its shape and finite,
    /// and no other.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        let config_path = dir.join(ADAPTER_CONFIG_FILE);
        if !config_path.is_file() {
            bail!("{}: no {ADAPTER_CONFIG_FILE}: not a LoRA adapter directory", dir.display());
        }
        let config = LoraConfig::from_peft_json(&config_path)?;
        let path = dir.join(ADAPTER_WEIGHTS_FILE);
        let (mut stored, _) = weights::read_safetensors(&path, &self.device)?;
        // PEFT names tensors without the adapter name on save; some tools keep `.default`.
        stored = stored
            .into_iter()
            .map(|(k, v)| (k.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B."), v))
            .collect();
        // On a bad file the model is left as it was (with its earlier adapter, if any).
        let previous = self.detach_lora();
        self.add_lora(&config, 0)?;
        let filled = self.fill_adapter(&config, stored, &path);
        if filled.is_err() {
            self.detach_lora();
            if let Some(previous) = previous {
                self.reattach_lora(previous);
            }
        }
        filled
    }

    /// Sets the freshly attached adapter's tensors from `stored`, which must hold exactly them.
    fn fill_adapter(
        &self,
        config: &LoraConfig,
        mut stored: std::collections::HashMap<String, Tensor>,
        path: &Path,
    ) -> Result<()> {
        let Some(lora) = &self.lora else { bail!("no adapter attached") };
        for (name, var) in &lora.params {
            let Some(value) = stored.remove(name) else {
                bail!("{}: no tensor `{name}` (target_modules {:?})", path.display(), config.target_modules);
            };
            if value.dims() != var.dims() {
                bail!("{}: tensor `{name}` has shape {:?}, expected {:?}", path.display(), value.dims(), var.dims());
            }
            let value = value.to_dtype(DType::F32)?;
            let values: Vec<f32> = value.flatten_all()?.to_vec1()?;
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                bail!("{}: tensor `{name}` has a non-finite value {} at flat index {i}", path.display(), values[i]);
            }
            var.set(&value)?;
        }
        if let Some(extra) = stored.keys().min() {
            bail!("{}: tensor `{extra}` is not part of the adapter {ADAPTER_CONFIG_FILE} describes", path.display());
        }
        Ok(())
    }

    /// Removes the adapter (and the projections' references to it), returning it.
    fn detach_lora(&mut self) -> Option<(Lora, Vec<Option<Adapter>>)> {
        let lora = self.lora.take()?;
        let adapters = self.linears_mut().map(|(_, _, linear)| linear.adapter.take()).collect();
        Some((lora, adapters))
    }

    /// Puts back what [`Model::detach_lora`] removed.
    fn reattach_lora(&mut self, (lora, adapters): (Lora, Vec<Option<Adapter>>)) {
        for ((_, _, linear), adapter) in self.linears_mut().zip(adapters) {
            linear.adapter = adapter;
        }
        self.lora = Some(lora);
    }

    /// Every adaptable projection with its layer and PEFT module name, layer by layer in
    /// [`LINEAR_MODULES`] order.
    fn linears_mut(&mut self) -> impl Iterator<Item = (usize, &'static str, &mut Linear)> {
        self.layers.iter_mut().enumerate().flat_map(|(layer, block)| {
            let (attn, mlp) = (&mut block.self_attn, &mut block.mlp);
            let linears = [
                &mut attn.q_proj,
                &mut attn.k_proj,
                &mut attn.v_proj,
                &mut attn.o_proj,
                &mut mlp.gate_proj,
                &mut mlp.up_proj,
                &mut mlp.down_proj,
            ];
            LINEAR_MODULES.into_iter().zip(linears).map(move |(module, linear)| (layer, module, linear))
        })
    }

    /// Folds the adapter into the base weights (`W += s·B·A`, in float32, rounded once to the base's
    /// dtype) and removes it: the model is then a plain model that saves as a full checkpoint.
    pub fn merge_lora(&mut self) -> Result<()> {
        let Some(_) = self.lora.take() else { bail!("the model has no LoRA adapter to merge") };
        for (_, _, linear) in self.linears_mut() {
            if let Some(adapter) = linear.adapter.take() {
                let delta = (adapter.b.as_tensor().matmul(adapter.a.as_tensor())? * adapter.scale)?;
                let merged = (linear.weight.as_tensor().to_dtype(DType::F32)? + delta)?;
                linear.weight.set(&merged.to_dtype(linear.weight.dtype())?)?;
            }
        }
        Ok(())
    }
}
