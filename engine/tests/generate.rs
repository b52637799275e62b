//! Generation: greedy parity with transformers' `generate` (each prompt alone and all four as
//! one left-padded batch), the KV cache against recomputing the whole sequence, sampling
//! reproducibility and its greedy limits (temperature → 0, top_p → 0), stop tokens and hooks.
//!
//! Fixtures: tests/fixtures/generation/<model>.json, by scripts/make_generation_fixtures.py.
//! Runs on `ENGINE_TEST_DEVICE` (default: the CPU), always in float32: greedy decoding must reproduce
//! transformers' tokens exactly, which bf16 rounding does not promise.

mod common;

use anyhow::{Context, Result};
use common::{as_vec, fixture, read_json, test_device};
use engine::generate::{generate, generate_with_hook, Completion, FinishReason, GenerationConfig};
use engine::{pad_batch, KvCache, Model, Tensor};

fn load(name: &str) -> Result<Model> {
    Model::load(fixture(name), &test_device())
}

const MODELS: [&str; 3] = ["qwen2-tiny", "llama-tiny", "llama3-rope-tiny"];

/// `generation/<model>.json`: prompts and transformers' greedy continuations.
struct Reference {
    eos: Vec<u32>,
    max_new_tokens: usize,
    prompts: Vec<Vec<u32>>,
    generated: Vec<Vec<u32>>,
    stopped_at_eos: Vec<bool>,
}

fn ids(v: &serde_json::Value) -> Result<Vec<u32>> {
    Ok(as_vec(v)?.into_iter().map(|x| x as u32).collect())
}

fn reference(model: &str) -> Result<Reference> {
    let json = read_json(&format!("generation/{model}.json"))?;
    let rows = |key: &str| -> Result<Vec<Vec<u32>>> {
        json[key].as_array().context(key.to_string())?.iter().map(ids).collect()
    };
    Ok(Reference {
        eos: ids(&json["eos_token_ids"])?,
        max_new_tokens: json["max_new_tokens"].as_u64().context("max_new_tokens")? as usize,
        prompts: rows("prompt_ids")?,
        generated: rows("generated")?,
        stopped_at_eos: json["stopped_at_eos"]
            .as_array()
            .context("stopped_at_eos")?
            .iter()
            .map(|b| b.as_bool().context("bool"))
            .collect::<Result<_>>()?,
    })
}

fn greedy(r: &Reference) -> GenerationConfig {
    GenerationConfig { max_new_tokens: r.max_new_tokens, stop_token_ids: r.eos.clone(), ..GenerationConfig::default() }
}

/// Checks one completion against transformers' continuation of prompt `i`.
fn assert_matches(name: &str, what: &str, r: &Reference, i: usize, got: &Completion) {
    assert_eq!(got.tokens, r.generated[i], "{name}, prompt {i} {what}: tokens differ from transformers");
    let want = match r.stopped_at_eos[i] {
        true => FinishReason::Stop(r.eos[0]),
        false => FinishReason::Length,
    };
    assert_eq!(got.finish_reason, want, "{name}, prompt {i} {what}");
}

#[test]
fn greedy_matches_transformers_alone_and_batched() -> Result<()> {
    for name in MODELS {
        let model = load(name)?;
        let r = reference(name)?;
        assert_eq!(r.prompts.len(), 4);
        assert!(r.generated.iter().filter(|g| g.len() >= 10).count() >= 2);
        let config = greedy(&r);

        for (i, prompt) in r.prompts.iter().enumerate() {
            let out = generate(&model, std::slice::from_ref(prompt), &config)?;
            assert_matches(name, "alone", &r, i, &out[0][0]);
        }
        let out = generate(&model, &r.prompts, &config)?;
        assert_eq!(out.len(), 4);
        for (i, samples) in out.iter().enumerate() {
            assert_matches(name, "in the left-padded batch", &r, i, &samples[0]);
        }
    }
    Ok(())
}

/// Greedy decoding the slow way: the whole sequence through the training forward every step.
fn uncached_greedy(model: &Model, prompt: &[u32], steps: usize) -> Result<Vec<u32>> {
    let mut seq = prompt.to_vec();
    for _ in 0..steps {
        let ids = pad_batch(std::slice::from_ref(&seq), 0, model.device())?;
        let logits = model.forward(&ids)?; // [1, T, V]
        let last = logits.get(0)?.get(seq.len() - 1)?;
        seq.push(last.argmax(0)?.to_scalar::<u32>()?);
    }
    Ok(seq[prompt.len()..].to_vec())
}

#[test]
fn cached_generation_equals_uncached_recompute() -> Result<()> {
    // No stop tokens: run the full length, past any EOS.
    for name in MODELS {
        let model = load(name)?;
        let r = reference(name)?;
        let config = GenerationConfig { max_new_tokens: 20, ..GenerationConfig::default() };
        let cached = generate(&model, &r.prompts, &config)?;
        for (i, prompt) in r.prompts.iter().enumerate() {
            let want = uncached_greedy(&model, prompt, 20)?;
            assert_eq!(cached[i][0].tokens, want, "{name}, prompt {i}");
            assert_eq!(cached[i][0].finish_reason, FinishReason::Length);
        }
    }
    Ok(())
}

#[test]
fn long_prompts_are_prefilled_in_chunks_with_the_same_result() -> Result<()> {
    // Prefill runs 256 columns at a time: a 300-token prompt takes two chunks, and batched with it a
    // 40-token prompt is left-padded by 260 columns, so its first chunk is all padding.
    let model = load("qwen2-tiny")?;
    let vocab = model.config().vocab_size as u32;
    let long: Vec<u32> = (0..300u32).map(|i| (i * 37 + 11) % vocab).collect();
    let short: Vec<u32> = (0..40u32).map(|i| (i * 53 + 5) % vocab).collect();
    let config = GenerationConfig { max_new_tokens: 6, ..GenerationConfig::default() };
    let got = generate(&model, &[long.clone(), short.clone()], &config)?;
    assert_eq!(got[0][0].tokens, uncached_greedy(&model, &long, 6)?, "the 300-token prompt");
    assert_eq!(got[1][0].tokens, uncached_greedy(&model, &short, 6)?, "the padded 40-token prompt");
    Ok(())
}

#[test]
fn forward_cached_logits_match_full_forward() -> Result<()> {
    // Prefill 5 tokens, then feed the rest one at a time; compare each step's logits with the
    // training forward over the whole prefix.
    let model = load("llama3-rope-tiny")?;
    let seq = reference("llama3-rope-tiny")?.prompts[2].clone(); // 17 tokens
    let full = model.forward(&pad_batch(std::slice::from_ref(&seq), 0, model.device())?)?;
    let dev = model.device();
    let mut cache = KvCache::new();
    let mut worst = 0.0f32;
    let mut start = 0;
    for end in [5].into_iter().chain(6..=seq.len()) {
        let t = end - start;
        let ids = Tensor::new(&seq[start..end], dev)?.unsqueeze(0)?;
        let positions = Tensor::new(&(start as u32..end as u32).collect::<Vec<_>>()[..], dev)?.unsqueeze(0)?;
        let mask: Vec<f32> =
            (start..end).flat_map(|q| (0..end).map(move |k| if k <= q { 0.0 } else { f32::NEG_INFINITY })).collect();
        let mask = Tensor::from_vec(mask, (1, 1, t, end), dev)?;
        let got = model.forward_cached(&ids, &positions, &mask, &mut cache)?;
        assert_eq!(cache.len(), end);
        let want = full.get(0)?.get(end - 1)?;
        let d: f32 = (got.get(0)? - want)?.abs()?.max(0)?.to_scalar()?;
        worst = worst.max(d);
        start = end;
    }
    assert!(worst < 1e-4, "cached vs full logits: max |diff| {worst}");
    Ok(())
}

fn sampling(seed: u64) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: 16,
        temperature: 1.0,
        top_p: 0.95,
        seed,
        num_samples: 3,
        stop_token_ids: vec![0],
    }
}

fn tokens(out: &[Vec<Completion>]) -> Vec<Vec<Vec<u32>>> {
    out.iter().map(|s| s.iter().map(|c| c.tokens.clone()).collect()).collect()
}

#[test]
fn sampling_is_reproducible_from_the_seed() -> Result<()> {
    let model = load("qwen2-tiny")?;
    let prompts = reference("qwen2-tiny")?.prompts;
    let a = tokens(&generate(&model, &prompts, &sampling(7))?);
    let b = tokens(&generate(&model, &prompts, &sampling(7))?);
    let c = tokens(&generate(&model, &prompts, &sampling(8))?);
    assert_eq!(a, b, "same seed, same samples");
    assert_ne!(a, c, "another seed, other samples");
    assert_eq!(a.len(), 4);
    for samples in &a {
        assert_eq!(samples.len(), 3);
        assert!(
            samples[0] != samples[1] || samples[1] != samples[2],
            "the samples of a prompt should differ: {samples:?}"
        );
    }
    // A sample does not depend on the other prompts of the call.
    let alone = tokens(&generate(&model, &prompts[1..2], &sampling(7))?);
    assert_eq!(alone[0], a[1]);
    Ok(())
}

#[test]
fn sampling_limits_equal_greedy() -> Result<()> {
    for name in MODELS {
        let model = load(name)?;
        let r = reference(name)?;
        let cold = GenerationConfig { temperature: 1e-5, num_samples: 2, seed: 3, ..greedy(&r) };
        let narrow = GenerationConfig { temperature: 1.0, top_p: 1e-6, num_samples: 2, seed: 3, ..greedy(&r) };
        for config in [cold, narrow] {
            let out = generate(&model, &r.prompts, &config)?;
            for (i, samples) in out.iter().enumerate() {
                for c in samples {
                    assert_matches(name, &format!("with {config:?}"), &r, i, c);
                }
            }
        }
    }
    Ok(())
}

#[test]
fn stop_tokens_and_hook_end_a_continuation() -> Result<()> {
    let model = load("qwen2-tiny")?;
    let r = reference("qwen2-tiny")?;
    // Stop at the 6th token of prompt 2's continuation (its first occurrence).
    let g = &r.generated[2];
    let stop = g[5];
    let at = g.iter().position(|&t| t == stop).unwrap();
    let config = GenerationConfig { stop_token_ids: vec![stop], num_samples: 2, ..greedy(&r) };
    let out = generate(&model, &r.prompts, &config)?;
    for c in &out[2] {
        assert_eq!(c.tokens, g[..at]);
        assert_eq!(c.finish_reason, FinishReason::Stop(stop));
    }

    // The hook ends prompt 1 after 4 tokens and leaves the others alone.
    let mut calls = 0;
    let out = generate_with_hook(&model, &r.prompts, &greedy(&r), |prompt, sample, toks| {
        calls += 1;
        assert_eq!(sample, 0);
        prompt == 1 && toks.len() == 4
    })?;
    assert_eq!(out[1][0].tokens, r.generated[1][..4]);
    assert_eq!(out[1][0].finish_reason, FinishReason::Hook);
    assert_eq!(out[3][0].tokens, r.generated[3]);
    assert_eq!(calls, 4 + 3 * r.max_new_tokens);
    Ok(())
}

#[test]
fn edge_cases() -> Result<()> {
    let model = load("qwen2-tiny")?;
    let config = GenerationConfig::for_model(&model);
    assert_eq!(config.stop_token_ids, [0]);
    assert!(generate(&model, &[], &config)?.is_empty());
    let none = GenerationConfig { max_new_tokens: 0, num_samples: 2, ..config.clone() };
    let out = generate(&model, &[vec![5, 6]], &none)?;
    assert_eq!(out[0].len(), 2);
    assert!(out[0][0].tokens.is_empty());
    assert!(generate(&model, &[vec![5], vec![]], &config).is_err());
    let bad = |c: GenerationConfig| generate(&model, &[vec![5]], &c).is_err();
    assert!(bad(GenerationConfig { top_p: 0.0, ..config.clone() }));
    assert!(bad(GenerationConfig { temperature: -1.0, ..config.clone() }));
    assert!(bad(GenerationConfig { num_samples: 0, ..config.clone() }));
    assert!(generate(&model, &[vec![5, 320]], &config).is_err(), "out of vocabulary");
    Ok(())
}
