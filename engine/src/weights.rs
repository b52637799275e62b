//! Reading and writing safetensors files in the Hugging Face layout.
//!
//! Owns where a checkpoint's tensors live: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`. Tensors come back keyed by their Hugging Face names, each
//! with the file it came from (for messages).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde_json::Value;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A tensor as found on disk, with the file that held it.
pub struct StoredTensor {
    pub tensor: Tensor,
    pub file: PathBuf,
}

/// Every tensor of the checkpoint in `dir`, single file or sharded.
pub fn read_model_tensors(dir: &Path, device: &Device) -> Result<HashMap<String, StoredTensor>> {
    let mut out = HashMap::new();
    for file in model_files(dir)? {
        let tensors = candle_core::safetensors::load(&file, device)
            .with_context(|| format!("{}: cannot read safetensors", file.display()))?;
        for (name, tensor) in tensors {
            out.insert(name, StoredTensor { tensor, file: file.clone() });
        }
    }
    Ok(out)
}

/// The safetensors files of the checkpoint in `dir`: `model.safetensors`, or the shards its index names.
pub fn model_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(SINGLE_FILE);
    let index = dir.join(INDEX_FILE);
    if single.is_file() {
        Ok(vec![single])
    } else if index.is_file() {
        shard_files(&index)
    } else {
        bail!("{}: no {SINGLE_FILE} or {INDEX_FILE} found", dir.display());
    }
}

/// The checkpoint in `dir` memory-mapped: tensors are read one at a time, so a model larger than memory
/// can be streamed through (export).
pub fn map_model_tensors(dir: &Path) -> Result<candle_core::safetensors::MmapedSafetensors> {
    let files = model_files(dir)?;
    // SAFETY: the files are only read; a checkpoint rewritten under a running export is the user's race,
    // as for every mmap-based loader (transformers, llama.cpp).
    unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
        .with_context(|| format!("{}: cannot map the safetensors files", dir.display()))
}

/// The distinct shard files named by an index's `weight_map`, in sorted order.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).with_context(|| format!("{}: cannot read", index.display()))?;
    let json: Value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", index.display()))?;
    let Some(map) = json.get("weight_map").and_then(Value::as_object) else {
        bail!("{}: missing key `weight_map`", index.display());
    };
    let mut names = BTreeSet::new();
    for (tensor, file) in map {
        let Some(file) = file.as_str() else {
            bail!("{}: `weight_map.{tensor}` must be a file name", index.display());
        };
        // Shards are plain names next to the index; refuse anything that could point elsewhere.
        if file.contains('/') || file.contains('\\') || file == ".." {
            bail!("{}: `weight_map.{tensor}` is not a plain file name: {file:?}", index.display());
        }
        names.insert(file.to_string());
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok(names.into_iter().map(|f| dir.join(f)).collect())
}

/// Writes named tensors as one safetensors file with `{"format": "pt"}` metadata (transformers
/// expects it) plus any `extra` metadata.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)], extra: &[(String, String)]) -> Result<()> {
    let bytes =
        safetensors_bytes(tensors, extra).with_context(|| format!("{}: cannot write safetensors", path.display()))?;
    std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

/// The bytes of a safetensors file, the same for the same tensors and metadata.
///
/// The safetensors crate writes `__metadata__` from a `HashMap`, in an order that changes from run
/// to run; here the header is rewritten with its keys (metadata included) in sorted order, padded
/// with spaces to a multiple of 8 bytes as the format allows.
fn safetensors_bytes(tensors: &[(String, Tensor)], extra: &[(String, String)]) -> Result<Vec<u8>> {
    let views: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let unordered = safetensors::serialize(views, None)?;
    let header_len = u64::from_le_bytes(unordered[..8].try_into()?) as usize;
    let mut header: std::collections::BTreeMap<String, Value> = serde_json::from_slice(&unordered[8..8 + header_len])?;
    let mut metadata: std::collections::BTreeMap<String, String> = extra.iter().cloned().collect();
    metadata.insert("format".to_string(), "pt".to_string());
    header.insert("__metadata__".to_string(), serde_json::to_value(metadata)?);
    let mut header = serde_json::to_vec(&header)?;
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut bytes = Vec::with_capacity(8 + header.len() + unordered.len() - 8 - header_len);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&unordered[8 + header_len..]);
    Ok(bytes)
}

/// Reads a safetensors file's tensors and its metadata.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .with_context(|| format!("{}: cannot read safetensors", path.display()))?;
    Ok((tensors, metadata))
}
