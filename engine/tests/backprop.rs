//! The hand-written float32 CPU training pass (`model/backprop.rs`) against candle's autograd on
//! the same model and batch: log-probabilities, entropy, top-1 probability and every parameter's
//! gradient of the weighted NLL. (Both paths are also checked against PyTorch in training.rs.)

mod common;

use std::path::Path;

use anyhow::Result;
use common::{load, parity_examples};
use engine::{pad_batch, AdamW, AdamWConfig, Device, Model, ModelConfig, Tensor};

/// Deterministic pseudo-random values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// `|a - b| <= tol · max|b|` element-wise (plus a floor for all-zero references).
fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(worst <= tol * scale, "{what}: max |diff| {worst} > {tol} · {scale}");
}

fn compare(what: &str, model: &Model, rows: &[Vec<u32>]) -> Result<()> {
    let ids = pad_batch(rows, 0, model.device())?;
    let manual = model.training_pass(&ids)?;
    let reference = model.training_pass_autograd(&ids)?;
    let logp = manual.logp()?;
    assert_close(&format!("{what}: logp"), &logp, &reference.logp()?, 1e-5);
    // Scoring's tape-free pass gives the training pass's numbers.
    let full = vec![ids.dim(1)?; rows.len()];
    assert_close(&format!("{what}: scoring logp"), &model.next_token_logprobs(&ids, &full)?, &logp, 1e-6);
    let (entropy, top1) = manual.entropy_and_top1()?;
    let (want_entropy, want_top1) = reference.entropy_and_top1()?;
    assert_close(&format!("{what}: entropy"), &entropy, &want_entropy, 1e-5);
    assert_close(&format!("{what}: top-1"), &top1, &want_top1, 1e-5);

    // Weights of either sign, some zero (masked positions), as objectives produce.
    let weights: Vec<f32> =
        values(logp.len(), 17, 1.0).into_iter().map(|w| if w.abs() < 0.2 { 0.0 } else { w }).collect();
    let grads = manual.backward(model, &weights)?;
    let want = reference.backward(model, &weights)?;
    assert_eq!(grads.len(), model.params().len(), "{what}: every parameter gets a gradient");
    for (name, var) in model.params() {
        let (g, w) = (grads.get(name).expect("checked above"), want.get(name).expect("autograd gradient"));
        assert_eq!(g.dims(), var.dims(), "{what}: {name}");
        let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
        assert!(g.iter().any(|&v| v != 0.0), "{what}: {name} has an all-zero gradient");
        assert_close(&format!("{what}: d {name}"), &g, &w.flatten_all()?.to_vec1()?, 2e-4);
    }
    Ok(())
}

#[test]
fn manual_pass_matches_autograd_on_the_fixtures() -> Result<()> {
    // Qwen2 (q/k/v biases, tied head), Llama (untied), Llama-3 rope scaling, and GQA in each.
    for name in ["qwen2-tiny", "llama-tiny", "llama3-rope-tiny"] {
        let rows: Vec<Vec<u32>> = parity_examples(name)?.into_iter().map(|e| e.ids).collect();
        compare(name, &load(name)?, &rows)?;
    }
    Ok(())
}

#[test]
fn manual_pass_matches_autograd_with_every_bias_and_a_larger_batch() -> Result<()> {
    // Enough rows that the element-wise kernels split over threads.
    let model = random_llama_with_biases()?;
    let rows = random_rows(&[37, 36, 35, 34, 33, 32], 5);
    compare("random llama with biases", &model, &rows)
}

/// Rows of random token ids (vocabulary 300) of the given lengths, from `seed`.
fn random_rows(lengths: &[usize], seed: u64) -> Vec<Vec<u32>> {
    let width = lengths.iter().copied().max().unwrap_or(0);
    let ids = values(width * lengths.len(), seed, 1.0);
    lengths
        .iter()
        .enumerate()
        .map(|(r, &len)| ids[r * width..r * width + len].iter().map(|u| ((u + 1.0) * 150.0) as u32 % 300).collect())
        .collect()
}

/// Llama with attention and MLP biases (o_proj and gate/up/down included), 4 query heads per kv head and
/// head_dim not hidden / heads; every parameter perturbed, so that non-zero biases and norm weights
/// exercise their forward use.
fn random_llama_with_biases() -> Result<Model> {
    let raw = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 12,
        "vocab_size": 300, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "attention_bias": true, "mlp_bias": true,
    });
    let model = Model::random(ModelConfig::from_json(raw, Path::new("random"))?, 3, &Device::Cpu)?;
    let mut perturbed = std::collections::HashMap::new();
    for (i, (name, var)) in model.params().iter().enumerate() {
        let noise = Tensor::from_vec(values(var.elem_count(), 100 + i as u64, 0.05), var.shape(), &Device::Cpu)?;
        perturbed.insert(name.clone(), (var.as_tensor() + noise)?);
    }
    model.set_params(&perturbed)?;
    Ok(model)
}

#[test]
fn tiled_attention_matches_autograd_across_several_tiles() -> Result<()> {
    // Attention runs in tiles of 64 queries over blocks of 256 keys: rows of 300 positions take five
    // query tiles (the last partial) and up to two key blocks each; shorter rows end one past a key block
    // (257), on a block boundary (256), inside or one past a query tile (129, 65), on one (64), and
    // padding fills the rest.
    let model = random_llama_with_biases()?;
    let rows = random_rows(&[300, 257, 256, 129, 65, 64, 3], 9);
    compare("rows across attention tiles", &model, &rows)
}

#[test]
fn packed_rows_give_the_padded_numbers() -> Result<()> {
    // Rows of 300, 70, 64, 9 and 2 tokens laid end to end (packed) against the same batch computed
    // padded to 300 and through autograd: the same log-probs, entropies and gradients at every position
    // that predicts a real token, 0 at those that predict padding.
    let model = random_llama_with_biases()?;
    let lengths = [300usize, 70, 64, 9, 2];
    let rows = random_rows(&lengths, 21);
    let ids = pad_batch(&rows, 0, model.device())?;
    let width = 299;
    let real = |i: usize| i % width < lengths[i / width] - 1;
    let packed = model.training_pass_packed(&ids, &lengths)?;
    let padded = model.training_pass(&ids)?;
    let (logp, want) = (packed.logp()?, padded.logp()?);
    let keep = |v: &[f32]| v.iter().enumerate().filter(|&(i, _)| real(i)).map(|(_, &x)| x).collect::<Vec<_>>();
    assert_close("packed logp", &keep(&logp), &keep(&want), 1e-5);
    assert!(logp.iter().enumerate().all(|(i, &l)| real(i) || l == 0.0), "positions predicting padding hold 0");
    assert_close("packed scoring logp", &model.next_token_logprobs(&ids, &lengths)?, &logp, 1e-6);
    let ((entropy, top1), (want_entropy, want_top1)) = (packed.entropy_and_top1()?, padded.entropy_and_top1()?);
    assert_close("packed entropy", &keep(&entropy), &keep(&want_entropy), 1e-5);
    assert_close("packed top-1", &keep(&top1), &keep(&want_top1), 1e-5);

    // The objective's weights are 0 wherever the loss mask is (padding included).
    let weights: Vec<f32> =
        values(logp.len(), 5, 1.0).iter().enumerate().map(|(i, &w)| if real(i) { w } else { 0.0 }).collect();
    let reference = model.training_pass_autograd(&ids)?;
    assert_close("autograd logp", &keep(&reference.logp()?), &keep(&logp), 1e-5);
    let (grads, padded_grads, autograd) =
        (packed.backward(&model, &weights)?, padded.backward(&model, &weights)?, reference.backward(&model, &weights)?);
    for (name, _) in model.params() {
        let g: Vec<f32> = grads.get(name).expect("gradient").flatten_all()?.to_vec1()?;
        for (what, other) in [("padded", &padded_grads), ("autograd", &autograd)] {
            let w: Vec<f32> = other.get(name).expect("gradient").flatten_all()?.to_vec1()?;
            assert_close(&format!("packed vs {what}: d {name}"), &g, &w, 2e-4);
        }
    }
    let err = model.training_pass_packed(&ids, &[300, 70]).err().expect("wrong number of lengths");
    assert!(err.to_string().contains("2 row lengths for a batch of 5 rows"), "{err}");
    let err = model.training_pass_packed(&ids, &[300, 301, 1, 1, 1]).err().expect("too long");
    assert!(err.to_string().contains("row 1 has length 301"), "{err}");
    Ok(())
}

#[test]
fn packed_and_padded_training_give_the_same_losses_over_five_steps() -> Result<()> {
    // Five AdamW steps of the token-mean NLL on one batch of rows of different lengths, once with the
    // rows packed and once padded: the same loss at every step (the updates feed back, so a gradient
    // that differed would show in the later losses).
    let lengths = [120usize, 70, 33, 9];
    let rows = random_rows(&lengths, 31);
    let mut losses = Vec::new();
    for packed in [true, false] {
        let model = random_llama_with_biases()?;
        let ids = pad_batch(&rows, 0, model.device())?;
        let width = ids.dim(1)? - 1;
        let real = |i: usize| i % width < lengths[i / width] - 1;
        let count = (0..rows.len() * width).filter(|&i| real(i)).count() as f32;
        let weights: Vec<f32> = (0..rows.len() * width).map(|i| if real(i) { 1.0 / count } else { 0.0 }).collect();
        let mut optimizer = AdamW::new(AdamWConfig { lr: 1e-2, ..AdamWConfig::default() });
        let mut run = Vec::new();
        for _ in 0..5 {
            let pass = if packed { model.training_pass_packed(&ids, &lengths)? } else { model.training_pass(&ids)? };
            let logp = pass.logp()?;
            run.push(-logp.iter().zip(&weights).map(|(&l, &w)| (l * w) as f64).sum::<f64>());
            let mut grads = pass.backward(&model, &weights)?;
            engine::clip_grad_norm(&mut grads, 1.0)?;
            optimizer.step(model.params(), &grads)?;
        }
        losses.push(run);
    }
    for (step, (packed, padded)) in losses[0].iter().zip(&losses[1]).enumerate() {
        assert!(((packed - padded) / padded).abs() <= 1e-5, "step {}: packed {packed} vs padded {padded}", step + 1);
    }
    assert!(losses[0][4] < losses[0][0] - 0.05, "the loss falls: {:?}", losses[0]);
    Ok(())
}

#[test]
fn manual_pass_rejects_bad_input() -> Result<()> {
    let model = load("qwen2-tiny")?;
    let vocab = model.config().vocab_size as u32;
    let err = model.training_pass(&pad_batch(&[vec![1, vocab]], 0, model.device())?).err().expect("out of range");
    assert!(err.to_string().contains(&format!("token id {vocab}")), "{err}");
    let err = model.training_pass(&pad_batch(&[vec![1]], 0, model.device())?).err().expect("one position");
    assert!(err.to_string().contains("at least 2 positions"), "{err}");
    let pass = model.training_pass(&pad_batch(&[vec![1, 2, 3]], 0, model.device())?)?;
    let err = pass.backward(&model, &[1.0]).expect_err("wrong number of weights");
    assert!(err.to_string().contains("1 weights for 2 log-probabilities"), "{err}");
    Ok(())
}

#[test]
fn manual_pass_matches_autograd_on_confident_predictions() -> Result<()> {
    // Where the model is sure of its targets (p near 1), `-p`'s gradient `p · (softmax - onehot)` is a
    // difference of nearly equal numbers; the two passes must still agree. The targets are the shipped
    // continuum base model's own greedy continuations.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/continuum-base");
    let model = Model::load(&dir, &Device::Cpu)?;
    let mut rows: Vec<Vec<u32>> = vec![vec![10, 20, 30], vec![40, 50], vec![60, 70, 80, 90]];
    for row in &mut rows {
        while row.len() < 40 {
            let ids = Tensor::from_slice(row.as_slice(), (1, row.len()), &Device::Cpu)?;
            let last: Vec<f32> = model.forward(&ids)?.squeeze(0)?.get(row.len() - 1)?.to_vec1()?;
            let best =
                last.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            row.push(best.0 as u32);
        }
    }
    let ids = pad_batch(&rows, 0, model.device())?;
    let (manual, reference) = (model.training_pass(&ids)?, model.training_pass_autograd(&ids)?);
    let logp = reference.logp()?;
    let confident = logp.iter().filter(|&&l| l.exp() > 0.99).count();
    assert!(confident > logp.len() / 2, "only {confident} of {} targets have p > 0.99", logp.len());
    let weights: Vec<f32> = logp.iter().map(|l| l.exp() / logp.len() as f32).collect(); // -p
    let (grads, want) = (manual.backward(&model, &weights)?, reference.backward(&model, &weights)?);
    for (name, _) in model.params() {
        let g: Vec<f32> = grads.get(name).expect("gradient").flatten_all()?.to_vec1()?;
        let w: Vec<f32> = want.get(name).expect("gradient").flatten_all()?.to_vec1()?;
        assert_close(&format!("confident: d {name}"), &g, &w, 2e-4);
    }
    Ok(())
}
