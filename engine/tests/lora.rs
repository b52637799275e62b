//! LoRA adapters against Hugging Face PEFT (fixtures from scripts/make_lora_fixtures.py): a PEFT-made
//! adapter loads and gives PEFT's logits; three AdamW steps from it give PEFT + PyTorch's losses and
//! gradient norms through both training passes, leaving every base weight bit-identical; a saved adapter
//! has PEFT's layout and loads back; a fresh adapter is PEFT's initialisation; bad adapters are refused.

mod common;

use std::path::Path;

use anyhow::{Context, Result};
use common::{adamw_config, as_vec, fixture, load, loss_mask, max_abs_diff, parity_examples, read_json, train_step};
use engine::{pad_batch, AdamW, Device, LoraConfig, Model, Tensor};

const ADAPTERS: [(&str, &str); 2] =
    [("qwen2-tiny-all-linear", "qwen2-tiny"), ("llama-tiny-qv-down-rslora", "llama-tiny")];

fn with_adapter(adapter: &str, base: &str) -> Result<Model> {
    let mut model = load(base)?;
    model.load_adapter(&fixture(&format!("lora/{adapter}")))?;
    Ok(model)
}

fn logits(model: &Model, ids: &[u32]) -> Result<Vec<f32>> {
    let ids = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu)?;
    Ok(model.forward(&ids)?.flatten_all()?.to_vec1()?)
}

#[test]
fn a_peft_adapter_gives_pefts_logits() -> Result<()> {
    for (adapter, base) in ADAPTERS {
        let json = read_json(&format!("lora/{adapter}.json"))?;
        let ids: Vec<u32> = as_vec(&json["probe_ids"])?.into_iter().map(|v| v as u32).collect();
        let want: Vec<f32> = json["logits"]
            .as_array()
            .context("logits")?
            .iter()
            .map(as_vec)
            .collect::<Result<Vec<_>>>()?
            .concat()
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let model = with_adapter(adapter, base)?;
        let got = logits(&model, &ids)?;
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 2e-4, "{adapter}: logits differ from PEFT's by {diff}");
        let plain = logits(&load(base)?, &ids)?;
        assert!(max_abs_diff(&plain, &want) > 1e-2, "{adapter}: the adapter must change the logits");

        // The hand-written scoring pass reads the adapter too: log-softmax of PEFT's logits at the ids.
        let vocab = want.len() / ids.len();
        let want_logp: Vec<f32> = (0..ids.len() - 1)
            .map(|t| {
                let row = &want[t * vocab..(t + 1) * vocab];
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
                row[ids[t + 1] as usize] - lse
            })
            .collect();
        let scored =
            model.next_token_logprobs(&Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu)?, &[ids.len()])?;
        assert!(max_abs_diff(&scored, &want_logp) < 2e-4, "{adapter}: scored log-probs");
    }
    Ok(())
}

/// Every base parameter's bits.
fn base_bits(model: &Model) -> Result<Vec<(String, Vec<u32>)>> {
    model
        .params()
        .iter()
        .map(|(name, var)| {
            Ok((name.clone(), var.flatten_all()?.to_vec1::<f32>()?.iter().map(|v| v.to_bits()).collect()))
        })
        .collect()
}

#[test]
fn three_steps_match_peft_training_and_leave_the_base_untouched() -> Result<()> {
    for (adapter, base) in ADAPTERS {
        let json = read_json(&format!("lora/{adapter}.json"))?;
        let config = adamw_config(&json)?;
        let max_grad_norm = json["max_grad_norm"].as_f64().context("max_grad_norm")?;
        let examples = parity_examples(base)?;
        let rows: Vec<Vec<u32>> = examples.iter().map(|e| e.ids.clone()).collect();
        for objective in ["nll", "neg_p"] {
            let want = &json["training"][objective];
            let (want_losses, want_norms) = (as_vec(&want["losses"])?, as_vec(&want["grad_norms"])?);
            for autograd in [false, true] {
                let model = with_adapter(adapter, base)?;
                let before = base_bits(&model)?;
                let adapter_before: Vec<f32> = model.trainable_params()[1].1.flatten_all()?.to_vec1()?;
                let ids = pad_batch(&rows, 0, model.device())?;
                let mask = loss_mask(&examples, ids.dim(1)?);
                assert_eq!(Some(mask.iter().sum::<f32>() as u64), want["num_loss_tokens"].as_u64());
                let mut opt = AdamW::new(config);
                for step in 0..want_losses.len() {
                    let (loss, norm) = train_step(&model, &mut opt, &ids, &mask, objective, max_grad_norm, autograd)?;
                    let what = format!("{adapter} {objective} (autograd {autograd}) step {}", step + 1);
                    let (rl, rn) = (
                        (loss - want_losses[step]).abs() / want_losses[step].abs(),
                        (norm - want_norms[step]).abs() / want_norms[step],
                    );
                    eprintln!(
                        "{what}: loss {loss} vs {} ({rl:.1e}), grad norm {norm} vs {} ({rn:.1e})",
                        want_losses[step], want_norms[step]
                    );
                    assert!(rl < 2e-3, "{what}: loss {loss} vs PEFT's {}", want_losses[step]);
                    assert!(rn < 1e-2, "{what}: grad norm {norm} vs PEFT's {}", want_norms[step]);
                }
                assert_eq!(base_bits(&model)?, before, "{adapter}: a frozen base weight changed");
                let adapter_after: Vec<f32> = model.trainable_params()[1].1.flatten_all()?.to_vec1()?;
                assert!(max_abs_diff(&adapter_after, &adapter_before) > 0.0, "{adapter}: the adapter did not train");
            }
        }
    }
    Ok(())
}

#[test]
fn a_saved_adapter_has_pefts_layout_and_loads_back() -> Result<()> {
    let (adapter, base) = ADAPTERS[1];
    let model = with_adapter(adapter, base)?;
    let dir = tempfile::tempdir()?;
    model.write_adapter(dir.path(), "tests/fixtures/llama-tiny")?;
    // The same tensor names, shapes and values as PEFT's file.
    let (ours, _) =
        engine::weights::read_safetensors(&dir.path().join(engine::model::ADAPTER_WEIGHTS_FILE), &Device::Cpu)?;
    let (peft, _) = engine::weights::read_safetensors(
        &fixture(&format!("lora/{adapter}/{}", engine::model::ADAPTER_WEIGHTS_FILE)),
        &Device::Cpu,
    )?;
    let mut names: Vec<&String> = ours.keys().collect();
    names.sort();
    let mut want: Vec<&String> = peft.keys().collect();
    want.sort();
    assert_eq!(names, want);
    for (name, tensor) in &ours {
        let (a, b): (Vec<f32>, Vec<f32>) = (tensor.flatten_all()?.to_vec1()?, peft[name].flatten_all()?.to_vec1()?);
        assert_eq!(a, b, "{name}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(engine::model::ADAPTER_CONFIG_FILE))?)?;
    for key in ["peft_type", "r", "lora_alpha", "use_rslora", "bias", "task_type"] {
        let peft_config = read_json(&format!("lora/{adapter}/{}", engine::model::ADAPTER_CONFIG_FILE))?;
        assert_eq!(config[key], peft_config[key], "adapter_config.json `{key}`");
    }
    let mut reloaded = load(base)?;
    reloaded.load_adapter(dir.path())?;
    let ids: Vec<u32> = (0..12).map(|i| (i * 37 % 300) as u32).collect();
    assert_eq!(logits(&reloaded, &ids)?, logits(&model, &ids)?);
    Ok(())
}

#[test]
fn a_fresh_adapter_is_pefts_initialisation_and_merges_into_the_base() -> Result<()> {
    let all = LoraConfig::new(4, 8.0, 0.0, &["all-linear".to_string()], false)?;
    assert_eq!(all.target_modules.len(), 7);
    let mut model = load("qwen2-tiny")?;
    let ids: Vec<u32> = (0..12).map(|i| (i * 53 % 300) as u32).collect();
    let base_logits = logits(&model, &ids)?;
    model.add_lora(&all, 7)?;
    assert_eq!(logits(&model, &ids)?, base_logits, "B starts at 0: the outputs do not change");
    assert_eq!(model.trainable_params().len(), 2 * 7 * model.config().num_hidden_layers);
    for (name, var) in model.trainable_params() {
        let values: Vec<f32> = var.flatten_all()?.to_vec1()?;
        if name.contains("lora_B") {
            assert!(values.iter().all(|&v| v == 0.0), "{name}");
        } else {
            // kaiming_uniform_(a=√5): U(-1/√in, 1/√in), whose standard deviation is bound / √3.
            let bound = 1.0 / (var.dims()[1] as f32).sqrt();
            assert!(values.iter().all(|v| v.abs() <= bound), "{name}");
            let std = (values.iter().map(|v| v * v).sum::<f32>() / values.len() as f32).sqrt();
            assert!((std / (bound / 3f32.sqrt()) - 1.0).abs() < 0.15, "{name}: std {std}, bound {bound}");
        }
    }
    let mut again = load("qwen2-tiny")?;
    again.add_lora(&all, 7)?;
    let first = |m: &Model| -> Result<Vec<f32>> { Ok(m.trainable_params()[0].1.flatten_all()?.to_vec1()?) };
    assert_eq!(first(&again)?, first(&model)?, "deterministic in the seed");
    let mut other = load("qwen2-tiny")?;
    other.add_lora(&all, 8)?;
    assert_ne!(first(&other)?, first(&model)?, "another seed, other values");

    // Merging W += s·B·A gives the adapter's outputs without the adapter.
    let (adapter, base) = ADAPTERS[0];
    let mut merged = with_adapter(adapter, base)?;
    let want = logits(&merged, &ids)?;
    merged.merge_lora()?;
    assert!(merged.lora().is_none() && merged.trainable_params().len() == merged.params().len());
    let diff = max_abs_diff(&logits(&merged, &ids)?, &want);
    assert!(diff < 1e-5, "merged logits differ by {diff}");
    Ok(())
}

/// A copy of a fixture adapter with its config edited by `edit` (and its tensors by `tensors`).
fn edited_adapter(
    dir: &Path,
    edit: impl FnOnce(&mut serde_json::Value),
    tensors: impl FnOnce(&mut Vec<(String, Tensor)>),
) -> Result<()> {
    let src = fixture(&format!("lora/{}", ADAPTERS[1].0));
    let mut config = read_json(&format!("lora/{}/{}", ADAPTERS[1].0, engine::model::ADAPTER_CONFIG_FILE))?;
    edit(&mut config);
    std::fs::write(dir.join(engine::model::ADAPTER_CONFIG_FILE), serde_json::to_string(&config)?)?;
    let (stored, _) = engine::weights::read_safetensors(&src.join(engine::model::ADAPTER_WEIGHTS_FILE), &Device::Cpu)?;
    let mut stored: Vec<(String, Tensor)> = stored.into_iter().collect();
    stored.sort_by(|a, b| a.0.cmp(&b.0));
    tensors(&mut stored);
    engine::weights::write_safetensors(&dir.join(engine::model::ADAPTER_WEIGHTS_FILE), &stored, &[])
}

#[test]
fn bad_adapters_are_refused_by_key_or_tensor() -> Result<()> {
    type EditTensors = dyn Fn(&mut Vec<(String, Tensor)>);
    let refused = |edit: &dyn Fn(&mut serde_json::Value), tensors: &EditTensors| -> Result<String> {
        let dir = tempfile::tempdir()?;
        edited_adapter(dir.path(), |c| edit(c), |t| tensors(t))?;
        let mut model = load("llama-tiny")?;
        Ok(model.load_adapter(dir.path()).err().context("expected an error")?.to_string())
    };
    let keep = |_: &mut Vec<(String, Tensor)>| {};
    let err = refused(&|c| c["use_dora"] = true.into(), &keep)?;
    assert!(err.contains("`use_dora` = true is not supported"), "{err}");
    let err = refused(&|c| c["target_modules"] = serde_json::json!(["q_proj", "lm_head"]), &keep)?;
    assert!(err.contains("target module `lm_head`"), "{err}");
    let err = refused(&|c| c["r"] = 1_000_000_000.into(), &keep)?;
    assert!(err.contains("r = 1000000000 is larger than q_proj can use"), "{err}");
    let err = refused(&|c| c["r"] = "eight".into(), &keep)?;
    assert!(err.contains("`r` must be a positive integer"), "{err}");
    let err = refused(&|_| {}, &|t| {
        t.remove(0);
    })?;
    assert!(err.contains("no tensor `base_model.model.model.layers.0.mlp.down_proj.lora_A.weight`"), "{err}");
    let err = refused(&|_| {}, &|t| t[0].1 = Tensor::zeros((2, 2), engine::DType::F32, &Device::Cpu).expect("tensor"))?;
    assert!(err.contains("has shape [2, 2]"), "{err}");
    let err = refused(&|_| {}, &|t| {
        let extra = t[0].1.clone();
        t.push(("base_model.model.lm_head.lora_A.weight".into(), extra));
    })?;
    assert!(err.contains("`base_model.model.lm_head.lora_A.weight` is not part of the adapter"), "{err}");
    Ok(())
}

/// The fixture's llama adapter (B non-zero, q/v/down adapted) with `lora_dropout` set to `p`.
fn with_dropout(p: f64) -> Result<(tempfile::TempDir, Model)> {
    let dir = tempfile::tempdir()?;
    edited_adapter(dir.path(), |c| c["lora_dropout"] = p.into(), |_| {})?;
    let mut model = load(ADAPTERS[1].1)?;
    model.load_adapter(dir.path())?;
    Ok((dir, model))
}

/// `-Σ weights · logp` of a hand-written training pass, in f64.
fn weighted_loss(model: &Model, ids: &Tensor, lengths: &[usize], weights: &[f32]) -> Result<f64> {
    let logp = model.training_pass_packed(ids, lengths)?.logp()?;
    Ok(-logp.iter().zip(weights).map(|(&l, &w)| l as f64 * w as f64).sum::<f64>())
}

/// Rows of different lengths (so that the packed pass's token keys differ from a plain flattening) and
/// weights of either sign on the positions that predict real tokens.
fn dropout_batch(model: &Model) -> Result<(Tensor, Vec<usize>, Vec<f32>)> {
    let rows: Vec<Vec<u32>> = vec![vec![1, 5, 9, 2, 7, 3, 11, 4], vec![3, 8, 2, 6], vec![9, 1, 4, 4, 7, 2]];
    let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    let ids = pad_batch(&rows, 0, model.device())?;
    let t = ids.dim(1)? - 1;
    let weights =
        (0..rows.len() * t).map(|i| if i % t + 1 < lengths[i / t] { [1.0, -0.5, 0.75][i % 3] } else { 0.0 }).collect();
    Ok((ids, lengths, weights))
}

fn gradient_values(grads: &engine::Grads) -> Result<Vec<(String, Vec<f32>)>> {
    grads.iter().map(|(n, g)| Ok((n.clone(), g.flatten_all()?.to_vec1()?))).collect()
}

/// Dropout acts only in training: an adapter saved with `lora_dropout` 0.1 (as many PEFT adapters are)
/// scores exactly as with 0, while its training passes drop: the hand-written packed pass and candle's
/// autograd on the padded batch give the same log-probs and gradients for the same seed, a new seed draws
/// new masks, and the gradient is the finite-difference derivative of the dropped loss (which the
/// no-dropout gradient is not).
#[test]
fn adapter_dropout_trains_through_both_passes_and_never_scores() -> Result<()> {
    let (_dir, mut model) = with_dropout(0.1)?;
    let plain = with_adapter(ADAPTERS[1].0, ADAPTERS[1].1)?;
    let ids = [1u32, 5, 9, 2, 7, 3];
    assert_eq!(logits(&model, &ids)?, logits(&plain, &ids)?);

    let (batch, lengths, weights) = dropout_batch(&model)?;
    model.set_dropout_seed(42);
    let packed = model.training_pass_packed(&batch, &lengths)?;
    let padded = model.training_pass_autograd(&batch)?;
    let (packed_logp, padded_logp) = (packed.logp()?, padded.logp()?);
    let real: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] != 0.0).collect();
    let at = |v: &[f32]| real.iter().map(|&i| v[i]).collect::<Vec<f32>>();
    assert!(max_abs_diff(&at(&packed_logp), &at(&padded_logp)) < 1e-5, "packed and padded dropout differ");
    let plain_logp = plain.training_pass_packed(&batch, &lengths)?.logp()?;
    let moved = max_abs_diff(&at(&packed_logp), &at(&plain_logp));
    assert!(moved > 1e-4, "dropout 0.1 left the training log-probs unchanged ({moved})");

    let grads = gradient_values(&packed.backward(&model, &weights)?)?;
    let want = gradient_values(&padded.backward(&model, &weights)?)?;
    assert_eq!(grads.len(), model.trainable_params().len());
    for ((name, g), (want_name, w)) in grads.iter().zip(&want) {
        assert_eq!(name, want_name);
        let scale = w.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        assert!(max_abs_diff(g, w) <= 2e-4 * scale, "{name}: packed vs autograd gradient with dropout");
    }
    model.set_dropout_seed(43);
    let reseeded = gradient_values(&model.training_pass_packed(&batch, &lengths)?.backward(&model, &weights)?)?;
    assert!(max_abs_diff(&reseeded[0].1, &grads[0].1) > 0.0, "a new seed drew the same masks");
    let undropped = gradient_values(&plain.training_pass_packed(&batch, &lengths)?.backward(&plain, &weights)?)?;

    // Central differences of the seed-42 loss along a direction over every adapter parameter.
    model.set_dropout_seed(42);
    let params = model.trainable_params();
    let originals: Vec<Tensor> = params.iter().map(|(_, v)| v.as_tensor().copy()).collect::<Result<_, _>>()?;
    // Directions in trainable_params' order; gradients come sorted by name.
    let directions: Vec<Vec<f32>> = params
        .iter()
        .enumerate()
        .map(|(k, (_, v))| (0..v.elem_count()).map(|i| if (i * 7 + k) % 3 == 0 { 1.0 } else { -0.5 }).collect())
        .collect();
    let directional = |g: &[(String, Vec<f32>)]| -> f64 {
        let by_name: std::collections::HashMap<&str, &Vec<f32>> = g.iter().map(|(n, g)| (n.as_str(), g)).collect();
        let along = |((name, _), d): (&(String, engine::Var), &Vec<f32>)| {
            by_name[name.as_str()].iter().zip(d).map(|(&g, &d)| g as f64 * d as f64).sum::<f64>()
        };
        params.iter().zip(&directions).map(along).sum()
    };
    let eps = 1e-3f32;
    let mut shifted = [0f64; 2];
    for (sign, loss) in [1f32, -1.0].into_iter().zip(&mut shifted) {
        for (((_, var), original), d) in params.iter().zip(&originals).zip(&directions) {
            let step = Tensor::from_vec(d.iter().map(|&d| sign * eps * d).collect(), var.shape(), &Device::Cpu)?;
            var.set(&(original + step)?)?;
        }
        *loss = weighted_loss(&model, &batch, &lengths, &weights)?;
    }
    for ((_, var), original) in params.iter().zip(&originals) {
        var.set(original)?;
    }
    let finite = (shifted[0] - shifted[1]) / (2.0 * eps as f64);
    let (analytic, without) = (directional(&grads), directional(&undropped));
    eprintln!("directional derivative: finite {finite}, dropout gradient {analytic}, no-dropout gradient {without}");
    assert!((analytic - finite).abs() <= 1e-2 * finite.abs(), "dropout gradient {analytic} vs finite {finite}");
    assert!((without - finite).abs() > 5e-2 * finite.abs(), "the test cannot tell dropout's gradient apart");
    Ok(())
}
