//! `host sweep` and `host rollout` on the shipped tiny model with a handful of records: the grid, its
//! summaries, resuming and skipping, the rollout report, and the refusals that come before any training.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use integration_tests::{
    assert_error, fixture, host, read_metrics, score_logp, stderr, stdout, workspace_root, write_jsonl,
    write_run_config,
};
use serde_json::Value;

/// The first `n` lines of a shipped data file, as JSON values.
fn shipped(file: &str, n: usize) -> Vec<Value> {
    let text = std::fs::read_to_string(workspace_root().join("datasets/default").join(file)).unwrap();
    text.lines().take(n).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A temp folder with train.jsonl (8 additions), eval.jsonl (3) and run.toml (3 steps of 4 on
/// models/tiny-default, a checkpoint at step 2).
struct Setup {
    dir: tempfile::TempDir,
    base: PathBuf,
    eval: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.jsonl");
    write_jsonl(&train, &shipped("train.jsonl", 8));
    let eval = dir.path().join("eval.jsonl");
    write_jsonl(&eval, &shipped("eval.jsonl", 3));
    let base = write_run_config(
        dir.path(),
        &workspace_root().join("models/tiny-default"),
        &train,
        "[optim]\nlr = 3e-3\n\n[train]\nbatch_size = 4\nmax_steps = 3\nsave_every = 2\nout_dir = \"unused\"\n\n[eval]\nevaluator = \"math\"\ndata = \"does-not-matter.jsonl\"\n",
    );
    Setup { dir, base, eval }
}

impl Setup {
    fn out(&self) -> PathBuf {
        self.dir.path().join("sweep-out")
    }

    /// A sweep.toml with `objectives` (TOML of `[[objective]]` tables) and `extra` top-level lines.
    fn sweep_config(&self, extra: &str, objectives: &str) -> PathBuf {
        let text = format!(
            "base = {:?}\nout_dir = {:?}\nseeds = [0, 1]\nrank_by = \"sampled.jaro_winkler@mean\"\n{extra}\n{objectives}\n\
             [[eval]]\nname = \"greedy\"\ndata = {:?}\nevaluator = \"figfont\"\nmax_new_tokens = 8\n\n\
             [[eval]]\nname = \"sampled\"\ndata = {:?}\nevaluator = \"figfont\"\nsamples = 2\ntemperature = 1.0\nmax_new_tokens = 8\nseed = 3\n",
            self.base.display().to_string(),
            self.out().display().to_string(),
            self.eval.display().to_string(),
            self.eval.display().to_string(),
        );
        let path = self.dir.path().join("sweep.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

const TWO_OBJECTIVES: &str = "[[objective]]\nplugin = \"nll\"\n\n[[objective]]\nplugin = \"neg_p\"\n";

fn sweep(config: &Path) -> std::process::Output {
    host(&["sweep", "--config", config.to_str().unwrap()])
}

/// results.csv as header and rows (no field of these runs needs quoting).
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(!text.contains('"'), "{text}");
    let mut lines = text.lines().map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>());
    let header = lines.next().unwrap();
    (header, lines.collect())
}

fn result_files(out: &Path) -> BTreeMap<String, (std::time::SystemTime, String)> {
    std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("result.json").is_file())
        .map(|p| {
            let file = p.join("result.json");
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, (std::fs::metadata(&file).unwrap().modified().unwrap(), std::fs::read_to_string(&file).unwrap()))
        })
        .collect()
}

#[test]
fn sweep_runs_the_grid_then_skips_resumes_and_reevaluates() {
    let s = setup();
    let config = s.sweep_config("", TWO_OBJECTIVES);
    let run = sweep(&config);
    assert!(run.status.success(), "{}", stderr(&run));
    let out = s.out();
    let names = ["nll-seed0", "nll-seed1", "neg_p-seed0", "neg_p-seed1"];
    let first = result_files(&out);
    assert_eq!(first.keys().cloned().collect::<Vec<_>>(), {
        let mut sorted = names.map(String::from).to_vec();
        sorted.sort();
        sorted
    });
    let text = stdout(&run);
    assert!(text.contains("[1/4] nll-seed0: training"), "{text}");
    assert!(text.contains("[4/4] neg_p-seed1: evaluating `sampled`"), "{text}");

    let result: Value = serde_json::from_str(&first["neg_p-seed1"].1).unwrap();
    assert_eq!(result["objective"], "neg_p");
    assert_eq!(result["seed"], 1);
    assert_eq!(result["train"]["steps"], 3);
    assert!(result["train"]["first_loss"].as_f64().is_some() && result["train"]["last_loss"].as_f64().is_some());
    assert!(result["train"]["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(result["wall_seconds"].as_f64().unwrap() > 0.0);
    for key in ["exact", "exact_ci", "jaro_winkler"] {
        assert!(result["scores"]["greedy"][key].as_f64().is_some(), "{result}");
    }
    assert!(result["scores"]["sampled"]["jaro_winkler@mean"].as_f64().is_some(), "{result}");

    let (header, rows) = read_csv(&out.join("results.csv"));
    assert_eq!(&header[..5], ["name", "objective", "params", "model", "seed"]);
    assert!(header.contains(&"greedy.jaro_winkler".to_string()) && header.contains(&"sampled.exact@mean".to_string()));
    assert_eq!(rows.len(), 4);
    assert_eq!(rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), names);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| setting | n | greedy.exact |"), "{md}");
    assert!(stdout(&run).contains("| setting | n |"));
    let svg = std::fs::read_to_string(out.join("results.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("neg_p: "), "{svg}");

    // Again: nothing is trained or evaluated, and no result is rewritten.
    let again = sweep(&config);
    assert!(again.status.success(), "{}", stderr(&again));
    let text = stdout(&again);
    assert_eq!(text.matches("skipping").count(), 4, "{text}");
    assert!(text.contains("skipping neg_p-seed0: done"), "{text}");
    assert!(!text.contains("training") && !text.contains("evaluating"), "{text}");
    assert_eq!(result_files(&out), first);

    // Without its result, a run with a final checkpoint is only evaluated again.
    std::fs::remove_file(out.join("runs/nll-seed1/result.json")).unwrap();
    let again = sweep(&config);
    assert!(again.status.success(), "{}", stderr(&again));
    let text = stdout(&again);
    assert_eq!(text.matches("skipping").count(), 3, "{text}");
    assert!(text.contains("[2/4] nll-seed1: final checkpoint found; evaluating it"), "{text}");
    assert!(!text.contains("training"), "{text}");
    let now = result_files(&out);
    for name in names.iter().filter(|n| **n != "nll-seed1") {
        assert_eq!(now[*name], first[*name], "{name} was rewritten");
    }
    let redone: Value = serde_json::from_str(&now["nll-seed1"].1).unwrap();
    let before: Value = serde_json::from_str(&first["nll-seed1"].1).unwrap();
    assert_eq!(redone["scores"], before["scores"], "the same checkpoint scores the same");

    // Stopped mid-training (only checkpoint-2 left): resumes from it and trains the last step.
    let run_dir = out.join("runs/neg_p-seed0");
    std::fs::remove_file(run_dir.join("result.json")).unwrap();
    std::fs::remove_dir_all(run_dir.join("final")).unwrap();
    assert!(run_dir.join("checkpoint-2/trainer_state.json").is_file());
    let again = sweep(&config);
    assert!(again.status.success(), "{}", stderr(&again));
    let text = stdout(&again);
    assert!(text.contains("[3/4] neg_p-seed0: training (resuming from"), "{text}");
    assert_eq!(text.matches("skipping").count(), 3, "{text}");
    let resumed: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(resumed["train"]["resumed_from_step"], 2);
    assert_eq!(resumed["train"]["steps"], 3);
    let steps: Vec<u64> = read_metrics(&run_dir).iter().map(|m| m["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3]);
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("{\"resumed_from\":2}"), "{metrics}");

    // Other evaluation protocols: every run is evaluated again, none trained.
    let text = std::fs::read_to_string(&config).unwrap().replace("seed = 3", "seed = 4");
    std::fs::write(&config, text).unwrap();
    let again = sweep(&config);
    assert!(again.status.success(), "{}", stderr(&again));
    let text = stdout(&again);
    assert_eq!(text.matches("the evaluation protocols changed; evaluating again").count(), 4, "{text}");
    assert!(!text.contains("skipping") && !text.contains("training"), "{text}");

    // Another training configuration in the same out_dir: refused by key, nothing overwritten.
    let before = result_files(&out);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "seeds = [0, 1]",
        "seeds = [0, 1]\nset = [\"optim.lr=0.01\"]",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let again = sweep(&config);
    let text = stdout(&again);
    assert_eq!(
        text.matches("was trained with another configuration (optim.lr: 0.003 there, 0.01 now)").count(),
        4,
        "{text}"
    );
    assert!(!again.status.success(), "a sweep whose every run is refused fails");
    assert_eq!(result_files(&out), before);
}

/// `0.4500 ± 0.0707` (or a lone mean) as (mean, std).
fn parse_stat(cell: &str) -> (f64, Option<f64>) {
    match cell.split_once(" ± ") {
        Some((m, s)) => (m.trim().parse().unwrap(), Some(s.trim().parse().unwrap())),
        None => (cell.trim().parse().unwrap(), None),
    }
}

#[test]
fn results_md_mean_and_std_agree_with_results_csv() {
    let s = setup();
    let objectives = "[[objective]]\nplugin = \"general_family\"\nparams = { alpha = [1.0, 3] }\n";
    let config = s.sweep_config("", objectives);
    let run = sweep(&config);
    assert!(run.status.success(), "{}", stderr(&run));
    let out = s.out();
    let (header, rows) = read_csv(&out.join("results.csv"));
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0][0], "general_family-alpha=1-seed0");
    assert_eq!(rows[3][0], "general_family-alpha=3-seed1");

    // Per setting (objective + params), the metrics of its seeds.
    let mut groups: BTreeMap<String, Vec<&Vec<String>>> = BTreeMap::new();
    for row in &rows {
        groups.entry(format!("{} {}", row[1], row[2]).trim().to_string()).or_default().push(row);
    }
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    let table: Vec<Vec<String>> = md
        .lines()
        .filter(|l| l.starts_with("| "))
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
        .collect();
    let md_header = &table[0];
    assert_eq!(&md_header[..2], ["setting", "n"]);
    assert_eq!(&md_header[2..], &header[5..]);
    assert_eq!(table.len() - 1, groups.len());
    for md_row in &table[1..] {
        let runs = &groups[&md_row[0]];
        assert_eq!(md_row[1], runs.len().to_string());
        for (c, column) in header.iter().enumerate().skip(5) {
            let values: Vec<f64> = runs.iter().map(|r| r[c].parse().unwrap()).collect();
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            let (md_mean, md_std) = parse_stat(&md_row[c - 3]);
            assert!((md_mean - mean).abs() <= 5e-5, "{} {column}: {md_mean} vs {mean}", md_row[0]);
            let md_std = md_std.expect("two seeds give a standard deviation");
            assert!((md_std - std).abs() <= 5e-5, "{} {column}: {md_std} vs {std}", md_row[0]);
        }
    }
}

#[test]
fn rollout_diagnoses_sweeps_the_region_and_writes_a_self_contained_report() {
    let s = setup();
    let config = s.sweep_config("", "");
    let out = s.out();
    let run = host(&["rollout", "--config", config.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    for file in ["diagnose.json", "diagnose.svg", "sweep/results.csv", "sweep/results.md", "sweep/results.svg"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let diagnosis: Value = serde_json::from_str(&std::fs::read_to_string(out.join("diagnose.json")).unwrap()).unwrap();
    let region = diagnosis["diagnosis"]["region"].as_str().unwrap().to_string();
    let recommended: Vec<String> =
        diagnosis["diagnosis"]["recommended"].as_array().unwrap().iter().map(|v| v.to_string()).collect();

    // The sweep ran the region's recommendation: each objective on both seeds.
    let (header, rows) = read_csv(&out.join("sweep/results.csv"));
    assert_eq!(rows.len(), 2 * recommended.len());
    let rank = header.iter().position(|h| h == "sampled.jaro_winkler@mean").unwrap();
    let mut groups: Vec<(String, Vec<f64>)> = Vec::new();
    for row in &rows {
        let setting = format!("{} {}", row[1], row[2]).trim().to_string();
        let value: f64 = row[rank].parse().unwrap();
        match groups.iter_mut().find(|(s, _)| *s == setting) {
            Some((_, values)) => values.push(value),
            None => groups.push((setting, vec![value])),
        }
    }
    let stats: Vec<(String, f64, f64)> = groups
        .iter()
        .map(|(s, v)| {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)).sqrt();
            (s.clone(), mean, std)
        })
        .collect();
    // The winner: the highest mean, the earliest in grid order among equals.
    let mut order: Vec<usize> = (0..stats.len()).collect();
    order.sort_by(|&a, &b| stats[b].1.total_cmp(&stats[a].1));
    let (winner, runner) = (&stats[order[0]], &stats[order[1]]);

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(&format!("Region: {region}.")), "{md}");
    assert!(md.contains(&format!("Winner: `{}`", winner.0)), "{md}");
    assert!(md.contains("The objectives recommended for the"), "{md}");
    assert!(md.contains("![") && md.contains("(diagnose.svg)") && md.contains("(sweep/results.svg)"), "{md}");
    let spread = winner.2.max(runner.2);
    let clear = (winner.1 - runner.1) > 2.0 * spread;
    if clear {
        assert!(md.contains("a clear winner at 2 std"), "{md}");
    } else {
        assert!(md.contains("no clear winner at 2 std"), "{md}");
    }

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 2, "both charts inline");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("<script"));
    assert!(!html.contains("<link") && !html.contains("<img"), "nothing outside the file");
    assert!(html.contains(&region) && html.contains(&winner.0));
    assert!(stdout(&run).contains(&format!("winner: {}", winner.0)));

    // Every other objective against the NLL baseline, as computed here from results.csv.
    let nll = stats.iter().find(|(s, _, _)| s == "nll").expect("every region's set holds nll");
    for (setting, mean, std) in stats.iter().filter(|(s, _, _)| s != "nll") {
        let diff = mean - nll.1;
        let spread = std.max(nll.2);
        let line = stdout(&run)
            .lines()
            .find(|l| l.starts_with(&format!("against nll: {setting}: ")))
            .unwrap_or_else(|| panic!("no against-nll line for {setting}: {}", stdout(&run)))
            .to_string();
        assert!(line.contains(&format!("{diff:+.4}")), "{line}: want {diff:+.4}");
        if spread > 0.0 {
            assert!(line.contains(&format!("{:+.1} std", diff / spread)), "{line}");
        }
    }
    assert!(md.contains("Against NLL"), "{md}");
}

#[test]
fn rollout_objectives_in_the_config_override_the_recommendation() {
    let s = setup();
    let config = s.sweep_config("seeds = [0]", "[[objective]]\nplugin = \"nll\"\n");
    let config_text = std::fs::read_to_string(&config).unwrap().replacen("seeds = [0, 1]\n", "", 1);
    std::fs::write(&config, config_text).unwrap();
    let run = host(&["rollout", "--config", config.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let md = std::fs::read_to_string(s.out().join("report.md")).unwrap();
    assert!(md.contains("override the recommendation"), "{md}");
    assert!(md.contains("Winner: `nll`"), "{md}");
    assert!(md.contains("no clear winner at 2 std"), "{md}");
    let (_, rows) = read_csv(&s.out().join("sweep/results.csv"));
    assert_eq!(rows.len(), 1);
}

#[test]
fn sweeps_are_refused_before_any_training() {
    let s = setup();
    let out = s.out();
    let refused = |config: &Path, needles: &[&str]| {
        let run = sweep(config);
        assert_error(&run, 2, needles);
        assert!(!out.join("runs").exists(), "runs/ created before the refusal: {needles:?}");
    };

    let config =
        s.sweep_config("", "[[objective]]\nplugin = \"nll\"\n\n[[objective]]\nplugin = \"no_such_objective\"\n");
    refused(&config, &["sweep.toml", "[[objective]] 2", "no plugin named `no_such_objective`"]);

    let config =
        s.sweep_config("", "[[objective]]\nplugin = \"general_family\"\nparams = { alpha = [1.0], alhpa = 2 }\n");
    refused(&config, &["sweep.toml", "unknown parameter `alhpa`"]);

    let config = s.sweep_config("bogus = 1", TWO_OBJECTIVES);
    refused(&config, &["sweep.toml", "unknown field `bogus`"]);

    let config = s.sweep_config("", TWO_OBJECTIVES);
    let text = std::fs::read_to_string(&config).unwrap().replace("sampled.jaro_winkler@mean", "nope.accuracy");
    std::fs::write(&config, text).unwrap();
    refused(&config, &["sweep.toml", "rank_by `nope.accuracy`", "no protocol `nope`"]);

    let config = s.sweep_config("", TWO_OBJECTIVES);
    let text = std::fs::read_to_string(&config).unwrap().replace("jaro_winkler@mean", "accuracy");
    std::fs::write(&config, text).unwrap();
    refused(&config, &["rank_by `sampled.accuracy`", "reports no `accuracy`"]);

    // An empty evaluation file, then an empty training file.
    let empty = s.dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let config = s.sweep_config("", TWO_OBJECTIVES);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        &format!("data = {:?}", s.eval.display().to_string()),
        &format!("data = {:?}", empty.display().to_string()),
        1,
    );
    std::fs::write(&config, text).unwrap();
    refused(&config, &["[[eval]] `greedy`", "empty.jsonl", "no examples"]);
    let config = s.sweep_config("set = [\"data.train=empty.jsonl\"]", TWO_OBJECTIVES);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("data.train=empty.jsonl", &format!("data.train={}", empty.display()));
    std::fs::write(&config, text).unwrap();
    refused(&config, &["base [data] train", "empty.jsonl", "no examples"]);

    // A model whose tokenizer is larger than its vocab_size.
    let small = s.dir.path().join("small-model");
    std::fs::create_dir(&small).unwrap();
    let model = fixture("qwen2-tiny");
    for entry in std::fs::read_dir(&model).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), small.join(entry.file_name())).unwrap();
    }
    let config_path = small.join("config.json");
    let mut model_config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    model_config["vocab_size"] = Value::from(300);
    std::fs::write(&config_path, model_config.to_string()).unwrap();
    let config = s.sweep_config(&format!("models = [{:?}]", small.display().to_string()), TWO_OBJECTIVES);
    refused(&config, &["models[0]", "the tokenizer has 320 tokens but the model's vocab_size is 300"]);

    // Nothing at all was written.
    assert!(!out.exists());
}

/// `(q, tokens %, gradient %)` from the rollout's `trains on:` line for `setting`.
fn trains_on(out: &str, setting: &str) -> (Option<f64>, f64, f64) {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("trains on: {setting}")))
        .unwrap_or_else(|| panic!("no line for {setting} in {out}"));
    let q = line.split_once("(q = ").map(|(_, rest)| rest.split(')').next().unwrap().parse().unwrap());
    let numbers: Vec<f64> = line
        .rsplit_once(": ")
        .unwrap()
        .1
        .split(" % ")
        .filter_map(|part| part.rsplit(' ').next().and_then(|n| n.parse().ok()))
        .collect();
    (q, numbers[0], numbers[1])
}

#[test]
fn rollout_reports_what_each_objective_trains_on() {
    let s = setup();
    let objectives = "[[objective]]\nplugin = \"nll\"\n\n[[objective]]\nplugin = \"neg_p\"\n\n\
                      [[objective]]\nplugin = \"neg_p_threshold\"\nparams = { percentile = 50, side = \"top\" }\n";
    let config = s.sweep_config("", objectives);
    let text = std::fs::read_to_string(&config).unwrap().replacen("seeds = [0, 1]", "seeds = [0]", 1);
    std::fs::write(&config, text).unwrap();
    let run = host(&["rollout", "--config", config.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let out = stdout(&run);

    // The reference: the base model's target-token probabilities by `host score`, and each objective's
    // gradient on the target logit in closed form (NLL 1 - p; -p p(1 - p); the threshold keeps p >= q).
    let logp_file = s.dir.path().join("base-logp.jsonl");
    let train = s.dir.path().join("train.jsonl");
    let model = workspace_root().join("models/tiny-default");
    // The f32 the host computed (written as its shortest decimal), exponentiated as the host does.
    let p: Vec<f64> =
        score_logp(&model, &train, &logp_file).iter().flatten().map(|&lp| (lp as f32 as f64).exp()).collect();
    let nll: f64 = p.iter().map(|p| 1.0 - p).sum();
    let close = |got: f64, want: f64, what: &str| assert!((got - want).abs() < 0.01, "{what}: {got} % vs {want} %");

    let (q, tokens, gradient) = trains_on(&out, "nll");
    assert_eq!(q, None);
    close(tokens, 100.0, "nll tokens");
    close(gradient, 100.0, "nll gradient");
    let (_, tokens, gradient) = trains_on(&out, "neg_p");
    close(tokens, 100.0, "neg_p tokens");
    close(gradient, 100.0 * p.iter().map(|p| p * (1.0 - p)).sum::<f64>() / nll, "neg_p gradient");
    let (q, tokens, gradient) = trains_on(&out, "neg_p_threshold");
    let q = q.expect("the threshold's q");
    let kept: Vec<f64> = p.iter().copied().filter(|&p| p >= q).collect();
    close(tokens, 100.0 * kept.len() as f64 / p.len() as f64, "threshold tokens");
    close(gradient, 100.0 * kept.iter().map(|p| p * (1.0 - p)).sum::<f64>() / nll, "threshold gradient");
    assert!(tokens > 40.0 && tokens < 60.0, "percentile 50 keeps about half: {tokens} %");

    let md = std::fs::read_to_string(s.out().join("report.md")).unwrap();
    assert!(md.contains("What each objective trains on") && md.contains("share of NLL's gradient"), "{md}");
}

/// Each run's scores in results.csv (the columns after name, objective, params, model and seed), by name.
fn scores_by_run(out: &Path) -> BTreeMap<String, Vec<String>> {
    let (_, rows) = read_csv(&out.join("results.csv"));
    rows.into_iter().map(|row| (row[0].clone(), row[5..].to_vec())).collect()
}

fn final_weights(out: &Path, run: &str) -> Vec<u8> {
    std::fs::read(out.join("runs").join(run).join("final/model.safetensors")).unwrap()
}

/// `bash script` with SLURM_ARRAY_TASK_ID set (as a task of the array would run it, Slurm aside).
fn run_script(script: &Path, task: Option<usize>) -> std::process::Output {
    let mut command = std::process::Command::new("bash");
    command.arg(script).env_remove("SLURM_ARRAY_JOB_ID");
    if let Some(task) = task {
        command.env("SLURM_ARRAY_TASK_ID", task.to_string());
    }
    command.output().unwrap()
}

#[test]
fn jobs_and_array_tasks_make_the_same_runs_as_one_after_another() {
    let s = setup();
    let config = s.sweep_config("", TWO_OBJECTIVES);
    let shown = config.to_str().unwrap();
    let serial = sweep(&config);
    assert!(serial.status.success(), "{}", stderr(&serial));
    let reference = scores_by_run(&s.out());
    assert_eq!(reference.len(), 4);

    let parallel = s.dir.path().join("parallel");
    let out_dir = format!("out_dir={}", parallel.display());
    let run = host(&["sweep", "--config", shown, "--set", &out_dir, "--jobs", "2"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).contains("= 4 runs into") && stdout(&run).contains(", 2 at once"), "{}", stdout(&run));
    assert!(stderr(&run).contains("[1/4] nll-seed0: step 1/3"), "tagged progress: {}", stderr(&run));
    assert_eq!(scores_by_run(&parallel), reference);
    for name in reference.keys() {
        assert!(final_weights(&parallel, name) == final_weights(&s.out(), name), "{name}: weights differ");
    }

    // A Slurm array: the scripts, each task run here in turn, then the collect job.
    let array = s.dir.path().join("array");
    let out_dir = format!("out_dir={}", array.display());
    let write = host(&["sweep", "--config", shown, "--set", &out_dir, "--slurm"]);
    assert!(write.status.success(), "{}", stderr(&write));
    let scripts = array.join("slurm");
    let text = std::fs::read_to_string(scripts.join("array.sbatch")).unwrap();
    for needle in ["#SBATCH --array=0-3", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@120", "--run-index"] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert!(!array.join("runs").exists(), "--slurm trains nothing");

    let early = run_script(&scripts.join("collect.sbatch"), None);
    assert_eq!(early.status.code(), Some(1), "{}", stderr(&early));
    assert!(stdout(&early).contains("nll-seed0: no result yet"), "{}", stdout(&early));
    for task in 0..4 {
        let done = run_script(&scripts.join("array.sbatch"), Some(task));
        assert!(done.status.success(), "task {task}: {}", stderr(&done));
    }
    let collected = run_script(&scripts.join("collect.sbatch"), None);
    assert!(collected.status.success(), "{}", stderr(&collected));
    assert_eq!(scores_by_run(&array), reference);

    assert_error(
        &host(&["sweep", "--config", shown, "--run-index", "4"]),
        2,
        &["--run-index 4", "has 4 runs (0 to 3)"],
    );
    assert_error(
        &host(&["sweep", "--config", shown, "--set", "slurm.partition=a b", "--slurm"]),
        2,
        &["[slurm]", "partition", "single word"],
    );
    assert_error(
        &host(&["sweep", "--config", shown, "--set", "slurm.gpus=1", "--slurm"]),
        2,
        &["unknown field `gpus`"],
    );
    assert_error(&host(&["sweep", "--config", shown, "--jobs", "0"]), 2, &["--jobs 0"]);
}

/// SIGTERM to a sweep training two runs at once: both save a checkpoint, the sweep exits 75, and the next
/// invocation resumes both to the weights of a sweep never interrupted.
#[test]
fn sigterm_stops_every_run_of_a_parallel_sweep_and_they_resume_exactly() {
    let s = setup();
    let config = s.sweep_config("set = [\"train.max_steps=100\", \"train.save_every=0\"]", TWO_OBJECTIVES);
    let text = std::fs::read_to_string(&config).unwrap().replace("seeds = [0, 1]", "seeds = [0]");
    std::fs::write(&config, text).unwrap();
    let shown = config.to_str().unwrap();
    let serial = sweep(&config);
    assert!(serial.status.success(), "{}", stderr(&serial));

    let parallel = s.dir.path().join("parallel");
    let out_dir = format!("out_dir={}", parallel.display());
    let child = std::process::Command::new(integration_tests::host_path())
        .args(["sweep", "--config", shown, "--set", &out_dir, "--jobs", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let logged = |run: &str| {
        std::fs::read_to_string(parallel.join("runs").join(run).join("metrics.jsonl")).map_or(0, |t| t.lines().count())
    };
    while logged("nll-seed0") < 2 || logged("neg_p-seed0") < 2 {
        std::thread::yield_now();
    }
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let stopped = child.wait_with_output().unwrap();
    assert_eq!(stopped.status.code(), Some(75), "{}", String::from_utf8_lossy(&stopped.stderr));
    for run in ["nll-seed0", "neg_p-seed0"] {
        assert!(!parallel.join("runs").join(run).join("final").exists(), "{run} stopped before its end");
    }

    let resumed = host(&["sweep", "--config", shown, "--set", &out_dir, "--jobs", "2"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(stdout(&resumed).matches("training (resuming from").count(), 2, "{}", stdout(&resumed));
    assert_eq!(scores_by_run(&parallel), scores_by_run(&s.out()));
    for run in ["nll-seed0", "neg_p-seed0"] {
        assert!(final_weights(&parallel, run) == final_weights(&s.out(), run), "{run}: resumed weights differ");
    }
}
