//! A Hugging Face checkpoint written as a GGUF file that llama.cpp loads.
//!
//! [`write`] takes the model directory (config and safetensors), the tokenizer metadata the host built,
//! and a [`GgufType`]. It writes llama.cpp's `<arch>.*` hyper-parameters, names every tensor as llama.cpp
//! does, permutes a Llama checkpoint's q/k rows into llama.cpp's interleaved rope pairs, quantizes 2-D
//! tensors with candle (1-D norms and biases stay f32, as llama.cpp's converter keeps them), and adds
//! `rope_freqs.weight` for Llama-3 rope scaling. Tensors are read one at a time from the memory-mapped
//! safetensors, so peak memory is the exported file's size plus one tensor in f32. The file is written
//! beside its destination and renamed into place: a failure leaves nothing behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use super::gguf_tensor_name;
use crate::config::{Architecture, ModelConfig};
use crate::ops::Rope;

/// The tensor type of an export (`--type`); llama.cpp's `general.file_type` follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufType {
    F32,
    F16,
    BF16,
    Q8_0,
}

impl std::str::FromStr for GgufType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "f32" => GgufType::F32,
            "f16" => GgufType::F16,
            "bf16" => GgufType::BF16,
            "q8_0" => GgufType::Q8_0,
            other => bail!("GGUF type `{other}` is not supported (supported: f32, f16, bf16, q8_0)"),
        })
    }
}

impl GgufType {
    fn ggml(self) -> GgmlDType {
        match self {
            GgufType::F32 => GgmlDType::F32,
            GgufType::F16 => GgmlDType::F16,
            GgufType::BF16 => GgmlDType::BF16,
            GgufType::Q8_0 => GgmlDType::Q8_0,
        }
    }

    /// llama.cpp's `llama_ftype`: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32.
    fn file_type(self) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Q8_0 => 7,
            GgufType::BF16 => 32,
        }
    }
}

/// What an export wrote.
pub struct Exported {
    /// `(GGUF type, tensors of it)`, in type order.
    pub tensor_types: Vec<(String, usize)>,
    pub parameters: usize,
    pub bytes: u64,
}

/// Writes the checkpoint in `model_dir` (read as `config`) to the GGUF file `dst`, which must not exist.
/// `tokenizer` holds the `tokenizer.*` metadata; `name` becomes `general.name`.
pub fn write(
    dst: &Path,
    model_dir: &Path,
    config: &ModelConfig,
    name: &str,
    ty: GgufType,
    tokenizer: Vec<(String, Value)>,
) -> Result<Exported> {
    if dst.exists() {
        bail!("{}: already exists; remove it or choose another destination", dst.display());
    }
    if let Some(file_name) = dst.file_name() {
        remove_stale_temporaries(dst, &file_name.to_string_lossy());
    }
    let mut metadata = model_metadata(config, name, ty);
    metadata.extend(tokenizer);

    let source = crate::weights::map_model_tensors(model_dir)?;
    check_shapes(model_dir, config, &source)?;
    let mut names: Vec<String> = source.tensors().into_iter().map(|(n, _)| n).collect();
    // llama.cpp's order: embedding, the layers in order, final norm, head.
    names.sort_by_key(|n| tensor_order(n));
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len() + 1);
    for hf_name in &names {
        // Tied checkpoints may still carry lm_head.weight (transformers ignores it; so does llama.cpp).
        if hf_name == "lm_head.weight" && config.tie_word_embeddings {
            continue;
        }
        // Rotary tables some checkpoints store are recomputed by every loader.
        if hf_name.ends_with("rotary_emb.inv_freq") {
            continue;
        }
        let gguf_name = gguf_tensor_name(hf_name)
            .ok_or_else(|| anyhow!("{}: tensor `{hf_name}` has no GGUF name", model_dir.display()))?;
        let tensor = source
            .load(hf_name, &Device::Cpu)
            .with_context(|| format!("{}: tensor `{hf_name}`", model_dir.display()))?
            .to_dtype(DType::F32)?;
        let tensor = match (config.architecture, gguf_name.rsplit('.').nth(1)) {
            (Architecture::Llama, Some("attn_q")) => permute_rows(&tensor, config.num_attention_heads)?,
            (Architecture::Llama, Some("attn_k")) => permute_rows(&tensor, config.num_key_value_heads)?,
            _ => tensor,
        };
        let quantized = quantize(&tensor, ty).with_context(|| format!("tensor `{hf_name}`"))?;
        tensors.push((gguf_name, quantized));
    }
    if let Some(factors) = llama3_rope_factors(config) {
        let len = factors.len();
        let tensor = Tensor::from_vec(factors, len, &Device::Cpu)?;
        tensors.push(("rope_freqs.weight".into(), QTensor::quantize(&tensor, GgmlDType::F32)?));
    }

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (_, t) in &tensors {
        *counts.entry(format!("{:?}", t.dtype()).to_uppercase()).or_default() += 1;
    }
    let parameters = tensors.iter().map(|(_, t)| t.shape().elem_count()).sum();
    write_file_atomically(dst, &metadata, &tensors)?;
    let bytes = std::fs::metadata(dst).map(|m| m.len()).unwrap_or(0);
    Ok(Exported { tensor_types: counts.into_iter().collect(), parameters, bytes })
}

/// The checkpoint holds what config.json describes: llama.cpp would refuse (or misread) anything else,
/// so it is refused here, naming the tensor.
fn check_shapes(
    model_dir: &Path,
    config: &ModelConfig,
    source: &candle_core::safetensors::MmapedSafetensors,
) -> Result<()> {
    let config_path = model_dir.join("config.json");
    let mut layers = vec![false; config.num_hidden_layers];
    for (name, view) in source.tensors() {
        let shape = view.shape();
        if name == "model.embed_tokens.weight" && shape != [config.vocab_size, config.hidden_size] {
            bail!(
                "{}: tensor `{name}` is {shape:?}, but {} says vocab_size {} and hidden_size {}",
                model_dir.display(),
                config_path.display(),
                config.vocab_size,
                config.hidden_size
            );
        }
        if let Some((layer, _, _)) = name.strip_prefix("model.layers.").and_then(super::split_layer_name) {
            match layers.get_mut(layer) {
                Some(seen) => *seen = true,
                None => bail!(
                    "{}: tensor `{name}` is beyond num_hidden_layers = {} ({})",
                    model_dir.display(),
                    config.num_hidden_layers,
                    config_path.display()
                ),
            }
        }
    }
    if let Some(missing) = layers.iter().position(|seen| !seen) {
        bail!(
            "{}: no tensors for layer {missing} of the {} that {} declares",
            model_dir.display(),
            config.num_hidden_layers,
            config_path.display()
        );
    }
    Ok(())
}

/// 2-D tensors in the chosen type; 1-D tensors (norms, biases, rope factors) in f32, as llama.cpp's
/// converter keeps them; q8_0 falls back to f16 for a row length that is not a multiple of its block (32),
/// as llama.cpp's converter does.
fn quantize(tensor: &Tensor, ty: GgufType) -> Result<QTensor> {
    let dtype = match tensor.rank() {
        1 => GgmlDType::F32,
        _ if ty == GgufType::Q8_0 && tensor.dims().last().copied().unwrap_or(0) % GgmlDType::Q8_0.block_size() != 0 => {
            GgmlDType::F16
        }
        _ => ty.ggml(),
    };
    Ok(QTensor::quantize(tensor, dtype)?)
}

/// llama.cpp's permutation of Llama q/k rows for `heads` heads (the inverse of [`super::unpermute_rows`]):
/// Hugging Face row `h·d + j·d/2 + i` becomes GGUF row `h·d + 2i + j`. Works on weights and biases.
pub fn permute_rows(tensor: &Tensor, heads: usize) -> Result<Tensor> {
    let rows = tensor.dim(0)?;
    let cols = tensor.elem_count() / rows.max(1);
    if heads == 0 || rows % (2 * heads) != 0 {
        bail!("cannot permute {rows} rows into {heads} heads of even size");
    }
    let half = rows / heads / 2;
    let permuted = tensor.reshape((heads, 2, half, cols))?.transpose(1, 2)?.contiguous()?;
    Ok(permuted.reshape(tensor.shape())?)
}

/// The divisor llama.cpp applies to each rope frequency (`rope_freqs.weight`): plain over scaled.
fn llama3_rope_factors(config: &ModelConfig) -> Option<Vec<f32>> {
    let s = config.rope_scaling.as_ref()?;
    let plain = Rope::new(config.head_dim, config.rope_theta);
    let scaled = Rope::llama3(
        config.head_dim,
        config.rope_theta,
        s.factor,
        s.low_freq_factor,
        s.high_freq_factor,
        s.original_max_position_embeddings,
    );
    Some(plain.inv_freq().iter().zip(scaled.inv_freq()).map(|(p, q)| (p / q) as f32).collect())
}

/// `<arch>.*` and `general.*` as llama.cpp's loader reads them.
fn model_metadata(c: &ModelConfig, name: &str, ty: GgufType) -> Vec<(String, Value)> {
    let arch = match c.architecture {
        Architecture::Llama => "llama",
        Architecture::Qwen2 => "qwen2",
    };
    let u32_of = |v: usize| Value::U32(v as u32);
    let key = |k: &str| format!("{arch}.{k}");
    let mut m = vec![
        ("general.architecture".to_string(), Value::String(arch.into())),
        ("general.name".to_string(), Value::String(name.into())),
        ("general.file_type".to_string(), Value::U32(ty.file_type())),
        ("general.quantization_version".to_string(), Value::U32(2)),
        (key("vocab_size"), u32_of(c.vocab_size)),
        (key("context_length"), u32_of(c.max_position_embeddings)),
        (key("embedding_length"), u32_of(c.hidden_size)),
        (key("block_count"), u32_of(c.num_hidden_layers)),
        (key("feed_forward_length"), u32_of(c.intermediate_size)),
        (key("rope.dimension_count"), u32_of(c.head_dim)),
        (key("attention.head_count"), u32_of(c.num_attention_heads)),
        (key("attention.head_count_kv"), u32_of(c.num_key_value_heads)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(c.rms_norm_eps as f32)),
        (key("rope.freq_base"), Value::F32(c.rope_theta as f32)),
    ];
    if c.head_dim * c.num_attention_heads != c.hidden_size {
        m.push((key("attention.key_length"), u32_of(c.head_dim)));
        m.push((key("attention.value_length"), u32_of(c.head_dim)));
    }
    m
}

/// Whole-model tensors around the layers, layers by index: the order llama.cpp's converter writes.
fn tensor_order(hf_name: &str) -> (usize, usize, String) {
    match hf_name {
        "model.embed_tokens.weight" => (0, 0, String::new()),
        "model.norm.weight" => (2, 0, String::new()),
        "lm_head.weight" => (3, 0, String::new()),
        _ => {
            let layer = hf_name
                .strip_prefix("model.layers.")
                .and_then(|r| r.split('.').next())
                .and_then(|l| l.parse().ok())
                .unwrap_or(usize::MAX);
            (1, layer, hf_name.to_string())
        }
    }
}

/// candle's GGUF writer into `<dst>.tmp-<pid>`, synced, then linked to `dst` (never over an existing file).
fn write_file_atomically(dst: &Path, metadata: &[(String, Value)], tensors: &[(String, QTensor)]) -> Result<()> {
    let name = dst.file_name().ok_or_else(|| anyhow!("{}: not a file path", dst.display()))?.to_string_lossy();
    let tmp = dst.with_file_name(format!("{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 22, file);
        let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        gguf_file::write(&mut out, &metadata, &tensors).with_context(|| format!("cannot write {}", tmp.display()))?;
        out.flush().with_context(|| format!("cannot write {}", tmp.display()))?;
        let file = out.into_inner().map_err(|e| anyhow!("cannot write {}: {}", tmp.display(), e.error()))?;
        file.sync_all().with_context(|| format!("cannot sync {}", tmp.display()))?;
        // A hard link, unlike a rename, fails when `dst` appeared meanwhile (another export to the same
        // path): the first one finished stays, the second is refused.
        // File systems without hard links get the rename.
        match std::fs::hard_link(&tmp, dst) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("{}: already exists (written by another process meanwhile)", dst.display())
            }
            Err(_) => std::fs::rename(&tmp, dst)
                .with_context(|| format!("cannot move {} to {}", tmp.display(), dst.display())),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Removes `<name>.tmp-<pid>` files beside `dst` left by exports that were killed (their process is gone).
fn remove_stale_temporaries(dst: &Path, name: &str) {
    // Only where /proc tells which processes live (Linux); elsewhere nothing is removed.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let dir = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let prefix = format!("{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|f| f.strip_prefix(&prefix)) else { continue };
        let alive = pid.parse::<u32>().map_or(true, |pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_then_unpermute_is_identity() {
        let t = Tensor::arange(0f32, 48., &Device::Cpu).unwrap().reshape((12, 4)).unwrap();
        let back = super::super::unpermute_rows(&permute_rows(&t, 3).unwrap(), 3).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
        // A bias permutes as a one-column weight: HF row j·d/2 + i goes to 2i + j (d = 4 here).
        let bias = Tensor::new(&[0f32, 1., 2., 3.], &Device::Cpu).unwrap();
        assert_eq!(permute_rows(&bias, 1).unwrap().to_vec1::<f32>().unwrap(), vec![0., 2., 1., 3.]);
    }

    #[test]
    fn rope_factors_match_llama_cpp_closed_form() {
        // Llama 3.1 8B's scaling: factor 8, low 1, high 4, original context 8192, theta 500000, head 128.
        let (theta, dim, factor, low, high, old) = (500000f64, 128usize, 8f64, 1f64, 4f64, 8192f64);
        let json = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 128, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 8, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 131072, "rope_theta": theta,
            "rope_scaling": {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                             "high_freq_factor": high, "original_max_position_embeddings": 8192}
        });
        let config = ModelConfig::from_json(json, Path::new("config.json")).unwrap();
        let factors = llama3_rope_factors(&config).unwrap();
        assert_eq!(factors.len(), dim / 2);
        // llama.cpp's convert_hf_to_gguf.py, written out: 1 for short wavelengths, `factor` for long
        // ones, 1 / ((1 - smooth) / factor + smooth) between.
        for (i, got) in factors.iter().enumerate() {
            let freq = 1.0 / theta.powf((2 * i) as f64 / dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let want = if wavelen < old / high {
                1.0
            } else if wavelen > old / low {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            assert!((*got as f64 - want).abs() < 1e-5 * want, "pair {i}: {got} vs {want}");
        }
        assert_eq!(factors[0], 1.0);
        assert!((factors[dim / 2 - 1] - 8.0).abs() < 1e-5);
    }

    #[test]
    fn types_parse_and_refuse_by_name() {
        assert_eq!("q8_0".parse::<GgufType>().unwrap(), GgufType::Q8_0);
        let error = "q4_k".parse::<GgufType>().unwrap_err().to_string();
        assert!(error.contains("`q4_k`"), "{error}");
    }

    #[test]
    fn q8_0_falls_back_to_f16_for_short_rows_and_1d_stays_f32() {
        let wide = Tensor::zeros((2, 64), DType::F32, &Device::Cpu).unwrap();
        let narrow = Tensor::zeros((2, 48), DType::F32, &Device::Cpu).unwrap();
        let norm = Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(quantize(&wide, GgufType::Q8_0).unwrap().dtype(), GgmlDType::Q8_0);
        assert_eq!(quantize(&narrow, GgufType::Q8_0).unwrap().dtype(), GgmlDType::F16);
        assert_eq!(quantize(&norm, GgufType::F16).unwrap().dtype(), GgmlDType::F32);
    }
}
