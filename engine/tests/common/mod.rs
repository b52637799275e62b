//! Shared helpers of the engine's integration tests: fixture paths, the parity / training JSON written
//! by scripts/make_fixtures.py, and the training step those fixtures record.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use engine::{clip_grad_norm, AdamW, AdamWConfig, DType, Device, Model, Tensor};
use serde_json::Value;

/// `tests/fixtures/<rel>` at the workspace root, or under `ENGINE_TEST_FIXTURES` when set (a test
/// binary run on another machine, e.g. by scripts/device/gpu_check.sh).
pub fn fixture(rel: &str) -> PathBuf {
    match std::env::var_os("ENGINE_TEST_FIXTURES") {
        Some(dir) => PathBuf::from(dir).join(rel),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel),
    }
}

/// The device of the device-aware tests (parity, training, gradients, generation):
/// `ENGINE_TEST_DEVICE` = `cpu` (default), `cuda` or `cuda:N`; opened once per test binary.
pub fn test_device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let spec = std::env::var("ENGINE_TEST_DEVICE").unwrap_or_else(|_| "cpu".to_string());
            engine::open_device(&spec).unwrap_or_else(|e| panic!("ENGINE_TEST_DEVICE={spec}: {e}"))
        })
        .clone()
}

/// The dtype of the parity, training and gradient tests: `ENGINE_TEST_DTYPE` = `f32` (default) or `bf16`.
pub fn test_dtype() -> DType {
    let spec = std::env::var("ENGINE_TEST_DTYPE").unwrap_or_else(|_| "f32".to_string());
    engine::parse_dtype(&spec).unwrap_or_else(|e| panic!("ENGINE_TEST_DTYPE={spec}: {e}"))
}

/// A fixture model on the test device in the test dtype.
pub fn load_for_test(model: &str) -> Result<Model> {
    Model::load_with_dtype(fixture(model), &test_device(), test_dtype())
}

pub fn read_json(rel: &str) -> Result<Value> {
    let path = fixture(rel);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

pub fn load(model: &str) -> Result<Model> {
    Model::load(fixture(model), &Device::Cpu)
}

/// One scored example of `parity/<model>.json`.
pub struct Example {
    pub ids: Vec<u32>,
    pub response_start: usize,
    /// log p of ids[response_start..], each predicted from the position before.
    pub logp: Vec<f32>,
}

pub fn parity_examples(model: &str) -> Result<Vec<Example>> {
    let json = read_json(&format!("parity/{model}.json"))?;
    let ids = json["input_ids"].as_array().context("input_ids")?;
    let starts = json["response_start"].as_array().context("response_start")?;
    let logps = json["logp"].as_array().context("logp")?;
    ids.iter()
        .zip(starts)
        .zip(logps)
        .map(|((ids, start), logp)| {
            Ok(Example {
                ids: as_vec(ids)?.into_iter().map(|v| v as u32).collect(),
                response_start: start.as_u64().context("response_start")? as usize,
                logp: as_vec(logp)?.into_iter().map(|v| v as f32).collect(),
            })
        })
        .collect()
}

pub fn as_vec(v: &Value) -> Result<Vec<f64>> {
    v.as_array().context("expected an array")?.iter().map(|x| x.as_f64().context("expected a number")).collect()
}

/// The AdamW settings a training fixture records (`lr`, `betas`, `eps`, `weight_decay`).
pub fn adamw_config(json: &Value) -> Result<AdamWConfig> {
    let betas = as_vec(&json["betas"])?;
    Ok(AdamWConfig {
        lr: json["lr"].as_f64().context("lr")?,
        beta1: betas[0],
        beta2: betas[1],
        eps: json["eps"].as_f64().context("eps")?,
        weight_decay: json["weight_decay"].as_f64().context("weight_decay")?,
    })
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The loss mask over `[B, T-1]` log-prob positions: entry `t` scores `ids[t+1]`, included when
/// `t + 1` is a response token or the EOS of a real (unpadded) row.
pub fn loss_mask(examples: &[Example], t: usize) -> Vec<f32> {
    let mut mask = vec![0.0f32; examples.len() * (t - 1)];
    for (b, ex) in examples.iter().enumerate() {
        for target in ex.response_start..ex.ids.len() {
            mask[b * (t - 1) + target - 1] = 1.0;
        }
    }
    mask
}

/// One step as scripts/make_fixtures.py does it (of every trainable parameter: the adapter's alone when the
/// model has one); returns (mean f before the update, pre-clip norm).
pub fn train_step(
    model: &Model,
    opt: &mut AdamW,
    ids: &Tensor,
    mask: &[f32],
    objective: &str,
    max_grad_norm: f64,
    autograd: bool,
) -> Result<(f64, f64)> {
    let pass = match autograd {
        true => model.training_pass_autograd(ids)?,
        false => model.training_pass(ids)?,
    };
    let lp = pass.logp()?;
    let n: f32 = mask.iter().sum();

    // Per included token: f (reported) and s (the stop-gradient weight), as the plugins give.
    let (mut f_sum, mut weights) = (0.0f64, vec![0.0f32; lp.len()]);
    for (i, (&l, &m)) in lp.iter().zip(mask).enumerate() {
        if m == 0.0 {
            continue;
        }
        let (f, s) = match objective {
            "nll" => (-l, 1.0),
            "neg_p" => (1.0 - l.exp(), l.exp()),
            other => panic!("unknown objective {other}"),
        };
        f_sum += f as f64;
        weights[i] = s / n;
    }
    let mut grads = pass.backward(model, &weights)?;
    let norm = clip_grad_norm(&mut grads, max_grad_norm)?;
    opt.step(model.trainable_params(), &grads)?;
    Ok((f_sum / n as f64, norm))
}
