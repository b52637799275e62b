//! The miniature continuum: the shipped splits are what the Rust generator writes, the shipped base model
//! puts its three domains in three regions, and `host init-model` writes a model the host trains.

use std::path::Path;
use std::process::Command;

use integration_tests::{assert_error, bin_dir, ensure_built, host, stderr, workspace_root};
use serde_json::Value;

const DOMAINS: [&str; 3] = ["arithmetic", "multiplication", "figfont"];

#[test]
fn shipped_splits_and_tokenizer_are_what_the_generator_writes() {
    ensure_built();
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(bin_dir().join("continuum-datasets"))
        .args(["--out", out.path().to_str().unwrap(), "--seed", "0"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let shipped = workspace_root().join("datasets/continuum");
    let mut files: Vec<String> =
        DOMAINS.iter().flat_map(|d| [format!("{d}/train.jsonl"), format!("{d}/eval.jsonl")]).collect();
    files.push("tokenizer/tokenizer.json".into());
    files.push("tokenizer/tokenizer_config.json".into());
    for file in files {
        let a = std::fs::read(shipped.join(&file)).unwrap();
        let b = std::fs::read(out.path().join(&file)).unwrap();
        assert!(a == b, "datasets/continuum/{file} differs from the generator's output");
    }
    // No held-out problem occurs in its domain's train split or in the pretraining corpus.
    let pretrain = std::fs::read_to_string(out.path().join("pretrain.jsonl")).unwrap();
    for domain in DOMAINS {
        let train = std::fs::read_to_string(shipped.join(domain).join("train.jsonl")).unwrap();
        let train_prompts: std::collections::HashSet<String> = train
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["prompt"].as_str().unwrap().to_string())
            .collect();
        let eval = std::fs::read_to_string(shipped.join(domain).join("eval.jsonl")).unwrap();
        for line in eval.lines() {
            let prompt = serde_json::from_str::<Value>(line).unwrap()["prompt"].as_str().unwrap().to_string();
            assert!(!train_prompts.contains(&prompt), "{domain}: {prompt:?} is in train and eval");
            // Pretraining rows are JSON too: look for the problem as JSON-escaped text.
            let escaped = serde_json::to_string(&prompt).unwrap();
            let needle = &escaped[1..escaped.len() - 1];
            let body = needle.trim_start_matches("Q: ");
            assert!(
                !pretrain.contains(&format!("\"{body}")) && !pretrain.contains(&format!(">{needle}")),
                "{domain}: {prompt:?} is in the pretraining corpus"
            );
        }
    }
}

fn diagnose(model: &Path, data: &Path, stem: &Path) -> Value {
    let run = host(&[
        "diagnose",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        stem.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(stem.with_extension("json")).unwrap()).unwrap();
    report["diagnosis"].clone()
}

#[test]
fn the_shipped_base_model_puts_the_three_domains_in_three_regions() {
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let mut means = Vec::new();
    for (domain, region) in DOMAINS.iter().zip(["model-strong", "intermediate", "model-weak"]) {
        let data = root.join("datasets/continuum").join(domain).join("eval.jsonl");
        let d = diagnose(&root.join("models/continuum-base"), &data, &dir.path().join(domain));
        assert_eq!(d["region"], region, "{domain}: {d}");
        means.push(d["mean_p"].as_f64().unwrap());
    }
    assert!(means[0] > means[1] && means[1] > means[2], "{means:?}");
}

#[test]
fn init_model_writes_a_model_that_trains_and_refuses_to_overwrite() {
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("init");
    let tokenizer = root.join("datasets/continuum/tokenizer");
    let args = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "init-model".to_string(),
            "--tokenizer".into(),
            tokenizer.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--hidden".into(),
            "32".into(),
            "--intermediate".into(),
            "64".into(),
            "--layers".into(),
            "1".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run_host = |a: Vec<String>| host(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let run = run_host(args(&model, &[]));
    assert!(run.status.success(), "{}", stderr(&run));
    let config: Value = serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    // 97 tokens, rounded up to a multiple of 32.
    assert_eq!(config["vocab_size"], 128);
    assert_eq!(config["hidden_size"], 32);
    // A random model is in the weak region on everything.
    let data = root.join("datasets/continuum/arithmetic/eval.jsonl");
    let d = diagnose(&model, &data, &dir.path().join("diag"));
    assert_eq!(d["region"], "model-weak");
    // Same seed, same weights; the existing directory is not touched.
    let before = std::fs::read(model.join("model.safetensors")).unwrap();
    assert_error(&run_host(args(&model, &[])), 2, &["already exists"]);
    assert_eq!(before, std::fs::read(model.join("model.safetensors")).unwrap());
    let again = dir.path().join("again");
    assert!(run_host(args(&again, &[])).status.success());
    assert_eq!(before, std::fs::read(again.join("model.safetensors")).unwrap());
    // A vocabulary smaller than the tokenizer is refused.
    assert_error(&run_host(args(&dir.path().join("small"), &["--vocab-size", "64"])), 2, &["--vocab-size 64", "97"]);
    assert!(!dir.path().join("small").exists());
}
