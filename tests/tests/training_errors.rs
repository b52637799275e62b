//! Bad input to `host train` and `host score`: one `error:` line naming the file, line or key, a
//! non-zero exit, and nothing half-written.

use std::path::{Path, PathBuf};

use integration_tests::{assert_error, fixture, host, write_jsonl, write_run_config};
use serde_json::json;

fn good_data(dir: &Path) -> PathBuf {
    let data = dir.join("train.jsonl");
    write_jsonl(
        &data,
        &[json!({"prompt": "Q: 1+2\nA: ", "response": "3"}), json!({"prompt": "Q: 2+2\nA: ", "response": "4"})],
    );
    data
}

fn train(dir: &Path, model: &Path, data: &Path, extra: &str, args: &[&str]) -> std::process::Output {
    let out = dir.join("out").display().to_string();
    let config = write_run_config(
        dir,
        model,
        data,
        &format!("{extra}\n[train]\nbatch_size = 2\nmax_steps = 4\nout_dir = {out:?}\n"),
    );
    let mut all = vec!["train", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    host(&all)
}

#[test]
fn missing_model_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = train(dir.path(), Path::new("/nonexistent/model"), &good_data(dir.path()), "", &[]);
    assert_error(&out, 2, &["[model] path /nonexistent/model", "no such model directory"]);
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for entry in std::fs::read_dir(fixture("qwen2-tiny")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let config =
        std::fs::read_to_string(model.join("config.json")).unwrap().replace("Qwen2ForCausalLM", "GPT2LMHeadModel");
    std::fs::write(model.join("config.json"), config).unwrap();
    let out = train(dir.path(), &model, &good_data(dir.path()), "", &[]);
    assert_error(&out, 2, &["GPT2LMHeadModel", "config.json"]);
}

#[test]
fn malformed_jsonl_line_missing_key_and_empty_response_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("qwen2-tiny");
    let cases: [(&str, &[&str]); 3] = [
        (
            "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"a\", \"response\": \n",
            &["train.jsonl:2", "malformed JSON"],
        ),
        (
            "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"question\": \"a\", \"response\": \"b\"}\n",
            &["train.jsonl:2", "missing key `prompt`"],
        ),
        ("{\"prompt\": \"a\", \"response\": \"  \"}\n", &["train.jsonl:1", "empty response under `response`"]),
    ];
    for (text, needles) in cases {
        let data = dir.path().join("train.jsonl");
        std::fs::write(&data, text).unwrap();
        let out = train(dir.path(), &model, &data, "", &[]);
        assert_error(&out, 2, needles);
    }
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (fixture("qwen2-tiny"), good_data(dir.path()));
    let out = train(dir.path(), &model, &data, "[optim]\nlearning_rate = 0.1\n", &[]);
    assert_error(&out, 2, &["run.toml", "unknown field `learning_rate`"]);
    let out = train(dir.path(), &model, &data, "", &["--set", "optim.lr=-0.001"]);
    assert_error(&out, 2, &["run.toml", "[optim] lr must be a positive number, got -0.001"]);
    let out = train(dir.path(), &model, &data, "", &["--set", "train.micro_batch_size=4"]);
    assert_error(&out, 2, &["micro_batch_size (4) is larger than batch_size (2)"]);
    let out = train(dir.path(), &model, &data, "[objective.params]\nalpha = 2\n", &[]);
    assert_error(&out, 2, &["[objective.params]", "unknown parameter `alpha`"]);
}

#[test]
fn a_plugin_failing_mid_training_leaves_no_partial_checkpoint() {
    for fault in ["error", "panic_compute", "nan"] {
        let dir = tempfile::tempdir().unwrap();
        let extra = format!(
            "[objective]\nplugin = \"test_faulty_objective\"\n[objective.params]\nfault = \"{fault}\"\nfrom_step = 3\n"
        );
        let out =
            train(dir.path(), &fixture("qwen2-tiny"), &good_data(dir.path()), &extra, &["--set", "train.save_every=1"]);
        assert_error(&out, 2, &["step 3", "test_faulty_objective"]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![".lock", "checkpoint-1", "checkpoint-2", "metrics.jsonl"], "{fault}");
        assert!(dir.path().join("out/checkpoint-2/model.safetensors").is_file());
    }
}

#[test]
fn score_refuses_a_missing_model_and_bad_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = good_data(dir.path());
    let scores = dir.path().join("scores.jsonl");
    let out = host(&[
        "score",
        "--model",
        "/nonexistent",
        "--data",
        data.to_str().unwrap(),
        "--out",
        scores.to_str().unwrap(),
    ]);
    assert_error(&out, 2, &["--model /nonexistent", "no such model directory"]);
    std::fs::write(&data, "not json\n").unwrap();
    let model = fixture("qwen2-tiny");
    let out = host(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        scores.to_str().unwrap(),
    ]);
    assert_error(&out, 2, &["train.jsonl:1", "malformed JSON"]);
    assert!(!scores.exists(), "no output file on failure");
}
