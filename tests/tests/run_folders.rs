//! Guarded run folders and the fault probe's training defects (issue 15): one run per folder at a time, a
//! used folder is continued or replaced only when asked, `--resume` refuses a checkpoint made with other
//! settings or data, metrics.jsonl is only appended to, and non-finite numbers, damaged weights and
//! damaged plugins are refused with the file named.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use integration_tests::{assert_error, host, host_path, plugin_path, stderr, workspace_root, write_run_config};

/// A run of `models/tiny-default` (or `model`) on the default data, out_dir `dir/out`.
fn run_config(dir: &Path, model: &Path, train: &str) -> PathBuf {
    let out = dir.join("out").display().to_string();
    write_run_config(
        dir,
        model,
        &dir.join("train.jsonl"),
        &format!("[optim]\nlr = 3e-3\n\n[train]\nbatch_size = 4\n{train}out_dir = {out:?}\n"),
    )
}

fn tiny() -> PathBuf {
    workspace_root().join("models/tiny-default")
}

fn with_default_data(dir: &Path) {
    std::fs::copy(workspace_root().join("datasets/default/train.jsonl"), dir.join("train.jsonl")).unwrap();
}

fn train(config: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    host(&args)
}

#[test]
fn a_second_run_on_the_same_folder_is_refused_while_the_first_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    with_default_data(dir.path());
    let config = run_config(dir.path(), &tiny(), "max_steps = 100000\n");
    let mut first = Command::new(host_path())
        .args(["train", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics = dir.path().join("out/metrics.jsonl");
    while !metrics.exists() {
        assert!(first.try_wait().unwrap().is_none(), "the first run ended early");
        std::thread::yield_now();
    }
    let second = train(&config, &["--overwrite"]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_error(&second, 2, &["out", "is in use by another run (pid", &first.id().to_string()]);
    // The first run's lines are intact: every one parses.
    for line in std::fs::read_to_string(&metrics).unwrap().lines().filter(|l| l.ends_with('}')) {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn a_used_folder_is_refused_unless_resumed_or_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    with_default_data(dir.path());
    let config = run_config(dir.path(), &tiny(), "max_steps = 3\n");
    assert!(train(&config, &[]).status.success());
    let again = train(&config, &[]);
    assert_error(&again, 2, &["already holds a run (final/, metrics.jsonl)", "--resume", "--overwrite"]);

    let over = train(&config, &["--overwrite"]);
    assert!(over.status.success(), "{}", stderr(&over));
    let lines = integration_tests::read_jsonl(&dir.path().join("out/metrics.jsonl"));
    assert_eq!(lines.iter().map(|l| l["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
}

#[test]
fn resume_refuses_other_settings_and_other_data_naming_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    with_default_data(dir.path());
    let config = run_config(dir.path(), &tiny(), "max_steps = 6\nsave_every = 2\n");
    assert!(train(&config, &[]).status.success());
    std::fs::remove_dir_all(dir.path().join("out/final")).unwrap();

    let lr = train(&config, &["--resume", "--set", "optim.lr=0.01"]);
    assert_error(&lr, 2, &["cannot resume from", "checkpoint-4", "optim.lr = 0.003, this run has 0.01"]);
    let param = train(&config, &["--resume", "--set", "data.max_length=64"]);
    assert_error(&param, 2, &["data.max_length"]);

    // The same file name with fewer rows (today's main indexed past its end and panicked).
    let rows = std::fs::read_to_string(dir.path().join("train.jsonl")).unwrap();
    let fewer: String = rows.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("train.jsonl"), fewer).unwrap();
    let data = train(&config, &["--resume"]);
    assert_error(&data, 2, &["cannot resume", "data.train_digests", "train.jsonl"]);

    // Settings that only say where and how often to write may change.
    std::fs::write(dir.path().join("train.jsonl"), rows).unwrap();
    let resumed = train(&config, &["--resume", "--set", "train.save_every=1"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(integration_tests::stdout(&resumed).contains("resumed at step 4"));
}

#[test]
fn resume_without_a_checkpoint_says_so_and_metrics_are_only_appended() {
    let dir = tempfile::tempdir().unwrap();
    with_default_data(dir.path());
    let config = run_config(dir.path(), &tiny(), "max_steps = 4\nsave_every = 2\n");
    let fresh = train(&config, &["--resume"]);
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    assert!(stderr(&fresh).contains("no checkpoint in"), "{}", stderr(&fresh));

    // An interrupted attempt: the final checkpoint gone, a half-written one left, its metrics kept.
    let out = dir.path().join("out");
    std::fs::remove_dir_all(out.join("final")).unwrap();
    std::fs::create_dir(out.join("checkpoint-4.tmp-4242")).unwrap();
    let before = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let resumed = train(&config, &["--resume"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(!out.join("checkpoint-4.tmp-4242").exists(), "the stale temporary folder stays");
    let after = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(after.starts_with(&before), "metrics.jsonl was rewritten");
    let added: Vec<serde_json::Value> =
        after[before.len()..].lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(added[0]["resumed_from"], 2);
    assert_eq!(added[1..].iter().map(|l| l["step"].as_u64().unwrap()).collect::<Vec<_>>(), [3, 4]);
    // What the run reports reads the superseding lines: 4 steps, not 6.
    assert_eq!(integration_tests::read_metrics(&out).len(), 4);
}

#[test]
fn step_counts_from_a_typo_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    with_default_data(dir.path());
    let config = run_config(dir.path(), &tiny(), "");
    assert_error(
        &train(&config, &["--set", "train.epochs=1e30"]),
        2,
        &["[train] epochs = 1000000000000000000000000000000", "steps"],
    );
    let both = train(&config, &["--set", "train.epochs=1", "--set", "train.max_steps=3"]);
    assert_error(&both, 2, &["[train] give max_steps or epochs, not both"]);
}

#[test]
fn an_objective_that_includes_no_token_stops_the_run_instead_of_training_nothing() {
    let dir = tempfile::tempdir().unwrap();
    with_default_data(dir.path());
    let config = run_config(dir.path(), &tiny(), "max_steps = 50\nmax_skipped_steps = 3\n");
    let run = train(&config, &["--plugin", "neg_p_threshold", "--set", "objective.params.q=1.0"]);
    assert_error(&run, 2, &["steps 1-3 made no update", "included no token", "max_skipped_steps"]);
    assert!(!dir.path().join("out/final").exists());
}

/// Copies `models/tiny-default` into `dir/name` and lets `edit` change its weight bytes and config.
fn damaged_model(dir: &Path, name: &str, edit: impl Fn(&mut [u8], &serde_json::Value, usize), config: &str) -> PathBuf {
    let model = dir.join(name);
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(tiny()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let path = model.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    edit(&mut bytes, &header, 8 + header_len);
    std::fs::write(&path, bytes).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    for pair in config.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap();
        json[key] = serde_json::from_str(value).unwrap();
    }
    std::fs::write(model.join("config.json"), json.to_string()).unwrap();
    model
}

/// Writes `value` over the first f32 of `tensor` (or every one, with `all`).
fn overwrite(tensor: &'static str, value: f32, all: bool) -> impl Fn(&mut [u8], &serde_json::Value, usize) {
    move |bytes, header, data_start| {
        let offsets = header[tensor]["data_offsets"].as_array().unwrap();
        let (start, end) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
        let end = if all { end } else { start + 4 };
        for at in (data_start + start..data_start + end).step_by(4) {
            bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
    }
}

/// `host score` of `model` on the default eval data into `dir/logp.jsonl`: the output and that path.
fn score(model: &Path, dir: &Path) -> (std::process::Output, PathBuf) {
    let data = workspace_root().join("datasets/default/eval.jsonl");
    let out = dir.join("logp.jsonl");
    let args =
        ["score", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    (host(&args), out)
}

#[test]
fn non_finite_weights_are_refused_at_load_naming_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model = damaged_model(dir.path(), "nan", overwrite("model.norm.weight", f32::NAN, false), "");
    let (run, out) = score(&model, dir.path());
    assert_error(&run, 2, &["model.safetensors", "`model.norm.weight`", "non-finite", "NaN"]);
    assert!(!out.exists());
}

#[test]
fn overflowing_activations_skip_steps_and_blame_the_model_not_the_objective() {
    let dir = tempfile::tempdir().unwrap();
    with_default_data(dir.path());
    let model = damaged_model(dir.path(), "huge", overwrite("model.embed_tokens.weight", 3.0e38, true), "");
    let config = run_config(dir.path(), &model, "max_steps = 20\nmax_skipped_steps = 2\n");
    let run = train(&config, &[]);
    // Depending on where the overflow surfaces: the log-probs or, past a finite loss, the gradients.
    assert_error(&run, 2, &["steps 1-2 made no update, the last because the", "is NaN", "max_skipped_steps"]);
    assert!(!stderr(&run).contains("objective `nll`"), "{}", stderr(&run));
    let lines = integration_tests::read_jsonl(&dir.path().join("out/metrics.jsonl"));
    assert!(lines.iter().all(|l| l["skipped"].is_string()), "{lines:?}");
}

#[test]
fn weights_the_config_does_not_use_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = damaged_model(dir.path(), "fewer-layers", |_, _, _| {}, "num_hidden_layers=1");
    let (run, _) = score(&model, dir.path());
    assert_error(
        &run,
        2,
        &["tensor(s) that config.json's shape does not use", "model.layers.1.", "num_hidden_layers = 1"],
    );
}

#[test]
fn a_truncated_plugin_file_is_refused_without_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(plugin_path("nll")).unwrap();
    let cut = dir.path().join("libnll_cut.so");
    std::fs::write(&cut, &whole[..100_000.min(whole.len() / 2)]).unwrap();
    let inspect = host(&["plugins", "inspect", cut.to_str().unwrap()]);
    assert_error(&inspect, 2, &["libnll_cut.so", "truncated"]);
    let list = host(&["--plugin-dir", dir.path().to_str().unwrap(), "plugins", "list"]);
    assert!(list.status.code().is_some(), "killed by a signal: {}", stderr(&list));
    assert!(
        stderr(&list).contains("truncated") || integration_tests::stdout(&list).contains("truncated"),
        "{}",
        stderr(&list)
    );
}
