//! Model configuration: reads a Hugging Face `config.json` into a [`ModelConfig`].
//!
//! Owns the knowledge of which architectures the engine supports (`Qwen2ForCausalLM`,
//! `LlamaForCausalLM`) and of both `config.json` layouts found on the hub:
//!
//! * classic (transformers 4): `rope_theta`, `rope_scaling`, `torch_dtype` at the top level;
//! * transformers 5: `rope_parameters` (holding `rope_theta`, `rope_type` and any scaling
//!   fields) and `dtype`.
//!
//! Every error names the file and, where one is at fault, the key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

/// The decoder families the engine implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `Qwen2ForCausalLM`: Llama-shaped, with biases on the q/k/v projections.
    Qwen2,
    /// `LlamaForCausalLM` (also Llama-2/3, DeepSeek-Math, ...): biases only if `attention_bias`
    /// / `mlp_bias` say so.
    Llama,
}

impl Architecture {
    /// The name used in `config.json`'s `architectures`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
        }
    }
}

/// Llama-3 style rope frequency scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Everything the decoder needs to know about a checkpoint.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// `None` for plain rope (`rope_type` "default" or no scaling).
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Biases on q_proj, k_proj, v_proj.
    pub qkv_bias: bool,
    /// Bias on o_proj (Llama's `attention_bias` covers it; Qwen2 never has one).
    pub o_bias: bool,
    /// Biases on gate/up/down_proj (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// One matrix serves as both the input embedding and the output head.
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` may be one id or a list on the hub; empty when absent.
    pub eos_token_ids: Vec<u32>,
    /// `dtype` / `torch_dtype` as written in the file, if any.
    pub stored_dtype: Option<String>,
    /// The file as read, kept so that a checkpoint can write it back unchanged.
    pub raw: Value,
    /// Where it was read from (for messages).
    pub path: PathBuf,
}

impl ModelConfig {
    /// Reads `<dir>/config.json`.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<ModelConfig> {
        Self::from_file(dir.as_ref().join("config.json"))
    }

    /// Reads a `config.json` at any path.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ModelConfig> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("{}: cannot read model config", path.display()))?;
        let raw: Value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
        Self::from_json(raw, path)
    }

    /// Interprets an already parsed `config.json`; `path` is only used in messages.
    pub fn from_json(raw: Value, path: &Path) -> Result<ModelConfig> {
        let Some(obj) = raw.as_object() else {
            bail!("{}: expected a JSON object at the top level", path.display());
        };
        let j = Json { obj, file: path };

        let architecture = architecture_of(&j)?;
        if let Some(act) = j.opt_str("hidden_act")? {
            if act != "silu" {
                bail!("{}: key `hidden_act` is {act:?}; only \"silu\" is supported", j.file.display());
            }
        }
        if j.opt_bool("use_sliding_window")? == Some(true) {
            bail!("{}: key `use_sliding_window` is true; sliding-window attention is not supported", j.file.display());
        }

        let hidden_size = j.usize("hidden_size")?;
        let num_attention_heads = j.usize("num_attention_heads")?;
        if num_attention_heads == 0 {
            bail!("{}: key `num_attention_heads` must be positive", j.file.display());
        }
        let num_key_value_heads = j.opt_usize("num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            bail!(
                "{}: key `num_key_value_heads` ({num_key_value_heads}) must divide `num_attention_heads` ({num_attention_heads})",
                j.file.display()
            );
        }
        let head_dim = match j.opt_usize("head_dim")? {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    bail!(
                        "{}: `hidden_size` ({hidden_size}) is not a multiple of `num_attention_heads` ({num_attention_heads}) and there is no `head_dim`",
                        j.file.display()
                    );
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim % 2 != 0 {
            bail!("{}: head dimension {head_dim} must be even for rope", j.file.display());
        }

        let (rope_theta, rope_scaling) = rope_of(&j)?;

        let (qkv_bias, o_bias, mlp_bias) = match architecture {
            Architecture::Qwen2 => (true, false, false),
            Architecture::Llama => {
                let attn = j.opt_bool("attention_bias")?.unwrap_or(false);
                (attn, attn, j.opt_bool("mlp_bias")?.unwrap_or(false))
            }
        };

        let stored_dtype = match j.opt_str("dtype")? {
            Some(d) => Some(d.to_string()),
            None => j.opt_str("torch_dtype")?.map(str::to_string),
        };

        Ok(ModelConfig {
            architecture,
            vocab_size: j.usize("vocab_size")?,
            hidden_size,
            intermediate_size: j.usize("intermediate_size")?,
            num_hidden_layers: j.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: j.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            qkv_bias,
            o_bias,
            mlp_bias,
            tie_word_embeddings: j.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            max_position_embeddings: j.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            bos_token_id: j.opt_token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: j.opt_token_ids("eos_token_id")?,
            stored_dtype,
            path: path.to_path_buf(),
            raw,
        })
    }

    /// How many query heads share one key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

/// `architectures[0]`, or `model_type` when there is no `architectures` key.
fn architecture_of(j: &Json) -> Result<Architecture> {
    let name = match j.obj.get("architectures") {
        Some(Value::Array(list)) => match list.as_slice() {
            [Value::String(name)] => name.clone(),
            _ => bail!(
                "{}: key `architectures` must hold exactly one name, got {}",
                j.file.display(),
                Value::Array(list.clone())
            ),
        },
        Some(Value::Null) | None => match j.opt_str("model_type")? {
            Some("qwen2") => "Qwen2ForCausalLM".to_string(),
            Some("llama") => "LlamaForCausalLM".to_string(),
            Some(other) => other.to_string(),
            None => bail!("{}: missing key `architectures`", j.file.display()),
        },
        Some(other) => bail!("{}: key `architectures` must be a list, got {other}", j.file.display()),
    };
    match name.as_str() {
        "Qwen2ForCausalLM" => Ok(Architecture::Qwen2),
        "LlamaForCausalLM" => Ok(Architecture::Llama),
        _ => bail!(
            "{}: unsupported architecture `{name}` (supported: Qwen2ForCausalLM, LlamaForCausalLM)",
            j.file.display()
        ),
    }
}

/// Rope base and scaling, from `rope_parameters` (transformers 5) or `rope_theta` +
/// `rope_scaling` (classic).
fn rope_of(j: &Json) -> Result<(f64, Option<Llama3RopeScaling>)> {
    let (params, params_key) = match j.obj.get("rope_parameters") {
        Some(Value::Object(p)) => (Some(p), "rope_parameters"),
        Some(Value::Null) | None => match j.obj.get("rope_scaling") {
            Some(Value::Object(p)) => (Some(p), "rope_scaling"),
            Some(Value::Null) | None => (None, "rope_scaling"),
            Some(other) => bail!("{}: key `rope_scaling` must be an object or null, got {other}", j.file.display()),
        },
        Some(other) => bail!("{}: key `rope_parameters` must be an object, got {other}", j.file.display()),
    };

    // rope_theta lives inside rope_parameters in the newer layout, at the top level otherwise.
    let nested = params.map(|obj| Json { obj, file: j.file });
    let theta = match nested.as_ref().map(|n| n.opt_f64("rope_theta")).transpose()?.flatten() {
        Some(t) => t,
        None => j.opt_f64("rope_theta")?.unwrap_or(10000.0),
    };

    let Some(p) = nested else {
        return Ok((theta, None));
    };
    let rope_type = match p.opt_str("rope_type")? {
        Some(t) => Some(t),
        None => p.opt_str("type")?,
    };
    match rope_type.unwrap_or("default") {
        "default" => Ok((theta, None)),
        "llama3" => {
            let ctx = |k: &str| format!("{params_key}.{k}");
            let scaling = Llama3RopeScaling {
                factor: p.f64(&ctx("factor"), "factor")?,
                low_freq_factor: p.f64(&ctx("low_freq_factor"), "low_freq_factor")?,
                high_freq_factor: p.f64(&ctx("high_freq_factor"), "high_freq_factor")?,
                // Inside the scaling block on the hub; a top-level key is accepted as well.
                original_max_position_embeddings: match p.opt_usize("original_max_position_embeddings")? {
                    Some(n) => n,
                    None => j.opt_usize("original_max_position_embeddings")?.ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}: missing key `{}`",
                            j.file.display(),
                            ctx("original_max_position_embeddings")
                        )
                    })?,
                },
            };
            if scaling.high_freq_factor <= scaling.low_freq_factor {
                bail!("{}: `{params_key}`: high_freq_factor must exceed low_freq_factor", j.file.display());
            }
            Ok((theta, Some(scaling)))
        }
        other => bail!(
            "{}: key `{params_key}.rope_type` is {other:?}; only \"default\" and \"llama3\" are supported",
            j.file.display()
        ),
    }
}

/// Typed access to a JSON object with errors that name the file and key.
struct Json<'a> {
    obj: &'a Map<String, Value>,
    file: &'a Path,
}

impl Json<'_> {
    /// The value of `key`, treating JSON `null` as absent.
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, want: &str, got: &Value) -> anyhow::Error {
        anyhow::anyhow!("{}: key `{key}` must be {want}, got {got}", self.file.display())
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| anyhow::anyhow!("{}: missing key `{key}`", self.file.display()))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) => Ok(Some(n)),
                None => Err(self.wrong(key, "a non-negative integer", v)),
            },
        }
    }

    /// A required float; `shown` is the key as named in messages (e.g. `rope_scaling.factor`).
    fn f64(&self, shown: &str, key: &str) -> Result<f64> {
        match self.get(key) {
            None => bail!("{}: missing key `{shown}`", self.file.display()),
            Some(v) => v.as_f64().ok_or_else(|| self.wrong(shown, "a number", v)),
        }
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.wrong(key, "a number", v)),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.wrong(key, "true or false", v)),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }

    /// A token id or a list of them (`eos_token_id: [128001, 128009]`).
    fn opt_token_ids(&self, key: &str) -> Result<Vec<u32>> {
        let as_id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| as_id(v).ok_or_else(|| self.wrong(key, "a token id or a list of them", v)))
                .collect(),
            Some(v) => as_id(v).map(|id| vec![id]).ok_or_else(|| self.wrong(key, "a token id or a list of them", v)),
        }
    }
}
