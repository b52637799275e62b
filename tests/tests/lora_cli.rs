//! LoRA through the `host` binary (issue 16): a `[lora]` run writes PEFT adapter checkpoints and leaves
//! the base untouched, its adapter dropout acts, `--resume` continues it bit for bit (the same dropout
//! masks included), and `score --adapter`, the adapter folder on
//! its own, and `host merge` followed by `score` give the same log-probs.

use std::path::{Path, PathBuf};

use integration_tests::{assert_error, host, read_metrics, score_logp, stderr, workspace_root, write_run_config};

fn tiny() -> PathBuf {
    workspace_root().join("models/tiny-default")
}

/// A LoRA run of models/tiny-default on the default data with adapter dropout `dropout`, out_dir
/// `dir/name/out`.
fn lora_run(dir: &Path, name: &str, dropout: f64) -> PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let out = sub.join("out").display().to_string();
    write_run_config(
        &sub,
        &tiny(),
        &workspace_root().join("datasets/default/train.jsonl"),
        &format!(
            "[optim]\nlr = 1e-2\n\n[train]\nbatch_size = 8\nmax_steps = 6\nsave_every = 3\nseed = 5\nout_dir = {out:?}\n\n[lora]\nr = 4\nalpha = 8\ntarget_modules = \"all-linear\"\ndropout = {dropout:?}\n"
        ),
    )
}

fn train(config: &Path, extra: &[&str]) {
    let mut args = vec!["train", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = host(&args);
    assert!(run.status.success(), "{}", stderr(&run));
}

fn max_abs_difference(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f64::max)
}

#[test]
fn a_lora_run_saves_peft_adapters_resumes_bitwise_and_merges_to_the_same_logprobs() {
    let dir = tempfile::tempdir().unwrap();
    let base_before = std::fs::read(tiny().join("model.safetensors")).unwrap();
    let config_a = lora_run(dir.path(), "a", 0.1);
    let run = host(&["train", "--config", config_a.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("LoRA") && stderr(&run).contains("trainable parameters"), "{}", stderr(&run));
    let final_a = dir.path().join("a/out/final");
    for file in ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "optimizer.safetensors"] {
        assert!(final_a.join(file).is_file(), "final/ lacks {file}");
    }
    assert!(!final_a.join("model.safetensors").exists() && !final_a.join("config.json").exists());
    let adapter_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(final_a.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(adapter_config["peft_type"], "LORA");
    assert_eq!(adapter_config["r"], 4);
    assert_eq!(adapter_config["lora_dropout"], 0.1);
    assert_eq!(Path::new(adapter_config["base_model_name_or_path"].as_str().unwrap()), tiny().canonicalize().unwrap());
    let losses: Vec<f64> =
        read_metrics(&dir.path().join("a/out")).iter().map(|m| m["loss"].as_f64().unwrap()).collect();
    assert!(losses[5] < losses[0], "the loss did not fall: {losses:?}");
    assert!(std::fs::read(tiny().join("model.safetensors")).unwrap() == base_before, "the base model was written");

    // Resume from checkpoint-3 (the final adapter removed): the same bytes as the uninterrupted run.
    let config_b = lora_run(dir.path(), "b", 0.1);
    train(&config_b, &[]);
    let out_b = dir.path().join("b/out");
    std::fs::remove_dir_all(out_b.join("final")).unwrap();
    train(&config_b, &["--resume"]);
    for file in ["adapter_model.safetensors", "adapter_config.json"] {
        let (a, b) =
            (std::fs::read(final_a.join(file)).unwrap(), std::fs::read(out_b.join("final").join(file)).unwrap());
        assert!(a == b, "{file} differs after resume");
    }
    // Without dropout the same run trains another adapter: the masks acted.
    let config_c = lora_run(dir.path(), "c", 0.0);
    train(&config_c, &[]);
    let weights = |dir: &Path| std::fs::read(dir.join("final/adapter_model.safetensors")).unwrap();
    assert!(weights(&dir.path().join("a/out")) != weights(&dir.path().join("c/out")), "dropout changed nothing");

    // The adapter on its base, the adapter folder alone, and the merged model score alike.
    let data = workspace_root().join("datasets/default/eval.jsonl");
    let (tiny_s, final_s) = (tiny().display().to_string(), final_a.display().to_string());
    let merged = dir.path().join("merged");
    let merge = host(&["merge", "--model", &tiny_s, "--adapter", &final_s, "--out", &merged.display().to_string()]);
    assert!(merge.status.success(), "{}", stderr(&merge));
    let scored = |model: &str, adapter: Option<&str>, name: &str| {
        let out = dir.path().join(name);
        match adapter {
            None => score_logp(Path::new(model), &data, &out),
            Some(adapter) => {
                let args = ["score", "--model", model, "--adapter", adapter, "--data", data.to_str().unwrap()];
                let run = host(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
                assert!(run.status.success(), "{}", stderr(&run));
                integration_tests::read_jsonl(&out)
                    .iter()
                    .map(|l| l["logp"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
                    .collect()
            }
        }
    };
    let with_adapter = scored(&tiny_s, Some(&final_s), "adapter.jsonl");
    let alone = scored(&final_s, None, "alone.jsonl");
    let merged_logp = scored(merged.to_str().unwrap(), None, "merged.jsonl");
    let base = scored(&tiny_s, None, "base.jsonl");
    assert_eq!(max_abs_difference(&with_adapter, &alone), 0.0);
    let merge_error = max_abs_difference(&with_adapter, &merged_logp);
    assert!(merge_error <= 1e-4, "merged log-probs differ by {merge_error}");
    assert!(max_abs_difference(&with_adapter, &base) > 1e-3, "the adapter changed nothing");

    // Bad input: one line each.
    let missing = host(&[
        "score",
        "--model",
        &tiny_s,
        "--adapter",
        "/nonexistent",
        "--data",
        data.to_str().unwrap(),
        "--out",
        "x.jsonl",
    ]);
    assert_error(&missing, 2, &["--adapter /nonexistent: no such adapter directory"]);
    let again = host(&["merge", "--model", &tiny_s, "--adapter", &final_s, "--out", merged.to_str().unwrap()]);
    assert_error(&again, 2, &["already exists"]);
    let not_adapter =
        host(&["merge", "--model", &tiny_s, "--adapter", &tiny_s, "--out", dir.path().join("m2").to_str().unwrap()]);
    assert_error(&not_adapter, 2, &["no adapter_config.json"]);
}
