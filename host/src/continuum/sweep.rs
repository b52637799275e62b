//! `host sweep`: a grid of objectives × parameters × seeds (× models), each trained with [`train::train`]
//! and its final checkpoint evaluated under one or more protocols, summarised as mean ± std over seeds.
//!
//! The sweep file (`sweep.toml`; paths relative to the working directory, as for `host train`):
//!
//! ```toml
//! base = "configs/default.toml"     # a `host train` config; its [eval] section is dropped
//! out_dir = "runs/sweep"
//! seeds = [0, 1, 2]
//! models = ["models/a"]              # optional; default: the base config's [model] path
//! set = ["train.max_steps=200"]      # optional overrides of every run's config
//! rank_by = "greedy.accuracy"        # "<protocol>.<aggregate key>", higher is better
//!
//! [[objective]]
//! plugin = "general_family"
//! params = { alpha = [1.0, 10.0] }   # a list expands into a grid; a scalar is fixed
//! label = "-p^alpha"                 # optional
//!
//! [[eval]]
//! name = "greedy"
//! evaluator = "math"
//! max_new_tokens = 64
//! ```
//!
//! Everything that can be checked is checked by [`Plan::prepare`] before any training: the base config,
//! every plugin and parameter combination, every data file, every model's tokenizer against its
//! vocabulary, the seeds, and `rank_by` (its key is found by scoring one reference with the evaluator).
//!
//! Layout of `out_dir`: `runs/<name>/` is a run's training folder (checkpoints, metrics.jsonl), plus
//! `eval-<protocol>.jsonl` and, written last and atomically, `result.json`. A run with `result.json` is
//! skipped; one stopped during training resumes from its latest checkpoint; one stopped during evaluation
//! re-evaluates its final checkpoint. `run-record.json` says what the run was made with: a run folder
//! trained with another configuration is refused, one scored under other protocols is evaluated again.
//! `results.csv`, `results.md` and `results.svg` summarise all runs.
//!
//! How the runs are placed does not change what they make: one after another, `--jobs N` at once
//! ([`super::schedule`]), or one per task of a Slurm array ([`super::slurm`], `--run-index I`, then
//! `--collect`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use engine::device::DeviceSpec;
use engine::{Model, ModelConfig};
use plugin_api::{ParamValue, PluginKind};
use serde::{Deserialize, Serialize};

use super::run_record::{Reuse, RunRecord};
use super::schedule::Schedule;
use crate::config::RunConfig;
use crate::data::{self, Record, TextTokenizer};
use crate::eval::{self, EvalSettings};
use crate::plugins::params::{parse_literal, ParamSet};
use crate::plugins::{EvaluatorPlugin, LoadedPlugin, MixerPlugin, ObjectivePlugin, SearchPath};
use crate::report::bars::{write_bar_chart, Bar, BarChart};
use crate::report::document::markdown_table;
use crate::run_dir::{RunDir, STATE_FILE};
use crate::train::{self, TrainOptions};

/// Top-level keys of a run config: `--set` assignments under these go to every run's config; others
/// change the sweep file itself.
pub const RUN_SECTIONS: [&str; 6] = ["model", "data", "mixer", "optim", "train", "lora"];

/// The sweep file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// A `host train` config.
    pub base: PathBuf,
    pub out_dir: PathBuf,
    pub seeds: Vec<u64>,
    /// Model directories; default: the base config's `[model] path`.
    pub models: Option<Vec<PathBuf>>,
    /// `key=value` overrides of every run's config.
    #[serde(default)]
    pub set: Vec<String>,
    /// `<protocol>.<aggregate key>`; default: the first protocol's first aggregate key.
    pub rank_by: Option<String>,
    #[serde(default)]
    pub objective: Vec<ObjectiveEntry>,
    #[serde(default)]
    pub eval: Vec<ProtocolEntry>,
    /// What each task of `host sweep --slurm`'s job array asks for.
    #[serde(default)]
    pub slurm: super::slurm::SlurmSection,
}

/// `[[objective]]`: a plugin and its parameters, lists expanding into a grid.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveEntry {
    pub plugin: String,
    #[serde(default)]
    pub params: toml::Table,
    pub label: Option<String>,
}

/// `[[eval]]`: an evaluation protocol applied to every run's final checkpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolEntry {
    pub name: String,
    /// Default: the base config's `[data] eval`.
    pub data: Option<PathBuf>,
    pub evaluator: String,
    /// The evaluator plugin's parameters.
    #[serde(default)]
    pub params: toml::Table,
    #[serde(default = "crate::config::default_samples")]
    pub samples: usize,
    #[serde(default)]
    pub temperature: f64,
    #[serde(default = "crate::config::default_top_p")]
    pub top_p: f64,
    #[serde(default = "crate::config::default_max_new_tokens")]
    pub max_new_tokens: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub stop: Vec<String>,
    /// Evaluate on the first N examples only (0 = all).
    #[serde(default)]
    pub limit: usize,
    /// Prompts generated together.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_batch_size() -> usize {
    8
}

/// A sweep file read with its `--set` overrides applied.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    pub path: PathBuf,
    pub file: SweepFile,
    /// Overrides of every run's config: the file's `set`, then the command line's run-config keys.
    pub run_overrides: Vec<String>,
}

impl SweepSpec {
    /// Reads `path` strictly; `--set` keys under a run-config section ([`RUN_SECTIONS`]) override every
    /// run's config, other keys the sweep file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read sweep config {shown}"))?;
        let mut doc: toml::Table =
            text.parse().map_err(|e: toml::de::Error| anyhow!("{shown}: {}", one_line(&e.to_string())))?;
        let mut run_overrides = Vec::new();
        for assignment in overrides {
            let Some((key, _)) = assignment.split_once('=') else {
                bail!("--set expects key=value, got `{assignment}`");
            };
            let section = key.trim().split('.').next().unwrap_or_default();
            if RUN_SECTIONS.contains(&section) {
                run_overrides.push(assignment.clone());
            } else {
                set_key(&mut doc, assignment)?;
            }
        }
        let file: SweepFile = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow!("{shown}: {}", one_line(&e.to_string())))?;
        let mut all = file.set.clone();
        all.extend(run_overrides);
        Ok(Self { path: path.to_path_buf(), file, run_overrides: all })
    }
}

/// `a.b=value` sets key `b` of table `a` (created when missing); the value is a TOML literal or a bare
/// string.
fn set_key(doc: &mut toml::Table, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("--set expects key=value, got `{assignment}`");
    };
    let path: Vec<&str> = key.trim().split('.').collect();
    let (last, parents) = path.split_last().context("--set with an empty key")?;
    let mut table = doc;
    for part in parents {
        let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("--set {key}: `{part}` is not a table"),
        };
    }
    table.insert(last.to_string(), parse_literal(raw.trim()));
    Ok(())
}

/// One objective setting: a plugin with one value per parameter.
#[derive(Clone, Debug)]
pub struct Setting {
    /// The plugin as given (name or path).
    pub plugin: String,
    /// The plugin's own name.
    pub objective: String,
    pub description: String,
    pub params: Vec<(String, toml::Value)>,
    /// Parameters that vary within this setting's `[[objective]]` entry (shown after a label).
    pub varied: Vec<String>,
    pub label: Option<String>,
}

impl Setting {
    /// `alpha=10 side=top`.
    pub fn params_text(&self) -> String {
        self.params.iter().map(|(k, v)| format!("{k}={}", value_text(v))).collect::<Vec<_>>().join(" ")
    }

    /// The stem of run names: `general_family-alpha=10`.
    pub fn slug(&self) -> String {
        let mut parts = vec![self.objective.clone()];
        parts.extend(self.params.iter().map(|(k, v)| format!("{k}={}", value_text(v))));
        sanitize(&parts.join("-"))
    }

    /// How reports name it: the label (with the varied parameters), else `plugin params`.
    pub fn display(&self) -> String {
        match &self.label {
            Some(label) => {
                let varied: Vec<String> = self
                    .params
                    .iter()
                    .filter(|(k, _)| self.varied.contains(k))
                    .map(|(k, v)| format!("{k}={}", value_text(v)))
                    .collect();
                if varied.is_empty() {
                    label.clone()
                } else {
                    format!("{label} ({})", varied.join(" "))
                }
            }
            None => format!("{} {}", self.objective, self.params_text()).trim().to_string(),
        }
    }
}

/// `10.0` → `10`, `-0.5` → `-0.5`, strings bare.
pub fn value_text(value: &toml::Value) -> String {
    match value {
        toml::Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        toml::Value::Float(f) => format!("{f}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::String(s) => s.clone(),
        toml::Value::Boolean(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// Keeps names usable as folder names: letters, digits and `._=+-`; anything else becomes `_`.
fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || "._=+-".contains(c) { c } else { '_' }).collect()
}

/// Expands a parameter table: every list is a dimension of the grid, scalars are fixed. Keys in table
/// order, the first key varying slowest.
pub fn expand_grid(params: &toml::Table) -> Result<Vec<Vec<(String, toml::Value)>>> {
    let mut grid: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for (key, value) in params {
        let values = match value {
            toml::Value::Array(values) if values.is_empty() => bail!("params.{key} is an empty list"),
            toml::Value::Array(values) => values.clone(),
            scalar => vec![scalar.clone()],
        };
        grid = grid
            .into_iter()
            .flat_map(|combo| {
                values.iter().map(move |v| {
                    let mut next = combo.clone();
                    next.push((key.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    Ok(grid)
}

/// An evaluation protocol, loaded.
pub struct Protocol {
    pub name: String,
    pub evaluator_name: String,
    pub evaluator: EvaluatorPlugin,
    pub data: PathBuf,
    pub records: Vec<Record>,
    pub settings: EvalSettings,
    /// The evaluator's aggregate keys (found by scoring one reference).
    pub keys: Vec<String>,
    /// Everything that decides its scores, for a run's [`RunRecord`].
    pub record: serde_json::Value,
}

/// One run of the grid.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    pub name: String,
    pub setting: usize,
    pub seed: u64,
    pub model: usize,
}

/// A validated sweep: every check done, nothing written.
pub struct Plan {
    pub source: PathBuf,
    pub out_dir: PathBuf,
    pub base_path: PathBuf,
    /// The base config with the overrides applied and `[eval]` dropped.
    pub base: RunConfig,
    pub models: Vec<PathBuf>,
    pub seeds: Vec<u64>,
    /// The training files and their records.
    pub train_data: Vec<(PathBuf, Vec<Record>)>,
    pub protocols: Vec<Protocol>,
    /// `<protocol>.<key>`.
    pub rank_by: String,
    pub settings: Vec<Setting>,
    pub runs: Vec<PlannedRun>,
}

impl Plan {
    /// Checks everything but the objectives; then the file's `[[objective]]` entries if there are any.
    pub fn prepare(spec: &SweepSpec, search: &SearchPath) -> Result<Self> {
        let shown = spec.path.display().to_string();
        let file = &spec.file;
        let mut base = RunConfig::load(&file.base, &spec.run_overrides)
            .with_context(|| format!("{shown}: base = {}", file.base.display()))?;
        base.eval = None;

        if file.seeds.is_empty() {
            bail!("{shown}: seeds is empty (give at least one seed)");
        }
        for (i, seed) in file.seeds.iter().enumerate() {
            if file.seeds[..i].contains(seed) {
                bail!("{shown}: seeds lists {seed} twice");
            }
        }

        let models = match &file.models {
            Some(models) if models.is_empty() => bail!("{shown}: models is empty (leave it out to use the base model)"),
            Some(models) => models.clone(),
            None => vec![base.model.path.clone()],
        };
        for (i, model) in models.iter().enumerate() {
            let what = match &file.models {
                Some(_) => format!("{shown}: models[{i}]"),
                None => format!("{shown}: the base config's [model] path"),
            };
            check_model(model).with_context(|| what)?;
        }

        let mut train_data = Vec::new();
        for path in base.data.train.files() {
            let records = data::read_records(&path, &base.data.prompt_key, &base.data.response_key)
                .with_context(|| format!("{shown}: base [data] train"))?;
            train_data.push((path, records));
        }
        check_mixer(&base, search).with_context(|| format!("{shown}: base [mixer]"))?;

        if file.eval.is_empty() {
            bail!("{shown}: no [[eval]] protocol (each run's final checkpoint needs at least one evaluation)");
        }
        let mut protocols: Vec<Protocol> = Vec::new();
        for entry in &file.eval {
            let origin = format!("{shown}: [[eval]] `{}`", entry.name);
            if entry.name.is_empty() || !entry.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                bail!("{origin}: a protocol name is letters, digits, `_` and `-`");
            }
            if protocols.iter().any(|p| p.name == entry.name) {
                bail!("{origin}: two protocols have this name");
            }
            protocols.push(load_protocol(entry, &base, search).with_context(|| origin.clone())?);
        }

        let rank_by = match &file.rank_by {
            Some(rank_by) => {
                let Some((protocol, key)) = rank_by.split_once('.') else {
                    bail!("{shown}: rank_by `{rank_by}` is not `<protocol>.<key>`");
                };
                let Some(p) = protocols.iter().find(|p| p.name == protocol) else {
                    let names: Vec<&str> = protocols.iter().map(|p| p.name.as_str()).collect();
                    bail!("{shown}: rank_by `{rank_by}`: no protocol `{protocol}` (protocols: {})", names.join(", "));
                };
                if !p.keys.iter().any(|k| k == key) {
                    bail!(
                        "{shown}: rank_by `{rank_by}`: evaluator `{}` reports no `{key}` (it reports: {})",
                        p.evaluator_name,
                        p.keys.join(", ")
                    );
                }
                rank_by.clone()
            }
            None => {
                let p = &protocols[0];
                let key = p.keys.first().with_context(|| {
                    format!(
                        "{shown}: [[eval]] `{}`: evaluator `{}` reports no aggregate score",
                        p.name, p.evaluator_name
                    )
                })?;
                format!("{}.{key}", p.name)
            }
        };

        let mut plan = Self {
            source: spec.path.clone(),
            out_dir: file.out_dir.clone(),
            base_path: file.base.clone(),
            base,
            models,
            seeds: file.seeds.clone(),
            train_data,
            protocols,
            rank_by,
            settings: Vec::new(),
            runs: Vec::new(),
        };
        if !file.objective.is_empty() {
            plan.set_objectives(&file.objective, &format!("{shown}: [[objective]]"), search)?;
        }
        Ok(plan)
    }

    /// Loads and validates every parameter combination of `entries`, and lays out the runs.
    pub fn set_objectives(&mut self, entries: &[ObjectiveEntry], origin: &str, search: &SearchPath) -> Result<()> {
        let mut settings: Vec<Setting> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("{origin} {} (`{}`)", i + 1, entry.plugin);
            let plugin =
                LoadedPlugin::load(search, &entry.plugin, PluginKind::Objective).with_context(|| at.clone())?;
            let grid = expand_grid(&entry.params).with_context(|| at.clone())?;
            let varied: Vec<String> =
                entry.params.iter().filter(|(_, v)| v.is_array()).map(|(k, _)| k.clone()).collect();
            for combo in grid {
                let setting = Setting {
                    plugin: entry.plugin.clone(),
                    objective: plugin.name().to_string(),
                    description: plugin.description().to_string(),
                    params: combo.clone(),
                    varied: varied.clone(),
                    label: entry.label.clone(),
                };
                let here = format!("{at} params {}", setting.params_text());
                check_objective(&plugin, &combo, &here)?;
                if let Some(other) = settings.iter().find(|s| s.slug() == setting.slug()) {
                    bail!("{here}: the same setting as `{}` earlier in the list", other.display());
                }
                settings.push(setting);
            }
        }
        if settings.is_empty() {
            bail!("{origin}: no objectives to sweep");
        }
        let several_models = self.models.len() > 1;
        let mut runs = Vec::new();
        for model in 0..self.models.len() {
            for (setting, s) in settings.iter().enumerate() {
                for &seed in &self.seeds {
                    let mut name = format!("{}-seed{seed}", s.slug());
                    if several_models {
                        name += &format!("-m{model}");
                    }
                    runs.push(PlannedRun { name, setting, seed, model });
                }
            }
        }
        self.settings = settings;
        self.runs = runs;
        Ok(())
    }

    /// The run's config: the base with this run's model, objective, seed and folder.
    pub fn run_config(&self, run: &PlannedRun) -> Result<RunConfig> {
        let setting = &self.settings[run.setting];
        let mut config = self.base.clone();
        config.model.path = self.models[run.model].clone();
        config.objective.plugin = setting.plugin.clone();
        config.objective.params = setting.params.iter().cloned().collect();
        config.train.seed = run.seed;
        config.train.out_dir = self.run_dir(run);
        config.eval = None;
        config.validate()?;
        Ok(config)
    }

    pub fn run_dir(&self, run: &PlannedRun) -> PathBuf {
        self.out_dir.join("runs").join(&run.name)
    }

    /// What decides a run's checkpoints and scores, kept in its folder.
    pub fn run_record(&self, run: &PlannedRun) -> Result<RunRecord> {
        let protocols = self.protocols.iter().map(|p| p.record.clone()).collect();
        RunRecord::new(&self.run_config(run)?, serde_json::Value::Array(protocols))
    }

    /// The metric columns: per protocol, its aggregate keys.
    pub fn columns(&self) -> Vec<String> {
        self.protocols.iter().flat_map(|p| p.keys.iter().map(move |k| format!("{}.{k}", p.name))).collect()
    }
}

/// A model directory whose config reads and whose tokenizer fits its vocabulary.
fn check_model(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("{}: no such model directory", dir.display());
    }
    let config = ModelConfig::from_hf_dir(dir)?;
    TextTokenizer::from_model_dir(dir, &config)?;
    Ok(())
}

fn check_mixer(base: &RunConfig, search: &SearchPath) -> Result<()> {
    let plugin = LoadedPlugin::load(search, &base.mixer.plugin, PluginKind::Mixer)?;
    let given: Vec<(String, toml::Value)> = base.mixer.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let params = ParamSet::from_toml(plugin.params(), &given, "[mixer.params]")?;
    MixerPlugin::create(plugin, &params)?;
    Ok(())
}

/// Validates one parameter combination against the plugin's schema and constructor; `percentile = K`
/// (which training turns into `q` from the base model) is checked for range and stood in for by a `q`.
fn check_objective(plugin: &LoadedPlugin, combo: &[(String, toml::Value)], origin: &str) -> Result<()> {
    let mut params = ParamSet::from_toml(plugin.params(), combo, origin)?;
    if let (Some(ParamValue::Float(k)), None) = (params.get("percentile").cloned(), params.get("q")) {
        if !(0.0..=100.0).contains(&k) {
            bail!("{origin}: percentile must be in [0, 100], got {k}");
        }
        params.set("q", ParamValue::Float(0.5));
        params.remove("percentile");
    }
    ObjectivePlugin::create(plugin.clone(), params).with_context(|| origin.to_string())?;
    Ok(())
}

fn load_protocol(entry: &ProtocolEntry, base: &RunConfig, search: &SearchPath) -> Result<Protocol> {
    let settings = EvalSettings {
        samples: entry.samples,
        temperature: entry.temperature,
        top_p: entry.top_p,
        max_new_tokens: entry.max_new_tokens,
        seed: entry.seed,
        stop: entry.stop.clone(),
        batch_size: entry.batch_size,
        chat_template: base.data.chat_template,
    };
    settings.validate()?;
    let plugin = LoadedPlugin::load(search, &entry.evaluator, PluginKind::Evaluator)?;
    let evaluator_name = plugin.name().to_string();
    let given: Vec<(String, toml::Value)> = entry.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let params = ParamSet::from_toml(plugin.params(), &given, "params")?;
    let evaluator = EvaluatorPlugin::create(plugin, &params)?;
    let data = match (&entry.data, &base.data.eval) {
        (Some(path), _) | (None, Some(path)) => path.clone(),
        (None, None) => bail!("needs `data` (the base config has no [data] eval)"),
    };
    let mut records = data::read_records(&data, &base.data.prompt_key, &base.data.response_key)?;
    if entry.limit > 0 {
        records.truncate(entry.limit);
    }
    // The aggregate's keys, from the evaluator scoring the first reference against itself.
    let first = &records[0];
    let generations = vec![first.response.clone(); settings.samples];
    let metadata = if first.row.is_object() { first.row.to_string() } else { "{}".to_string() };
    let scores = evaluator.score(&first.prompt, &generations, &first.response, &metadata)?;
    let keys = evaluator.aggregate(&[scores])?.into_iter().map(|(k, _)| k).collect();
    let record = serde_json::json!({
        "name": entry.name,
        "evaluator": evaluator_name,
        "params": serde_json::to_value(&entry.params)?,
        "data": data,
        "examples": records.len(),
        "settings": serde_json::to_value(&settings)?,
    });
    Ok(Protocol { name: entry.name.clone(), evaluator_name, evaluator, data, records, settings, keys, record })
}

/// Training figures of a run, from its metrics.jsonl.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainStats {
    pub steps: u64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    /// Tokens over the summed step times.
    pub tokens_per_s: f64,
    /// The step this invocation resumed training from, if it did.
    pub resumed_from_step: Option<u64>,
}

/// `runs/<name>/result.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    pub name: String,
    /// The objective plugin's name.
    pub objective: String,
    /// The plugin as given in the sweep file.
    pub plugin: String,
    /// `alpha=10 side=top`.
    pub params: String,
    pub param_values: BTreeMap<String, serde_json::Value>,
    pub label: Option<String>,
    pub seed: u64,
    pub model: String,
    /// Per protocol, the evaluator's aggregate.
    pub scores: BTreeMap<String, BTreeMap<String, f64>>,
    pub train: TrainStats,
    /// Seconds this run took in the invocation that finished it (training, if any, and evaluation).
    pub wall_seconds: f64,
    pub checkpoint: String,
}

impl RunResult {
    /// A `<protocol>.<key>` score.
    pub fn metric(&self, column: &str) -> Option<f64> {
        let (protocol, key) = column.split_once('.')?;
        self.scores.get(protocol)?.get(key).copied()
    }
}

/// Mean, sample standard deviation (n - 1; none for one value) and count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub std: Option<f64>,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
        Some(Self { mean, std, n })
    }

    /// `0.4500 ± 0.0707`, or `0.4500` for a single value.
    pub fn text(&self) -> String {
        match self.std {
            Some(std) => format!("{:.4} ± {std:.4}", self.mean),
            None => format!("{:.4}", self.mean),
        }
    }
}

/// One row of the summary: a setting (on one model) over its seeds.
#[derive(Clone, Debug)]
pub struct Row {
    pub setting: usize,
    pub model: usize,
    pub display: String,
    /// Runs with a result.
    pub n: usize,
    /// One per column.
    pub stats: Vec<Option<Stat>>,
}

/// What a sweep produced.
pub struct Outcome {
    pub columns: Vec<String>,
    pub rank_column: usize,
    /// Finished runs: the index into the plan's runs and the result.
    pub results: Vec<(usize, RunResult)>,
    pub rows: Vec<Row>,
    /// Runs that failed, with their error.
    pub failed: Vec<(String, String)>,
    pub several_models: bool,
    pub csv: PathBuf,
    pub markdown: PathBuf,
    pub svg: PathBuf,
}

impl Outcome {
    /// Row indices best first by the rank metric's mean (rows without it last; ties keep grid order).
    pub fn ranking(&self) -> Vec<usize> {
        let key = |i: usize| self.rows[i].stats[self.rank_column].map_or(f64::NEG_INFINITY, |s| s.mean);
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
        order
    }

    /// The Markdown table: setting, (model,) n, then mean ± std of every metric.
    pub fn markdown_table(&self, models: &[PathBuf]) -> String {
        let mut headers = vec!["setting".to_string()];
        if self.several_models {
            headers.push("model".into());
        }
        headers.push("n".into());
        headers.extend(self.columns.iter().cloned());
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                let mut cells = vec![row.display.clone()];
                if self.several_models {
                    cells.push(models[row.model].display().to_string());
                }
                cells.push(row.n.to_string());
                cells.extend(row.stats.iter().map(|s| s.map_or("-".to_string(), |s| s.text())));
                cells
            })
            .collect();
        markdown_table(&headers, &rows)
    }
}

/// Runs every planned run that has no result yet, placed by `schedule`, then writes results.csv,
/// results.md and results.svg. Failed runs are reported in the outcome; the others go on.
pub fn execute(plan: &Plan, search: &SearchPath, schedule: &Schedule) -> Result<Outcome> {
    if plan.runs.is_empty() {
        bail!("{}: no objectives to sweep", plan.source.display());
    }
    let runs_dir = plan.out_dir.join("runs");
    std::fs::create_dir_all(&runs_dir).with_context(|| format!("cannot create {}", runs_dir.display()))?;
    let concurrent = schedule.jobs > 1 && plan.runs.len() > 1;
    let attempts = schedule.run_all(
        plan.runs.len(),
        |attempt| matches!(attempt, Attempt::Stopped(_)),
        |index, device| attempt(plan, index, search, device, concurrent),
    );
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for (index, attempt) in attempts {
        match attempt {
            Attempt::Done(result) => results.push((index, *result)),
            Attempt::Failed(message) => failed.push((plan.runs[index].name.clone(), message)),
            // A signal stopped training (the checkpoints are saved): stop the sweep too.
            Attempt::Stopped(e) => return Err(e),
        }
    }
    if let Some(signal) = crate::stop::pending() {
        let left = plan.runs.len() - results.len() - failed.len();
        if left > 0 {
            return Err(crate::stop::stopped(format!(
                "stopped by {signal}: {left} of {} runs not started; run the sweep again to continue",
                plan.runs.len()
            )));
        }
    }
    let outcome = summarize(plan, results, failed);
    write_summaries(plan, &outcome)?;
    Ok(outcome)
}

/// Runs (or finds the result of) the one run at `index` of the grid: what each task of a Slurm array
/// does (`host sweep --run-index I`). Writes no summary.
pub fn execute_one(plan: &Plan, index: usize, search: &SearchPath) -> Result<RunResult> {
    if index >= plan.runs.len() {
        bail!(
            "--run-index {index}: {} has {} runs (0 to {})",
            plan.source.display(),
            plan.runs.len(),
            plan.runs.len() - 1
        );
    }
    match attempt(plan, index, search, None, false) {
        Attempt::Done(result) => Ok(*result),
        Attempt::Failed(message) => Err(crate::Failure::check(format!("{}: {message}", plan.runs[index].name))),
        Attempt::Stopped(e) => Err(e),
    }
}

/// Summarises the runs that have a result made with this plan (`host sweep --collect`), training
/// nothing; the others are listed as failed ("no result yet").
pub fn collect(plan: &Plan) -> Result<Outcome> {
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for (index, run) in plan.runs.iter().enumerate() {
        let run_dir = plan.run_dir(run);
        let found = plan.run_record(run).and_then(|record| match record.check(&run_dir)? {
            Reuse::Everything if run_dir.join("result.json").is_file() => {
                read_result(&run_dir.join("result.json")).map(Some)
            }
            Reuse::TrainingOnly => bail!("evaluated under other protocols; run it again"),
            _ => Ok(None),
        });
        match found {
            Ok(Some(result)) => results.push((index, result)),
            Ok(None) => failed.push((run.name.clone(), "no result yet".to_string())),
            Err(e) => failed.push((run.name.clone(), crate::one_line(&e))),
        }
    }
    let outcome = summarize(plan, results, failed);
    write_summaries(plan, &outcome)?;
    Ok(outcome)
}

/// How one run ended.
enum Attempt {
    Done(Box<RunResult>),
    Failed(String),
    /// A signal stopped its training after a checkpoint.
    Stopped(anyhow::Error),
}

/// Runs the run at `index` unless its folder holds its result; `device` overrides its config's.
fn attempt(plan: &Plan, index: usize, search: &SearchPath, device: Option<DeviceSpec>, concurrent: bool) -> Attempt {
    let run = &plan.runs[index];
    let tag = format!("[{}/{}] {}", index + 1, plan.runs.len(), run.name);
    let run_dir = plan.run_dir(run);
    let result_path = run_dir.join("result.json");
    let reuse = plan.run_record(run).and_then(|record| {
        let reuse = record.check(&run_dir)?;
        if reuse != Reuse::Everything {
            record.save(&run_dir)?;
        }
        Ok(reuse)
    });
    let reuse = match reuse {
        Ok(reuse) => reuse,
        Err(e) => {
            let message = crate::one_line(&e);
            println!("{tag}: refused: {message}");
            return Attempt::Failed(message);
        }
    };
    if reuse == Reuse::TrainingOnly {
        println!("{tag}: the evaluation protocols changed; evaluating again");
    }
    if reuse == Reuse::Everything && result_path.is_file() {
        match read_result(&result_path) {
            Ok(result) => {
                println!("skipping {}: done", run.name);
                return Attempt::Done(Box::new(result));
            }
            Err(e) => println!("{tag}: {}; running it again", crate::one_line(&e)),
        }
    }
    match run_one(plan, run, search, &tag, device, concurrent) {
        Ok(result) => {
            let score = result.metric(&plan.rank_by).map_or("-".to_string(), |v| format!("{v:.4}"));
            println!("{tag}: done in {:.1} s ({} {score})", result.wall_seconds, plan.rank_by);
            Attempt::Done(Box::new(result))
        }
        Err(e) if crate::stop::is_stop(&e) => Attempt::Stopped(e),
        Err(e) => {
            let message = crate::one_line(&e);
            println!("{tag}: failed: {message}");
            Attempt::Failed(message)
        }
    }
}

fn read_result(path: &Path) -> Result<RunResult> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{}: unreadable ({e})", path.display()))
}

/// Trains (or resumes, or finds the final checkpoint of) one run, evaluates it, writes result.json.
fn run_one(
    plan: &Plan,
    run: &PlannedRun,
    search: &SearchPath,
    tag: &str,
    device: Option<DeviceSpec>,
    concurrent: bool,
) -> Result<RunResult> {
    let started = Instant::now();
    let mut config = plan.run_config(run)?;
    if let Some(device) = device {
        config.model.device = device.to_string();
    }
    let run_dir = plan.run_dir(run);
    let folder = RunDir::new(&run_dir);
    let final_dir = folder.final_dir();
    let mut resumed_from_step = None;
    if final_dir.join(STATE_FILE).is_file() {
        println!("{tag}: final checkpoint found; evaluating it");
    } else {
        let from = train::latest_checkpoint(&folder)?;
        match &from {
            Some(checkpoint) => println!("{tag}: training (resuming from {}) ...", checkpoint.display()),
            None => println!("{tag}: training ..."),
        }
        // Resume whatever an earlier attempt left (a fresh folder has nothing to resume, and says nothing).
        let resume = !folder.contents().is_empty();
        let options =
            TrainOptions { objective_override: None, search, resume, overwrite: false, tag: concurrent.then_some(tag) };
        let summary = train::train(&config, &options)?;
        resumed_from_step = summary.resumed_from;
    }
    let mut train_stats = train_stats(&folder.metrics())?;
    train_stats.resumed_from_step = resumed_from_step;

    // Evaluated where it trained.
    let model = Model::load(&final_dir, &engine::open_device(&config.model.device)?)?;
    let tokenizer = crate::model_source::tokenizer(&model)?;
    let mut scores = BTreeMap::new();
    for protocol in &plan.protocols {
        println!("{tag}: evaluating `{}` on {} examples ...", protocol.name, protocol.records.len());
        let report = eval::evaluate(&model, &tokenizer, &protocol.records, &protocol.evaluator, &protocol.settings)
            .with_context(|| format!("evaluation `{}`", protocol.name))?;
        let out = run_dir.join(format!("eval-{}.jsonl", protocol.name));
        eval::write_atomic(&out, &report.to_jsonl())?;
        let mut summary = report.summary(&protocol.settings);
        summary["evaluator"] = serde_json::json!(protocol.evaluator_name);
        summary["data"] = serde_json::json!(protocol.data.display().to_string());
        eval::write_atomic(&eval::summary_path(&out), &format!("{summary:#}\n"))?;
        scores.insert(protocol.name.clone(), report.aggregate.into_iter().collect::<BTreeMap<_, _>>());
    }

    let setting = &plan.settings[run.setting];
    let result = RunResult {
        name: run.name.clone(),
        objective: setting.objective.clone(),
        plugin: setting.plugin.clone(),
        params: setting.params_text(),
        param_values: setting
            .params
            .iter()
            .map(|(k, v)| Ok((k.clone(), serde_json::to_value(v)?)))
            .collect::<Result<_>>()?,
        label: setting.label.clone(),
        seed: run.seed,
        model: plan.models[run.model].display().to_string(),
        scores,
        train: train_stats,
        wall_seconds: started.elapsed().as_secs_f64(),
        checkpoint: final_dir.display().to_string(),
    };
    eval::write_atomic(&run_dir.join("result.json"), &format!("{:#}\n", serde_json::to_value(&result)?))?;
    Ok(result)
}

/// First and last loss, steps and throughput from a metrics.jsonl.
fn train_stats(path: &Path) -> Result<TrainStats> {
    let mut stats = TrainStats::default();
    let (mut tokens, mut seconds) = (0.0f64, 0.0f64);
    for value in train::read_metrics(path)? {
        stats.steps = value["step"].as_u64().unwrap_or(stats.steps);
        if let Some(loss) = value["loss"].as_f64() {
            stats.first_loss = stats.first_loss.or(Some(loss));
            stats.last_loss = Some(loss);
        }
        if let (Some(t), Some(rate)) = (value["tokens"].as_f64(), value["tokens_per_s"].as_f64()) {
            if rate > 0.0 {
                tokens += t;
                seconds += t / rate;
            }
        }
    }
    stats.tokens_per_s = if seconds > 0.0 { tokens / seconds } else { 0.0 };
    Ok(stats)
}

/// Groups results by setting and model, in grid order.
fn summarize(plan: &Plan, results: Vec<(usize, RunResult)>, failed: Vec<(String, String)>) -> Outcome {
    let mut columns = plan.columns();
    for (_, result) in &results {
        for (protocol, scores) in &result.scores {
            for key in scores.keys() {
                let column = format!("{protocol}.{key}");
                if !columns.contains(&column) {
                    columns.push(column);
                }
            }
        }
    }
    let rank_column = columns.iter().position(|c| *c == plan.rank_by).unwrap_or(0);
    let several_models = plan.models.len() > 1;
    let mut rows = Vec::new();
    for model in 0..plan.models.len() {
        for (setting, s) in plan.settings.iter().enumerate() {
            let mine: Vec<&RunResult> = results
                .iter()
                .filter(|(i, _)| plan.runs[*i].setting == setting && plan.runs[*i].model == model)
                .map(|(_, r)| r)
                .collect();
            let stats = columns
                .iter()
                .map(|c| Stat::of(&mine.iter().filter_map(|r| r.metric(c)).collect::<Vec<_>>()))
                .collect();
            let display = if several_models { format!("{} [m{model}]", s.display()) } else { s.display() };
            rows.push(Row { setting, model, display, n: mine.len(), stats });
        }
    }
    Outcome {
        columns,
        rank_column,
        results,
        rows,
        failed,
        several_models,
        csv: plan.out_dir.join("results.csv"),
        markdown: plan.out_dir.join("results.md"),
        svg: plan.out_dir.join("results.svg"),
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn write_summaries(plan: &Plan, outcome: &Outcome) -> Result<()> {
    let mut csv = ["name", "objective", "params", "model", "seed"].map(String::from).to_vec();
    csv.extend(outcome.columns.iter().cloned());
    let mut text = csv.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",") + "\n";
    for (_, result) in &outcome.results {
        let mut fields =
            vec![result.name.clone(), result.objective.clone(), result.params.clone(), result.model.clone()];
        fields.push(result.seed.to_string());
        fields.extend(outcome.columns.iter().map(|c| result.metric(c).map_or(String::new(), |v| v.to_string())));
        text += &(fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",") + "\n");
    }
    eval::write_atomic(&outcome.csv, &text)?;

    let ranking = outcome.ranking();
    let mut md = format!(
        "# Sweep results: {}\n\nMean ± sample standard deviation (n - 1) over seeds; n = runs with a result. Ranked by `{}` (higher is better).\n\n",
        plan.source.display(),
        plan.rank_by
    );
    md += &outcome.markdown_table(&plan.models);
    if let Some(&best) = ranking.first() {
        md += &format!("\nBest by `{}`: {}\n", plan.rank_by, outcome.rows[best].display);
    }
    if !outcome.failed.is_empty() {
        md += &format!(
            "\nFailed runs: {}\n",
            outcome.failed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    eval::write_atomic(&outcome.markdown, &md)?;

    let bars: Vec<Bar> = outcome
        .rows
        .iter()
        .map(|row| {
            let stat = row.stats[outcome.rank_column];
            Bar { label: row.display.clone(), mean: stat.map_or(f64::NAN, |s| s.mean), std: stat.and_then(|s| s.std) }
        })
        .collect();
    let title = format!("{}: mean ± 1 std over seeds", plan.rank_by);
    let highlight = ranking.first().copied().filter(|&i| outcome.rows[i].stats[outcome.rank_column].is_some());
    write_bar_chart(&outcome.svg, &BarChart { title: &title, x_label: &plan.rank_by, bars: &bars, highlight })
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn grids_expand_lists_and_keep_scalars() {
        let grid = expand_grid(&table("percentile = [10, 50]\nside = [\"top\", \"bottom\"]\nx = 1.5")).unwrap();
        let texts: Vec<String> = grid
            .iter()
            .map(|combo| combo.iter().map(|(k, v)| format!("{k}={}", value_text(v))).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            texts,
            [
                "percentile=10 side=top x=1.5",
                "percentile=10 side=bottom x=1.5",
                "percentile=50 side=top x=1.5",
                "percentile=50 side=bottom x=1.5"
            ]
        );
        assert_eq!(expand_grid(&toml::Table::new()).unwrap(), vec![Vec::new()]);
        assert!(expand_grid(&table("alpha = []")).is_err());
    }

    #[test]
    fn names_are_readable_and_safe() {
        let setting = Setting {
            plugin: "plugins/x/libgeneral_family.so".into(),
            objective: "general_family".into(),
            description: String::new(),
            params: vec![("alpha".into(), toml::Value::Float(10.0))],
            varied: vec!["alpha".into()],
            label: None,
        };
        assert_eq!(setting.slug(), "general_family-alpha=10");
        assert_eq!(setting.display(), "general_family alpha=10");
        let labelled = Setting { label: Some("-p^a".into()), ..setting.clone() };
        assert_eq!(labelled.display(), "-p^a (alpha=10)");
        let odd = Setting { params: vec![("side".into(), toml::Value::String("a/b c".into()))], ..setting };
        assert_eq!(odd.slug(), "general_family-side=a_b_c");
        assert_eq!(value_text(&toml::Value::Float(-0.5)), "-0.5");
    }

    #[test]
    fn sample_standard_deviation() {
        let s = Stat::of(&[0.4, 0.5]).unwrap();
        assert!((s.mean - 0.45).abs() < 1e-12);
        assert!((s.std.unwrap() - 0.070_710_678).abs() < 1e-8);
        assert_eq!(s.text(), "0.4500 ± 0.0707");
        assert_eq!(Stat::of(&[0.3]).unwrap().std, None);
        assert!(Stat::of(&[]).is_none());
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("alpha=10 side=top"), "alpha=10 side=top");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn set_routes_run_keys_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.toml");
        std::fs::write(&path, "base = \"b.toml\"\nout_dir = \"o\"\nseeds = [0]\nset = [\"optim.lr=1e-3\"]\n").unwrap();
        let spec = SweepSpec::load(
            &path,
            &["train.max_steps=2".into(), "seeds=[1, 2]".into(), "out_dir=x".into(), "lora.r=4".into()],
        )
        .unwrap();
        assert_eq!(spec.file.seeds, vec![1, 2]);
        assert_eq!(spec.file.out_dir, PathBuf::from("x"));
        assert_eq!(spec.run_overrides, ["optim.lr=1e-3", "train.max_steps=2", "lora.r=4"]);
        let err = SweepSpec::load(&path, &["bogus=1".into()]).unwrap_err().to_string();
        assert!(err.contains("sweep.toml") && err.contains("unknown field `bogus`"), "{err}");
    }
}
