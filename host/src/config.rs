//! The run config (`run.toml`): plain data, parsed strictly.
//!
//! Unknown keys are errors (serde's `deny_unknown_fields`), `--set key=value` overrides are applied to
//! the TOML document before it is parsed, and [`RunConfig::validate`] refuses values that parse but make
//! no sense (a negative learning rate, micro-batches larger than the batch), naming the key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub objective: ObjectiveSection,
    #[serde(default)]
    pub mixer: MixerSection,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub train: TrainSection,
    /// Evaluation during training (off unless the table is present).
    pub eval: Option<EvalSection>,
    /// Train a LoRA adapter instead of every weight (off unless the table is present).
    pub lora: Option<LoraSection>,
}

/// `[lora]`: a LoRA adapter on the frozen base, PEFT's keys and defaults (`r` 8, `alpha` 8, dropout 0,
/// q_proj and v_proj, as PEFT targets Llama and Qwen2), initialised as PEFT does from `[train] seed`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    #[serde(default = "default_lora_r")]
    pub r: usize,
    #[serde(default = "default_lora_r_f64")]
    pub alpha: f64,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "default_lora_targets")]
    pub target_modules: LoraTargets,
    #[serde(default)]
    pub use_rslora: bool,
}

/// `target_modules`: a list of projection names, or `"all-linear"`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum LoraTargets {
    Named(String),
    List(Vec<String>),
}

impl LoraSection {
    /// The engine's adapter configuration, checked; errors name the key.
    pub fn to_engine(&self) -> Result<engine::LoraConfig> {
        let targets = match &self.target_modules {
            LoraTargets::Named(name) => vec![name.clone()],
            LoraTargets::List(list) => list.clone(),
        };
        engine::LoraConfig::new(self.r, self.alpha, self.dropout, &targets, self.use_rslora)
            .map_err(|e| anyhow::anyhow!("[lora] {e}"))
    }
}

fn default_lora_r() -> usize {
    8
}
fn default_lora_r_f64() -> f64 {
    8.0
}
fn default_lora_targets() -> LoraTargets {
    LoraTargets::List(vec!["q_proj".into(), "v_proj".into()])
}

/// `[eval]`: generate on an evaluation set every `every` steps and at the end, scored by an evaluator
/// plugin; the aggregate scores go into metrics.jsonl under `eval`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// The evaluation file; defaults to `[data] eval`.
    pub data: Option<PathBuf>,
    pub evaluator: String,
    #[serde(default)]
    pub params: toml::Table,
    /// Evaluate every N optimizer steps (0 = only at the end).
    #[serde(default)]
    pub every: u64,
    #[serde(default = "default_samples")]
    pub samples: usize,
    #[serde(default)]
    pub temperature: f64,
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    #[serde(default)]
    pub stop: Vec<String>,
    /// Evaluate on the first N examples only (0 = all).
    #[serde(default)]
    pub limit: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face model directory.
    pub path: PathBuf,
    /// Training precision: `float32`/`f32` (default), or `bf16`/`bfloat16` (bf16 parameters and
    /// activations; float32 loss math, gradients, optimizer state and master weights).
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Where to train: `cpu` (default), `cuda` or `cuda:N` (a host built with the `cuda` feature).
    #[serde(default = "default_device")]
    pub device: String,
}

/// One file or a list of files.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl OneOrMany {
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            OneOrMany::One(p) => vec![p.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub train: OneOrMany,
    pub eval: Option<PathBuf>,
    #[serde(default = "default_prompt_key")]
    pub prompt_key: String,
    #[serde(default = "default_response_key")]
    pub response_key: String,
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    #[serde(default = "default_true")]
    pub shuffle: bool,
    /// Render the prompt through the tokenizer's chat template as a user message.
    #[serde(default)]
    pub chat_template: bool,
    /// Which assistant turns of `messages` rows carry the loss: `last_turn` or `assistant_turns`.
    #[serde(default)]
    pub loss_on: crate::encode::LossOn,
}

impl DataSection {
    /// How rows become token ids, for [`crate::encode::Encoder`].
    pub fn encode_options(&self) -> crate::encode::EncodeOptions {
        crate::encode::EncodeOptions { chat_template: self.chat_template, loss_on: self.loss_on }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSection {
    #[serde(default = "default_objective")]
    pub plugin: String,
    #[serde(default)]
    pub params: toml::Table,
}

impl Default for ObjectiveSection {
    fn default() -> Self {
        Self { plugin: default_objective(), params: toml::Table::new() }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MixerSection {
    #[serde(default = "default_mixer")]
    pub plugin: String,
    #[serde(default)]
    pub params: toml::Table,
}

impl Default for MixerSection {
    fn default() -> Self {
        Self { plugin: default_mixer(), params: toml::Table::new() }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LrScheduler {
    Constant,
    Cosine,
    Linear,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_scheduler")]
    pub lr_scheduler: LrScheduler,
    #[serde(default)]
    pub warmup_ratio: f64,
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            lr: default_lr(),
            betas: default_betas(),
            eps: default_eps(),
            weight_decay: default_weight_decay(),
            lr_scheduler: default_scheduler(),
            warmup_ratio: 0.0,
            max_grad_norm: default_max_grad_norm(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Defaults to `batch_size` (no accumulation).
    pub micro_batch_size: Option<usize>,
    pub max_steps: Option<u64>,
    pub epochs: Option<f64>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_out_dir")]
    pub out_dir: PathBuf,
    /// Save a checkpoint every N steps (0 = only the final one).
    #[serde(default)]
    pub save_every: u64,
    /// Stop after this many steps in a row without an update from a non-finite log-prob or gradient norm,
    /// or without a single token included by the objective since the start; each such step is skipped
    /// and marked in metrics.jsonl.
    #[serde(default = "default_max_skipped_steps")]
    pub max_skipped_steps: u64,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            micro_batch_size: None,
            max_steps: None,
            epochs: None,
            seed: 0,
            out_dir: default_out_dir(),
            save_every: 0,
            max_skipped_steps: default_max_skipped_steps(),
        }
    }
}

fn default_max_skipped_steps() -> u64 {
    10
}
pub(crate) fn default_samples() -> usize {
    1
}
pub(crate) fn default_top_p() -> f64 {
    1.0
}
pub(crate) fn default_max_new_tokens() -> usize {
    128
}
fn default_dtype() -> String {
    "float32".into()
}
fn default_device() -> String {
    "cpu".into()
}
fn default_prompt_key() -> String {
    "prompt".into()
}
fn default_response_key() -> String {
    "response".into()
}
fn default_max_length() -> usize {
    1024
}
fn default_true() -> bool {
    true
}
fn default_objective() -> String {
    "nll".into()
}
fn default_mixer() -> String {
    "proportional".into()
}
fn default_lr() -> f64 {
    1e-5
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.95]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_scheduler() -> LrScheduler {
    LrScheduler::Cosine
}
fn default_max_grad_norm() -> f64 {
    1.0
}
fn default_batch_size() -> usize {
    8
}
fn default_out_dir() -> PathBuf {
    "runs/default".into()
}

impl RunConfig {
    /// Reads `path`, applies `--set` overrides, parses strictly and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {shown}"))?;
        let mut doc: toml::Table =
            text.parse().map_err(|e: toml::de::Error| anyhow::anyhow!("{shown}: {}", one_line(&e.to_string())))?;
        for assignment in overrides {
            apply_override(&mut doc, assignment)?;
        }
        let config: RunConfig = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{shown}: {}", one_line(&e.to_string())))?;
        config.validate().map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        Ok(config)
    }

    pub fn micro_batch_size(&self) -> usize {
        self.train.micro_batch_size.unwrap_or(self.train.batch_size)
    }

    /// Refuses values that parse but cannot train, naming the key.
    pub fn validate(&self) -> Result<()> {
        let o = &self.optim;
        let t = &self.train;
        if self.data.train.files().is_empty() {
            bail!("[data] train is an empty list; give at least one training file");
        }
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            bail!("[optim] lr must be a positive number, got {}", o.lr);
        }
        for (i, b) in o.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                bail!("[optim] betas[{i}] must be in [0, 1), got {b}");
            }
        }
        if !o.eps.is_finite() || o.eps <= 0.0 {
            bail!("[optim] eps must be positive, got {}", o.eps);
        }
        if !o.weight_decay.is_finite() || o.weight_decay < 0.0 {
            bail!("[optim] weight_decay must be >= 0, got {}", o.weight_decay);
        }
        if !(0.0..1.0).contains(&o.warmup_ratio) {
            bail!("[optim] warmup_ratio must be in [0, 1), got {}", o.warmup_ratio);
        }
        if !o.max_grad_norm.is_finite() || o.max_grad_norm < 0.0 {
            bail!("[optim] max_grad_norm must be >= 0 (0 disables clipping), got {}", o.max_grad_norm);
        }
        if t.batch_size == 0 {
            bail!("[train] batch_size must be at least 1");
        }
        let micro = self.micro_batch_size();
        if micro == 0 {
            bail!("[train] micro_batch_size must be at least 1");
        }
        if micro > t.batch_size {
            bail!("[train] micro_batch_size ({micro}) is larger than batch_size ({})", t.batch_size);
        }
        if !t.batch_size.is_multiple_of(micro) {
            bail!("[train] batch_size ({}) must be a multiple of micro_batch_size ({micro})", t.batch_size);
        }
        match (t.max_steps, t.epochs) {
            (Some(0), _) => bail!("[train] max_steps must be at least 1"),
            _ if t.max_skipped_steps == 0 => bail!("[train] max_skipped_steps must be at least 1"),
            (_, Some(e)) if !e.is_finite() || e <= 0.0 => bail!("[train] epochs must be positive, got {e}"),
            (None, None) => bail!("[train] give max_steps or epochs"),
            (Some(_), Some(_)) => bail!("[train] give max_steps or epochs, not both"),
            _ => {}
        }
        if self.data.max_length < 2 {
            bail!("[data] max_length must be at least 2, got {}", self.data.max_length);
        }
        if let Some(eval) = &self.eval {
            if eval.data.is_none() && self.data.eval.is_none() {
                bail!("[eval] needs `data` (or [data] eval)");
            }
        }
        engine::parse_dtype(&self.model.dtype).map_err(|e| anyhow::anyhow!("[model] dtype: {e}"))?;
        if let Some(lora) = &self.lora {
            lora.to_engine()?;
        }
        Ok(())
    }
}

/// `optim.lr=3e-4` sets `[optim] lr`; the value is a TOML literal, or a bare string.
fn apply_override(doc: &mut toml::Table, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("--set expects key=value, got `{assignment}`");
    };
    let path: Vec<&str> = key.trim().split('.').collect();
    let value = crate::plugins::params::parse_literal(raw.trim());
    let (last, parents) = path.split_last().context("--set with an empty key")?;
    let mut table = doc;
    for part in parents {
        let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("--set {key}: `{part}` is not a table"),
        };
    }
    table.insert(last.to_string(), value);
    Ok(())
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, overrides: &[&str]) -> Result<RunConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, text).unwrap();
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        RunConfig::load(&path, &overrides)
    }

    const MINIMAL: &str = "[model]\npath = \"m\"\n[data]\ntrain = \"t.jsonl\"\n[train]\nmax_steps = 3\n";

    #[test]
    fn defaults_and_overrides() {
        let c = load(MINIMAL, &["optim.lr=3e-4", "objective.plugin=neg_p", "objective.params.alpha=2"]).unwrap();
        assert_eq!(c.optim.lr, 3e-4);
        assert_eq!(c.objective.plugin, "neg_p");
        assert_eq!(c.objective.params.get("alpha").and_then(|v| v.as_integer()), Some(2));
        assert_eq!(c.micro_batch_size(), 8);
        assert_eq!(c.data.train.files(), vec![PathBuf::from("t.jsonl")]);
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values_naming_them() {
        let err = load(&format!("{MINIMAL}[optim]\nlrr = 1\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("unknown field `lrr`"), "{err}");
        let err = load(MINIMAL, &["optim.lr=-1"]).unwrap_err().to_string();
        assert!(err.contains("[optim] lr must be a positive number, got -1"), "{err}");
        let err = load(MINIMAL, &["train.micro_batch_size=16"]).unwrap_err().to_string();
        assert!(err.contains("micro_batch_size (16) is larger than batch_size (8)"), "{err}");
        let err = load("[model]\npath = \"m\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("missing field `data`"), "{err}");
    }

    #[test]
    fn model_dtype_and_device() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!((c.model.dtype.as_str(), c.model.device.as_str()), ("float32", "cpu"));
        let c = load(MINIMAL, &["model.dtype=bf16", "model.device=cuda:1"]).unwrap();
        assert_eq!((c.model.dtype.as_str(), c.model.device.as_str()), ("bf16", "cuda:1"));
        let err = load(MINIMAL, &["model.dtype=f16"]).unwrap_err().to_string();
        assert!(err.contains("[model] dtype: unknown dtype `f16` (use f32 or bf16)"), "{err}");
    }

    #[test]
    fn lora_section_defaults_and_refusals() {
        assert!(load(MINIMAL, &[]).unwrap().lora.is_none());
        let lora = load(MINIMAL, &["lora.r=16"]).unwrap().lora.unwrap().to_engine().unwrap();
        assert_eq!((lora.r, lora.alpha, lora.dropout), (16, 8.0, 0.0));
        assert_eq!(lora.target_modules, ["q_proj", "v_proj"]);
        let all = load(MINIMAL, &["lora.target_modules=all-linear"]).unwrap().lora.unwrap().to_engine().unwrap();
        assert_eq!(all.target_modules.len(), 7);
        let err = load(&format!("{MINIMAL}[lora]\ntarget_modules = [\"q_proj\", \"lm_head\"]\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("[lora] target module `lm_head` is not one of q_proj"), "{err}");
        let err = load(MINIMAL, &["lora.r=0"]).unwrap_err().to_string();
        assert!(err.contains("[lora] r must be at least 1"), "{err}");
        assert_eq!(load(MINIMAL, &["lora.dropout=0.05"]).unwrap().lora.unwrap().dropout, 0.05);
        let err = load(MINIMAL, &["lora.dropout=1.0"]).unwrap_err().to_string();
        assert!(err.contains("[lora] dropout must be in [0, 1), got 1"), "{err}");
        let err = load(MINIMAL, &["lora.rank=4"]).unwrap_err().to_string();
        assert!(err.contains("unknown field `rank`"), "{err}");
    }
}
