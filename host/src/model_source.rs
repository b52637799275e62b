//! Where a verb's model comes from: a Hugging Face directory, a LoRA adapter directory on the base
//! model its `adapter_config.json` names, or a base (`--model`) with an adapter (`--adapter`) on it.
//! Owns the checks every verb makes before it loads, so `score`, `eval`, `diagnose` and `merge` refuse
//! a missing folder with the same line.

use std::path::Path;

use anyhow::{bail, Context, Result};
use engine::{Device, Model};

use crate::data::TextTokenizer;

/// Loads `model` in float32 on `device`, with `adapter` attached when given.
pub fn load(model: &Path, adapter: Option<&Path>, device: &Device) -> Result<Model> {
    if !model.is_dir() {
        bail!("--model {}: no such model directory", model.display());
    }
    let mut loaded = Model::load(model, device)?;
    if let Some(adapter) = adapter {
        if !adapter.is_dir() {
            bail!("--adapter {}: no such adapter directory", adapter.display());
        }
        loaded.load_adapter(adapter).with_context(|| format!("--adapter {}", adapter.display()))?;
    }
    Ok(loaded)
}

/// The tokenizer of a loaded model: the files of the directory its weights came from (the base's, for
/// an adapter directory).
pub fn tokenizer(model: &Model) -> Result<TextTokenizer> {
    TextTokenizer::from_model_dir(model.source_dir(), model.config())
}
