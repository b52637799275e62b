//! `host plugins curve | check | list | inspect` and `host plot objectives` on the real plugin files.

use integration_tests::{assert_error, host, plugin_path, stdout};

/// Parses `host plugins curve` CSV into rows of (p, loss, weight, logit_grad).
fn curve(plugin: &str, params: &[&str]) -> Vec<[f64; 4]> {
    let mut args = vec!["plugins", "curve", plugin, "--points", "41"];
    for p in params {
        args.extend(["--param", p]);
    }
    let out = host(&args);
    assert!(out.status.success(), "{}", integration_tests::stderr(&out));
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

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs() + 1e-7
}

/// Checks every row against closed forms of f and s; W = s(1-p) follows.
fn assert_closed_form(plugin: &str, params: &[&str], f: impl Fn(f64) -> f64, s: impl Fn(f64) -> f64) {
    for [p, loss, weight, logit_grad] in curve(plugin, params) {
        let (want_f, want_s) = (f(p), s(p));
        assert!(close(loss, want_f), "{plugin} {params:?} p={p}: loss {loss} vs {want_f}");
        assert!(close(weight, want_s), "{plugin} {params:?} p={p}: weight {weight} vs {want_s}");
        assert!(close(logit_grad, want_s * (1.0 - p)), "{plugin} {params:?} p={p}: W {logit_grad}");
    }
}

#[test]
fn curves_match_the_closed_forms_of_design_md() {
    assert_closed_form("nll", &[], |p| -p.ln(), |_| 1.0);
    assert_closed_form("neg_p", &[], |p| 1.0 - p, |p| p);
    assert_closed_form("dft", &[], |p| -p * p.ln(), |p| p);
    for alpha in [1.0f64, 10.0, 0.5, -0.5] {
        let param = format!("alpha={alpha}");
        assert_closed_form("general_family", &[&param], |p| (1.0 - p.powf(alpha)) / alpha, |p| p.powf(alpha));
    }
    assert_closed_form("general_family", &["alpha=0"], |p| -p.ln(), |_| 1.0);
    let top = |p: f64| if p >= 0.4 { 1.0 } else { 0.0 };
    let bottom = |p: f64| if p <= 0.4 { 1.0 } else { 0.0 };
    assert_closed_form("neg_p_threshold", &["q=0.4", "side=top"], |p| (1.0 - p) * top(p), |p| p * top(p));
    assert_closed_form("neg_p_threshold", &["q=0.4", "side=bottom"], |p| (1.0 - p) * bottom(p), |p| p * bottom(p));
    assert_closed_form("nll_threshold", &["q=0.4", "side=top"], |p| -p.ln() * top(p), top);
    assert_closed_form("nll_threshold", &["q=0.4", "side=bottom"], |p| -p.ln() * bottom(p), bottom);
}

#[test]
fn check_passes_on_every_shipped_plugin() {
    let shipped: &[(&str, &[&str])] = &[
        ("nll", &[]),
        ("neg_p", &[]),
        ("general_family", &[]),
        ("general_family", &["alpha=10"]),
        ("general_family", &["alpha=0"]),
        ("general_family", &["alpha=-1"]),
        ("neg_p_threshold", &["q=0.5"]),
        ("neg_p_threshold", &["q=0.1", "side=bottom"]),
        ("nll_threshold", &["q=0.5"]),
        ("nll_threshold", &["q=0.9", "side=bottom"]),
        ("dft", &[]),
        ("proportional", &[]),
        ("uniform", &[]),
        ("temperature", &["temperature=3"]),
        ("fixed", &["weights=0.5,0.3,0.2"]),
        ("exact_match", &[]),
    ];
    for (name, params) in shipped {
        let mut args = vec!["plugins", "check", name];
        for p in *params {
            args.extend(["--param", p]);
        }
        let out = host(&args);
        assert!(out.status.success(), "{name} {params:?}: {}", integration_tests::stderr(&out));
        assert!(stdout(&out).starts_with("ok: "), "{}", stdout(&out));
    }
}

#[test]
fn check_fails_with_exit_1_naming_p_when_weight_disagrees_with_loss() {
    let out = host(&["plugins", "check", "test_faulty_objective", "--param", "fault=wrong_weight"]);
    // The injected weight is wrong for p > 0.2; the grid ascends, so the first failure is just above it.
    assert_error(&out, 1, &["check failed", "test_faulty_objective", "at p = 2.", "weight", "finite difference"]);
    let ok = host(&["plugins", "check", "test_faulty_objective"]);
    assert!(ok.status.success(), "{}", integration_tests::stderr(&ok));
}

#[test]
fn check_fails_on_non_finite_outputs_naming_p() {
    let out = host(&["plugins", "check", "test_faulty_objective", "--param", "fault=nan"]);
    assert_error(&out, 1, &["check failed", "at p = 1e-12", "non-finite"]);
}

#[test]
fn list_and_inspect_describe_the_plugins() {
    let out = host(&["plugins", "list"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for name in
        ["nll", "neg_p", "general_family", "neg_p_threshold", "nll_threshold", "dft", "proportional", "exact_match"]
    {
        assert!(text.lines().any(|l| l.split_whitespace().nth(1) == Some(name)), "{name} missing from:\n{text}");
    }
    let out = host(&["plugins", "inspect", plugin_path("general_family").to_str().unwrap()]);
    let text = stdout(&out);
    assert!(text.contains("kind:        objective"), "{text}");
    assert!(text.contains("f(p) = (1 - p^alpha) / alpha"), "{text}");
    assert!(text.contains("alpha") && text.contains("default 1"), "{text}");
}

#[test]
fn plot_objectives_writes_a_labelled_svg() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("weights.svg");
    let out = host(&[
        "plot",
        "objectives",
        "--plugin",
        "nll",
        "--plugin",
        "neg_p",
        "--plugin",
        "general_family:alpha=10",
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", integration_tests::stderr(&out));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "not an SVG");
    for label in ["nll", "neg_p", "general_family (alpha=10)", "W(p) = s(p)(1 - p)", "probability of the target token"]
    {
        assert!(text.contains(label), "{label} missing from the SVG");
    }
    // Three curves, each a polyline.
    assert!(text.matches("<polyline").count() >= 3);
}

#[test]
fn an_evaluator_carries_its_benchmark_through_the_abi() {
    let dir = tempfile::tempdir().unwrap();
    let export = |split: &str, seed: &str, name: &str| -> Vec<serde_json::Value> {
        let out = dir.path().join(name);
        let run = host(&[
            "plugins",
            "benchmark",
            "figfont",
            "--split",
            split,
            "--size",
            "40",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", integration_tests::stderr(&run));
        std::fs::read_to_string(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let train = export("train", "3", "a.jsonl");
    assert_eq!(train.len(), 40);
    assert_eq!(train, export("train", "3", "b.jsonl"), "same seed, same puzzles");
    assert_ne!(train, export("train", "4", "c.jsonl"), "another seed, another order");
    let test = export("test", "3", "d.jsonl");
    let words = |rows: &[serde_json::Value]| -> std::collections::BTreeSet<String> {
        rows.iter().map(|r| r["response"].as_str().unwrap().to_string()).collect()
    };
    assert!(words(&train).is_disjoint(&words(&test)), "train and test words overlap");
    let first = &train[0];
    assert!(first["prompt"].as_str().unwrap().contains('#'), "the prompt draws the word in ASCII art");

    let out = host(&["plugins", "benchmark", "exact_match", "--out", dir.path().join("x.jsonl").to_str().unwrap()]);
    assert_error(&out, 2, &["exact_match", "carries no benchmark"]);
    let out = host(&["plugins", "benchmark", "nll", "--out", dir.path().join("x.jsonl").to_str().unwrap()]);
    assert_error(&out, 2, &["expected an evaluator plugin"]);
}
