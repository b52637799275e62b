//! `host grade` end to end: generations made elsewhere, graded by every shipped evaluator, by an
//! evaluator given as a path to a `.so` copied out of the build, and by one built outside this
//! workspace (`tests/out_of_tree/word_recall`); bad rows fail naming the row and leave no output
//! behind.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::{
    assert_error, host, plugin_path, read_jsonl, stderr, stdout, target_dir, workspace_root, write_jsonl,
};
use serde_json::{json, Value};

fn grade(args: &[&str]) -> std::process::Output {
    host(&[&["grade"], args].concat())
}

#[test]
fn grades_outputs_made_elsewhere_with_every_shipped_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vllm.jsonl");
    write_jsonl(
        &data,
        &[
            // vLLM-style: several samples with finish reasons.
            json!({"prompt": "Simplify sqrt(18).", "generations": ["So $\\boxed{3\\sqrt{2}}$.", "\\boxed{9}"], "reference": "\\sqrt{18}", "finish_reasons": ["stop", "length"]}),
            json!({"prompt": "Solve.", "generation": "The answer is \\boxed{1+x^2}", "reference": "x^2+1"}),
            json!({"generation": "I pick \\boxed{\\text{(B)}}", "reference": "B"}),
            json!({"generations": ["42"], "reference": 42}),
        ],
    );
    let out = dir.path().join("graded.jsonl");
    let run = grade(&["--evaluator", "math", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let lines = read_jsonl(&out);
    let accuracy = |line: &Value| -> Vec<f64> {
        line["scores"].as_array().unwrap().iter().map(|s| s["accuracy"].as_f64().unwrap()).collect()
    };
    assert_eq!(lines.iter().map(accuracy).collect::<Vec<_>>(), vec![vec![1.0, 0.0], vec![1.0], vec![1.0], vec![1.0]]);
    assert_eq!(lines[0]["finish_reasons"], json!(["stop", "length"]));
    assert!(lines[1].get("finish_reasons").is_none(), "unknown finish reasons are not invented");
    assert_eq!(lines[3]["reference"], "42");
    assert_eq!(lines.iter().map(|l| l["index"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3]);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("graded.summary.json")).unwrap()).unwrap();
    assert_eq!(summary["examples"], 4);
    assert_eq!(summary["generations"], 5);
    assert_eq!(summary["aggregate"]["accuracy"], 1.0, "first samples");
    assert_eq!(summary["aggregate"]["accuracy@mean"], 0.8, "mean over all samples, as `host eval` reports it");
    assert!(stdout(&run).contains("graded 4 rows with `math`"), "{}", stdout(&run));

    // Every shipped evaluator grades the same file; a copied .so given by path too.
    for evaluator in ["exact_match", "multiple_choice", "figfont"] {
        let out = dir.path().join(format!("{evaluator}.jsonl"));
        let run = grade(&["--evaluator", evaluator, "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(run.status.success(), "{evaluator}: {}", String::from_utf8_lossy(&run.stderr));
        assert_eq!(read_jsonl(&out).len(), 4, "{evaluator}");
    }
    let elsewhere = dir.path().join("plugins");
    std::fs::create_dir(&elsewhere).unwrap();
    let copied = elsewhere.join("libmy_math.so");
    std::fs::copy(plugin_path("math"), &copied).unwrap();
    let out = dir.path().join("by_path.jsonl");
    let run = grade(&[
        "--evaluator",
        copied.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(
        read_jsonl(&out).iter().map(accuracy).collect::<Vec<_>>(),
        lines.iter().map(accuracy).collect::<Vec<_>>()
    );

    // Custom keys.
    let custom = dir.path().join("custom.jsonl");
    write_jsonl(&custom, &[json!({"output": {"text": ["\\boxed{\\pi/2}"]}, "answer": "\\frac{\\pi}{2}"})]);
    let out = dir.path().join("custom_out.jsonl");
    let run = grade(&[
        "--evaluator",
        "math",
        "--data",
        custom.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--generations-key",
        "output.text",
        "--reference-key",
        "answer",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(accuracy(&read_jsonl(&out)[0]), vec![1.0]);
}

#[test]
fn bad_rows_fail_naming_the_row_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("graded.jsonl");
    let good = json!({"generation": "\\boxed{1}", "reference": "1"});
    let cases = [
        (
            json!({"output": "x", "reference": "1"}),
            "no `generations` (a list of strings) or `generation` (a string) (the row has: output, reference)",
        ),
        (json!({"generations": "x", "reference": ""}), "empty reference under `reference`"),
        (json!({"generations": ["a", 7], "reference": "1"}), "`generations[1]` must be a string, got 7"),
        (json!({"generations": {"a": 1}, "reference": "1"}), "`generations` must be a list of strings or a string"),
    ];
    for (bad, message) in cases {
        let data = dir.path().join("bad.jsonl");
        write_jsonl(&data, &[good.clone(), bad]);
        let run = grade(&["--evaluator", "math", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert_error(&run, 2, &[&format!("{}:2: ", data.display()), message]);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["bad.jsonl"], "no output after: {message}");
    }
    let data = dir.path().join("data.jsonl");
    write_jsonl(&data, &[good]);
    let run = grade(&["--evaluator", "math", "--data", data.to_str().unwrap(), "--out", data.to_str().unwrap()]);
    assert_error(&run, 2, &["is the --data file"]);
    // A device or a folder is never replaced by a renamed file.
    for not_a_file in [Path::new("/dev/null"), dir.path()] {
        let run =
            grade(&["--evaluator", "math", "--data", data.to_str().unwrap(), "--out", not_a_file.to_str().unwrap()]);
        assert_error(&run, 2, &["not a regular file"]);
    }
    assert!(Path::new("/dev/null").metadata().unwrap().file_type().is_char_device());
    let run = grade(&["--evaluator", "nll", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!run.status.success());
}

/// Builds `tests/out_of_tree/word_recall` as its author would, from a copy outside the repository
/// (the plugin API by absolute path, this workspace's lock file so no crate is fetched), and returns
/// the `.so`.
fn build_out_of_tree_evaluator(dir: &Path) -> PathBuf {
    let source = workspace_root().join("tests/out_of_tree/word_recall");
    let crate_dir = dir.join("word_recall");
    std::fs::create_dir_all(crate_dir.join("src")).unwrap();
    let manifest = std::fs::read_to_string(source.join("Cargo.toml")).unwrap();
    let api = workspace_root().join("plugin-api");
    let manifest = manifest.replace("\"../../../plugin-api\"", &format!("{:?}", api.display().to_string()));
    std::fs::write(crate_dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(source.join("src/lib.rs"), crate_dir.join("src/lib.rs")).unwrap();
    std::fs::copy(workspace_root().join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let target = target_dir().join("out-of-tree");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("run cargo build");
    assert!(build.status.success(), "building the out-of-tree evaluator failed:\n{}", stderr(&build));
    target.join("debug").join(format!("{}word_recall{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX))
}

#[test]
fn grades_with_an_evaluator_built_outside_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let library = build_out_of_tree_evaluator(dir.path());
    let data = dir.path().join("api.jsonl");
    write_jsonl(
        &data,
        &[
            json!({"generation": "The capital of France is Paris", "reference": "Paris France"}),
            json!({"generations": ["Lyon, I think", "paris"], "reference": "Paris"}),
            json!({"generation": "no idea", "reference": "Rome Italy"}),
        ],
    );
    let out = dir.path().join("graded.jsonl");
    let grade_with = |params: &[&str]| {
        let mut args = vec![
            "--evaluator",
            library.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(params);
        grade(&args)
    };
    let run = grade_with(&[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let recalls: Vec<Vec<f64>> = read_jsonl(&out)
        .iter()
        .map(|l| l["scores"].as_array().unwrap().iter().map(|s| s["recall"].as_f64().unwrap()).collect())
        .collect();
    assert_eq!(recalls, vec![vec![1.0], vec![0.0, 1.0], vec![0.0]]);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("graded.summary.json")).unwrap()).unwrap();
    assert_eq!(summary["evaluator"], "word_recall");
    assert_eq!(summary["aggregate"]["hit@mean"], 0.5, "2 of 4 generations");
    assert!(stdout(&run).contains("graded 3 rows with `word_recall`"), "{}", stdout(&run));

    // Its parameters are checked by the host as a shipped plugin's are.
    let run = grade_with(&["--param", "min_recall=0.4"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let run = grade_with(&["--param", "min_recall=high"]);
    assert_error(&run, 2, &["min_recall"]);
    let run = grade_with(&["--param", "min_recall=2"]);
    assert_error(&run, 2, &["min_recall must be in [0, 1], got 2"]);
}
