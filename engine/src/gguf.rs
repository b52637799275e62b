//! GGUF files (llama.cpp's format) read into Hugging Face names and layout, through candle's GGUF reader
//! and dequantizers.
//!
//! [`read`] gives the metadata as JSON values (the tokenizer is built from it by the host, which knows
//! the tokenizers crate), a Hugging Face `config.json` for the architectures `llama` and `qwen2`, and
//! every tensor dequantized under its Hugging Face name. llama.cpp's converter permutes the rows of a
//! Llama checkpoint's q and k projections (rotate-half pairs become interleaved pairs, llama.cpp's
//! "normal" rope); [`unpermute_rows`] undoes that. Qwen2 uses the NEOX rope in llama.cpp: nothing to undo.
//! [`write`] goes the other way: a Hugging Face checkpoint into a GGUF file llama.cpp loads.

mod export;

pub use candle_core::quantized::gguf_file::Value as GgufValue;
pub use export::{permute_rows, write, Exported, GgufType};

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Map, Value};

/// A GGUF model in Hugging Face terms.
pub struct GgufModel {
    /// Every metadata key, its value as JSON (arrays of tokens and merges included).
    pub metadata: Map<String, Value>,
    /// `config.json` for transformers.
    pub config: Value,
    /// Tensors under Hugging Face names, dequantized to `dtype`, q/k rows un-permuted.
    pub tensors: Vec<(String, Tensor)>,
    /// The GGUF type of each source tensor (`Q4_1`, `F32`, …), by Hugging Face name.
    pub source_types: HashMap<String, String>,
}

/// Reads `path`, dequantizing every tensor to `dtype` (F32 or BF16).
pub fn read(path: &Path, dtype: DType) -> Result<GgufModel> {
    let shown = path.display();
    let mut file = std::fs::File::open(path).with_context(|| format!("{shown}: cannot open"))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| anyhow!("{shown}: not a readable GGUF file: {e}"))?;
    let metadata: Map<String, Value> = content.metadata.iter().map(|(k, v)| (k.clone(), to_json(v))).collect();
    let architecture = metadata
        .get("general.architecture")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{shown}: no general.architecture in the metadata"))?
        .to_string();
    let layout = match architecture.as_str() {
        "llama" => Layout { permute_qk: true, hf_architecture: "LlamaForCausalLM", model_type: "llama" },
        "qwen2" => Layout { permute_qk: false, hf_architecture: "Qwen2ForCausalLM", model_type: "qwen2" },
        other => bail!("{shown}: architecture `{other}` is not supported (supported: llama, qwen2)"),
    };
    let config = hf_config(&metadata, &architecture, &layout, content.tensor_infos.contains_key("output.weight"))
        .with_context(|| format!("{shown}"))?;
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        bail!("{shown}: Llama-3 rope scaling stored as rope_freqs.weight is not supported yet");
    }
    let heads = config["num_attention_heads"].as_u64().unwrap_or(0) as usize;
    let kv_heads = config["num_key_value_heads"].as_u64().unwrap_or(0) as usize;

    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    let mut source_types = HashMap::new();
    for gguf_name in names {
        let hf_name = hf_tensor_name(gguf_name).ok_or_else(|| anyhow!("{shown}: unexpected tensor `{gguf_name}`"))?;
        let qtensor = content
            .tensor(&mut file, gguf_name, &Device::Cpu)
            .map_err(|e| anyhow!("{shown}: tensor `{gguf_name}`: {e}"))?;
        let source_type = format!("{:?}", qtensor.dtype());
        let mut tensor = qtensor.dequantize(&Device::Cpu).map_err(|e| anyhow!("{shown}: tensor `{gguf_name}`: {e}"))?;
        if layout.permute_qk {
            if gguf_name.ends_with("attn_q.weight") {
                tensor = unpermute_rows(&tensor, heads)?;
            } else if gguf_name.ends_with("attn_k.weight") {
                tensor = unpermute_rows(&tensor, kv_heads)?;
            }
        }
        source_types.insert(hf_name.clone(), source_type.to_uppercase());
        tensors.push((hf_name, tensor.to_dtype(dtype)?));
    }
    Ok(GgufModel { metadata, config, tensors, source_types })
}

struct Layout {
    permute_qk: bool,
    hf_architecture: &'static str,
    model_type: &'static str,
}

/// Undoes llama.cpp's q/k permutation for `heads` heads: GGUF row `h·d + 2i + j` (pair `i`, half `j`)
/// holds Hugging Face row `h·d + j·d/2 + i`.
pub fn unpermute_rows(tensor: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = tensor.dims2()?;
    if heads == 0 || rows % (2 * heads) != 0 {
        bail!("cannot un-permute {rows} rows into {heads} heads of even size");
    }
    let half = rows / heads / 2;
    Ok(tensor.reshape((heads, half, 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((rows, cols))?)
}

/// Whole-model tensors: llama.cpp's name, Hugging Face's name.
const MODEL_TENSORS: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Per-layer modules: llama.cpp's `blk.N.<name>`, Hugging Face's `model.layers.N.<name>`.
const LAYER_MODULES: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// The Hugging Face name of a GGUF tensor (llama.cpp's names for llama and qwen2).
fn hf_tensor_name(name: &str) -> Option<String> {
    if let Some((_, hf)) = MODEL_TENSORS.iter().find(|(gguf, _)| *gguf == name) {
        return Some(hf.to_string());
    }
    let (layer, module, kind) = split_layer_name(name.strip_prefix("blk.")?)?;
    let (_, hf) = LAYER_MODULES.iter().find(|(gguf, _)| *gguf == module)?;
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The GGUF name of a Hugging Face tensor; the inverse of [`hf_tensor_name`].
fn gguf_tensor_name(name: &str) -> Option<String> {
    if let Some((gguf, _)) = MODEL_TENSORS.iter().find(|(_, hf)| *hf == name) {
        return Some(gguf.to_string());
    }
    let (layer, module, kind) = split_layer_name(name.strip_prefix("model.layers.")?)?;
    let (gguf, _) = LAYER_MODULES.iter().find(|(_, hf)| *hf == module)?;
    Some(format!("blk.{layer}.{gguf}.{kind}"))
}

/// `"12.self_attn.q_proj.weight"` → `(12, "self_attn.q_proj", "weight")`.
fn split_layer_name(rest: &str) -> Option<(usize, &str, &str)> {
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = part.rsplit_once('.')?;
    matches!(kind, "weight" | "bias").then_some((layer, module, kind))
}

/// `config.json` from the `<arch>.*` and `tokenizer.ggml.*` metadata.
fn hf_config(metadata: &Map<String, Value>, arch: &str, layout: &Layout, has_output: bool) -> Result<Value> {
    let key = |name: &str| format!("{arch}.{name}");
    let required = |name: &str| -> Result<&Value> {
        metadata.get(&key(name)).ok_or_else(|| anyhow!("the metadata has no `{}`", key(name)))
    };
    let int = |name: &str| -> Result<u64> {
        required(name)?.as_u64().ok_or_else(|| anyhow!("metadata `{}` is not an integer", key(name)))
    };
    let hidden = int("embedding_length")?;
    let heads = int("attention.head_count")?;
    let kv_heads = metadata.get(&key("attention.head_count_kv")).and_then(Value::as_u64).unwrap_or(heads);
    let vocab = match metadata.get("tokenizer.ggml.tokens").and_then(Value::as_array) {
        Some(tokens) => tokens.len() as u64,
        None => int("vocab_size")?,
    };
    let head_dim = metadata
        .get(&key("attention.key_length"))
        .or_else(|| metadata.get(&key("rope.dimension_count")))
        .and_then(Value::as_u64)
        .unwrap_or(hidden / heads.max(1));
    let eps = required("attention.layer_norm_rms_epsilon")?
        .as_f64()
        .ok_or_else(|| anyhow!("metadata `{}` is not a number", key("attention.layer_norm_rms_epsilon")))?;
    let token = |name: &str| metadata.get(&format!("tokenizer.ggml.{name}")).and_then(Value::as_u64);
    let mut config = json!({
        "architectures": [layout.hf_architecture],
        "model_type": layout.model_type,
        "hidden_size": hidden,
        "intermediate_size": int("feed_forward_length")?,
        "num_hidden_layers": int("block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int("context_length")?,
        "rms_norm_eps": round_f32(eps),
        "rope_theta": metadata.get(&key("rope.freq_base")).and_then(Value::as_f64).map_or(10000.0, round_f32),
        "rope_scaling": null,
        "vocab_size": vocab,
        "tie_word_embeddings": !has_output,
        "torch_dtype": "float32",
        "attention_bias": layout.model_type == "qwen2",
    });
    if let Some(bos) = token("bos_token_id") {
        config["bos_token_id"] = json!(bos);
    }
    if let Some(eos) = token("eos_token_id") {
        config["eos_token_id"] = json!(eos);
    }
    Ok(config)
}

/// The shortest decimal that rounds to the same f32: GGUF stores 1e-5 as f32 9.99999974e-6.
fn round_f32(value: f64) -> f64 {
    let shortest = format!("{}", value as f32);
    shortest.parse().unwrap_or(value)
}

fn to_json(value: &GgufValue) -> Value {
    match value {
        GgufValue::U8(v) => json!(v),
        GgufValue::I8(v) => json!(v),
        GgufValue::U16(v) => json!(v),
        GgufValue::I16(v) => json!(v),
        GgufValue::U32(v) => json!(v),
        GgufValue::I32(v) => json!(v),
        GgufValue::U64(v) => json!(v),
        GgufValue::I64(v) => json!(v),
        GgufValue::F32(v) => json!(v),
        GgufValue::F64(v) => json!(v),
        GgufValue::Bool(v) => json!(v),
        GgufValue::String(v) => json!(v),
        GgufValue::Array(items) => Value::Array(items.iter().map(to_json).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp's permute (convert_hf_to_gguf.py), written out by index: GGUF row h·d + 2i + j takes
        // HF row h·d + j·d/2 + i.
        let (heads, d, cols) = (3, 8, 2);
        let rows = heads * d;
        let hf: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let mut gguf = vec![0f32; rows * cols];
        for h in 0..heads {
            for i in 0..d / 2 {
                for j in 0..2 {
                    let (to, from) = (h * d + 2 * i + j, h * d + j * d / 2 + i);
                    gguf[to * cols..(to + 1) * cols].copy_from_slice(&hf[from * cols..(from + 1) * cols]);
                }
            }
        }
        let permuted = Tensor::from_vec(gguf, (rows, cols), &Device::Cpu).unwrap();
        let back = unpermute_rows(&permuted, heads).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(back, hf);
        assert!(unpermute_rows(&permuted, 5).is_err());
    }

    #[test]
    fn tensor_names() {
        assert_eq!(hf_tensor_name("blk.12.attn_k.bias").unwrap(), "model.layers.12.self_attn.k_proj.bias");
        assert_eq!(hf_tensor_name("blk.0.ffn_down.weight").unwrap(), "model.layers.0.mlp.down_proj.weight");
        assert_eq!(hf_tensor_name("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert!(hf_tensor_name("blk.0.attn_qkv.weight").is_none());
        assert!(hf_tensor_name("rope_freqs.weight").is_none());
    }

    #[test]
    fn gguf_names_invert_hf_names() {
        for name in ["token_embd.weight", "output.weight", "blk.3.attn_q.bias", "blk.29.ffn_up.weight"] {
            assert_eq!(gguf_tensor_name(&hf_tensor_name(name).unwrap()).unwrap(), name);
        }
        assert!(gguf_tensor_name("model.layers.0.self_attn.rotary_emb.inv_freq").is_none());
    }

    #[test]
    fn f32_metadata_reads_as_its_shortest_decimal() {
        assert_eq!(round_f32(1e-5f32 as f64), 1e-5);
        assert_eq!(round_f32(100000.0), 100000.0);
    }
}
