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
