//! `host convert`: a `.gguf` file becomes a Hugging Face model directory, and back ([`export`]).
//!
//! The weights and config.json come from [`engine::gguf`]; this module builds the tokenizer files from
//! the GGUF's `tokenizer.ggml.*` metadata: `tokenizer.json` (a byte-level BPE with the vocabulary, the
//! merges, the control and user-defined tokens as added tokens, and the pre-tokenizer llama.cpp names in
//! `tokenizer.ggml.pre`), `tokenizer_config.json` (special tokens, BOS/EOS flags) and
//! `chat_template.jinja` (`tokenizer.chat_template`). The directory is written beside its destination
//! and renamed into place, so a failure leaves nothing behind.

mod export;

pub use export::hf_to_gguf;

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use engine::DType;
use serde_json::{json, Map, Value};

/// llama.cpp's token types (`llama_token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// The pre-tokenizers (by llama.cpp's `tokenizer.ggml.pre` name) that convert builds and recognises.
const PRE_TOKENIZERS: [&str; 4] = ["gpt2", "smollm", "qwen2", "llama-bpe"];

/// GPT-2's pre-tokenizer split (used with byte-level decoding) for Qwen2 and Llama 3 vocabularies.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What a conversion wrote.
pub struct Converted {
    pub architecture: String,
    pub parameters: usize,
    /// `(GGUF type, tensors of it)`, most common first.
    pub source_types: Vec<(String, usize)>,
    pub vocab: usize,
    pub chat_template: bool,
}

/// Converts the GGUF file `src` into the Hugging Face directory `dst` (which must not exist), with the
/// weights dequantized to `dtype` (f32 or bf16).
pub fn gguf_to_hf(src: &Path, dst: &Path, dtype: DType) -> Result<Converted> {
    if dst.exists() {
        bail!("{}: already exists; remove it or choose another destination", dst.display());
    }
    let model = engine::gguf::read(src, dtype)?;
    let shown = src.display().to_string();
    let tokenizer = tokenizer_json(&model.metadata).with_context(|| shown.clone())?;
    // The tokenizers crate must load what we write.
    <tokenizers::Tokenizer as std::str::FromStr>::from_str(&tokenizer.to_string())
        .map_err(|e| anyhow!("{shown}: the tokenizer built from the metadata does not load: {e}"))?;
    let tokenizer_config = tokenizer_config(&model.metadata, &model.config);
    let template = model.metadata.get("tokenizer.chat_template").and_then(Value::as_str).map(str::to_string);
    let mut generation = json!({});
    for key in ["bos_token_id", "eos_token_id"] {
        if let Some(v) = model.config.get(key) {
            generation[key] = v.clone();
        }
    }

    engine::checkpoint::write_dir_atomically(dst, |tmp| {
        write_json(&tmp.join("config.json"), &model.config)?;
        write_json(&tmp.join("generation_config.json"), &generation)?;
        write_json(&tmp.join("tokenizer.json"), &tokenizer)?;
        write_json(&tmp.join("tokenizer_config.json"), &tokenizer_config)?;
        if let Some(template) = &template {
            std::fs::write(tmp.join("chat_template.jinja"), template).context("cannot write chat_template.jinja")?;
        }
        engine::weights::write_safetensors(&tmp.join("model.safetensors"), &model.tensors, &[])
    })
    .with_context(|| format!("converting {shown}"))?;

    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for kind in model.source_types.values() {
        *counts.entry(kind.clone()).or_default() += 1;
    }
    let mut source_types: Vec<(String, usize)> = counts.into_iter().collect();
    source_types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(Converted {
        architecture: model.config["model_type"].as_str().unwrap_or("?").to_string(),
        parameters: model.tensors.iter().map(|(_, t)| t.elem_count()).sum(),
        source_types,
        vocab: model.config["vocab_size"].as_u64().unwrap_or(0) as usize,
        chat_template: template.is_some(),
    })
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn strings<'a>(metadata: &'a Map<String, Value>, key: &str) -> Result<Vec<&'a str>> {
    let list = metadata.get(key).and_then(Value::as_array).ok_or_else(|| anyhow!("the metadata has no `{key}`"))?;
    list.iter().map(|v| v.as_str().ok_or_else(|| anyhow!("`{key}` holds a non-string"))).collect()
}

/// The pre-tokenizer llama.cpp names `pre` (`tokenizer.ggml.pre`), as Hugging Face tokenizers spells it.
fn pre_tokenizer(pre: &str) -> Result<Value> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    Ok(match pre {
        "gpt2" | "default" => byte_level(true),
        // SmolLM: digits one by one, then GPT-2's split.
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level(true),
        ]}),
        "qwen2" | "deepseek-r1-qwen" => {
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]})
        }
        "llama-bpe" | "llama3" | "smaug-bpe" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]})
        }
        other => bail!(
            "tokenizer pre-tokenizer `{other}` (tokenizer.ggml.pre) is not supported (supported: {})",
            PRE_TOKENIZERS.join(", ")
        ),
    })
}

/// `tokenizer.json` for a `gpt2` (byte-level BPE) GGUF vocabulary.
pub fn tokenizer_json(metadata: &Map<String, Value>) -> Result<Value> {
    let model = metadata.get("tokenizer.ggml.model").and_then(Value::as_str).unwrap_or("(none)");
    if model != "gpt2" {
        bail!("tokenizer model `{model}` (tokenizer.ggml.model) is not supported (supported: gpt2, byte-level BPE)");
    }
    let tokens = strings(metadata, "tokenizer.ggml.tokens")?;
    let merges = strings(metadata, "tokenizer.ggml.merges")?;
    let types: Vec<i64> = match metadata.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
        Some(list) => list.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        bail!("tokenizer.ggml.token_type has {} entries for {} tokens", types.len(), tokens.len());
    }
    let pre = metadata.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
    let mut vocab = Map::new();
    for (id, token) in tokens.iter().enumerate() {
        vocab.entry(token.to_string()).or_insert(json!(id));
    }
    let added: Vec<Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &t))| t == TOKEN_CONTROL || t == TOKEN_USER_DEFINED)
        .map(|(id, (token, &t))| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": t == TOKEN_CONTROL})
        })
        .collect();
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').ok_or_else(|| anyhow!("merge {m:?} is not two tokens"))?;
            Ok(json!([a, b]))
        })
        .collect::<Result<_>>()?;
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(pre)?,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    }))
}

/// `tokenizer_config.json`: the special tokens by text, the BOS/EOS flags, the context length.
fn tokenizer_config(metadata: &Map<String, Value>, config: &Value) -> Value {
    let tokens = strings(metadata, "tokenizer.ggml.tokens").unwrap_or_default();
    let text = |key: &str| {
        metadata.get(&format!("tokenizer.ggml.{key}")).and_then(Value::as_u64).and_then(|id| tokens.get(id as usize))
    };
    let flag = |key: &str| metadata.get(&format!("tokenizer.ggml.{key}")).and_then(Value::as_bool).unwrap_or(false);
    json!({
        "bos_token": text("bos_token_id"),
        "eos_token": text("eos_token_id"),
        "unk_token": text("unknown_token_id"),
        "pad_token": text("padding_token_id"),
        "add_bos_token": flag("add_bos_token"),
        "add_eos_token": flag("add_eos_token"),
        "clean_up_tokenization_spaces": false,
        "model_max_length": config["max_position_embeddings"],
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pre: &str) -> Map<String, Value> {
        let tokens = ["<|end|>", "a", "b", "ab", "1", "2", "Ġ", "Ġa"];
        let mut m = Map::new();
        m.insert("tokenizer.ggml.model".into(), json!("gpt2"));
        m.insert("tokenizer.ggml.pre".into(), json!(pre));
        m.insert("tokenizer.ggml.tokens".into(), json!(tokens));
        m.insert("tokenizer.ggml.token_type".into(), json!([3, 1, 1, 1, 1, 1, 1, 1]));
        m.insert("tokenizer.ggml.merges".into(), json!(["a b", "Ġ a"]));
        m.insert("tokenizer.ggml.eos_token_id".into(), json!(0));
        m
    }

    fn ids(tokenizer: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
        tokenizer.encode(text, false).unwrap().get_ids().to_vec()
    }

    #[test]
    fn a_byte_level_bpe_from_metadata() {
        let json = tokenizer_json(&metadata("smollm")).unwrap();
        let tokenizer = <tokenizers::Tokenizer as std::str::FromStr>::from_str(&json.to_string()).unwrap();
        // Merges apply, control tokens are matched whole, spaces are byte-level Ġ.
        assert_eq!(ids(&tokenizer, "ab a<|end|>"), vec![3, 7, 0]);
        // smollm splits digits one by one; "12" has no merge either way, so both give [4, 5].
        assert_eq!(ids(&tokenizer, "12"), vec![4, 5]);
        assert_eq!(tokenizer.decode(&[3, 7], true).unwrap(), "ab a");
    }

    #[test]
    fn unsupported_tokenizers_are_refused_by_name() {
        let error = tokenizer_json(&metadata("falcon")).unwrap_err().to_string();
        assert!(error.contains("`falcon`"), "{error}");
        let mut m = metadata("gpt2");
        m.insert("tokenizer.ggml.model".into(), json!("llama"));
        let error = tokenizer_json(&m).unwrap_err().to_string();
        assert!(error.contains("`llama`"), "{error}");
    }
}
