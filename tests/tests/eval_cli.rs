//! `host eval` end to end: the tiny Qwen2 checkpoint generates, the real `exact_match` plugin scores.
//!
//! Greedy generations are checked against `tests/fixtures/generation/qwen2-tiny.json`, whose token ids
//! come from transformers' `generate`; the expected texts below are those ids decoded with the
//! fixture's tokenizer (`tokenizers`' `decode(ids, skip_special_tokens=True)`).

use std::path::{Path, PathBuf};
use std::process::Output;

use integration_tests::{assert_error, fixture, host, stderr, stdout, write_jsonl};
use serde_json::{json, Value};

/// The fixture's four prompts and their 24-token greedy continuations, decoded.
fn greedy_fixture() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fixture("generation/qwen2-tiny.json")).unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(fixture["max_new_tokens"], 24);
    let decoded = [
        "\u{fffd}$\u{0788}\u{4}\u{4}\u{4}[tartar\u{8}\u{fffd}\u{4}\u{4}'\u{14}\u{7} ttar\u{8}\u{4}\u{fffd}##",
        "K\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}",
        "#\u{fffd} 6\u{fffd}\u{fffd} 6F\u{fffd}\u{fffd}\u{fffd}\u{fffd}2 62 6\u{fffd} 4\u{fffd}Bun wOw 6",
        " l\u{fffd}2\u{fffd}P\u{fffd}2222\u{fffd}2222222222222",
    ];
    fixture["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(decoded)
        .map(|(p, g)| (p.as_str().unwrap().to_string(), g.to_string()))
        .collect()
}

/// Writes the fixture's prompts with the given references.
fn write_data(dir: &Path, name: &str, references: &[&str]) -> PathBuf {
    let rows: Vec<Value> = greedy_fixture()
        .iter()
        .zip(references)
        .map(|((prompt, _), reference)| json!({"prompt": prompt, "response": reference}))
        .collect();
    let path = dir.join(name);
    write_jsonl(&path, &rows);
    path
}

fn eval(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--evaluator",
        "exact_match",
        "--out",
        out.to_str().unwrap(),
    ];
    if !extra.contains(&"--max-new-tokens") {
        args.extend(["--max-new-tokens", "24"]);
    }
    args.extend_from_slice(extra);
    host(&args)
}

/// Runs `host eval` on the tiny model, expecting success; returns the output lines and the summary.
fn eval_ok(data: &Path, out: &Path, extra: &[&str]) -> (Vec<Value>, Value) {
    let run = eval(&fixture("qwen2-tiny"), data, out, extra);
    assert!(run.status.success(), "stderr: {}", stderr(&run));
    let text = std::fs::read_to_string(out).unwrap();
    let lines = text.lines().map(|l| serde_json::from_str(l).expect("output line is JSON")).collect();
    let summary_path = out.with_file_name(format!("{}.summary.json", out.file_stem().unwrap().to_str().unwrap()));
    let summary = serde_json::from_str(&std::fs::read_to_string(summary_path).unwrap()).unwrap();
    (lines, summary)
}

fn generations(line: &Value) -> Vec<String> {
    line["generations"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_string()).collect()
}

fn scores(line: &Value, name: &str) -> Vec<f64> {
    line["scores"].as_array().unwrap().iter().map(|s| s[name].as_f64().unwrap()).collect()
}

#[test]
fn greedy_generations_match_the_reference_and_score_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let expected = greedy_fixture();
    // References: two right (the recorded greedy continuations), two wrong.
    let references = [expected[0].1.as_str(), "not this", expected[2].1.as_str(), "nor this"];
    let data = write_data(dir.path(), "data.jsonl", &references);
    let out = dir.path().join("preds.jsonl");
    let (lines, summary) = eval_ok(&data, &out, &[]);

    assert_eq!(lines.len(), 4);
    for (i, (line, (prompt, greedy))) in lines.iter().zip(&expected).enumerate() {
        assert_eq!(line["index"], i);
        assert_eq!(line["prompt"], prompt.as_str());
        assert_eq!(line["reference"], references[i]);
        assert_eq!(generations(line), std::slice::from_ref(greedy), "example {i}");
        assert_eq!(line["finish_reasons"], json!(["length"]));
    }
    let hits: Vec<f64> = lines.iter().map(|l| scores(l, "exact_match")[0]).collect();
    assert_eq!(hits, [1.0, 0.0, 1.0, 0.0]);
    assert_eq!(summary["aggregate"]["exact_match"], 0.5);
    assert!(summary["aggregate"].get("exact_match@mean").is_none(), "{summary}");
    assert_eq!(summary["examples"], 4);
    assert_eq!(summary["samples"], 1);
    assert_eq!(summary["temperature"], 0.0);
    assert_eq!(summary["evaluator"], "exact_match");

    // Deterministic: a second run writes the same file.
    let again = dir.path().join("again.jsonl");
    eval_ok(&data, &again, &["--batch-size", "3"]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), std::fs::read_to_string(&again).unwrap());
    let temporary = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("tmp".as_ref()));
    assert_eq!(temporary.count(), 0, "no temporary file is left behind");
}

#[test]
fn the_aggregate_table_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data(dir.path(), "data.jsonl", &["a", "b", "c", "d"]);
    let out = dir.path().join("preds.jsonl");
    let run = eval(&fixture("qwen2-tiny"), &data, &out, &["--max-new-tokens", "4"]);
    assert!(run.status.success(), "stderr: {}", stderr(&run));
    let text = stdout(&run);
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["metric", "value", "examples", "samples", "temperature"]);
    let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["exact_match", "0.0000", "4", "1", "0"]);
    assert!(dir.path().join("preds.summary.json").is_file());
}

#[test]
fn stop_strings_end_and_cut_generations() {
    let dir = tempfile::tempdir().unwrap();
    let expected = greedy_fixture();
    let data = write_data(dir.path(), "data.jsonl", &["a", "b", "c", "d"]);
    let out = dir.path().join("preds.jsonl");
    let (lines, _) = eval_ok(&data, &out, &["--stop", "tar", "--stop", "22"]);
    let cut = |text: &str| -> String {
        let at = ["tar", "22"].iter().filter_map(|s| text.find(s)).min().unwrap_or(text.len());
        text[..at].to_string()
    };
    for (i, (line, (_, greedy))) in lines.iter().zip(&expected).enumerate() {
        assert_eq!(generations(line), [cut(greedy)], "example {i}");
        let stopped = greedy.contains("tar") || greedy.contains("22");
        let reason = if stopped { "stop" } else { "length" };
        assert_eq!(line["finish_reasons"], json!([reason]), "example {i}");
    }
    // Examples 0 and 3 stop; 1 and 2 run to the limit.
    assert_eq!(lines[0]["finish_reasons"], json!(["stop"]));
    assert_eq!(lines[3]["finish_reasons"], json!(["stop"]));
}

#[test]
fn sampling_gives_reproducible_samples_and_both_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data(dir.path(), "data.jsonl", &["a", "b", "c", "d"]);
    let sample = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        let flags = ["--samples", "4", "--temperature", "1", "--seed", seed, "--max-new-tokens", "16"];
        eval_ok(&data, &out, &flags)
    };
    let (first, summary) = sample("s3.jsonl", "3");
    for line in &first {
        assert_eq!(generations(line).len(), 4, "{line}");
        assert_eq!(scores(line, "exact_match").len(), 4, "{line}");
        assert_eq!(line["finish_reasons"].as_array().unwrap().len(), 4);
    }
    // At temperature 1 on a tiny random model, the four samples of a prompt differ.
    let distinct: std::collections::BTreeSet<String> = generations(&first[1]).into_iter().collect();
    assert!(distinct.len() > 1, "{:?}", first[1]);

    let aggregate = &summary["aggregate"];
    assert!(aggregate["exact_match"].is_number(), "{summary}");
    assert!(aggregate["exact_match@mean"].is_number(), "{summary}");
    assert_eq!(summary["samples"], 4);
    assert_eq!(summary["temperature"], 1.0);
    assert_eq!(summary["seed"], 3);

    let (again, _) = sample("s3-again.jsonl", "3");
    assert_eq!(first, again, "same seed, same samples");
    let (other, _) = sample("s4.jsonl", "4");
    assert_ne!(first, other, "another seed, other samples");
}

#[test]
fn chat_template_prompts_generate() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data(dir.path(), "data.jsonl", &["a", "b", "c", "d"]);
    let (plain, _) = eval_ok(&data, &dir.path().join("plain.jsonl"), &[]);
    let (chat, summary) = eval_ok(&data, &dir.path().join("chat.jsonl"), &["--chat-template"]);
    assert_eq!(summary["chat_template"], true);
    assert_eq!(chat[0]["prompt"], plain[0]["prompt"], "the raw prompt is kept");
    assert_ne!(generations(&chat[0]), generations(&plain[0]), "the template changes what the model sees");
}

// Errors: one `error:` line, exit code 2, nothing written.

fn eval_error(extra: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data(dir.path(), "data.jsonl", &["a", "b", "c", "d"]);
    let out = dir.path().join("preds.jsonl");
    let (model, data, out_arg) = (fixture("qwen2-tiny"), data.display().to_string(), out.display().to_string());
    let mut args =
        vec!["eval", "--model", model.to_str().unwrap(), "--data", &data, "--max-new-tokens", "4", "--out", &out_arg];
    args.extend_from_slice(extra);
    if !extra.contains(&"--evaluator") {
        args.extend(["--evaluator", "exact_match"]);
    }
    assert_error(&host(&args), 2, needles);
    assert!(!out.exists());
}

#[test]
fn missing_model_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data(dir.path(), "data.jsonl", &["a", "b", "c", "d"]);
    let out = dir.path().join("preds.jsonl");
    let run = eval(Path::new("/nonexistent/model"), &data, &out, &[]);
    assert_error(&run, 2, &["--model /nonexistent/model", "no such model directory"]);
    assert!(!out.exists());
}

#[test]
fn malformed_data_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(&data, "{\"prompt\": \"Hi\", \"response\": \"a\"}\n{\"prompt\": \"Hi\",\n").unwrap();
    let out = dir.path().join("preds.jsonl");
    let run = eval(&fixture("qwen2-tiny"), &data, &out, &[]);
    assert_error(&run, 2, &["bad.jsonl:2", "malformed JSON"]);
    assert!(!out.exists());
}

#[test]
fn unknown_evaluator() {
    eval_error(&["--evaluator", "no_such_evaluator"], &["no plugin named `no_such_evaluator`"]);
}

#[test]
fn evaluator_of_another_kind() {
    eval_error(&["--evaluator", "nll"], &["nll", "expected an evaluator plugin"]);
}

#[test]
fn unknown_evaluator_parameter() {
    eval_error(&["--param", "strict=true"], &["--param", "unknown parameter `strict`"]);
}

#[test]
fn several_greedy_samples_are_refused() {
    eval_error(&["--samples", "4"], &["samples = 4 with temperature 0", "identical"]);
}

#[test]
fn bad_sampling_values() {
    eval_error(&["--temperature", "-1"], &["temperature must be finite and >= 0"]);
    eval_error(&["--top-p", "0"], &["top_p must be in (0, 1]"]);
    eval_error(&["--top-p", "1.5"], &["top_p must be in (0, 1]"]);
    eval_error(&["--samples", "0"], &["samples must be at least 1"]);
    eval_error(&["--batch-size", "0"], &["batch_size must be at least 1"]);
    eval_error(&["--temperature", "hot"], &["invalid value 'hot'"]);
}
