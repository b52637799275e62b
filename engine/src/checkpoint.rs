//! Saving a model as a Hugging Face checkpoint directory, atomically.
//!
//! Owns the on-disk layout of what the trainer writes: `config.json` (the original JSON, its
//! `dtype`/`torch_dtype` set to `float32`), `model.safetensors` (float32 under Hugging Face tensor
//! names, a tied model writing no `lm_head.weight`; a model trained in bf16 saves the optimizer's
//! float32 master weights, see [`save_with_master`]), and copies of the
//! tokenizer and generation files of the directory the model was loaded from. A model with a LoRA
//! adapter saves the adapter alone, as PEFT does (`adapter_config.json` naming the base by its absolute
//! path, `adapter_model.safetensors`), with the same tokenizer copies. The directory
//! is built as `<dir>.tmp-<pid>` and renamed into place, so a reader never sees half a
//! checkpoint. Loading back is [`Model::load`] (which loads an adapter on its base).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use serde_json::Value;

use crate::model::Model;
use crate::weights;

/// Files copied from the source directory when present.
pub const COPIED_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Saves `model` as a Hugging Face checkpoint in `dir` (replacing an existing one).
pub fn save(model: &Model, dir: impl AsRef<Path>) -> Result<()> {
    save_with(model, dir, |_| Ok(()))
}

/// Like [`save`], and lets `extra` write more files (optimizer state, trainer state, ...) into
/// the directory before it is moved into place.
pub fn save_with(model: &Model, dir: impl AsRef<Path>, extra: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    save_with_master(model, dir, |_| None, extra)
}

/// Like [`save_with`], saving `master(name)` in place of a parameter where it gives a tensor: the
/// optimizer's float32 master copy of a parameter trained in a lower precision
/// ([`crate::AdamW::master`]), so that the checkpoint holds the weights training converged to rather
/// than their bf16 rounding.
pub fn save_with_master(
    model: &Model,
    dir: impl AsRef<Path>,
    master: impl Fn(&str) -> Option<Tensor>,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    write_dir_atomically(dir.as_ref(), |tmp| {
        if model.lora().is_some() {
            // Absolute, so the adapter finds its base from any working directory.
            let base = std::fs::canonicalize(model.source_dir()).unwrap_or_else(|_| model.source_dir().to_path_buf());
            model.write_adapter(tmp, &base.display().to_string())?;
        } else {
            write_config(model, &tmp.join("config.json"))?;
            write_weights(model, &master, &tmp.join(weights::SINGLE_FILE))?;
        }
        for name in COPIED_FILES {
            let src = model.source_dir().join(name);
            if src.is_file() {
                std::fs::copy(&src, tmp.join(name))
                    .with_context(|| format!("cannot copy {} into the checkpoint", src.display()))?;
            }
        }
        extra(tmp)
    })
}

/// The original `config.json`, with its dtype key saying float32.
fn write_config(model: &Model, path: &Path) -> Result<()> {
    let mut raw = model.config().raw.clone();
    let Some(obj) = raw.as_object_mut() else { bail!("model config is not a JSON object") };
    // Keep the layout the file had: transformers 5 writes `dtype`, older ones `torch_dtype`.
    let mut keys: Vec<&str> = ["dtype", "torch_dtype"].into_iter().filter(|k| obj.contains_key(*k)).collect();
    if keys.is_empty() {
        keys.push(if obj.contains_key("rope_parameters") { "dtype" } else { "torch_dtype" });
    }
    for key in keys {
        obj.insert(key.to_string(), Value::String("float32".to_string()));
    }
    let text = serde_json::to_string_pretty(&raw)? + "\n";
    std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))
}

/// Every parameter once (or its master copy), in float32, under its Hugging Face name.
fn write_weights(model: &Model, master: &impl Fn(&str) -> Option<Tensor>, path: &Path) -> Result<()> {
    let tensors = model
        .params()
        .iter()
        .map(|(name, var)| {
            let value = master(name).unwrap_or_else(|| var.as_tensor().detach());
            Ok((name.clone(), value.to_dtype(DType::F32)?))
        })
        .collect::<Result<Vec<(String, Tensor)>>>()?;
    weights::write_safetensors(path, &tensors, &[])
}

/// Builds a directory at `<dir>.tmp-<pid>` with `fill`, then moves it to `dir`. An existing
/// `dir` is first renamed aside to `<dir>.old-<pid>` and removed only once the new one is in
/// place; on failure the temporary directory is removed and the old one restored.
pub fn write_dir_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = sibling(dir, "tmp")?;
    let old = sibling(dir, "old")?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove stale {}", tmp.display()))?;
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;

    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("writing checkpoint {}", dir.display())));
    }

    let replacing = dir.exists();
    if replacing {
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(|| format!("cannot remove stale {}", old.display()))?;
        }
        std::fs::rename(dir, &old).with_context(|| format!("cannot move the existing {} aside", dir.display()))?;
    }
    if let Err(e) = std::fs::rename(&tmp, dir) {
        if replacing {
            let _ = std::fs::rename(&old, dir);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(anyhow::Error::new(e).context(format!("cannot move {} to {}", tmp.display(), dir.display())));
    }
    if replacing {
        std::fs::remove_dir_all(&old).with_context(|| format!("cannot remove the replaced {}", old.display()))?;
    }
    Ok(())
}

/// `<dir>.<tag>-<pid>`, next to `dir`.
fn sibling(dir: &Path, tag: &str) -> Result<PathBuf> {
    let Some(name) = dir.file_name() else {
        bail!("checkpoint path {} has no final component", dir.display());
    };
    let mut name = name.to_os_string();
    name.push(format!(".{tag}-{}", std::process::id()));
    Ok(dir.with_file_name(name))
}
