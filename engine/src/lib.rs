//! The trainer's tensor engine: the only crate that knows candle.
//!
//! Owns everything numeric below the training loop:
//!
//! * [`config`]: reading Hugging Face `config.json` (Qwen2, Llama; both hub layouts);
//! * [`model`]: a differentiable decoder with parameters keyed by Hugging Face names, and the
//!   per-token log-probabilities (plus entropy / top-1 probability) computed from its logits;
//!   [`Model::training_pass`] is the training step's forward and backward (hand-written for
//!   float32 on the CPU, candle's autograd elsewhere);
//! * [`generate`]: batched sampling / greedy decoding with a KV cache, for evaluation;
//! * [`ops`]: the differentiable building blocks (RMSNorm, rope, softmax, ...) of candle's autograd path;
//! * `kernels`: the CPU float32 kernels of the hand-written training pass and of AdamW, each once;
//! * [`optim`]: named gradients, global-norm clipping and AdamW, matching PyTorch (float32 master
//!   weights for bf16 parameters);
//! * [`device`]: `cpu`/`cuda:N` and `f32`/`bf16` from their names, memory estimates and peak use;
//! * [`checkpoint`]: atomic saving in the Hugging Face layout;
//! * [`gguf`]: GGUF files read into Hugging Face names and layout (dequantized, q/k un-permuted);
//! * [`weights`]: safetensors reading (single file or sharded) and writing.
//!
//! A training step, with objective weights `w` computed elsewhere from the log-probabilities:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use engine::{AdamW, AdamWConfig, Device, Model};
//! let model = Model::load("tests/fixtures/qwen2-tiny", &Device::Cpu)?;
//! let mut opt = AdamW::new(AdamWConfig::default());
//! let ids = engine::pad_batch(&[vec![5, 6, 7, 0]], 0, model.device())?;
//! let pass = model.training_pass(&ids)?;
//! let logp = pass.logp()?; // [B, T-1], row-major
//! let w = vec![1.0 / logp.len() as f32; logp.len()]; // mask · sg(s) / N, from the objective
//! let mut grads = pass.backward(&model, &w)?; // of -Σ w · logp
//! let grad_norm = engine::clip_grad_norm(&mut grads, 1.0)?;
//! opt.step(model.params(), &grads)?;
//! engine::checkpoint::save(&model, "out/final")?;
//! # let _ = grad_norm; Ok(()) }
//! ```

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod generate;
pub mod gguf;
mod kernels;
pub mod model;
pub mod ops;
pub mod optim;
pub mod weights;

pub use candle_core::{DType, Device, Tensor, Var};
pub use config::{Architecture, Llama3RopeScaling, ModelConfig};
pub use device::{open_device, parse_dtype, MemoryEstimate, MemoryMonitor};
pub use generate::{generate, Completion, FinishReason, GenerationConfig};
pub use model::{
    pad_batch, release_training_buffers, token_entropy_and_top1, token_logprobs, weighted_nll, KvCache, LoraConfig,
    Model, TrainingPass,
};
pub use optim::{clip_grad_norm, AdamW, AdamWConfig, Grads};
