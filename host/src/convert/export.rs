//! `host convert DIR FILE.gguf`: a Hugging Face model directory into a GGUF file llama.cpp loads.
//!
//! The weights and hyper-parameters are [`engine::gguf::write`]'s; this module reads the tokenizer
//! files into llama.cpp's `tokenizer.*` metadata: a byte-level BPE tokenizer.json becomes
//! `tokenizer.ggml.model = gpt2` with its tokens (padded to the model's vocabulary with `[PADn]`, as
//! llama.cpp's converter does), token types (special added tokens are control tokens, other added tokens
//! user-defined), merges and the llama.cpp name of its pre-tokenizer; tokenizer_config.json gives the
//! special token ids and BOS/EOS flags; the chat template is the one every verb renders.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use engine::gguf::{Exported, GgufType, GgufValue};
use serde_json::Value;

use super::{pre_tokenizer, PRE_TOKENIZERS, TOKEN_CONTROL, TOKEN_USER_DEFINED};

/// llama.cpp's token types `NORMAL` and `UNUSED` (the padding entries).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_UNUSED: i32 = 5;

/// Writes the model directory `src` as the GGUF file `dst` (which must not exist).
pub fn hf_to_gguf(src: &Path, dst: &Path, ty: GgufType) -> Result<Exported> {
    let config = engine::ModelConfig::from_hf_dir(src)?;
    let tokenizer = tokenizer_metadata(src, &config)?;
    let name = src.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    engine::gguf::write(dst, src, &config, name.as_deref().unwrap_or("model"), ty, tokenizer)
        .with_context(|| format!("exporting {}", src.display()))
}

/// The `tokenizer.*` metadata of the model directory `dir`.
fn tokenizer_metadata(dir: &Path, config: &engine::ModelConfig) -> Result<Vec<(String, GgufValue)>> {
    let path = dir.join("tokenizer.json");
    let shown = path.display();
    let text = std::fs::read_to_string(&path).with_context(|| format!("{shown}: cannot read"))?;
    let json: Value = serde_json::from_str(&text).with_context(|| format!("{shown}: not valid JSON"))?;
    let model = &json["model"];
    let model_type = model["type"].as_str().unwrap_or("(none)");
    if model_type != "BPE" {
        bail!("{shown}: tokenizer model `{model_type}` is not supported (supported: byte-level BPE)");
    }
    if model["byte_fallback"].as_bool() == Some(true) {
        bail!("{shown}: a BPE with byte_fallback (SentencePiece, llama.cpp's `llama` vocabulary) is not supported yet");
    }
    if !json["normalizer"].is_null() {
        bail!("{shown}: a tokenizer with a normalizer is not supported (llama.cpp's byte-level BPE has none)");
    }
    let pre = pre_tokenizer_name(&json["pre_tokenizer"]).ok_or_else(|| {
        anyhow!(
            "{shown}: the pre_tokenizer is none llama.cpp names that this converter knows ({})",
            PRE_TOKENIZERS.join(", ")
        )
    })?;

    // Tokens by id: the BPE vocabulary, then the added tokens (which may lie outside it).
    let vocab = model["vocab"].as_object().ok_or_else(|| anyhow!("{shown}: `model.vocab` is not an object"))?;
    let mut tokens: Vec<Option<(String, i32)>> = Vec::new();
    let mut put = |id: u64, token: &str, kind: i32| -> Result<()> {
        let id =
            usize::try_from(id).ok().filter(|&id| id < 1 << 24).ok_or_else(|| anyhow!("token id {id} is too large"))?;
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
        }
        tokens[id] = Some((token.to_string(), kind));
        Ok(())
    };
    for (token, id) in vocab {
        let id = id.as_u64().ok_or_else(|| anyhow!("{shown}: `model.vocab.{token}` is not an id"))?;
        put(id, token, TOKEN_NORMAL).with_context(|| shown.to_string())?;
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            bail!("{shown}: an entry of `added_tokens` lacks an integer `id` or a string `content`");
        };
        let kind = if added["special"].as_bool() == Some(true) { TOKEN_CONTROL } else { TOKEN_USER_DEFINED };
        put(id, content, kind as i32).with_context(|| shown.to_string())?;
    }
    if tokens.len() > config.vocab_size {
        bail!(
            "{shown}: {} tokens for a model vocabulary of {} (config.json vocab_size)",
            tokens.len(),
            config.vocab_size
        );
    }
    tokens.resize(config.vocab_size, None);
    let (texts, types): (Vec<GgufValue>, Vec<GgufValue>) = tokens
        .iter()
        .enumerate()
        .map(|(id, entry)| match entry {
            Some((text, kind)) => (GgufValue::String(text.clone()), GgufValue::I32(*kind)),
            None => (GgufValue::String(format!("[PAD{id}]")), GgufValue::I32(TOKEN_UNUSED)),
        })
        .unzip();
    let id_of = |text: &str| -> Option<u32> {
        tokens.iter().position(|t| t.as_ref().is_some_and(|(s, _)| s == text)).map(|i| i as u32)
    };

    let merges = model["merges"].as_array().ok_or_else(|| anyhow!("{shown}: `model.merges` is not a list"))?;
    let merges: Vec<GgufValue> = merges
        .iter()
        .map(|m| match m {
            // tokenizers writes merges as "a b" (before 0.20) or ["a", "b"].
            Value::String(s) => Ok(GgufValue::String(s.clone())),
            Value::Array(pair) if pair.len() == 2 && pair.iter().all(Value::is_string) => Ok(GgufValue::String(
                format!("{} {}", pair[0].as_str().unwrap_or_default(), pair[1].as_str().unwrap_or_default()),
            )),
            other => Err(anyhow!("{shown}: merge {other} is neither \"a b\" nor [\"a\", \"b\"]")),
        })
        .collect::<Result<_>>()?;

    let (config_path, tokenizer_config) = crate::chat::read_tokenizer_config(dir)?;
    let special = crate::chat::special_tokens(&tokenizer_config);
    let special_id = |name: &str| -> Result<Option<u32>> {
        let Some(text) = special.get(name).and_then(Value::as_str) else { return Ok(None) };
        id_of(text)
            .map(Some)
            .ok_or_else(|| anyhow!("{}: `{name}` {text:?} is not a token of {shown}", config_path.display()))
    };
    let bos = special_id("bos_token")?.or(config.bos_token_id);
    let eos = special_id("eos_token")?.or(config.eos_token_ids.first().copied());
    let flag = |name: &str| tokenizer_config[name].as_bool().unwrap_or(false);

    let mut m = vec![
        ("tokenizer.ggml.model".to_string(), GgufValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), GgufValue::String(pre.into())),
        ("tokenizer.ggml.tokens".to_string(), GgufValue::Array(texts)),
        ("tokenizer.ggml.token_type".to_string(), GgufValue::Array(types)),
        ("tokenizer.ggml.merges".to_string(), GgufValue::Array(merges)),
        ("tokenizer.ggml.add_bos_token".to_string(), GgufValue::Bool(flag("add_bos_token"))),
        ("tokenizer.ggml.add_eos_token".to_string(), GgufValue::Bool(flag("add_eos_token"))),
    ];
    for (key, id) in [
        ("bos_token_id", bos),
        ("eos_token_id", eos),
        ("unknown_token_id", special_id("unk_token")?),
        ("padding_token_id", special_id("pad_token")?),
    ] {
        if let Some(id) = id {
            m.push((format!("tokenizer.ggml.{key}"), GgufValue::U32(id)));
        }
    }
    if let Some((source, _)) = crate::chat::find_template(dir, &tokenizer_config)? {
        m.push(("tokenizer.chat_template".into(), GgufValue::String(source)));
    }
    Ok(m)
}

/// The llama.cpp name of a tokenizer.json `pre_tokenizer`: the one whose pre-tokenizer splits text the
/// same way (offset trimming, which does not change ids, is ignored).
fn pre_tokenizer_name(pre: &Value) -> Option<&'static str> {
    let wanted = without_offsets(pre);
    PRE_TOKENIZERS.iter().copied().find(|name| pre_tokenizer(name).is_ok_and(|v| without_offsets(&v) == wanted))
}

fn without_offsets(value: &Value) -> Value {
    match value {
        Value::Object(o) => Value::Object(
            o.iter().filter(|(k, _)| *k != "trim_offsets").map(|(k, v)| (k.clone(), without_offsets(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_offsets).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pre_tokenizers_are_recognised_by_what_they_do() {
        for name in PRE_TOKENIZERS {
            assert_eq!(pre_tokenizer_name(&pre_tokenizer(name).unwrap()), Some(name));
        }
        // Qwen2.5's tokenizer.json: the same split with trim_offsets false.
        let mut qwen = pre_tokenizer("qwen2").unwrap();
        qwen["pretokenizers"][1]["trim_offsets"] = json!(false);
        assert_eq!(pre_tokenizer_name(&qwen), Some("qwen2"));
        let metaspace = json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false});
        assert_eq!(pre_tokenizer_name(&metaspace), None);
    }
}
