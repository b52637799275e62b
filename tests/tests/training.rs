//! `host score` and `host train` against PyTorch/transformers reference values (tests/fixtures, made by
//! scripts/make_fixtures.py), and exact resume after `kill -9`.

use std::path::Path;

use integration_tests::{fixture, host, read_metrics, stderr, write_jsonl, write_run_config};
use serde_json::Value;

fn load(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn score_matches_transformers_on_every_fixture_model() {
    for model in ["qwen2-tiny", "llama-tiny", "llama3-rope-tiny", "qwen2-sharded"] {
        let reference = load(&fixture(&format!("parity/{model}.json")));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.jsonl");
        write_jsonl(&data, reference["examples"].as_array().unwrap());
        let out = dir.path().join("scores.jsonl");
        let run = host(&[
            "score",
            "--model",
            fixture(model).to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--batch-size",
            "3",
        ]);
        assert!(run.status.success(), "{model}: {}", stderr(&run));
        let lines: Vec<Value> =
            std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let expected = reference["logp"].as_array().unwrap();
        assert_eq!(lines.len(), expected.len());
        let mut worst = 0.0f64;
        for (i, (line, want)) in lines.iter().zip(expected).enumerate() {
            assert_eq!(line["index"], i);
            let got = line["logp"].as_array().unwrap();
            let want = want.as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{model} example {i}: token count");
            for (g, w) in got.iter().zip(want) {
                worst = worst.max((g.as_f64().unwrap() - w.as_f64().unwrap()).abs());
            }
        }
        assert!(worst < 2e-4, "{model}: max |logp - transformers| = {worst}");
    }
}

#[test]
fn three_training_steps_match_pytorch_for_nll_and_neg_p() {
    for model in ["qwen2-tiny", "llama-tiny"] {
        for objective in ["nll", "neg_p"] {
            let reference = load(&fixture(&format!("train/{model}-{objective}.json")));
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("train.jsonl");
            write_jsonl(&data, reference["examples"].as_array().unwrap());
            let out = dir.path().join("out");
            let config = write_run_config(
                dir.path(),
                &fixture(model),
                &data,
                &format!(
                    "[data.shuffle]\n\n[objective]\nplugin = \"{objective}\"\n\n[optim]\nlr = 1e-3\nbetas = [0.9, 0.95]\neps = 1e-8\nweight_decay = 0.01\nlr_scheduler = \"constant\"\nmax_grad_norm = 1.0\n\n[train]\nbatch_size = 5\nmax_steps = 3\nout_dir = {:?}\n",
                    out.display().to_string()
                )
                .replace("[data.shuffle]\n\n", ""),
            );
            let run = host(&["train", "--config", config.to_str().unwrap(), "--set", "data.shuffle=false"]);
            assert!(run.status.success(), "{model} {objective}: {}", stderr(&run));
            let metrics = read_metrics(&out);
            assert_eq!(metrics.len(), 3);
            for (k, line) in metrics.iter().enumerate() {
                assert_eq!(line["step"], k as u64 + 1);
                let (loss, want) = (line["loss"].as_f64().unwrap(), reference["losses"][k].as_f64().unwrap());
                assert!(
                    (loss - want).abs() <= 2e-3 * want.abs(),
                    "{model} {objective} step {}: loss {loss} vs {want}",
                    k + 1
                );
                let (norm, want) = (line["grad_norm"].as_f64().unwrap(), reference["grad_norms"][k].as_f64().unwrap());
                assert!(
                    (norm - want).abs() <= 1e-2 * want.abs(),
                    "{model} {objective} step {}: grad norm {norm} vs {want}",
                    k + 1
                );
                assert_eq!(line["lr"].as_f64(), Some(1e-3));
            }
            assert!(out.join("final/model.safetensors").is_file());
            assert!(out.join("final/tokenizer.json").is_file());
        }
    }
}

/// The config of a run of `models/tiny-default` on the default data in `dir/name` (its out_dir
/// `dir/name/out`), lr 3e-3 with 10 % warm-up and `train` as the rest of its `[train]` table.
fn tiny_default_run(dir: &Path, name: &str, train: &str) -> std::path::PathBuf {
    let root = integration_tests::workspace_root();
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    write_run_config(
        &sub,
        &root.join("models/tiny-default"),
        &root.join("datasets/default/train.jsonl"),
        &format!(
            "[optim]\nlr = 3e-3\nwarmup_ratio = 0.1\n\n[train]\n{train}out_dir = {:?}\n",
            sub.join("out").display().to_string()
        ),
    )
}

/// A run killed with SIGKILL and resumed ends with the same bytes as one never interrupted.
#[test]
fn resume_after_kill_9_is_bitwise_identical() {
    let dir = tempfile::tempdir().unwrap();
    let run_config = |out: &str| {
        tiny_default_run(
            dir.path(),
            out,
            "batch_size = 8\nmicro_batch_size = 4\nmax_steps = 12\nsave_every = 3\nseed = 5\n",
        )
    };
    let uninterrupted = run_config("a");
    let run = host(&["train", "--config", uninterrupted.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));

    let interrupted = run_config("b");
    let out_b = dir.path().join("b/out");
    let mut child = std::process::Command::new(integration_tests::host_path())
        .args(["train", "--config", interrupted.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill as soon as the first checkpoint is complete.
    while !out_b.join("checkpoint-3/trainer_state.json").exists() {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::yield_now();
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Whatever the kill interrupted, resume from the first checkpoint to exercise the whole path.
    for entry in std::fs::read_dir(&out_b).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name != "checkpoint-3" && name != "metrics.jsonl" && name != ".lock" {
            std::fs::remove_dir_all(out_b.join(&name)).unwrap();
        }
    }
    let resumed = host(&["train", "--config", interrupted.to_str().unwrap(), "--resume"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(integration_tests::stdout(&resumed).contains("resumed at step 3"));

    let a = std::fs::read(dir.path().join("a/out/final/model.safetensors")).unwrap();
    let b = std::fs::read(out_b.join("final/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    let losses =
        |out: &Path| read_metrics(out).iter().map(|m| m["loss"].as_f64().unwrap().to_bits()).collect::<Vec<_>>();
    assert_eq!(losses(&dir.path().join("a/out")), losses(&out_b));
    // The optimizer file's metadata is a hash map written in no fixed order: compare the parsed header
    // and the tensor bytes.
    let opt_a = safetensors_parts(&dir.path().join("a/out/final/optimizer.safetensors"));
    let opt_b = safetensors_parts(&out_b.join("final/optimizer.safetensors"));
    assert!(opt_a.0 == opt_b.0, "optimizer header differs");
    assert!(opt_a.1 == opt_b.1, "optimizer moments differ");
}

/// SIGTERM mid-run (Slurm's preemption signal): the step under way finishes, a checkpoint is written, the
/// exit code is 75, and `--resume` ends with the bytes of a run never interrupted.
#[test]
fn sigterm_saves_a_checkpoint_and_resume_is_bitwise_identical() {
    let dir = tempfile::tempdir().unwrap();
    let run_config = |out: &str| tiny_default_run(dir.path(), out, "batch_size = 8\nmax_steps = 60\nseed = 7\n");
    let uninterrupted = run_config("a");
    let run = host(&["train", "--config", uninterrupted.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));

    let interrupted = run_config("b");
    let out_b = dir.path().join("b/out");
    let child = std::process::Command::new(integration_tests::host_path())
        .args(["train", "--config", interrupted.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Signal once a few steps are logged (save_every is 0: without the signal nothing would be saved).
    let logged = || std::fs::read_to_string(out_b.join("metrics.jsonl")).map_or(0, |t| t.lines().count());
    while logged() < 3 {
        std::thread::yield_now();
    }
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    let message = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(75), "{message}");
    let step = logged();
    assert!(step < 60, "the run stopped early");
    assert!(message.contains(&format!("stopped by SIGTERM after step {step} of 60")), "{message}");
    assert!(out_b.join(format!("checkpoint-{step}/trainer_state.json")).is_file());
    assert!(!out_b.join("final").exists());

    let resumed = host(&["train", "--config", interrupted.to_str().unwrap(), "--resume"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(integration_tests::stdout(&resumed).contains(&format!("resumed at step {step}")));
    let a = std::fs::read(dir.path().join("a/out/final/model.safetensors")).unwrap();
    let b = std::fs::read(out_b.join("final/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
}

/// A safetensors file as (parsed JSON header, raw tensor bytes).
fn safetensors_parts(path: &Path) -> (Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    (header, bytes[8 + header_len..].to_vec())
}

#[test]
fn eval_during_training_writes_scores_to_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let reference = load(&fixture("parity/qwen2-tiny.json"));
    let data = dir.path().join("train.jsonl");
    write_jsonl(&data, reference["examples"].as_array().unwrap());
    let out = dir.path().join("out");
    let config = write_run_config(
        dir.path(),
        &fixture("qwen2-tiny"),
        &data,
        &format!(
            "[eval]\ndata = {:?}\nevaluator = \"exact_match\"\nevery = 2\nmax_new_tokens = 8\nlimit = 3\n\n[train]\nbatch_size = 2\nmax_steps = 5\nout_dir = {:?}\n",
            data.display().to_string(),
            out.display().to_string()
        ),
    );
    let run = host(&["train", "--config", config.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let metrics = read_metrics(&out);
    let evaluated: Vec<u64> =
        metrics.iter().filter(|m| m["eval"].is_object()).map(|m| m["step"].as_u64().unwrap()).collect();
    assert_eq!(evaluated, vec![2, 4, 5]);
    let accuracy = metrics[1]["eval"]["exact_match"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    assert!(stderr(&run).contains("step 2 eval: exact_match"), "{}", stderr(&run));

    // A bad [eval] table fails before training starts.
    let run = host(&["train", "--config", config.to_str().unwrap(), "--overwrite", "--set", "eval.evaluator=nll"]);
    integration_tests::assert_error(&run, 2, &["expected an evaluator plugin"]);
}

/// `neg_p_threshold` with `percentile = 50, side = "top"` (then `params_and_more`, which may open other
/// tables) on qwen2-tiny, batches of 5 in file order, `train` in the `[train]` table, out_dir `out`.
fn median_threshold_run(
    dir: &Path,
    data: &Path,
    out: &Path,
    params_and_more: &str,
    train: &str,
) -> std::process::Output {
    let config = write_run_config(
        dir,
        &fixture("qwen2-tiny"),
        data,
        &format!(
            "[objective]\nplugin = \"neg_p_threshold\"\n[objective.params]\npercentile = 50\nside = \"top\"\n{params_and_more}\n[train]\nbatch_size = 5\n{train}out_dir = {:?}\n",
            out.display().to_string()
        ),
    );
    host(&["train", "--config", config.to_str().unwrap(), "--set", "data.shuffle=false"])
}

#[test]
fn a_percentile_threshold_becomes_q_from_the_base_model() {
    let reference = load(&fixture("train/qwen2-tiny-nll.json"));
    let tokens = reference["num_loss_tokens"].as_u64().unwrap(); // 169 response tokens and EOSs
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    write_jsonl(&data, reference["examples"].as_array().unwrap());
    let out = dir.path().join("out");
    let run = median_threshold_run(dir.path(), &data, &out, "", "max_steps = 1\n");
    assert!(run.status.success(), "{}", stderr(&run));
    // The whole data set is the first batch: the top half of its tokens by base-model probability stays
    // (the token at the median itself may fall either side by a rounding of its probability).
    let kept = read_metrics(&out)[0]["loss_tokens"].as_u64().unwrap();
    assert!(kept == tokens / 2 || kept == tokens / 2 + 1, "kept {kept} of {tokens}");
    assert!(stderr(&run).contains("percentile 50 of the base model's token probabilities is q ="));
}

#[test]
fn a_threshold_against_the_base_model_keeps_the_same_tokens_while_the_model_moves() {
    let reference = load(&fixture("train/qwen2-tiny-nll.json"));
    let tokens = reference["num_loss_tokens"].as_u64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    write_jsonl(&data, reference["examples"].as_array().unwrap());
    // Every step's batch is the whole data set, and the learning rate is large enough to move tokens
    // across the median within a few steps.
    let kept_per_step = |against: &str| -> Vec<u64> {
        let out = dir.path().join(against);
        let run = median_threshold_run(
            dir.path(),
            &data,
            &out,
            &format!("against = {against:?}\n\n[optim]\nlr = 0.05\nwarmup_ratio = 0.0\nlr_scheduler = \"constant\"\n"),
            "max_steps = 8\n",
        );
        assert!(run.status.success(), "{against}: {}", stderr(&run));
        read_metrics(&out).iter().map(|m| m["loss_tokens"].as_u64().unwrap()).collect()
    };
    let base = kept_per_step("base");
    assert!(base[0] == tokens / 2 || base[0] == tokens / 2 + 1, "kept {} of {tokens}", base[0]);
    assert!(base.iter().all(|&k| k == base[0]), "a mask fixed from the base model moved: {base:?}");
    // The same threshold checked against the current model keeps other tokens as the model moves.
    let current = kept_per_step("current");
    // Both start from the same model; the token at q itself may fall either side by a rounding.
    assert!(current[0].abs_diff(base[0]) <= 1, "first steps: current {} against base {}", current[0], base[0]);
    assert!(current.iter().any(|&k| k != current[0]), "the current-model mask never moved: {current:?}");
}
