//! `--device` and `[model] dtype`: a host built without the `cuda` feature refuses CUDA devices with one
//! line and exit code 2; bf16 training (bf16 weights and activations, float32 master weights) runs on the
//! CPU, lowers the loss, saves float32 checkpoints and resumes exactly.

use std::path::Path;

use integration_tests::{assert_error, fixture, host, read_metrics, stderr, stdout, write_jsonl, write_run_config};
use serde_json::json;

const NO_CUDA: &str = "this host was built without the cuda feature; rebuild with --features cuda";

/// Eight short examples, all in every batch: the loss of a repeated batch must fall.
fn data(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("train.jsonl");
    let examples: Vec<serde_json::Value> =
        (0..8).map(|i| json!({"prompt": format!("Q: {i}+{i}\nA: "), "response": format!("{}", 2 * i)})).collect();
    write_jsonl(&path, &examples);
    path
}

fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let out = dir.join("out").display().to_string();
    write_run_config(
        dir,
        &fixture("qwen2-tiny"),
        &data(dir),
        &format!(
            "[optim]\nlr = 3e-3\nlr_scheduler = \"constant\"\n\n[train]\nbatch_size = 8\nmax_steps = 6\nout_dir = {out:?}\n{extra}"
        ),
    )
}

#[test]
fn a_cuda_device_without_the_cuda_feature_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = config(dir.path(), "");
    let run = run.to_str().unwrap();
    assert_error(&host(&["train", "--config", run, "--device", "cuda:0"]), 2, &[NO_CUDA]);
    assert_error(&host(&["train", "--config", run, "--set", "model.device=cuda"]), 2, &[NO_CUDA]);
    assert!(!dir.path().join("out").exists(), "nothing is written before the device opens");
    let bench = [
        "bench",
        "--hidden",
        "32",
        "--intermediate",
        "64",
        "--layers",
        "1",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--vocab",
        "64",
        "--batch",
        "1",
        "--seq",
        "8",
        "--steps",
        "2",
        "--device",
        "cuda:0",
    ];
    assert_error(&host(&bench), 2, &[NO_CUDA]);
    let bad = host(&["train", "--config", run, "--device", "gpu"]);
    assert_error(&bad, 2, &["unknown device `gpu` (use cpu, cuda or cuda:N)"]);
}

/// bf16 training on the CPU: finite, falling losses; a float32 checkpoint (the master weights) whose
/// optimizer state holds the master copies; `--resume` from a mid-run checkpoint ends with the same bytes.
#[test]
fn bf16_training_on_the_cpu_lowers_the_loss_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let run = config(dir.path(), "save_every = 3\n");
    let out = host(&["train", "--config", run.to_str().unwrap(), "--set", "model.dtype=bf16"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("memory estimate (cpu, bf16):") && err.contains("master weights"), "{err}");
    assert!(stdout(&out).contains("peak memory: "), "{}", stdout(&out));

    let out_dir = dir.path().join("out");
    let losses: Vec<f64> = read_metrics(&out_dir).iter().map(|m| m["loss"].as_f64().unwrap()).collect();
    assert_eq!(losses.len(), 6);
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(losses[5] < 0.9 * losses[0], "the loss should fall: {losses:?}");
    assert!(losses.windows(2).filter(|w| w[1] < w[0]).count() >= 4, "mostly decreasing: {losses:?}");

    let header = |path: &Path| -> serde_json::Value {
        let bytes = std::fs::read(path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        serde_json::from_slice(&bytes[8..8 + n]).unwrap()
    };
    let model = header(&out_dir.join("final/model.safetensors"));
    let weights: Vec<_> = model.as_object().unwrap().iter().filter(|(k, _)| *k != "__metadata__").collect();
    assert!(weights.iter().all(|(_, v)| v["dtype"] == "F32"), "checkpoints hold float32 master weights");
    let optimizer = header(&out_dir.join("final/optimizer.safetensors"));
    let masters = optimizer.as_object().unwrap().keys().filter(|k| k.starts_with("master.")).count();
    assert_eq!(masters, weights.len(), "one master copy per parameter");

    // Resume from checkpoint-3: the master weights come back from the optimizer state, so the run ends
    // bit for bit where the uninterrupted one did.
    let first = std::fs::read(out_dir.join("final/model.safetensors")).unwrap();
    std::fs::remove_dir_all(out_dir.join("final")).unwrap();
    let out = host(&["train", "--config", run.to_str().unwrap(), "--set", "model.dtype=bf16", "--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("resumed at step 3"));
    assert!(first == std::fs::read(out_dir.join("final/model.safetensors")).unwrap(), "resumed bf16 run differs");
}

#[test]
fn bench_runs_in_bf16_on_the_cpu_and_reports_memory() {
    let out = host(&[
        "bench",
        "--hidden",
        "32",
        "--intermediate",
        "64",
        "--layers",
        "2",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--vocab",
        "64",
        "--batch",
        "2",
        "--seq",
        "16",
        "--steps",
        "3",
        "--dtype",
        "bf16",
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("memory estimate (cpu, bf16):"), "{text}");
    assert!(text.contains("peak RSS: "), "{text}");
    assert!(text.trim_end().lines().last().unwrap().starts_with("tokens/s: "), "{text}");
}
