//! Objectives written in Python (`python/objectives/*.py`, `tests/python_objectives/*.py`), served by the
//! Python bridge (`libsft_python.so`) through the C objective ABI and run by the real `host` binary: they
//! check, tabulate and train exactly like the native plugins of the same formula, and a Python
//! exception, a wrong-shaped return or a bad declaration is one `error:` line with exit code 2.

use integration_tests::{assert_error, host, read_metrics, stderr, stdout, train_qwen2_tiny, workspace_root};

fn shipped(name: &str) -> String {
    workspace_root().join("python/objectives").join(name).display().to_string()
}

fn faulty(name: &str) -> String {
    workspace_root().join("tests/python_objectives").join(name).display().to_string()
}

/// `host plugins curve --points 41` as rows of (p, loss, weight, logit_grad).
fn curve(plugin: &str, params: &[&str]) -> Vec<Vec<f64>> {
    let mut args = vec!["plugins", "curve", plugin, "--points", "41"];
    for param in params {
        args.extend(["--param", param]);
    }
    let out = host(&args);
    assert!(out.status.success(), "{plugin}: {}", stderr(&out));
    stdout(&out).lines().skip(1).map(|l| l.split(',').map(|x| x.parse().unwrap()).collect()).collect()
}

fn close(a: f64, b: f64, relative: f64) -> bool {
    (a - b).abs() <= relative * b.abs() + 1e-7
}

#[test]
fn python_objectives_pass_check_and_tabulate_like_the_native_plugins() {
    for (python, native, params) in [
        ("neg_p.py", "neg_p", vec![]),
        ("general_family.py", "general_family", vec!["alpha=0.5"]),
        ("general_family.py", "general_family", vec!["alpha=0"]),
        ("neg_p_threshold.py", "neg_p_threshold", vec!["q=0.3", "side=bottom"]),
    ] {
        let plugin = shipped(python);
        let mut args = vec!["plugins", "check", plugin.as_str()];
        for param in &params {
            args.extend(["--param", param]);
        }
        let out = host(&args);
        assert!(out.status.success(), "{python}: {}", stderr(&out));
        assert!(stdout(&out).starts_with("ok: "), "{python}: {}", stdout(&out));
        let (ours, theirs) = (curve(&plugin, &params), curve(native, &params));
        assert_eq!(ours.len(), 41);
        for (a, b) in ours.iter().zip(&theirs) {
            for k in 0..4 {
                assert!(close(a[k], b[k], 1e-6), "{python} {params:?}: Python {a:?} vs native {b:?}");
            }
        }
    }
}

#[test]
fn a_scalar_return_is_broadcast_to_every_position() {
    let plugin = faulty("nll_scalar_weight.py");
    let (ours, theirs) = (curve(&plugin, &[]), curve("nll", &[]));
    assert_eq!(ours.len(), 41);
    for (a, b) in ours.iter().zip(&theirs) {
        for k in 0..4 {
            assert!(close(a[k], b[k], 1e-6), "Python {a:?} vs native nll {b:?}");
        }
    }
    let out = host(&["plugins", "check", &plugin]);
    assert!(out.status.success() && stdout(&out).starts_with("ok: "), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn inspect_shows_the_declarations_and_parameters_are_checked() {
    let plugin = shipped("general_family.py");
    let out = host(&["plugins", "inspect", &plugin]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "name:        general_family_py",
        "abi:         Python",
        "formula:     f(p) = (1 - p^alpha) / alpha",
        "exponent alpha",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let out = host(&["plugins", "curve", &plugin, "--param", "alpha=big"]);
    assert_error(&out, 2, &["parameter `alpha` must be a float"]);
    let out = host(&["plugins", "curve", &plugin, "--param", "beta=1"]);
    assert_error(&out, 2, &["unknown parameter `beta`"]);
    let out = host(&["plugins", "curve", &shipped("neg_p_threshold.py"), "--param", "q=2"]);
    assert_error(
        &out,
        2,
        &["refused its parameters", "neg_p_threshold.py:", "ValueError: q must be in [0, 1], got 2.0"],
    );
    let out = host(&["plugins", "curve", &shipped("neg_p_threshold.py"), "--param", "q=0.5", "--param", "side=up"]);
    assert_error(&out, 2, &["`side` must be one of top|bottom"]);
}

#[test]
fn check_catches_a_weight_that_disagrees_with_the_loss() {
    let out = host(&["plugins", "check", &faulty("inconsistent.py")]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("check failed: inconsistent_py"), "{}", stderr(&out));
    assert!(stderr(&out).contains("but -d loss / d log p (finite difference)"), "{}", stderr(&out));
}

#[test]
fn python_errors_are_one_line_naming_the_file_and_line() {
    let out = host(&["plugins", "curve", &faulty("raises.py")]);
    assert_error(&out, 2, &["objective `raises_py` failed", "raises.py:9: ZeroDivisionError: division by zero"]);
    let out = host(&["plugins", "curve", &faulty("wrong_shape.py")]);
    assert_error(&out, 2, &["`weight` returned shape [40] for 41 positions"]);
    let out = host(&["plugins", "curve", &faulty("no_functions.py")]);
    assert_error(&out, 2, &["no_functions.py", "defines neither `loss(p, params)` and `weight(p, params)`"]);
    let out = host(&["plugins", "curve", &faulty("syntax_error.py")]);
    assert_error(&out, 2, &["syntax_error.py:3: SyntaxError"]);
    let out = host(&["plugins", "curve", "missing.py"]);
    assert_error(&out, 2, &["missing.py"]);
}

#[test]
fn python_objectives_train_to_the_native_losses_over_ten_steps() {
    for (python, native) in [
        (format!("plugin = {:?}", shipped("neg_p.py")), "plugin = \"neg_p\"".to_string()),
        (
            format!("plugin = {:?}\nparams = {{ alpha = 0.5 }}", shipped("general_family.py")),
            "plugin = \"general_family\"\nparams = { alpha = 0.5 }".to_string(),
        ),
        (
            format!("plugin = {:?}\nparams = {{ q = 0.01 }}", shipped("neg_p_threshold.py")),
            "plugin = \"neg_p_threshold\"\nparams = { q = 0.01 }".to_string(),
        ),
    ] {
        let (python_dir, native_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (python_out, run) = train_qwen2_tiny(python_dir.path(), &python, 10);
        assert!(run.status.success(), "{python}: {}", stderr(&run));
        let (native_out, run) = train_qwen2_tiny(native_dir.path(), &native, 10);
        assert!(run.status.success(), "{native}: {}", stderr(&run));
        let (ours, theirs) = (read_metrics(&python_out), read_metrics(&native_out));
        assert_eq!(ours.len(), 10);
        assert_eq!(theirs.len(), 10);
        for (a, b) in ours.iter().zip(&theirs) {
            for key in ["loss", "grad_norm"] {
                let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-6 * y.abs(),
                    "{python}: step {}: {key} Python {x} vs native {y}",
                    a["step"]
                );
            }
        }
    }
}

#[test]
fn a_python_exception_stops_training_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let (out, run) = train_qwen2_tiny(dir.path(), &format!("plugin = {:?}", faulty("raises.py")), 2);
    assert_error(&run, 2, &["objective `raises_py` failed", "ZeroDivisionError: division by zero"]);
    assert!(!out.join("final").exists(), "no checkpoint from a failed run");
}

#[test]
fn bench_reports_the_python_objective_share_of_step_time() {
    let plugin = shipped("general_family.py");
    let bench = |params: &[&str]| {
        let mut args = vec!["bench", "--objective", &plugin, "--hidden", "32", "--intermediate", "64", "--layers", "1"];
        args.extend([
            "--heads",
            "2",
            "--kv-heads",
            "1",
            "--vocab",
            "64",
            "--batch",
            "2",
            "--seq",
            "16",
            "--steps",
            "3",
        ]);
        for param in params {
            args.extend(["--param", param]);
        }
        host(&args)
    };
    let first_loss = |out: &std::process::Output| -> f64 {
        assert!(out.status.success(), "{}", stderr(out));
        let text = stdout(out);
        assert!(text.contains("objective plugin share of step time: "), "{text}");
        let line = text.lines().find(|l| l.starts_with("loss (objective mean): first ")).expect("a loss line");
        line["loss (objective mean): first ".len()..].split(',').next().unwrap().trim().parse().unwrap()
    };
    // alpha = 0 is NLL, about ln(64) = 4.16 on a random model; the default alpha = 1 is 1 - p, below 1.
    let (nll, neg_p) = (first_loss(&bench(&["alpha=0"])), first_loss(&bench(&[])));
    assert!((nll - 64f64.ln()).abs() < 0.5 && neg_p < 1.0, "alpha=0: {nll}, default: {neg_p}");
    assert_error(&bench(&["alpha=high"]), 2, &["--param", "alpha"]);
    assert_error(&bench(&["beta=1"]), 2, &["beta"]);
}

/// `host plugins curve neg_p.py` with `HOST_PYTHON` set to a stand-in that answers the host's question
/// with `answer` (a shell script), as a misconfigured or exotic Python would.
fn curve_with_python(dir: &std::path::Path, answer: &str) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let python = dir.join("python3");
    std::fs::write(&python, format!("#!/bin/sh\n{answer}\n")).unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::process::Command::new(integration_tests::host_path())
        .args(["plugins", "curve", &shipped("neg_p.py")])
        .env("HOST_PYTHON", &python)
        .output()
        .unwrap()
}

#[test]
fn the_python_to_embed_is_checked_before_it_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-python");
    let out = std::process::Command::new(integration_tests::host_path())
        .args(["plugins", "curve", &shipped("neg_p.py")])
        .env("HOST_PYTHON", &missing)
        .output()
        .unwrap();
    assert_error(&out, 2, &["cannot run", "no-python", "from HOST_PYTHON"]);
    let out = curve_with_python(dir.path(), "echo 'Traceback: broken' >&2; exit 1");
    assert_error(&out, 2, &["failed: Traceback: broken"]);
    let out = curve_with_python(dir.path(), "echo not json");
    assert_error(&out, 2, &["did not describe itself"]);
    let answer = |version: &str, library: &str| {
        format!(
            r#"echo '{{"version": {version}, "libdir": "/nowhere", "ldlibrary": "{library}", "soname": "", "path": []}}'"#
        )
    };
    let out = curve_with_python(dir.path(), &answer("[3, 8]", "libpython3.8.so"));
    assert_error(&out, 2, &["is Python 3.8; Python objectives need 3.9 or later"]);
    let out = curve_with_python(dir.path(), &answer("[3, 12]", "libpython3.12.a"));
    assert_error(&out, 2, &["(Python 3.12) has no shared libpython"]);
    let out = curve_with_python(dir.path(), &answer("[3, 12]", "libpython-nowhere.so"));
    assert_error(&out, 2, &["cannot load the libpython of", "(Python 3.12)"]);
}
