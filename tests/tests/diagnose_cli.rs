//! `host diagnose`: the base model's confidence on a data set's targets, checked against the
//! transformers log-probs of the parity fixture, and its refusals.

use integration_tests::{assert_error, fixture, host, stderr, stdout, write_jsonl};
use serde_json::Value;

#[test]
fn diagnosis_matches_the_reference_probabilities() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("parity/llama-tiny.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    write_jsonl(&data, reference["examples"].as_array().unwrap());
    let stem = dir.path().join("diag");
    let run = host(&[
        "diagnose",
        "--model",
        fixture("llama-tiny").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        stem.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    // Mean probability from transformers' log-probs of the same tokens.
    let p: Vec<f64> = reference["logp"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|l| l.as_f64().unwrap().exp()))
        .collect();
    let mean = p.iter().sum::<f64>() / p.len() as f64;
    let report: Value = serde_json::from_str(&std::fs::read_to_string(stem.with_extension("json")).unwrap()).unwrap();
    let d = &report["diagnosis"];
    assert_eq!(d["tokens"].as_u64(), Some(p.len() as u64));
    assert!((d["mean_p"].as_f64().unwrap() - mean).abs() < 1e-5, "{} vs {mean}", d["mean_p"]);
    let below = p.iter().filter(|&&x| x < 0.1).count() as f64 / p.len() as f64;
    assert!((d["share_below_0_1"].as_f64().unwrap() - below).abs() < 1e-9);
    // A random tiny model is nowhere near confident: the weak region, with NLL recommended first.
    assert_eq!(d["region"], "model-weak");
    assert_eq!(d["recommended"][0], "nll");
    assert_eq!(d["histogram"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum::<u64>(), p.len() as u64);
    assert!(std::fs::read_to_string(stem.with_extension("svg")).unwrap().contains("mean p ="));
    assert!(stdout(&run).contains("region model-weak"));
}

#[test]
fn refuses_empty_data_and_a_tokenizer_that_does_not_fit_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let stem = dir.path().join("diag");
    let model = fixture("qwen2-tiny");
    let run = host(&[
        "diagnose",
        "--model",
        model.to_str().unwrap(),
        "--data",
        empty.to_str().unwrap(),
        "--out",
        stem.to_str().unwrap(),
    ]);
    assert_error(&run, 2, &["empty.jsonl", "no examples"]);

    // A tokenizer with ten more tokens than the model's embedding table (as when a tokenizer from
    // another model is paired with this one).
    let small = dir.path().join("model");
    std::fs::create_dir(&small).unwrap();
    for entry in std::fs::read_dir(&model).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), small.join(entry.file_name())).unwrap();
    }
    let tokenizer_path = small.join("tokenizer.json");
    let mut tokenizer: Value = serde_json::from_str(&std::fs::read_to_string(&tokenizer_path).unwrap()).unwrap();
    let added = tokenizer["added_tokens"].as_array_mut().unwrap();
    for i in 0..10 {
        added.push(serde_json::json!({"id": 320 + i, "content": format!("<|extra_{i}|>"), "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true}));
    }
    std::fs::write(&tokenizer_path, tokenizer.to_string()).unwrap();
    let data = dir.path().join("data.jsonl");
    write_jsonl(&data, &[serde_json::json!({"prompt": "Q: 1+1\nA: ", "response": "2"})]);
    let run = host(&[
        "diagnose",
        "--model",
        small.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        stem.to_str().unwrap(),
    ]);
    assert_error(&run, 2, &["tokenizer.json", "the tokenizer has 330 tokens but the model's vocab_size is 320"]);
    assert!(!stem.with_extension("json").exists());
}
