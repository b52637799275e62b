//! Objectives written in C against `plugin-api/include/sft_objective.h`, compiled here with `cc` and run
//! through the real `host` binary: they load, check, tabulate and train exactly like the Rust plugins,
//! and every refusal or error is one `error:` line with exit code 2.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use integration_tests::{
    assert_error, host, read_metrics, stderr, stdout, target_dir, train_qwen2_tiny, workspace_root,
};

/// `(library name, source, extra cc flags)` of every C test plugin.
const C_PLUGINS: &[(&str, &str, &[&str])] = &[
    ("neg_p_c", "neg_p_c.c", &[]),
    ("faulty_c", "faulty_c.c", &[]),
    ("abi_v99", "abi_v99.c", &[]),
    ("null_compute_c", "faulty_c.c", &["-DSFT_TEST_NULL_COMPUTE"]),
];

/// Compiles the C plugins once per test process into `target/c_plugins` and returns that folder.
fn c_plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let dir = target_dir().join("c_plugins");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, source, flags) in C_PLUGINS {
            // Compile to a private name and rename, so a concurrent test run never loads a half-written file.
            let partial = dir.join(format!("lib{name}.so.{}", std::process::id()));
            let output = Command::new("cc")
                .args(["-shared", "-fPIC", "-O2", "-o"])
                .arg(&partial)
                .arg(root.join("tests/c_plugins").join(source))
                .arg("-I")
                .arg(root.join("plugin-api/include"))
                .args(*flags)
                .arg("-lm")
                .output()
                .expect("run cc (a C compiler is needed for these tests)");
            assert!(output.status.success(), "cc {source} failed:\n{}", stderr(&output));
            std::fs::rename(&partial, dir.join(format!("lib{name}.so"))).unwrap();
        }
        dir
    })
}

fn c_plugin(name: &str) -> String {
    c_plugin_dir().join(format!("lib{name}.so")).display().to_string()
}

/// Parses `host plugins curve --points 41` CSV into rows of (p, loss, weight, logit_grad).
fn curve(plugin: &str) -> Vec<[f64; 4]> {
    let out = host(&["plugins", "curve", plugin, "--points", "41"]);
    assert!(out.status.success(), "{plugin}: {}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("p,loss,weight,logit_grad"));
    let rows: Vec<[f64; 4]> = lines
        .map(|line| {
            let v: Vec<f64> = line.split(',').map(|x| x.parse().expect("number")).collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect();
    assert_eq!(rows.len(), 41);
    rows
}

fn close(a: f64, b: f64, relative: f64) -> bool {
    (a - b).abs() <= relative * b.abs() + 1e-7
}

#[test]
fn neg_p_in_c_passes_check_and_matches_the_closed_form_and_the_rust_plugin() {
    let plugin = c_plugin("neg_p_c");
    let out = host(&["plugins", "check", &plugin]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ok: neg_p_c ("), "{}", stdout(&out));

    let ours = curve(&plugin);
    for [p, loss, weight, logit_grad] in &ours {
        assert!(close(*loss, 1.0 - p, 1e-5), "p={p}: loss {loss} vs {}", 1.0 - p);
        assert!(close(*weight, *p, 1e-5), "p={p}: weight {weight} vs {p}");
        assert!(close(*logit_grad, p * (1.0 - p), 1e-5), "p={p}: W {logit_grad}");
    }
    let rust = curve("neg_p");
    for (c, r) in ours.iter().zip(&rust) {
        for k in 0..4 {
            assert!(close(c[k], r[k], 1e-6), "C {c:?} vs Rust {r:?}");
        }
    }
}

#[test]
fn list_and_inspect_show_c_plugins() {
    let dir = c_plugin_dir().display().to_string();
    let out = host(&["--plugin-dir", &dir, "plugins", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text.lines().find(|l| l.contains("libneg_p_c.so")).expect("neg_p_c listed");
    assert!(line.starts_with("objective") && line.contains("neg_p_c"), "{line}");
    assert!(text.lines().any(|l| l.contains("libabi_v99.so") && l.contains("not loadable")), "{text}");

    let out = host(&["--plugin-dir", &dir, "plugins", "inspect", "faulty_c"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in ["name:        faulty_c", "kind:        objective", "formula:     f(p) = -scale log p"] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    for (name, ty, default) in [
        ("from_step", "int", "2"),
        ("refuse", "bool", "false"),
        ("scale", "float", "1"),
        ("mode", "string", "\"plain\""),
    ] {
        let line = text.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_else(|| panic!("{name}: {text}"));
        assert!(line.contains(ty) && line.contains(&format!("default {default}")), "{line}");
    }
    assert!(text.contains("[plain|leave_include]"), "{text}");
}

#[test]
fn another_abi_version_is_refused_naming_both_versions() {
    let out = host(&["plugins", "curve", &c_plugin("abi_v99")]);
    assert_error(&out, 2, &["libabi_v99.so", "ABI version 99", "this host supports version 1"]);
}

#[test]
fn a_table_with_a_null_entry_point_is_refused() {
    let out = host(&["plugins", "check", &c_plugin("null_compute_c")]);
    assert_error(&out, 2, &["libnull_compute_c.so", "malformed C objective table", "`compute` is NULL"]);
}

#[test]
fn errors_returned_by_c_code_become_host_errors() {
    let plugin = c_plugin("faulty_c");
    let out = host(&["plugins", "curve", &plugin, "--param", "from_step=1"]);
    assert_error(&out, 2, &["objective `faulty_c` failed", "injected C error at step 1 of 1", "(code 3)"]);
    let out = host(&["plugins", "curve", &plugin, "--param", "refuse=true"]);
    assert_error(&out, 2, &["plugin `faulty_c`", "refused its parameters", "refused on request (refuse = true)"]);
    // Outputs are validated like any plugin's: an unwritten include is caught.
    let out = host(&["plugins", "curve", &plugin, "--param", "mode=leave_include"]);
    assert_error(&out, 2, &["objective `faulty_c`", "include = 255 at token 0"]);
    // Values reach the C code with their types.
    let out = host(&["plugins", "curve", &plugin, "--param", "scale=2", "--param", "from_step=5", "--points", "5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = stdout(&out).lines().nth(2).unwrap().to_string(); // p = 0.25
    let v: Vec<f64> = second.split(',').map(|x| x.parse().unwrap()).collect();
    assert!(close(v[1], -2.0 * v[0].ln(), 1e-5) && close(v[2], 2.0, 1e-6), "{second}");
}

#[test]
fn parameters_are_validated_against_the_c_schema() {
    let plugin = c_plugin("faulty_c");
    let out = host(&["plugins", "curve", &plugin, "--param", "bogus=1"]);
    assert_error(&out, 2, &["unknown parameter `bogus`", "from_step, refuse, scale, mode"]);
    let out = host(&["plugins", "curve", &plugin, "--param", "scale=big"]);
    assert_error(&out, 2, &["parameter `scale` must be a float", "string"]);
    let out = host(&["plugins", "curve", &plugin, "--param", "from_step=1.5"]);
    assert_error(&out, 2, &["parameter `from_step` must be a", "int, got float"]);
    let out = host(&["plugins", "curve", &plugin, "--param", "mode=loud"]);
    assert_error(&out, 2, &["`mode` must be one of plain|leave_include"]);
}

#[test]
fn training_with_the_c_objective_matches_the_rust_neg_p() {
    let (c_dir, rust_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (c_out, run) = train_qwen2_tiny(c_dir.path(), &format!("plugin = {:?}", c_plugin("neg_p_c")), 2);
    assert!(run.status.success(), "C: {}", stderr(&run));
    let (rust_out, run) = train_qwen2_tiny(rust_dir.path(), "plugin = \"neg_p\"", 2);
    assert!(run.status.success(), "Rust: {}", stderr(&run));
    let (c, rust) = (read_metrics(&c_out), read_metrics(&rust_out));
    assert_eq!(c.len(), 2);
    assert_eq!(rust.len(), 2);
    for (a, b) in c.iter().zip(&rust) {
        for key in ["loss", "grad_norm"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-6 * y.abs(), "step {}: {key} C {x} vs Rust {y}", a["step"]);
        }
        assert_eq!(a["tokens"], b["tokens"]);
    }
}

#[test]
fn an_error_from_the_c_objective_stops_training_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    // faulty_c fails from step 2 by default.
    let (_, run) = train_qwen2_tiny(dir.path(), &format!("plugin = {:?}", c_plugin("faulty_c")), 2);
    assert_error(&run, 2, &["objective `faulty_c` failed", "injected C error at step 2 of 2", "(code 3)"]);
}
