//! Autoregressive generation with a key/value cache, for evaluation (inference only).
//!
//! [`generate`] takes a batch of prompts (token ids, any lengths) and returns, per prompt,
//! `num_samples` continuations. How it works:
//!
//! * **Batching by left padding.** Each (prompt, sample) pair is one batch row. Rows are padded
//!   on the left to the longest prompt, so that every row's next token is predicted from the
//!   same (last) column. The attention mask hides each row's pad columns from every real token,
//!   and rope positions count from 0 at a row's first real token, so a row sees exactly what it
//!   would see alone. A pad column attends only to itself (keeping its values finite: a query
//!   that may attend to nothing would turn into NaN and poison the row through the cache).
//! * **KV cache.** The prompt is run once ("prefill"); each later step feeds only the newly
//!   chosen tokens `[B, 1]` through [`Model::forward_cached`], which appends every layer's keys
//!   and values to a [`KvCache`]. Finished rows are dropped from the batch and the cache.
//! * **Choosing a token.** `temperature == 0` is greedy (arg-max). Otherwise the logits are
//!   divided by the temperature, the distribution is cut to its nucleus (`top_p`: the smallest
//!   set of most likely tokens whose mass reaches `top_p`, as transformers' `TopPLogitsWarper`),
//!   and a token is drawn with a [`SplitMix64`] generator. Sample `j` of a prompt draws from its
//!   own stream, seeded from `(seed, the prompt's tokens, j)`: results reproduce from the seed,
//!   do not depend on which other prompts share the call, and differ between prompts (so samples
//!   of different examples are not correlated).
//! * **Stopping.** A row stops at any of `stop_token_ids` (the stop token is not returned), at
//!   `max_new_tokens`, or when the caller's hook (see [`generate_with_hook`]) says so, e.g.
//!   after decoding a stop string.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use engine::generate::{generate, GenerationConfig};
//! let model = engine::Model::load("tests/fixtures/qwen2-tiny", &engine::Device::Cpu)?;
//! let config = GenerationConfig {
//!     max_new_tokens: 32,
//!     temperature: 0.7,
//!     top_p: 0.9,
//!     num_samples: 4,
//!     ..GenerationConfig::for_model(&model) // stops at the model's EOS ids
//! };
//! let out = generate(&model, &[vec![51, 28, 281], vec![42, 75]], &config)?;
//! assert_eq!(out.len(), 2);
//! assert_eq!(out[0].len(), 4);
//! println!("{:?} ({:?})", out[0][0].tokens, out[0][0].finish_reason);
//! # Ok(()) }
//! ```

use anyhow::{bail, Result};
use candle_core::{Device, Tensor, D};

use crate::model::{KvCache, Model};

/// How to generate (the host's `--samples`, `--temperature`, `--top-p`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Most tokens generated per continuation (a stop token does not count).
    pub max_new_tokens: usize,
    /// Softmax temperature; `0` is greedy decoding (then all samples are the same).
    pub temperature: f64,
    /// Nucleus size in `(0, 1]`; `1` keeps the whole distribution.
    pub top_p: f64,
    /// Seed of the sampling streams (unused when greedy).
    pub seed: u64,
    /// Tokens that end a continuation (typically the model's EOS ids); not returned.
    pub stop_token_ids: Vec<u32>,
    /// Continuations per prompt.
    pub num_samples: usize,
}

impl Default for GenerationConfig {
    /// Greedy, one sample, 128 new tokens, no stop tokens.
    fn default() -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: 128,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_token_ids: Vec::new(),
            num_samples: 1,
        }
    }
}

impl GenerationConfig {
    /// The defaults, stopping at the EOS ids of the model's `config.json`.
    pub fn for_model(model: &Model) -> GenerationConfig {
        GenerationConfig { stop_token_ids: model.config().eos_token_ids.clone(), ..GenerationConfig::default() }
    }

    fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!("temperature must be finite and >= 0, got {}", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("top_p must be in (0, 1], got {}", self.top_p);
        }
        if self.num_samples == 0 {
            bail!("num_samples must be at least 1");
        }
        Ok(())
    }

    fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// Why a continuation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced this stop token (not included in the tokens).
    Stop(u32),
    /// `max_new_tokens` were generated.
    Length,
    /// The caller's hook asked to stop.
    Hook,
}

/// One generated continuation (prompt excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
}

/// Generates `config.num_samples` continuations of each prompt; `result[i][j]` is sample `j` of
/// prompt `i`. All rows run as one batch: callers with many prompts pass them in chunks.
pub fn generate(model: &Model, prompts: &[Vec<u32>], config: &GenerationConfig) -> Result<Vec<Vec<Completion>>> {
    generate_with_hook(model, prompts, config, |_, _, _| false)
}

/// [`generate`], calling `hook(prompt_index, sample_index, tokens_so_far)` after every token
/// appended to a continuation; returning `true` ends that continuation ([`FinishReason::Hook`]),
/// e.g. once its decoded text contains a stop string. When greedy, only sample 0 is generated
/// (and hooked) and copied to the others.
pub fn generate_with_hook(
    model: &Model,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    mut hook: impl FnMut(usize, usize, &[u32]) -> bool,
) -> Result<Vec<Vec<Completion>>> {
    config.validate()?;
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        bail!("prompt {i} is empty: generation needs at least one token to condition on");
    }
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let runs = if config.is_greedy() { 1 } else { config.num_samples };
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut rows: Vec<Row> = prompts
        .iter()
        .enumerate()
        .flat_map(|(prompt, ids)| (0..runs).map(move |sample| (prompt, sample, ids)))
        .map(|(prompt, sample, ids)| Row {
            prompt,
            sample,
            pad: width - ids.len(),
            tokens: Vec::new(),
            rng: SplitMix64::for_stream(config.seed ^ prompt_hash(ids), sample as u64),
            finish: None,
        })
        .collect();

    if config.max_new_tokens > 0 {
        decode(model, prompts, config, &mut rows, &mut hook)?;
    }

    let mut out: Vec<Vec<Completion>> = vec![Vec::with_capacity(config.num_samples); prompts.len()];
    for row in rows {
        let completion = Completion { tokens: row.tokens, finish_reason: row.finish.unwrap_or(FinishReason::Length) };
        out[row.prompt].push(completion);
    }
    if runs == 1 {
        for samples in &mut out {
            samples.resize(config.num_samples, samples[0].clone());
        }
    }
    Ok(out)
}

/// One batch row: sample `sample` of prompt `prompt`, left-padded by `pad` columns.
struct Row {
    prompt: usize,
    sample: usize,
    pad: usize,
    tokens: Vec<u32>,
    rng: SplitMix64,
    finish: Option<FinishReason>,
}

/// The decoding loop: prefill the padded prompts, then one cached step per new token.
fn decode(
    model: &Model,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    rows: &mut [Row],
    hook: &mut impl FnMut(usize, usize, &[u32]) -> bool,
) -> Result<()> {
    let device = model.device();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    // The batch holds the unfinished rows, in this order (indices into `rows`).
    let mut active: Vec<usize> = (0..rows.len()).collect();

    // Prefill. The pad id is irrelevant (masked), but must be a valid id: 0.
    let mut ids = Vec::with_capacity(rows.len() * width);
    for row in rows.iter() {
        ids.extend(std::iter::repeat_n(0, row.pad));
        ids.extend_from_slice(&prompts[row.prompt]);
    }
    let ids = Tensor::from_vec(ids, (rows.len(), width), device)?;
    let pads: Vec<usize> = rows.iter().map(|r| r.pad).collect();
    let mut cache = KvCache::new();
    // In chunks of columns, each attending to the cache plus itself: scores are `[B, heads, chunk,
    // keys]`, so a long prompt costs memory linear in its length, not quadratic.
    let mut logits = None;
    for start in (0..width).step_by(PREFILL_CHUNK) {
        let t = PREFILL_CHUNK.min(width - start);
        let (positions, mask) = positions_and_mask(&pads, start, t, device)?;
        logits = Some(model.forward_cached(&ids.narrow(1, start, t)?, &positions, &mask, &mut cache)?);
    }
    let Some(mut logits) = logits else { bail!("generation needs a prompt of at least one token") };

    loop {
        let next = choose_tokens(&logits, config, rows, &active)?;
        let mut keep = Vec::with_capacity(active.len());
        for (slot, (&r, &token)) in active.iter().zip(&next).enumerate() {
            let row = &mut rows[r];
            if config.stop_token_ids.contains(&token) {
                row.finish = Some(FinishReason::Stop(token));
            } else {
                row.tokens.push(token);
                if hook(row.prompt, row.sample, &row.tokens) {
                    row.finish = Some(FinishReason::Hook);
                } else if row.tokens.len() >= config.max_new_tokens {
                    row.finish = Some(FinishReason::Length);
                }
            }
            if row.finish.is_none() {
                keep.push(slot);
            }
        }
        if keep.is_empty() {
            return Ok(());
        }
        if keep.len() < active.len() {
            let slots: Vec<u32> = keep.iter().map(|&s| s as u32).collect();
            cache.select_rows(&slots)?;
            active = keep.iter().map(|&s| active[s]).collect();
        }

        // One step: each active row's last token, at column `cache.len()`.
        let last: Vec<u32> = active.iter().map(|&r| rows[r].tokens[rows[r].tokens.len() - 1]).collect();
        let ids = Tensor::from_vec(last, (active.len(), 1), device)?;
        let pads: Vec<usize> = active.iter().map(|&r| rows[r].pad).collect();
        let (positions, mask) = positions_and_mask(&pads, cache.len(), 1, device)?;
        logits = model.forward_cached(&ids, &positions, &mask, &mut cache)?;
    }
}

/// The next token of every active row from the last-position logits `[B, V]`.
fn choose_tokens(logits: &Tensor, config: &GenerationConfig, rows: &mut [Row], active: &[usize]) -> Result<Vec<u32>> {
    if config.is_greedy() {
        return Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
    }
    let logits: Vec<Vec<f32>> = logits.to_vec2()?;
    active
        .iter()
        .zip(&logits)
        .map(|(&r, row_logits)| sample_token(row_logits, config.temperature, config.top_p, &mut rows[r].rng))
        .collect()
}

/// Prompt columns prefilled per forward pass.
const PREFILL_CHUNK: usize = 256;

/// Rope positions `[B, T]` and the additive attention mask `[B, 1, T, past + T]` for `T` new
/// columns after `past` cached ones, in a batch whose row `r` starts with `pads[r]` pad columns.
///
/// Query column `q` may attend to key column `k` when `k <= q` (causal) and `k` is a real token
/// (`k >= pad`), or `k == q` (a pad attends to itself only, so that no row is fully masked).
fn positions_and_mask(pads: &[usize], past: usize, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let keys = past + t;
    let mut positions = Vec::with_capacity(pads.len() * t);
    let mut mask = Vec::with_capacity(pads.len() * t * keys);
    for &pad in pads {
        for q in past..keys {
            positions.push(q.saturating_sub(pad) as u32);
            mask.extend((0..keys).map(|k| {
                let visible = k <= q && (k >= pad || k == q);
                if visible {
                    0.0f32
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
    }
    let b = pads.len();
    Ok((Tensor::from_vec(positions, (b, t), device)?, Tensor::from_vec(mask, (b, 1, t, keys), device)?))
}

/// Draws a token from `logits` scaled by `1 / temperature` and cut to the `top_p` nucleus;
/// `temperature == 0` returns the arg-max (the first one on ties). Computed in float64.
pub fn sample_token(logits: &[f32], temperature: f64, top_p: f64, rng: &mut SplitMix64) -> Result<u32> {
    if logits.is_empty() {
        bail!("cannot sample from an empty distribution");
    }
    if logits.iter().any(|l| l.is_nan()) {
        bail!("logits contain NaN");
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if temperature == 0.0 {
        let best = logits.iter().position(|&l| l as f64 == max).unwrap_or(0);
        return Ok(best as u32);
    }
    // Unnormalised probabilities; the arg-max has weight 1, so the total is >= 1.
    let weights: Vec<f64> = logits.iter().map(|&l| ((l as f64 - max) / temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    let candidates = if top_p >= 1.0 { (0..weights.len()).collect() } else { nucleus(&weights, total, top_p) };
    let mass: f64 = candidates.iter().map(|&i| weights[i]).sum();
    let mut target = rng.next_f64() * mass;
    for &i in &candidates {
        target -= weights[i];
        if target < 0.0 {
            return Ok(i as u32);
        }
    }
    // Rounding left a sliver of mass: take the last candidate with any weight.
    let last = candidates.iter().rev().find(|&&i| weights[i] > 0.0);
    Ok(*last.unwrap_or(&candidates[0]) as u32)
}

/// The nucleus: the most likely tokens, in decreasing probability (ties by id), up to and
/// including the first at which the cumulative probability reaches `top_p` (at least one).
///
/// Only the top `k` weights are sorted, `k` growing until the nucleus fits, so that a large
/// vocabulary with a peaked distribution costs a linear selection rather than a full sort.
fn nucleus(weights: &[f64], total: f64, top_p: f64) -> Vec<usize> {
    let before = |a: &usize, b: &usize| weights[*b].total_cmp(&weights[*a]).then(a.cmp(b));
    let mut k = weights.len().min(64);
    loop {
        let mut order: Vec<usize> = (0..weights.len()).collect();
        if k < order.len() {
            order.select_nth_unstable_by(k - 1, before);
            order.truncate(k);
        }
        order.sort_unstable_by(before);
        let mut cumulative = 0.0;
        for (n, &i) in order.iter().enumerate() {
            cumulative += weights[i] / total;
            if cumulative >= top_p {
                order.truncate(n + 1);
                return order;
            }
        }
        if k == weights.len() {
            return order; // rounding kept the sum just below top_p: keep everything
        }
        k = (k * 4).min(weights.len());
    }
}

/// The splitmix64 generator (Steele, Lea & Flood 2014): 64 bits of state, period 2^64, good
/// enough for sampling, and trivially reproducible across platforms.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// An independent-looking stream `stream` of `seed` (here: one per sample index of a prompt).
    pub fn for_stream(seed: u64, stream: u64) -> SplitMix64 {
        let mut mixer = SplitMix64::new(seed);
        let base = mixer.next_u64();
        SplitMix64::new(base ^ SplitMix64::new(stream).next_u64().rotate_left(17))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A hash of a prompt's tokens, so each prompt's sampling streams are its own.
fn prompt_hash(ids: &[u32]) -> u64 {
    let mut state = 0x5EED_u64;
    for &id in ids {
        state ^= id as u64;
        state = SplitMix64::new(state).next_u64();
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(logits: &[f32], temperature: f64, top_p: f64, n: usize) -> Vec<usize> {
        let mut rng = SplitMix64::new(42);
        let mut counts = vec![0; logits.len()];
        for _ in 0..n {
            counts[sample_token(logits, temperature, top_p, &mut rng).unwrap() as usize] += 1;
        }
        counts
    }

    #[test]
    fn splitmix64_matches_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut rng = SplitMix64::new(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
        let x = SplitMix64::new(7).next_f64();
        assert!((0.0..1.0).contains(&x));
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // p = [0.25, 0.75] at temperature 1; at temperature 2, [1/(1+√3), √3/(1+√3)].
        let logits = [0.0f32, 3f32.ln()];
        let c = draws(&logits, 1.0, 1.0, 20_000);
        assert!((c[1] as f64 / 20_000.0 - 0.75).abs() < 0.015, "{c:?}");
        let c = draws(&logits, 2.0, 1.0, 20_000);
        let want = 3f64.sqrt() / (1.0 + 3f64.sqrt());
        assert!((c[1] as f64 / 20_000.0 - want).abs() < 0.015, "{c:?}");
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // p = [0.2, 0.5, 0.3]: top_p 0.75 keeps {1, 2}, top_p 0.5 keeps {1}.
        let logits = [0.2f32.ln(), 0.5f32.ln(), 0.3f32.ln()];
        let c = draws(&logits, 1.0, 0.75, 10_000);
        assert_eq!(c[0], 0, "{c:?}");
        assert!((c[1] as f64 / 10_000.0 - 0.625).abs() < 0.02, "{c:?}");
        assert_eq!(draws(&logits, 1.0, 0.5, 1000), [0, 1000, 0]);
        assert_eq!(draws(&logits, 0.0, 1.0, 10), [0, 10, 0]);
    }

    #[test]
    fn nucleus_grows_past_the_first_selection() {
        // 256 equal weights: a nucleus of 0.75 needs 192 of them (more than the first k = 64).
        let weights = vec![1.0; 256];
        let kept = nucleus(&weights, 256.0, 0.75);
        assert_eq!(kept.len(), 192);
        assert_eq!(kept, (0..192).collect::<Vec<_>>(), "ties go by id");
    }

    #[test]
    fn mask_hides_left_padding() -> Result<()> {
        let dev = Device::Cpu;
        let (pos, mask) = positions_and_mask(&[2, 0], 0, 3, &dev)?;
        assert_eq!(pos.to_vec2::<u32>()?, [[0, 0, 0], [0, 1, 2]]);
        let visible = |m: Vec<Vec<f32>>| -> Vec<Vec<bool>> {
            m.into_iter().map(|r| r.into_iter().map(|v| v == 0.0).collect()).collect()
        };
        let m = mask.squeeze(1)?;
        let (t, f) = (true, false);
        assert_eq!(visible(m.get(0)?.to_vec2()?), [[t, f, f], [f, t, f], [f, f, t]]);
        assert_eq!(visible(m.get(1)?.to_vec2()?), [[t, f, f], [t, t, f], [t, t, t]]);
        // One decoding step after 3 columns: the pads stay hidden.
        let (pos, mask) = positions_and_mask(&[2, 0], 3, 1, &dev)?;
        assert_eq!(pos.to_vec2::<u32>()?, [[1], [3]]);
        let m = mask.squeeze(1)?.squeeze(1)?.to_vec2::<f32>()?;
        assert_eq!(visible(m), [[f, f, t, t], [t, t, t, t]]);
        Ok(())
    }
}
