//! The character tokenizer of the miniature: one token per printable ASCII character and newline,
//! plus `<|endoftext|>` (id 0, the EOS). Written as a Hugging Face `tokenizer.json`: a byte-level BPE
//! with no merges, so every character is its own token. Byte-level (space is `Ġ`, newline `Ċ`, as in
//! Qwen2's tokenizer) because transformers loads a `qwen2` model's tokenizer as `Qwen2Tokenizer`, which
//! imposes its byte-level pre-tokenizer; with this vocabulary it then splits text exactly as the host does.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

pub const EOS: &str = "<|endoftext|>";

/// The vocabulary in id order.
pub fn vocabulary() -> Vec<String> {
    // Byte-level names: newline and space are shifted to U+010A and U+0120; `!`..`~` are themselves.
    let mut tokens = vec![EOS.to_string(), "\u{10A}".to_string(), "\u{120}".to_string()];
    tokens.extend((b'!'..=b'~').map(|b| (b as char).to_string()));
    tokens
}

pub fn write(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let vocab: Map<String, Value> =
        vocabulary().into_iter().enumerate().map(|(id, token)| (token, Value::from(id))).collect();
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": 0, "content": EOS, "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []},
    });
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS,
        "pad_token": EOS,
        "bos_token": null,
        "unk_token": null,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 512,
    });
    fs::write(dir.join("tokenizer.json"), serde_json::to_string_pretty(&tokenizer)?)
        .with_context(|| format!("cannot write {}", dir.join("tokenizer.json").display()))?;
    fs::write(dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("cannot write {}", dir.join("tokenizer_config.json").display()))?;
    Ok(())
}
