//! The differentiable decoder (Qwen2 / Llama) and what is computed from its logits.
//!
//! Owns the parameters (one [`Var`] per Hugging Face tensor name; a tied model's embedding is
//! one `Var` serving as both input embedding and output head), the forward pass over a
//! right-padded batch, and the per-token quantities the trainer needs: log-probabilities of the
//! targets (differentiable), and, without gradient, entropy and top-1 probability.
//!
//! Right padding needs no attention mask: with a causal mask, real tokens never see the pads
//! that follow them, and positions are `0..T` in every row.
//!
//! Training goes through [`Model::training_pass`]: on the CPU in float32 a hand-written forward and
//! backward (`model/backprop.rs`), elsewhere [`Model::forward`] under candle's autograd.
//!
//! Inference (see [`crate::generate`]) runs the same layers through [`Model::forward_cached`],
//! which takes explicit positions and an attention mask (for left-padded batches) and appends
//! each layer's keys and values to a [`KvCache`] instead of recomputing the prefix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};

use crate::config::ModelConfig;
use crate::ops::{self, Rope};
use crate::optim::Grads;
use crate::weights::{self, StoredTensor};

mod backprop;
mod dropout;
mod lora;

pub use lora::{is_adapter_dir, LoraConfig, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, LINEAR_MODULES};

/// A projection `y = x Wᵀ + b`, weights in the Hugging Face `[out, in]` layout, plus `s · (x Aᵀ) Bᵀ`
/// where a LoRA adapter is attached.
#[derive(Debug, Clone)]
struct Linear {
    weight: Var,
    bias: Option<Var>,
    adapter: Option<lora::Adapter>,
}

impl Linear {
    fn forward(&self, x: &Tensor, graph: Graph) -> candle_core::Result<Tensor> {
        let bias = self.bias.as_ref().map(|b| graph.param(b));
        let y = ops::linear(x, &graph.param(&self.weight), bias.as_ref())?;
        let Some(adapter) = &self.adapter else { return Ok(y) };
        let mut x = x.to_dtype(DType::F32)?;
        if let Graph::AdapterOnly(Some(dropout)) = graph {
            // The adapter's input through its dropout mask, the one the hand-written pass draws.
            let (batch, time, width) = x.dims3()?;
            let mask = dropout.padded_mask(adapter.stream, batch, time, width);
            x = (x * Tensor::from_vec(mask, (batch, time, width), y.device())?)?;
        }
        let down = ops::linear(&x, &graph.adapter(&adapter.a), None)?;
        let up = ops::linear(&down, &graph.adapter(&adapter.b), None)?;
        let dtype = y.dtype();
        y + (up * adapter.scale)?.to_dtype(dtype)?
    }
}

/// What every layer of one forward pass shares: rope tables (broadcast to `[B, heads, T, head_dim]`), the
/// additive mask (broadcast to `[B, heads, T, keys]`) and whether the autograd graph is recorded.
struct Positions<'a> {
    cos: &'a Tensor,
    sin: &'a Tensor,
    mask: &'a Tensor,
    graph: Graph,
}

/// Whether a forward pass records candle's autograd graph, and for which parameters. Inference does
/// not: a recorded graph keeps every layer's intermediate tensors alive until the output is dropped,
/// so memory would grow with the depth of the model. With a LoRA adapter only the adapter is tracked,
/// its inputs through their dropout masks in a training pass of an adapter with dropout.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Graph {
    Tracked,
    AdapterOnly(Option<dropout::Dropout>),
    Detached,
}

impl Graph {
    /// A base parameter as this pass reads it (detaching shares the storage; nothing is copied).
    fn param(self, var: &Var) -> Tensor {
        match self {
            Graph::Tracked => var.as_tensor().clone(),
            Graph::AdapterOnly(_) | Graph::Detached => var.as_tensor().detach(),
        }
    }

    /// An adapter parameter as this pass reads it.
    fn adapter(self, var: &Var) -> Tensor {
        match self {
            Graph::Tracked | Graph::AdapterOnly(_) => var.as_tensor().clone(),
            Graph::Detached => var.as_tensor().detach(),
        }
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

#[derive(Debug, Clone)]
struct Block {
    input_layernorm: Var,
    self_attn: Attention,
    post_attention_layernorm: Var,
    mlp: Mlp,
}

/// A causal language model whose every parameter is trainable.
///
/// Cloning is shallow: a clone shares the parameters (updating one updates both).
#[derive(Debug, Clone)]
pub struct Model {
    config: ModelConfig,
    /// All parameters, in Hugging Face order, each once (a tied head is not listed again).
    params: Vec<(String, Var)>,
    embed_tokens: Var,
    layers: Vec<Block>,
    norm: Var,
    /// The same `Var` as `embed_tokens` when the embeddings are tied.
    lm_head: Var,
    rope: Rope,
    dtype: DType,
    device: Device,
    /// The directory the model was loaded from (tokenizer files are copied from here on save).
    source_dir: PathBuf,
    /// The attached LoRA adapter (then the base parameters are frozen).
    lora: Option<lora::Lora>,
}

impl Model {
    /// Loads a Hugging Face directory in float32, the precision the trainer uses.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Model> {
        Self::load_with_dtype(dir, device, DType::F32)
    }

    /// Loads a Hugging Face directory, converting every tensor to `dtype` (F32, BF16 or F16).
    /// Norms and softmax are computed in float32 whatever `dtype` is, as in transformers. A LoRA
    /// adapter directory ([`is_adapter_dir`]) loads on the base model it names.
    pub fn load_with_dtype(dir: impl AsRef<Path>, device: &Device, dtype: DType) -> Result<Model> {
        let dir = dir.as_ref();
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            bail!("unsupported model dtype {dtype:?} (use f32, bf16 or f16)");
        }
        if is_adapter_dir(dir) {
            return Self::load_adapter_dir(dir, device, dtype);
        }
        let config = ModelConfig::from_hf_dir(dir)?;
        let stored = weights::read_model_tensors(dir, device)?;
        let loader = Loader { dir, source: Source::Stored(stored), params: Vec::new(), dtype, device };
        Self::assemble(config, loader)
    }

    /// A model of `config`'s shape with random float32 weights, as transformers initialises one
    /// (`initializer_range` 0.02): matrices and embeddings from N(0, 0.02²), biases 0, norm weights 1.
    /// Deterministic in `seed`. For benchmarks and tests; `source_dir` is empty.
    pub fn random(config: ModelConfig, seed: u64, device: &Device) -> Result<Model> {
        Self::random_with_dtype(config, seed, device, DType::F32)
    }

    /// [`Model::random`]'s float32 values converted to `dtype`.
    pub fn random_with_dtype(config: ModelConfig, seed: u64, device: &Device, dtype: DType) -> Result<Model> {
        let loader = Loader {
            dir: Path::new(""),
            source: Source::Random { state: seed, std: 0.02 },
            params: Vec::new(),
            dtype,
            device,
        };
        Self::assemble(config, loader)
    }

    /// Builds the layers, taking every parameter from `loader` in Hugging Face order.
    fn assemble(config: ModelConfig, mut loader: Loader<'_>) -> Result<Model> {
        let (dir, dtype, device) = (loader.dir.to_path_buf(), loader.dtype, loader.device.clone());
        let c = &config;
        let (h, kv_dim, q_dim) =
            (c.hidden_size, c.num_key_value_heads * c.head_dim, c.num_attention_heads * c.head_dim);
        let embed_tokens = loader.take("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut linear = |name: &str, out_dim: usize, in_dim: usize, bias: bool| -> Result<Linear> {
                let weight = loader.take(&format!("{p}.{name}.weight"), &[out_dim, in_dim])?;
                let bias = match bias {
                    true => Some(loader.take(&format!("{p}.{name}.bias"), &[out_dim])?),
                    false => None,
                };
                Ok(Linear { weight, bias, adapter: None })
            };
            let self_attn = Attention {
                q_proj: linear("self_attn.q_proj", q_dim, h, c.qkv_bias)?,
                k_proj: linear("self_attn.k_proj", kv_dim, h, c.qkv_bias)?,
                v_proj: linear("self_attn.v_proj", kv_dim, h, c.qkv_bias)?,
                o_proj: linear("self_attn.o_proj", h, q_dim, c.o_bias)?,
            };
            let mlp = Mlp {
                gate_proj: linear("mlp.gate_proj", c.intermediate_size, h, c.mlp_bias)?,
                up_proj: linear("mlp.up_proj", c.intermediate_size, h, c.mlp_bias)?,
                down_proj: linear("mlp.down_proj", h, c.intermediate_size, c.mlp_bias)?,
            };
            // Hugging Face order within a layer: norms after the projections.
            let input_layernorm = loader.take(&format!("{p}.input_layernorm.weight"), &[h])?;
            let post_attention_layernorm = loader.take(&format!("{p}.post_attention_layernorm.weight"), &[h])?;
            layers.push(Block { input_layernorm, self_attn, post_attention_layernorm, mlp });
        }
        let norm = loader.take("model.norm.weight", &[h])?;
        // A tied checkpoint has no lm_head.weight (transformers ignores one if present).
        let lm_head = match c.tie_word_embeddings {
            true => embed_tokens.clone(),
            false => loader.take("lm_head.weight", &[c.vocab_size, h])?,
        };
        loader.refuse_unused(c)?;

        let rope = match &c.rope_scaling {
            None => Rope::new(c.head_dim, c.rope_theta),
            Some(s) => Rope::llama3(
                c.head_dim,
                c.rope_theta,
                s.factor,
                s.low_freq_factor,
                s.high_freq_factor,
                s.original_max_position_embeddings,
            ),
        };
        Ok(Model {
            params: loader.params,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            dtype,
            device,
            source_dir: dir,
            config,
            lora: None,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The directory this model was loaded from.
    pub fn source_dir(&self) -> &Path {
        &self.source_dir
    }

    /// Every parameter once, keyed by its Hugging Face name, in checkpoint order.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Number of scalar parameters (a tied matrix counted once).
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Logits `[B, T, V]` (float32) for token ids `[B, T]` (u32), right-padded rows allowed.
    /// No dropout: a training pass ([`Model::training_pass`]) is where an adapter's dropout acts.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.logits(input_ids, if self.lora.is_some() { Graph::AdapterOnly(None) } else { Graph::Tracked })
    }

    /// [`Model::forward`], recording the autograd graph or not.
    fn logits(&self, input_ids: &Tensor, graph: Graph) -> Result<Tensor> {
        let (_, t) = input_ids.dims2().context("input_ids must have shape [batch, time]")?;
        if input_ids.dtype() != DType::U32 {
            bail!("input_ids must be u32, got {:?}", input_ids.dtype());
        }
        if t == 0 {
            bail!("input_ids must hold at least one position");
        }
        let (cos, sin) = self.rope.tables(t, self.dtype, &self.device)?;
        let mask = ops::causal_mask(t, &self.device)?;

        let mut x = self.embed(input_ids, graph)?;
        for block in &self.layers {
            x = self.block_forward(block, &x, &Positions { cos: &cos, sin: &sin, mask: &mask, graph }, None)?;
        }
        let x = ops::rms_norm(&x, &graph.param(&self.norm), self.config.rms_norm_eps)?;
        let logits = ops::linear(&x, &graph.param(&self.lm_head), None)?;
        Ok(logits.to_dtype(DType::F32)?)
    }

    /// Inference forward pass over new tokens that reads and extends `cache`; returns the
    /// float32 logits of the last position only, `[B, V]`, detached from the autograd graph.
    ///
    /// * `input_ids` `[B, T]` (u32): the tokens after those already in the cache;
    /// * `positions` `[B, T]` (u32): the rope position of each of them (a left-padded row counts
    ///   from 0 at its first real token);
    /// * `mask` (f32, additive): broadcastable to `[B, 1, T, cache.len() + T]`, 0 where query `t`
    ///   may attend to a key column and `-inf` where not (causality and padding both go here).
    ///   Every query must be allowed at least one key, or its row becomes NaN.
    ///
    /// The layer math is the training path's ([`Model::forward`]); only the source of keys and
    /// values, the positions and the mask differ.
    pub fn forward_cached(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2().context("input_ids must have shape [batch, time]")?;
        if input_ids.dtype() != DType::U32 || positions.dtype() != DType::U32 {
            bail!("input_ids and positions must be u32");
        }
        if positions.dims() != [b, t] {
            bail!("positions shape {:?} does not match input_ids {:?}", positions.dims(), input_ids.dims());
        }
        if t == 0 {
            bail!("input_ids must hold at least one position");
        }
        if let Some(cached) = cache.batch_size() {
            if cached != b {
                bail!("the cache holds {cached} rows, input_ids {b}");
            }
        }
        let keys = cache.len() + t;
        if mask.dims().last() != Some(&keys) {
            bail!("mask shape {:?}: its last dimension must be cache.len() + T = {keys}", mask.dims());
        }
        let (cos, sin) = cache.rope_rows(&self.rope, positions, self.dtype, &self.device)?;
        cache.layers.resize(self.layers.len(), None);

        let graph = Graph::Detached;
        let mut x = self.embed(input_ids, graph)?;
        for (block, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = self.block_forward(block, &x, &Positions { cos: &cos, sin: &sin, mask, graph }, Some(kv))?;
        }
        let x = x.narrow(1, t - 1, 1)?;
        let x = ops::rms_norm(&x, &graph.param(&self.norm), self.config.rms_norm_eps)?;
        let logits = ops::linear(&x, &graph.param(&self.lm_head), None)?;
        Ok(logits.squeeze(1)?.to_dtype(DType::F32)?.detach())
    }

    /// Embedding lookup: `[B, T]` ids -> `[B, T, hidden]`.
    fn embed(&self, input_ids: &Tensor, graph: Graph) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let flat = input_ids.flatten_all()?;
        let max_id = flat.max(0)?.to_scalar::<u32>()? as usize;
        if max_id >= self.config.vocab_size {
            bail!("token id {max_id} is out of range for vocabulary size {}", self.config.vocab_size);
        }
        let x = graph.param(&self.embed_tokens).index_select(&flat, 0)?;
        Ok(x.reshape((b, t, self.config.hidden_size))?)
    }

    /// One pre-norm decoder layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
    ///
    /// With `kv`, the layer's cached keys/values are prepended to this call's and then extended.
    fn block_forward(&self, block: &Block, x: &Tensor, at: &Positions, kv: Option<&mut LayerKv>) -> Result<Tensor> {
        let (eps, graph) = (self.config.rms_norm_eps, at.graph);
        let h = ops::rms_norm(x, &graph.param(&block.input_layernorm), eps)?;
        let x = (x + self.attention(&block.self_attn, &h, at, kv)?)?;
        let h = ops::rms_norm(&x, &graph.param(&block.post_attention_layernorm), eps)?;
        let mlp = &block.mlp;
        let gated = ops::swiglu(&mlp.gate_proj.forward(&h, graph)?, &mlp.up_proj.forward(&h, graph)?)?;
        Ok((x + mlp.down_proj.forward(&gated, graph)?)?)
    }

    /// Causal grouped-query self-attention with rope (transformers' eager attention).
    fn attention(&self, attn: &Attention, x: &Tensor, at: &Positions, kv: Option<&mut LayerKv>) -> Result<Tensor> {
        let (c, graph, mask) = (&self.config, at.graph, at.mask);
        let (b, t, _) = x.dims3()?;
        let heads = |y: Tensor, n: usize| -> candle_core::Result<Tensor> {
            // [B, T, n·d] -> [B, n, T, d]
            y.reshape((b, t, n, c.head_dim))?.transpose(1, 2)?.contiguous()
        };
        let q = heads(attn.q_proj.forward(x, graph)?, c.num_attention_heads)?;
        let k = heads(attn.k_proj.forward(x, graph)?, c.num_key_value_heads)?;
        let v = heads(attn.v_proj.forward(x, graph)?, c.num_key_value_heads)?;

        let q = ops::apply_rope(&q, at.cos, at.sin)?;
        let k = ops::apply_rope(&k, at.cos, at.sin)?;
        let (k, v) = match kv {
            None => (k, v),
            Some(slot) => append_kv(slot, &k, &v)?,
        };

        // Grouped-query attention without copying keys and values per query head (transformers'
        // `repeat_kv`): the `groups` query heads that share a kv head are stacked along time,
        // `[B, kv, groups·T, d]`, a free reshape of `[B, heads, T, d]` since head h uses kv head h / groups.
        let (kv_heads, groups, keys) = (c.num_key_value_heads, c.kv_groups(), k.dim(2)?);
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        let q = q.reshape((b, kv_heads, groups * t, c.head_dim))?;
        let scores = q.matmul(&k.t()?)?.reshape((b, c.num_attention_heads, t, keys))?;
        let probs = ops::masked_softmax(&scores, scale, mask)?.to_dtype(self.dtype)?;
        let probs = probs.reshape((b, kv_heads, groups * t, keys))?;
        let out = probs.matmul(&v)?.reshape((b, c.num_attention_heads, t, c.head_dim))?;
        let out = out.transpose(1, 2)?.reshape((b, t, c.num_attention_heads * c.head_dim))?;
        Ok(attn.o_proj.forward(&out, graph)?)
    }

    /// The forward pass of one training micro-batch (`input_ids` `[B, T]`, right-padded, T ≥ 2),
    /// kept for [`TrainingPass::backward`]: [`Model::training_pass_packed`] with every row `T` long.
    pub fn training_pass(&self, input_ids: &Tensor) -> Result<TrainingPass> {
        let (batch, time) = training_dims(input_ids)?;
        self.training_pass_packed(input_ids, &vec![time; batch])
    }

    /// The forward pass of one training micro-batch whose row `b` holds `lengths[b]` real tokens
    /// followed by padding, kept for [`TrainingPass::backward`].
    ///
    /// Float32 on the CPU runs the hand-written pass (activations on a tape, backward in closed
    /// form, see `model/backprop.rs`) on the rows laid end to end, so padding costs nothing; other
    /// dtypes and devices run [`Model::forward`] under candle's autograd over the padded batch. Both
    /// compute the same quantities at every position that predicts a real token (what they give at
    /// the positions that predict padding differs: 0 on the packed pass).
    ///
    /// `ENGINE_TRAINING_PASS=autograd` in the environment makes every training pass candle's
    /// autograd (to compare whole runs between the two).
    pub fn training_pass_packed(&self, input_ids: &Tensor, lengths: &[usize]) -> Result<TrainingPass> {
        let (batch, time) = training_dims(input_ids)?;
        let layout = backprop::Layout::new(batch, time, lengths)?;
        if !backprop::applies(self) || autograd_requested() {
            return self.training_pass_autograd(input_ids);
        }
        let ids: Vec<u32> = input_ids.flatten_all()?.to_vec1()?;
        Ok(TrainingPass(Pass::Manual(Box::new(backprop::forward(self, &ids, layout)?))))
    }

    /// [`Model::training_pass`] through candle's autograd whatever the device and dtype (the
    /// reference the hand-written pass is tested and benchmarked against).
    pub fn training_pass_autograd(&self, input_ids: &Tensor) -> Result<TrainingPass> {
        training_dims(input_ids)?;
        let graph = if self.lora.is_some() { Graph::AdapterOnly(self.training_dropout()) } else { Graph::Tracked };
        let logits = self.logits(input_ids, graph)?;
        let logp = token_logprobs(&logits, input_ids)?;
        Ok(TrainingPass(Pass::Autograd { logits, logp }))
    }

    /// `[B, T-1]` log-probabilities of the next tokens of `input_ids` (`[B, T]`, T ≥ 2, row `b` holding
    /// `lengths[b]` real tokens and then padding), row-major, for scoring: no gradient. Positions that
    /// predict padding are 0 on the CPU and unspecified elsewhere.
    ///
    /// Float32 on the CPU runs the hand-written forward pass with nothing kept, on the rows laid end to
    /// end (tiled attention, logits a block of rows at a time), so memory grows linearly with the real
    /// tokens; elsewhere [`Model::forward`] over the padded batch.
    pub fn next_token_logprobs(&self, input_ids: &Tensor, lengths: &[usize]) -> Result<Vec<f32>> {
        let (batch, time) = training_dims(input_ids)?;
        let layout = backprop::Layout::new(batch, time, lengths)?;
        if backprop::applies(self) {
            let ids: Vec<u32> = input_ids.flatten_all()?.to_vec1()?;
            return backprop::next_token_logprobs(self, &ids, layout);
        }
        let logits = self.logits(input_ids, Graph::Detached)?;
        Ok(token_logprobs(&logits, input_ids)?.flatten_all()?.to_vec1()?)
    }

    /// Back-propagates a scalar loss and returns the gradient of every parameter that
    /// received one, keyed by Hugging Face name (a tied matrix gets the sum of both uses).
    /// Gradients are float32 whatever the parameters' dtype (accumulation, clipping and the
    /// optimizer work in float32).
    pub fn backward(&self, loss: &Tensor) -> Result<Grads> {
        let store = loss.backward()?;
        let mut grads = Grads::default();
        for (name, var) in self.trainable_params() {
            if let Some(g) = store.get(var.as_tensor()) {
                grads.insert(name.clone(), g.to_dtype(DType::F32)?);
            }
        }
        Ok(grads)
    }

    /// Writes new values into the parameters (e.g. from a checkpoint), checking names and shapes.
    pub fn set_params(&self, values: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in &self.params {
            let Some(value) = values.get(name) else { bail!("no value for parameter `{name}`") };
            if value.dims() != var.dims() {
                bail!("parameter `{name}`: shape {:?}, expected {:?}", value.dims(), var.dims());
            }
            var.set(&value.to_dtype(self.dtype)?.to_device(&self.device)?)?;
        }
        Ok(())
    }
}

/// Frees the activation buffers that training passes keep for reuse by the next step (they hold
/// about one step's activations); call it when training is over.
pub fn release_training_buffers() {
    backprop::release_buffers();
}

/// Whether `ENGINE_TRAINING_PASS` asks for candle's autograd (read once per process).
fn autograd_requested() -> bool {
    static AUTOGRAD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AUTOGRAD.get_or_init(|| std::env::var("ENGINE_TRAINING_PASS").is_ok_and(|v| v == "autograd"))
}

fn training_dims(input_ids: &Tensor) -> Result<(usize, usize)> {
    let (batch, time) = input_ids.dims2().context("input_ids must have shape [batch, time]")?;
    if input_ids.dtype() != DType::U32 {
        bail!("input_ids must be u32, got {:?}", input_ids.dtype());
    }
    if time < 2 {
        bail!("need at least 2 positions to score a next token, got {time}");
    }
    Ok((batch, time))
}

/// One micro-batch's forward pass, kept until its backward pass: the per-token quantities an
/// objective reads, then the gradients of the weighted NLL `-Σ w · logp` it asks for.
pub struct TrainingPass(Pass);

enum Pass {
    /// The hand-written float32 CPU pass.
    Manual(Box<backprop::Tape>),
    /// candle's autograd graph.
    Autograd { logits: Tensor, logp: Tensor },
}

impl TrainingPass {
    /// `[B, T-1]` log-probabilities of the next tokens, row-major.
    pub fn logp(&self) -> Result<Vec<f32>> {
        match &self.0 {
            Pass::Manual(tape) => Ok(tape.logp().to_vec()),
            Pass::Autograd { logp, .. } => Ok(logp.flatten_all()?.to_vec1()?),
        }
    }

    /// Entropy (nats) and top-1 probability of each next-token distribution, aligned with
    /// [`TrainingPass::logp`]. Without gradient.
    pub fn entropy_and_top1(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        match &self.0 {
            Pass::Manual(tape) => Ok(tape.entropy_and_top1()),
            Pass::Autograd { logits, .. } => {
                let (e, t) = token_entropy_and_top1(logits)?;
                Ok((e.flatten_all()?.to_vec1()?, t.flatten_all()?.to_vec1()?))
            }
        }
    }

    /// Gradients of `-Σ weights · logp` (weights `[B, T-1]` row-major, constants: mask,
    /// stop-gradient objective weight and normaliser) for every parameter, by Hugging Face name.
    pub fn backward(self, model: &Model, weights: &[f32]) -> Result<Grads> {
        match self.0 {
            Pass::Manual(tape) => backprop::backward(model, *tape, weights),
            Pass::Autograd { logp, .. } => {
                if weights.len() != logp.elem_count() {
                    bail!("{} weights for {} log-probabilities", weights.len(), logp.elem_count());
                }
                let weights = Tensor::from_slice(weights, logp.shape(), logp.device())?;
                model.backward(&weighted_nll(&logp, &weights)?)
            }
        }
    }
}

/// One layer's cached `(keys, values)`, each `[B, kv_heads, T_cached, head_dim]`, rope applied
/// to the keys, detached.
type LayerKv = Option<(Tensor, Tensor)>;

/// Appends this step's keys and values (`[B, kv_heads, T, head_dim]`) to a layer's cache and
/// returns everything cached so far.
fn append_kv(slot: &mut LayerKv, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
    let (k, v) = (k.detach(), v.detach());
    let (k, v) = match slot.take() {
        None => (k, v),
        Some((past_k, past_v)) => (Tensor::cat(&[&past_k, &k], 2)?, Tensor::cat(&[&past_v, &v], 2)?),
    };
    *slot = Some((k.clone(), v.clone()));
    Ok((k, v))
}

/// The keys and values of every layer for the positions seen so far, for incremental decoding
/// with [`Model::forward_cached`] (inference only: nothing in it tracks gradients).
///
/// Columns are batch-wide: a left-padded batch caches its pads too (the mask hides them).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per layer; `None` until the first forward pass.
    layers: Vec<LayerKv>,
    /// Rope `(cos, sin)` tables `[n, head_dim]` for positions `0..n`, grown on demand.
    rope: Option<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// Number of cached columns (time steps, padding included).
    pub fn len(&self) -> usize {
        self.first().map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of cached batch rows; `None` while empty.
    pub fn batch_size(&self) -> Option<usize> {
        self.first().map(|(k, _)| k.dims()[0])
    }

    /// Keeps only the given batch rows, in the given order (e.g. to drop finished sequences).
    pub fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        let Some(device) = self.first().map(|(k, _)| k.device().clone()) else {
            return Ok(());
        };
        let index = Tensor::new(rows, &device)?;
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(&index, 0)?;
            *v = v.index_select(&index, 0)?;
        }
        Ok(())
    }

    fn first(&self) -> Option<&(Tensor, Tensor)> {
        self.layers.first().and_then(Option::as_ref)
    }

    /// Rope `(cos, sin)` at `positions` `[B, T]`, shaped `[B, 1, T, head_dim]`.
    fn rope_rows(
        &mut self,
        rope: &Rope,
        positions: &Tensor,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t) = positions.dims2()?;
        let needed = positions.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize + 1;
        let cached = self.rope.as_ref().map_or(0, |(cos, _)| cos.dims()[0]);
        if cached < needed {
            // Grow geometrically so that decoding recomputes the tables O(log T) times.
            self.rope = Some(rope.tables(needed.next_power_of_two().max(64), dtype, device)?);
        }
        let (cos, sin) = self.rope.as_ref().expect("rope tables were just built");
        let flat = positions.flatten_all()?;
        let pick = |table: &Tensor| -> Result<Tensor> {
            let d = table.dims()[1];
            Ok(table.index_select(&flat, 0)?.reshape((b, t, d))?.unsqueeze(1)?)
        };
        Ok((pick(cos)?, pick(sin)?))
    }
}

/// Where a [`Loader`] takes parameter values from.
enum Source {
    /// What was read from disk.
    Stored(HashMap<String, StoredTensor>),
    /// Fresh random values (see [`Model::random`]); `state` drives a splitmix64 generator.
    Random { state: u64, std: f64 },
}

/// Moves tensors out of what was read from disk (or fresh random ones) into parameters,
/// checking shapes.
struct Loader<'a> {
    dir: &'a Path,
    source: Source,
    params: Vec<(String, Var)>,
    dtype: DType,
    device: &'a Device,
}

impl Loader<'_> {
    /// Weights the config does not use mean the two disagree (most often num_hidden_layers): training
    /// would save a model without them. Tolerated as transformers tolerates them: a tied checkpoint's
    /// lm_head copy and old checkpoints' rotary `inv_freq` buffers.
    fn refuse_unused(&self, config: &ModelConfig) -> Result<()> {
        let Source::Stored(stored) = &self.source else {
            return Ok(());
        };
        let mut unused: Vec<&String> = stored
            .keys()
            .filter(|name| !(config.tie_word_embeddings && name.as_str() == "lm_head.weight"))
            .filter(|name| !name.ends_with("rotary_emb.inv_freq"))
            .collect();
        unused.sort();
        if let Some(first) = unused.first() {
            bail!(
                "{}: {} tensor(s) that config.json's shape does not use, e.g. `{first}` (num_hidden_layers = {}): do config.json and the weights belong together?",
                self.dir.display(),
                unused.len(),
                config.num_hidden_layers
            );
        }
        Ok(())
    }

    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Var> {
        let stored = match &mut self.source {
            Source::Stored(stored) => stored,
            Source::Random { state, std } => {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = if name.ends_with(".bias") {
                    vec![0.0; n]
                } else if name.ends_with("norm.weight") {
                    vec![1.0; n]
                } else {
                    (0..n).map(|_| (normal_sample(state) * *std) as f32).collect()
                };
                let var = Var::from_tensor(&Tensor::from_vec(values, shape, self.device)?.to_dtype(self.dtype)?)?;
                self.params.push((name.to_string(), var.clone()));
                return Ok(var);
            }
        };
        let Some(StoredTensor { tensor, file }) = stored.remove(name) else {
            bail!("{}: checkpoint has no tensor `{name}`", self.dir.display());
        };
        if tensor.dims() != shape {
            bail!("{}: tensor `{name}` has shape {:?}, expected {shape:?}", file.display(), tensor.dims());
        }
        if !tensor.dtype().is_float() {
            bail!("{}: tensor `{name}` has non-float dtype {:?}", file.display(), tensor.dtype());
        }
        // x - x is 0 for every finite x and NaN for NaN and ±inf, so the sum is 0 exactly when all are finite
        // (a sum of the values themselves could overflow).
        let values = tensor.to_dtype(DType::F32)?;
        if values.sub(&values)?.abs()?.sum_all()?.to_scalar::<f32>()? != 0.0 {
            let values = tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let (index, value) =
                values.iter().enumerate().find(|(_, v)| !v.is_finite()).map_or((0, f32::NAN), |(i, v)| (i, *v));
            let count = values.iter().filter(|v| !v.is_finite()).count();
            bail!(
                "{}: tensor `{name}` has {count} non-finite value(s), the first {value} at flat index {index}",
                file.display()
            );
        }
        let var = Var::from_tensor(&tensor.to_dtype(self.dtype)?)?;
        self.params.push((name.to_string(), var.clone()));
        Ok(var)
    }
}

/// One standard normal draw (Box–Muller over two splitmix64 uniforms).
fn normal_sample(state: &mut u64) -> f64 {
    let mut uniform = || {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        // 53 random bits in (0, 1]: never 0, so the logarithm below is finite.
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 + f64::EPSILON / 2.0
    };
    let (u1, u2) = (uniform(), uniform());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Log-probability of each next token: `[B, T, V]` logits and `[B, T]` ids give `[B, T-1]`,
/// entry `t` being `log softmax(logits[t])[ids[t+1]]`. Differentiable.
pub fn token_logprobs(logits: &Tensor, input_ids: &Tensor) -> Result<Tensor> {
    let (b, t, _) = logits.dims3().context("logits must have shape [batch, time, vocab]")?;
    if input_ids.dims() != [b, t] {
        bail!("input_ids shape {:?} does not match logits {:?}", input_ids.dims(), logits.dims());
    }
    if t < 2 {
        bail!("need at least 2 positions to score a next token, got {t}");
    }
    Ok(ops::token_logprobs_any(logits, input_ids)?)
}

/// Entropy (nats) and top-1 probability of each next-token distribution, `[B, T-1]` each,
/// aligned with [`token_logprobs`]. Computed without gradient.
pub fn token_entropy_and_top1(logits: &Tensor) -> Result<(Tensor, Tensor)> {
    let (_, t, _) = logits.dims3().context("logits must have shape [batch, time, vocab]")?;
    if t < 2 {
        bail!("need at least 2 positions, got {t}");
    }
    let x = logits.narrow(1, 0, t - 1)?.detach();
    let z = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?; // max is 0
    let e = z.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    // H = -Σ p log p = log Σe - Σ p z, and the top-1 probability is e^0 / Σe.
    let p_dot_z = (e * &z)?.sum_keepdim(D::Minus1)?.broadcast_div(&sum)?;
    let entropy = (sum.log()? - p_dot_z)?.squeeze(2)?;
    let top1 = sum.recip()?.squeeze(2)?;
    Ok((entropy, top1))
}

/// The weighted-NLL surrogate `-Σ w_t · logp_t` over `[B, T-1]` log-probs, with `weights` the
/// same shape (already holding mask, stop-gradient objective weight and normaliser).
pub fn weighted_nll(logp: &Tensor, weights: &Tensor) -> Result<Tensor> {
    Ok((logp * weights.detach())?.sum_all()?.neg()?)
}

/// Right-pads rows of token ids with `pad_id` into a `[B, T]` u32 tensor.
pub fn pad_batch(rows: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Tensor> {
    let t = rows.iter().map(Vec::len).max().unwrap_or(0);
    if rows.is_empty() || t == 0 {
        bail!("cannot build a batch from no tokens");
    }
    let mut flat = Vec::with_capacity(rows.len() * t);
    for row in rows {
        flat.extend_from_slice(row);
        flat.extend(std::iter::repeat_n(pad_id, t - row.len()));
    }
    Ok(Tensor::from_vec(flat, (rows.len(), t), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_qwen2() -> Result<ModelConfig> {
        let raw = serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"],
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        });
        ModelConfig::from_json(raw, Path::new("tiny"))
    }

    #[test]
    fn random_model_is_initialised_like_transformers_and_trains() -> Result<()> {
        let model = Model::random(tiny_qwen2()?, 7, &Device::Cpu)?;
        let again = Model::random(tiny_qwen2()?, 7, &Device::Cpu)?;
        assert_eq!(model.params().len(), 2 * 12 + 2, "per layer 12 tensors, plus embedding and final norm");
        for ((name, v), (_, w)) in model.params().iter().zip(again.params()) {
            let v: Vec<f32> = v.as_tensor().flatten_all()?.to_vec1()?;
            assert_eq!(v, w.as_tensor().flatten_all()?.to_vec1::<f32>()?, "{name}: same seed, same values");
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
            if name.ends_with(".bias") {
                assert!(v.iter().all(|&x| x == 0.0), "{name}");
            } else if name.ends_with("norm.weight") {
                assert!(v.iter().all(|&x| x == 1.0), "{name}");
            } else {
                assert!(mean.abs() < 0.005 && (std - 0.02).abs() < 0.004, "{name}: mean {mean}, std {std}");
            }
        }
        let ids = pad_batch(&[vec![1, 2, 3, 4], vec![5, 6, 7]], 0, model.device())?;
        let logp = token_logprobs(&model.forward(&ids)?, &ids)?;
        let grads = model.backward(&logp.sum_all()?)?;
        assert_eq!(grads.len(), model.params().len());
        Ok(())
    }
}
