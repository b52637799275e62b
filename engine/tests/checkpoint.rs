//! Checkpoints: the Hugging Face layout written atomically, loaded back with identical logits;
//! optimizer state saved and restored so that training resumes bit for bit.

mod common;

use std::path::Path;

use anyhow::Result;
use common::{fixture, load, parity_examples};
use engine::{checkpoint, clip_grad_norm, pad_batch, AdamW, AdamWConfig, Device, Model, Tensor};

fn batch(name: &str, model: &Model) -> Result<Tensor> {
    let rows: Vec<Vec<u32>> = parity_examples(name)?.into_iter().map(|e| e.ids).collect();
    pad_batch(&rows, 0, model.device())
}

/// One NLL step over every next-token position (enough to move every weight), through the
/// training pass the trainer uses.
fn step(model: &Model, opt: &mut AdamW, ids: &Tensor) -> Result<()> {
    let pass = model.training_pass(ids)?;
    let n = pass.logp()?.len();
    let mut grads = pass.backward(model, &vec![1.0 / n as f32; n])?;
    clip_grad_norm(&mut grads, 1.0)?;
    opt.step(model.params(), &grads)
}

fn config() -> AdamWConfig {
    AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01 }
}

fn bits(t: &Tensor) -> Result<Vec<u32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f32::to_bits).collect())
}

fn json(path: &Path) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn round_trip(name: &str) -> Result<()> {
    let model = load(name)?;
    let ids = batch(name, &model)?;
    let mut opt = AdamW::new(config());
    step(&model, &mut opt, &ids)?;

    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("ckpt");
    checkpoint::save(&model, &dir)?;
    // Saving over an existing checkpoint replaces it.
    checkpoint::save(&model, &dir)?;

    let mut entries: Vec<String> = std::fs::read_dir(tmp.path())?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    entries.sort();
    assert_eq!(entries, vec!["ckpt"], "no leftover tmp/old directories");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(dir.join(f).is_file(), "{name}: missing {f}");
    }

    // config.json: the original, except the dtype says float32.
    let original = json(&fixture(name).join("config.json"))?;
    let saved = json(&dir.join("config.json"))?;
    assert_eq!(saved, original, "{name}: config.json changed");

    // Hugging Face tensor names; a tied model stores no lm_head.
    let (stored, meta) = engine::weights::read_safetensors(&dir.join("model.safetensors"), &Device::Cpu)?;
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
    let mut stored_names: Vec<&String> = stored.keys().collect();
    stored_names.sort();
    let mut param_names: Vec<&String> = model.params().iter().map(|(n, _)| n).collect();
    param_names.sort();
    assert_eq!(stored_names, param_names);
    assert_eq!(stored.contains_key("lm_head.weight"), !model.config().tie_word_embeddings);

    let reloaded = Model::load(&dir, &Device::Cpu)?;
    let a = model.forward(&ids)?;
    let b = reloaded.forward(&ids)?;
    assert_eq!(bits(&a)?, bits(&b)?, "{name}: logits differ after reload");
    Ok(())
}

#[test]
fn checkpoint_round_trip_tied_qwen2() -> Result<()> {
    round_trip("qwen2-tiny")
}

#[test]
fn checkpoint_round_trip_untied_llama_new_layout() -> Result<()> {
    round_trip("llama-tiny")
}

#[test]
fn checkpoint_from_shards_saves_single_file() -> Result<()> {
    round_trip("qwen2-sharded")
}

#[test]
fn failed_save_leaves_existing_checkpoint() -> Result<()> {
    let model = load("qwen2-tiny")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("ckpt");
    checkpoint::save(&model, &dir)?;
    let err = checkpoint::save_with(&model, &dir, |_| anyhow::bail!("disk full")).expect_err("must fail");
    assert!(format!("{err:#}").contains("disk full"));
    assert!(dir.join("model.safetensors").is_file());
    assert_eq!(std::fs::read_dir(tmp.path())?.count(), 1, "tmp dir cleaned up");
    Ok(())
}

#[test]
fn optimizer_state_round_trip_is_bitwise() -> Result<()> {
    let name = "qwen2-tiny";
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("step1");

    // Run A: one step, save model + optimizer state, two more steps.
    let model = load(name)?;
    let ids = batch(name, &model)?;
    let mut opt = AdamW::new(config());
    step(&model, &mut opt, &ids)?;
    checkpoint::save_with(&model, &dir, |d| opt.save_state(d.join("optimizer.safetensors")))?;
    // The file's bytes do not depend on hash-map order (its metadata has a key per parameter).
    opt.save_state(tmp.path().join("again.safetensors"))?;
    let (first, again) =
        (std::fs::read(dir.join("optimizer.safetensors"))?, std::fs::read(tmp.path().join("again.safetensors"))?);
    assert!(first == again, "saving the same optimizer state twice gave different bytes");
    for _ in 0..2 {
        step(&model, &mut opt, &ids)?;
    }

    // Run B: resume from the saved directory and take the same two steps.
    let resumed = Model::load(&dir, &Device::Cpu)?;
    let mut opt_b = AdamW::load_state(dir.join("optimizer.safetensors"), config(), &Device::Cpu)?;
    opt_b.check_matches(resumed.params())?;
    assert_eq!(opt_b.steps(), 1);
    for _ in 0..2 {
        step(&resumed, &mut opt_b, &ids)?;
    }
    assert_eq!(opt_b.steps(), 3);

    for ((na, va), (nb, vb)) in model.params().iter().zip(resumed.params()) {
        assert_eq!(na, nb);
        assert_eq!(bits(va.as_tensor())?, bits(vb.as_tensor())?, "{na} differs after resume");
    }
    Ok(())
}

#[test]
fn optimizer_state_for_another_model_is_refused() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("opt.safetensors");
    let qwen = load("qwen2-tiny")?;
    let mut opt = AdamW::new(config());
    step(&qwen, &mut opt, &batch("qwen2-tiny", &qwen)?)?;
    opt.save_state(&path)?;
    let llama = load("llama-tiny")?;
    let loaded = AdamW::load_state(&path, config(), &Device::Cpu)?;
    assert!(loaded.check_matches(llama.params()).is_err());
    // A model checkpoint is not an optimizer state.
    assert!(AdamW::load_state(fixture("qwen2-tiny/model.safetensors"), config(), &Device::Cpu).is_err());
    Ok(())
}

#[test]
fn bf16_checkpoint_loads_as_f32_and_saves_as_f32() -> Result<()> {
    use engine::DType;
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("bf16");
    std::fs::create_dir(&src)?;
    // qwen2-tiny with bf16 weights and `torch_dtype: bfloat16`, as many hub checkpoints are.
    let mut cfg = json(&fixture("qwen2-tiny/config.json"))?;
    cfg["torch_dtype"] = "bfloat16".into();
    std::fs::write(src.join("config.json"), serde_json::to_string(&cfg)?)?;
    let (tensors, _) = engine::weights::read_safetensors(&fixture("qwen2-tiny/model.safetensors"), &Device::Cpu)?;
    let bf16: Vec<(String, Tensor)> =
        tensors.iter().map(|(n, t)| Ok((n.clone(), t.to_dtype(DType::BF16)?))).collect::<Result<_>>()?;
    engine::weights::write_safetensors(&src.join("model.safetensors"), &bf16, &[])?;

    let model = Model::load(&src, &Device::Cpu)?;
    for (name, var) in model.params() {
        assert_eq!(var.dtype(), DType::F32);
        let want = tensors[name].to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
        assert_eq!(bits(var.as_tensor())?, bits(&want)?, "{name}");
    }
    let out = tmp.path().join("out");
    checkpoint::save(&model, &out)?;
    assert_eq!(json(&out.join("config.json"))?["torch_dtype"], "float32");
    let (saved, _) = engine::weights::read_safetensors(&out.join("model.safetensors"), &Device::Cpu)?;
    assert!(saved.values().all(|t| t.dtype() == DType::F32));
    Ok(())
}
