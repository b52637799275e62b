//! Training throughput on a random model: the per-step work of [`crate::train`] timed phase by phase.
//!
//! A Qwen2-shaped model of the given shape (tied embeddings, random weights, float32 or bf16, on the CPU
//! or a CUDA device) trains on random token batches with every position a loss position. Each step does
//! what `host train` does for one micro-batch: forward, per-token log-probs, the objective plugin call,
//! weighted-NLL backward, clipping by global norm and AdamW. `bench/pytorch_reference.py` does the same in
//! PyTorch, for comparison. On a CUDA device each phase ends with a synchronisation, so that its time is
//! the device's, and device memory is polled after each phase.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use engine::device::PeakMemory;
use engine::{AdamW, AdamWConfig, DType, Device, MemoryEstimate, MemoryMonitor, Model, ModelConfig, Tensor};
use plugin_api::PluginKind;

use crate::data::splitmix64;
use crate::plugins::objective::TokenStats;
use crate::plugins::params::ParamSet;
use crate::plugins::{LoadedPlugin, ObjectivePlugin, SearchPath};

/// The model's shape (Qwen2: q/k/v biases, tied embeddings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
}

impl ModelShape {
    /// The `config.json` of a Qwen2 model of this shape; `bench/pytorch_reference.py` builds the same.
    pub fn qwen2_config(&self, max_positions: usize) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": max_positions,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": true,
            "use_sliding_window": false,
            "torch_dtype": "float32",
        })
    }
}

/// Row lengths drawn uniformly from `min..=max` (`--lengths MIN:MAX`): row `b` of step `s` is the
/// `(s·batch + b)`-th draw `min + splitmix64(state) % (max - min + 1)` from `state = seed`, so that
/// bench/pytorch_reference.py makes the same rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowLengths {
    pub min: usize,
    pub max: usize,
}

impl RowLengths {
    /// The next `batch` row lengths from the stream `state`.
    pub fn draw(&self, batch: usize, state: &mut u64) -> Vec<usize> {
        (0..batch).map(|_| self.min + (splitmix64(state) % (self.max - self.min + 1) as u64) as usize).collect()
    }
}

impl std::str::FromStr for RowLengths {
    type Err = String;

    fn from_str(text: &str) -> Result<RowLengths, String> {
        let (min, max) = text.split_once(':').ok_or_else(|| format!("`{text}`: expected MIN:MAX"))?;
        let number = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("`{text}`: `{v}` is not a length"));
        let (min, max) = (number(min)?, number(max)?);
        if min < 2 || min > max {
            return Err(format!("`{text}`: need 2 <= MIN <= MAX"));
        }
        Ok(RowLengths { min, max })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions<'a> {
    pub shape: ModelShape,
    pub batch: usize,
    /// Tokens per row (the padded width, `lengths.max`, when `lengths` is given).
    pub seq: usize,
    /// Rows of varying length: laid end to end in the CPU float32 pass, padded elsewhere.
    pub lengths: Option<RowLengths>,
    /// Steps in all, warm-up included.
    pub steps: usize,
    /// Leading steps left out of the median.
    pub warmup: usize,
    /// Objective plugin by name or path.
    pub objective: &'a str,
    /// The objective's parameters, `key=value` (`--param`).
    pub objective_params: &'a [String],
    pub search: &'a SearchPath,
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: &'a str,
    /// `f32` or `bf16`.
    pub dtype: &'a str,
    /// Which training pass to time.
    pub pass: BenchPass,
    /// Train a LoRA adapter (initialised as PEFT does, seed `seed`) on the frozen model instead of every weight.
    pub lora: Option<engine::LoraConfig>,
}

/// The training pass a benchmark times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchPass {
    /// What `host train` runs: rows laid end to end, no padding computed (the hand-written float32 CPU
    /// pass; elsewhere candle's autograd over the padded batch).
    Packed,
    /// The hand-written pass over the padded `[batch, seq]` batch, padding computed (for comparison).
    Padded,
    /// candle's autograd pass even where the hand-written one applies (float32 on the CPU).
    Autograd,
}

/// Seconds spent in each phase of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTiming {
    /// Embedding, decoder layers, head: logits `[B, T, V]`.
    pub forward: f64,
    /// Log-softmax at the targets, copied out for the plugin (plus entropy / top-1 if asked for).
    pub logprobs: f64,
    /// The objective plugin call alone.
    pub objective: f64,
    /// Weights tensor, weighted NLL and back-propagation to every parameter.
    pub backward: f64,
    /// Global-norm clipping and AdamW.
    pub optimizer: f64,
    /// The whole step.
    pub total: f64,
}

impl StepTiming {
    pub const PHASES: [&'static str; 5] = ["forward", "logprobs", "objective", "backward", "optimizer"];

    pub fn phase(&self, index: usize) -> f64 {
        [self.forward, self.logprobs, self.objective, self.backward, self.optimizer][index]
    }
}

/// A finished benchmark.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub params: usize,
    /// What the optimizer updates: `params`, or the LoRA adapter's.
    pub trainable_params: usize,
    pub threads: usize,
    pub steps: Vec<StepTiming>,
    pub warmup: usize,
    /// Median over the steps after warm-up of (real) tokens / step time.
    pub median_tokens_per_second: f64,
    /// Median over the steps after warm-up of loss positions (tokens that carry loss) / step time.
    pub median_useful_tokens_per_second: f64,
    /// The share of the padded `[batch, seq]` positions that are padding, over all steps.
    pub padding_share: f64,
    /// Median seconds per phase over the steps after warm-up (same order as [`StepTiming::PHASES`]).
    pub median_phase: [f64; 5],
    /// Objective plugin time over step time, summed over the steps after warm-up.
    pub objective_share: f64,
    /// The process's peak resident set (`VmHWM`), in KiB, where `/proc` has it.
    pub peak_rss_kib: Option<u64>,
    /// Peak memory on the run's device (on the CPU, the peak resident set again).
    pub peak: PeakMemory,
    /// The objective's mean loss at the first and the last step (a sanity check that it trains).
    pub first_loss: f64,
    pub last_loss: f64,
}

/// Builds the model and batches, then trains `steps` steps; `on_start(device, dtype, estimate)` sees the
/// memory estimate before the first step, `on_step(index, timing)` each step as it finishes.
pub fn run(
    options: &BenchOptions<'_>,
    on_start: impl FnOnce(&Device, DType, &MemoryEstimate),
    mut on_step: impl FnMut(usize, &StepTiming),
) -> Result<BenchReport> {
    let BenchOptions { shape, batch, seq, steps, warmup, .. } = *options;
    if batch == 0 || seq < 2 {
        bail!("--batch must be at least 1 and --seq at least 2");
    }
    if steps <= warmup {
        bail!("--steps ({steps}) must be larger than --warmup ({warmup})");
    }
    if shape.vocab == 0 || shape.layers == 0 || shape.hidden == 0 || shape.intermediate == 0 {
        bail!("--hidden, --intermediate, --layers and --vocab must be positive");
    }
    let device = engine::open_device(options.device)?;
    let dtype = engine::parse_dtype(options.dtype)?;
    let config = ModelConfig::from_json(shape.qwen2_config(seq.max(32)), "bench shape".as_ref())?;
    let mut model = Model::random_with_dtype(config, options.seed, &device, dtype)?;
    if let Some(lora) = &options.lora {
        model.add_lora(lora, options.seed)?;
    }
    on_start(&device, dtype, &MemoryEstimate::for_model(&model, batch, seq));
    let mut memory = MemoryMonitor::new(&device);
    // Ends a phase: waits for the device's queued work, then reads its memory in use.
    let phase_done = |memory: &mut MemoryMonitor| -> Result<Instant> {
        device.synchronize()?;
        memory.poll();
        Ok(Instant::now())
    };

    let plugin = LoadedPlugin::load(options.search, options.objective, PluginKind::Objective)?;
    let params = ParamSet::from_assignments(plugin.params(), options.objective_params, "--param")?;
    let objective = ObjectivePlugin::create(plugin, params)?;
    let needs = objective.needs();
    // The optimizer settings of the PyTorch reference.
    let mut optimizer = AdamW::new(AdamWConfig { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01 });

    // Random batches, drawn up front so that drawing is not timed; every position is a loss position.
    let positions = batch * (seq - 1);
    let sequence_starts: Vec<u32> = (0..batch).map(|b| (b * (seq - 1)) as u32).collect();
    let mut rng = options.seed ^ 0xB3_7C_4A_11;
    let mut batches = Vec::with_capacity(steps);
    let mut length_state = options.seed;
    for _ in 0..steps {
        let ids: Vec<u32> = (0..batch * seq).map(|_| (splitmix64(&mut rng) % shape.vocab as u64) as u32).collect();
        let lengths: Vec<usize> = match options.lengths {
            None => vec![seq; batch],
            Some(lengths) => lengths.draw(batch, &mut length_state),
        };
        // Position t of row b carries loss while it predicts one of the row's tokens.
        let loss_mask: Vec<u8> = (0..positions).map(|i| u8::from(i % (seq - 1) < lengths[i / (seq - 1)] - 1)).collect();
        batches.push((Tensor::from_vec(ids, (batch, seq), &device)?, lengths, loss_mask));
    }

    let mut timings = Vec::with_capacity(steps);
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    for (index, (ids, lengths, loss_mask)) in batches.iter().enumerate() {
        let step = index as u64 + 1;
        let started = Instant::now();
        model.set_dropout_seed(step);
        let pass = match options.pass {
            BenchPass::Packed => model.training_pass_packed(ids, lengths)?,
            BenchPass::Padded => model.training_pass(ids)?,
            BenchPass::Autograd => model.training_pass_autograd(ids)?,
        };
        let forward_done = phase_done(&mut memory)?;

        let stats = TokenStats::of(&pass, needs)?;
        let logprobs_done = phase_done(&mut memory)?;

        // Random data has no base model to score it: the current log-probs stand in (step 1 of a run).
        let base_logp = needs.base_logp.then(|| stats.logp.clone());
        let values = objective
            .compute(&stats.inputs(loss_mask, &sequence_starts, base_logp.as_deref(), step, steps as u64))
            .with_context(|| format!("step {step}"))?;
        let objective_done = Instant::now();

        // As in train.rs: the token mean over included positions.
        let included: Vec<bool> = (0..positions).map(|i| loss_mask[i] == 1 && values.include[i] == 1).collect();
        let count = included.iter().filter(|&&k| k).count();
        let mut grads = None;
        if count > 0 {
            let scale = 1.0 / count as f64;
            let weights: Vec<f32> = (0..positions)
                .map(|i| if included[i] { (values.weight[i] as f64 * scale) as f32 } else { 0.0 })
                .collect();
            let loss: f64 = (0..positions).filter(|&i| included[i]).map(|i| values.loss[i] as f64).sum();
            if index == 0 {
                first_loss = loss / count as f64;
            }
            last_loss = loss / count as f64;
            grads = Some(pass.backward(&model, &weights)?);
        }
        // As in train.rs, the activations are gone before the optimizer step (backward consumed them).
        let backward_done = phase_done(&mut memory)?;

        if let Some(mut g) = grads {
            let norm = engine::clip_grad_norm(&mut g, 1.0)?;
            if !norm.is_finite() {
                bail!("step {step}: the gradient norm is {norm}");
            }
            optimizer.step(model.trainable_params(), &g)?;
        }
        let done = phase_done(&mut memory)?;

        let seconds = |from: Instant, to: Instant| to.duration_since(from).as_secs_f64();
        let timing = StepTiming {
            forward: seconds(started, forward_done),
            logprobs: seconds(forward_done, logprobs_done),
            objective: seconds(logprobs_done, objective_done),
            backward: seconds(objective_done, backward_done),
            optimizer: seconds(backward_done, done),
            total: seconds(started, done),
        };
        on_step(index, &timing);
        timings.push(timing);
    }

    let measured = timings[warmup..].iter().zip(&batches[warmup..]);
    let real_tokens = |lengths: &[usize]| lengths.iter().sum::<usize>() as f64;
    let median_tokens_per_second = median(measured.clone().map(|(t, b)| real_tokens(&b.1) / t.total.max(1e-12)));
    let median_useful_tokens_per_second =
        median(measured.map(|(t, b)| b.2.iter().map(|&m| m as f64).sum::<f64>() / t.total.max(1e-12)));
    let padding_share = 1.0 - batches.iter().map(|b| real_tokens(&b.1)).sum::<f64>() / (steps * batch * seq) as f64;
    let measured = &timings[warmup..];
    let median_phase = std::array::from_fn(|i| median(measured.iter().map(|t| t.phase(i))));
    let objective_share =
        measured.iter().map(|t| t.objective).sum::<f64>() / measured.iter().map(|t| t.total).sum::<f64>().max(1e-12);
    Ok(BenchReport {
        params: model.num_params(),
        trainable_params: model.num_trainable_params(),
        threads: engine::ops::cpu_threads(),
        steps: timings,
        warmup,
        median_tokens_per_second,
        median_useful_tokens_per_second,
        padding_share,
        median_phase,
        objective_share,
        peak_rss_kib: engine::device::peak_rss_kib(),
        peak: memory.peak(),
        first_loss,
        last_loss,
    })
}

/// The median of a non-empty sequence (the mean of the middle two for an even count).
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_lengths_parse_and_draw_what_the_pytorch_reference_draws() {
        let lengths: RowLengths = "16:64".parse().expect("valid");
        assert_eq!(lengths, RowLengths { min: 16, max: 64 });
        // bench/pytorch_reference.py's splitmix64 from seed 3 (computed in Python).
        let mut state = 3;
        assert_eq!(lengths.draw(8, &mut state), [53, 26, 50, 30, 40, 31, 59, 23]);
        for bad in ["16", "1:8", "9:8", "a:9", "4:"] {
            assert!(bad.parse::<RowLengths>().is_err(), "{bad}");
        }
        assert!("8:8".parse::<RowLengths>().is_ok());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert!(median(std::iter::empty()).is_nan());
    }

    #[test]
    fn qwen2_config_parses_with_the_requested_shape() -> Result<()> {
        let shape = ModelShape { hidden: 64, intermediate: 128, layers: 2, heads: 4, kv_heads: 2, vocab: 100 };
        let config = ModelConfig::from_json(shape.qwen2_config(64), "bench".as_ref())?;
        assert_eq!((config.hidden_size, config.num_hidden_layers, config.head_dim), (64, 2, 16));
        assert!(config.tie_word_embeddings && config.qkv_bias);
        Ok(())
    }
}
