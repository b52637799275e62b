//! Bad input found by the fault probe of issue 15, each refused (or accepted) as a user would expect:
//! a UTF-8 byte-order mark, `--out` naming the `--data` file, a mistyped `--plugin-dir`, an empty
//! `[data] train` list.

use integration_tests::{assert_error, host, stderr, workspace_root, write_run_config};

fn tiny_model() -> String {
    workspace_root().join("models/tiny-default").display().to_string()
}

#[test]
fn a_utf8_byte_order_mark_is_not_part_of_the_first_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bom.jsonl");
    std::fs::write(
        &data,
        "\u{feff}{\"prompt\": \"1+1=\", \"response\": \"2\"}\n{\"prompt\": \"a\", \"response\": \"b\"}\n",
    )
    .unwrap();
    let out = dir.path().join("logp.jsonl");
    let run =
        host(&["score", "--model", &tiny_model(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2);
}

#[test]
fn out_naming_the_data_file_is_refused_and_the_data_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rows.jsonl");
    let rows = "{\"prompt\": \"1+1=\", \"response\": \"2\"}\n";
    std::fs::write(&data, rows).unwrap();
    // The same file under another spelling.
    let same = dir.path().join(".").join("rows.jsonl");
    let d = data.to_str().unwrap();
    let s = same.to_str().unwrap();
    assert_error(&host(&["score", "--model", &tiny_model(), "--data", d, "--out", s]), 2, &["--out", "--data file"]);
    let eval = host(&["eval", "--model", &tiny_model(), "--data", d, "--out", d, "--evaluator", "math"]);
    assert_error(&eval, 2, &["--out", "--data file"]);
    assert_eq!(std::fs::read_to_string(&data).unwrap(), rows);
}

#[test]
fn a_missing_plugin_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-plugins");
    let run = host(&["--plugin-dir", missing.to_str().unwrap(), "plugins", "list"]);
    assert_error(&run, 2, &["--plugin-dir", "no-such-plugins", "no such directory"]);
}

#[test]
fn an_empty_training_list_is_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.jsonl");
    std::fs::write(&train, "{\"prompt\": \"a\", \"response\": \"b\"}\n").unwrap();
    let config = write_run_config(dir.path(), &workspace_root().join("models/tiny-default"), &train, "");
    let run = host(&["train", "--config", config.to_str().unwrap(), "--set", "data.train=[]"]);
    assert_error(&run, 2, &["[data] train", "empty"]);
}

/// A row far longer than the model's context (models/tiny-default: 512 positions) goes through score,
/// diagnose and eval: exit 0, a warning counting the cut rows, nothing unbounded (issue 14, item 1).
#[test]
fn rows_longer_than_the_context_are_cut_to_fit_in_every_verb() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("long.jsonl");
    let long_prompt = format!("Q: {}\nA: ", "12+7 ".repeat(20_000));
    let rows = [
        serde_json::json!({"prompt": long_prompt, "response": "19"}),
        serde_json::json!({"prompt": "Q: 1+1\nA: ", "response": "2"}),
        serde_json::json!({"prompt": "Q: 2+2\nA: ", "response": "4 ".repeat(2_000)}),
    ];
    integration_tests::write_jsonl(&data, &rows);
    let data = data.to_str().unwrap();
    let model = tiny_model();

    let out = dir.path().join("logp.jsonl");
    let score = host(&["score", "--model", &model, "--data", data, "--out", out.to_str().unwrap()]);
    assert!(score.status.success(), "{}", stderr(&score));
    let warning = stderr(&score);
    assert!(warning.contains("2 of 3 examples are longer than the model's context of 512 tokens"), "{warning}");
    let scored = integration_tests::read_jsonl(&out);
    assert_eq!(scored[0]["cut"], serde_json::json!(["prompt_start"]));
    assert!(scored[1].get("cut").is_none());
    assert_eq!(scored[2]["cut"], serde_json::json!(["prompt_start", "end"]));
    let short = dir.path().join("short.jsonl");
    integration_tests::write_jsonl(&short, &[serde_json::json!({"prompt": "x", "response": "19"})]);
    let alone = dir.path().join("alone.jsonl");
    let run = host(&["score", "--model", &model, "--data", short.to_str().unwrap(), "--out", alone.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let response_tokens = integration_tests::read_jsonl(&alone)[0]["logp"].as_array().unwrap().len();
    assert_eq!(scored[0]["logp"].as_array().unwrap().len(), response_tokens, "the whole response is scored");
    assert!(scored[2]["logp"].as_array().unwrap().len() < 512, "a response longer than the context loses its end");

    let stem = dir.path().join("diagnosis");
    let diagnose = host(&["diagnose", "--model", &model, "--data", data, "--out", stem.to_str().unwrap()]);
    assert!(diagnose.status.success(), "{}", stderr(&diagnose));
    assert!(stderr(&diagnose).contains("were cut to fit"), "{}", stderr(&diagnose));

    let generated = dir.path().join("eval.jsonl");
    let eval = host(&[
        "eval",
        "--model",
        &model,
        "--data",
        data,
        "--evaluator",
        "math",
        "--max-new-tokens",
        "8",
        "--out",
        generated.to_str().unwrap(),
    ]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    assert!(
        stderr(&eval).contains("1 of 3 prompts are longer than the model's context of 512 tokens"),
        "{}",
        stderr(&eval)
    );
}
