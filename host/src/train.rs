//! The SFT training loop, top to bottom in one place.
//!
//! Per optimizer step: the batch's examples are cut into micro-batches; each goes forward to per-token
//! log-probs, the objective plugin turns the loss positions' log-probs into per-token values, weights and
//! inclusion flags, and the host back-propagates the weighted NLL `Σ m·sg(s)·(-log p) / Σ m` (the token
//! mean over included positions), averaged over micro-batches. Then clipping by global norm, AdamW,
//! a `metrics.jsonl` line, and checkpoints (atomic, with optimizer and data-cursor state for resume).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use engine::device::PeakMemory;
use engine::{open_device, AdamW, AdamWConfig, MemoryEstimate, MemoryMonitor, Model};
use plugin_api::{ParamValue, PluginKind};
use serde::{Deserialize, Serialize};

use crate::config::{EvalSection, LrScheduler, RunConfig};
use crate::data::{self, Batch, Dataset, Example, TextTokenizer};
use crate::eval::{evaluate, EvalSettings};
use crate::fingerprint::{self, first_difference};
use crate::plugins::objective::TokenStats;
use crate::plugins::params::ParamSet;
use crate::plugins::{EvaluatorPlugin, LoadedPlugin, MixerPlugin, ObjectivePlugin, SearchPath};
use crate::run_dir::{RunDir, STATE_FILE};
use crate::sampler::{Sampler, SetCursor};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub steps: u64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub tokens_per_second: f64,
    pub final_checkpoint: PathBuf,
    pub resumed_from: Option<u64>,
    /// Peak memory: of the CUDA device (polled after every micro-batch and step), else the process's
    /// peak resident set.
    pub peak_memory: PeakMemory,
}

/// Where training stands; saved in every checkpoint so a run resumes exactly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    pub total_steps: u64,
    /// The training sets by name, and where each one's reading stands.
    pub sets: Vec<String>,
    pub cursors: Vec<SetCursor>,
    pub seed: u64,
    pub batch_size: usize,
    pub objective: String,
    /// Every setting that changes the trajectory, and a digest of each training file (see
    /// [`trajectory_fingerprint`]); absent in checkpoints of older hosts.
    #[serde(default)]
    pub fingerprint: serde_json::Value,
}

/// Options of `host train` beyond the config file.
pub struct TrainOptions<'a> {
    pub objective_override: Option<&'a str>,
    pub search: &'a SearchPath,
    /// Continue from the latest checkpoint in `out_dir` if there is one.
    pub resume: bool,
    /// Start over in an `out_dir` that holds a run, removing that run's files.
    pub overwrite: bool,
    /// Several runs train at once (`host sweep --jobs N`): every progress line starts with this tag, and
    /// no progress bar is drawn.
    pub tag: Option<&'a str>,
}

pub fn train(config: &RunConfig, options: &TrainOptions<'_>) -> Result<Summary> {
    let device = open_device(&config.model.device)?;
    let dtype = engine::parse_dtype(&config.model.dtype)?;
    let run_dir = RunDir::new(&config.train.out_dir);
    let out_dir = run_dir.root();

    // The folder: this process's alone while it trains, and a run there is continued or replaced only
    // when asked (replaced once everything below has loaded, so a bad config loses nothing).
    let held = run_dir.lock()?;
    let found = run_dir.contents();
    let replace = !options.resume && !found.is_empty();
    if replace && !options.overwrite {
        bail!(
            "{} already holds a run ({}); continue it with --resume, or start over with --overwrite",
            out_dir.display(),
            found.join(", ")
        );
    }
    let stale = run_dir.remove_stale_temporaries(&held)?;
    if stale > 0 {
        tracing::info!("removed {stale} half-written checkpoint folder(s) a stopped run left in {}", out_dir.display());
    }

    // Model, tokenizer and data.
    let model_dir = &config.model.path;
    if !model_dir.is_dir() {
        bail!("[model] path {}: no such model directory", model_dir.display());
    }
    let mut model = Model::load_with_dtype(model_dir, &device, dtype)?;
    let tokenizer = TextTokenizer::from_model_dir(model_dir, model.config())?;
    let sets = load_training_data(config, &tokenizer)?;
    let n: usize = sets.iter().map(|s| s.examples.len()).sum();
    let batch_size = config.train.batch_size;
    let micro = config.micro_batch_size();
    let total_steps = match (config.train.max_steps, config.train.epochs) {
        (Some(steps), _) => steps,
        (None, Some(epochs)) => {
            let steps = ((epochs * n as f64) / batch_size as f64).ceil().max(1.0);
            if steps > MAX_TOTAL_STEPS as f64 {
                bail!("[train] epochs = {epochs} over {n} examples is {steps:.3e} steps, more than {MAX_TOTAL_STEPS}");
            }
            steps as u64
        }
        (None, None) => bail!("[train] give max_steps or epochs"),
    };
    if total_steps > MAX_TOTAL_STEPS {
        bail!("[train] max_steps = {total_steps} is more than {MAX_TOTAL_STEPS}");
    }

    // The objective, with a `percentile` turned into `q` from the base model's token probabilities.
    // Both need the starting model's log-probs on every training target, scored once, here, before the
    // model moves (and before a resume replaces it: the base is always `[model] path`).
    let plugin_name = options.objective_override.unwrap_or(&config.objective.plugin);
    let mut base = BaseLogp::new(&model, &sets, tokenizer.eos_id);
    let objective = load_objective(config, plugin_name, options.search, &mut base)?;
    let needs = objective.needs();
    let base_logp = match needs.base_logp {
        true => Some(base.into_by_set()?),
        false => None,
    };
    let mixer = load_mixer(config, options.search)?;
    let evaluation =
        config.eval.as_ref().map(|section| Evaluation::load(config, section, options.search)).transpose()?;
    let set_infos: Vec<plugin_api::TrainingSet> = sets
        .iter()
        .map(|set| plugin_api::TrainingSet {
            name: set.name.as_str().into(),
            size: set.examples.len() as u64,
            domain: abi_stable::std_types::ROption::RNone,
            mean_confidence: abi_stable::std_types::ROption::RNone,
        })
        .collect();

    let adamw = AdamWConfig {
        lr: config.optim.lr,
        beta1: config.optim.betas[0],
        beta2: config.optim.betas[1],
        eps: config.optim.eps,
        weight_decay: config.optim.weight_decay,
    };
    // LoRA: a fresh adapter on the frozen base (its B is zero: the model's outputs, and the base
    // log-probs scored above, are unchanged by it).
    let lora = config.lora.as_ref().map(|section| section.to_engine()).transpose()?;
    if let Some(lora) = &lora {
        model.add_lora(lora, config.train.seed).map_err(|e| anyhow!("[lora] {e}"))?;
    }
    let mut optimizer = AdamW::new(adamw);
    let mut state = TrainerState {
        step: 0,
        total_steps,
        sets: sets.iter().map(|s| s.name.clone()).collect(),
        cursors: vec![SetCursor::default(); sets.len()],
        seed: config.train.seed,
        batch_size,
        objective: objective.name().to_string(),
        fingerprint: trajectory_fingerprint(config, objective.name())?,
    };

    if replace {
        run_dir.clear(&held)?;
        tracing::info!("removed the previous run in {} (--overwrite)", out_dir.display());
    }

    // Resume: the latest complete checkpoint holds weights, optimizer moments and the data cursor.
    let mut resumed_from = None;
    if options.resume {
        let latest = latest_checkpoint(&run_dir)?;
        if latest.is_none() {
            tracing::warn!("--resume: no checkpoint in {} yet; starting from step 0", out_dir.display());
        }
        if let Some(checkpoint) = latest {
            let saved: TrainerState = read_state(&checkpoint)?;
            // The fingerprint covers every setting below; a checkpoint of an older host has none, and
            // only those few are checked.
            if !saved.fingerprint.is_null() {
                if let Some((key, theirs, ours)) = first_difference(&saved.fingerprint, &state.fingerprint) {
                    bail!(
                        "cannot resume from {}: it was made with {key} = {theirs}, this run has {ours}",
                        checkpoint.display()
                    );
                }
            }
            for (what, ours, theirs) in [
                ("total steps", total_steps.to_string(), saved.total_steps.to_string()),
                ("[train] seed", state.seed.to_string(), saved.seed.to_string()),
                ("[train] batch_size", batch_size.to_string(), saved.batch_size.to_string()),
                ("objective", state.objective.clone(), saved.objective.clone()),
                ("training sets", state.sets.join(", "), saved.sets.join(", ")),
            ] {
                if ours != theirs {
                    bail!(
                        "cannot resume from {}: it was made with {what} {theirs}, this run has {ours}",
                        checkpoint.display()
                    );
                }
            }
            for (set, cursor) in sets.iter().zip(&saved.cursors) {
                if cursor.cursor > set.examples.len() {
                    bail!(
                        "cannot resume from {}: set `{}` has {} examples now, fewer than the {} it had read",
                        checkpoint.display(),
                        set.name,
                        set.examples.len(),
                        cursor.cursor
                    );
                }
            }
            // A LoRA checkpoint is the adapter alone; the base is `[model] path`, loaded above.
            match &lora {
                Some(_) => model.load_adapter(&checkpoint)?,
                None => model = Model::load_with_dtype(&checkpoint, &device, dtype)?,
            }
            optimizer = AdamW::load_state(checkpoint.join(OPTIMIZER_FILE), adamw, &device)?;
            optimizer.check_matches(model.trainable_params())?;
            resumed_from = Some(saved.step);
            state = saved;
            tracing::info!("resuming from {} (step {})", checkpoint.display(), state.step);
        }
    }

    // A resumed run marks where it took over, even from step 0 (nothing saved yet).
    let resumed_at = (options.resume && run_dir.metrics().exists()).then_some(state.step);
    let mut metrics = MetricsLog::open(&run_dir.metrics(), resumed_at)?;
    let progress = Progress::new(total_steps, state.step, options.tag);
    let what = match &lora {
        Some(l) => format!(
            "a LoRA adapter (r {}, alpha {}, {}: {} trainable parameters) on {} ({} parameters, frozen)",
            l.r,
            l.alpha,
            l.target_modules.join(", "),
            model.num_trainable_params(),
            model_dir.display(),
            model.num_params()
        ),
        None => format!("{} ({} parameters)", model_dir.display(), model.num_params()),
    };
    tracing::info!(
        "training {what} on {n} examples with `{}` for {total_steps} steps of {batch_size} (micro-batches of {micro})",
        objective.name()
    );

    let longest = sets.iter().flat_map(|s| &s.examples).map(|e| e.ids.len()).max().unwrap_or(0);
    eprintln!("{}", MemoryEstimate::for_model(&model, micro, longest).report(&device, dtype));
    let mut memory = MemoryMonitor::new(&device);

    let pad_id = tokenizer.eos_id;
    let started = Instant::now();
    let (mut first_loss, mut last_loss, mut tokens_seen) = (None, None, 0usize);
    let mut sampler = Sampler::new(&sets, state.seed, config.data.shuffle, Some(state.cursors.clone()));
    let stop = crate::stop::StopSignals::listen()?;
    let (mut skipped_in_a_row, mut updated_once) = (0u64, false);
    while state.step < total_steps {
        let step = state.step + 1;
        let step_started = Instant::now();
        let lr = learning_rate(config, step, total_steps);
        optimizer.set_lr(lr);

        // The batch: each slot's set drawn by the mixer's weights, then that set's next example.
        let weights = mixer.weights(&set_infos, step, total_steps, state.seed)?;
        let indices = sampler.draw(step, batch_size, &weights);
        state.cursors = sampler.cursors.clone();
        let mut tokens_by_set = vec![0usize; sets.len()];
        let mut examples_by_set = vec![0usize; sets.len()];

        let micro_batches = batch_size / micro;
        let mut grads: Option<engine::Grads> = None;
        let (mut loss_sum, mut loss_batches, mut tokens, mut loss_tokens) = (0.0f64, 0usize, 0usize, 0usize);
        // Positions of the padded [B, T] micro-batches: the padding share they would have computed.
        let mut padded_slots = 0usize;
        // Why this step makes no update, if it makes none.
        let mut skipped: Option<Skip> = None;
        for (micro_index, chunk) in indices.chunks(micro).enumerate() {
            let rows: Vec<&Example> = chunk.iter().map(|&(s, i)| &sets[s].examples[i]).collect();
            for &(s, i) in chunk {
                tokens_by_set[s] += sets[s].examples[i].ids.len();
                examples_by_set[s] += 1;
            }
            let batch = Batch::new(&rows, pad_id, &device)?;
            tokens += batch.tokens();
            padded_slots += batch.lengths.len() * (batch.positions + 1);
            model.set_dropout_seed(dropout_seed(state.seed, step, micro_index));
            let pass = model.training_pass_packed(&batch.ids, &batch.lengths)?;
            let stats = TokenStats::of(&pass, needs)?;
            // The model's own numbers overflowed: not the objective's fault, and no step to take.
            if let Some(i) = (0..stats.logp.len()).find(|&i| batch.loss_mask[i] == 1 && !stats.logp[i].is_finite()) {
                skipped = Some(Skip::NonFinite(format!("the model's log-prob at a target token is {}", stats.logp[i])));
                break;
            }
            let batch_base_logp = base_logp.as_ref().map(|b| lay_out_base_logp(b, chunk, &batch)).transpose()?;
            let inputs =
                stats.inputs(&batch.loss_mask, &batch.sequence_starts, batch_base_logp.as_deref(), step, total_steps);
            let values = objective.compute(&inputs).with_context(|| format!("step {step}"))?;

            // The micro-batch's token mean over included positions, averaged over micro-batches.
            let included: Vec<bool> =
                (0..stats.logp.len()).map(|i| batch.loss_mask[i] == 1 && values.include[i] == 1).collect();
            let count = included.iter().filter(|&&k| k).count();
            loss_tokens += count;
            if count == 0 {
                continue; // every token thresholded away: no gradient from this micro-batch
            }
            let scale = 1.0 / (count as f64 * micro_batches as f64);
            let weights: Vec<f32> = (0..stats.logp.len())
                .map(|i| if included[i] { (values.weight[i] as f64 * scale) as f32 } else { 0.0 })
                .collect();
            let loss: f64 = (0..stats.logp.len()).filter(|&i| included[i]).map(|i| values.loss[i] as f64).sum();
            loss_sum += loss / count as f64;
            loss_batches += 1;

            let micro_grads = pass.backward(&model, &weights)?;
            memory.poll();
            match grads.as_mut() {
                None => grads = Some(micro_grads),
                Some(g) => g.accumulate(&micro_grads)?,
            }
        }

        let grad_norm = match (grads.as_mut(), &skipped) {
            (Some(g), None) => {
                let norm = if config.optim.max_grad_norm > 0.0 {
                    engine::clip_grad_norm(g, config.optim.max_grad_norm)?
                } else {
                    g.global_norm()?
                };
                // Skipped, as verl skips it: an update by a non-finite gradient would ruin every weight.
                if norm.is_finite() {
                    optimizer.step(model.trainable_params(), g)?;
                    memory.poll();
                } else {
                    skipped = Some(Skip::NonFinite(format!("the gradient norm is {norm}")));
                }
                norm
            }
            (None, None) => {
                skipped = Some(Skip::NothingIncluded);
                0.0
            }
            (_, Some(_)) => f64::NAN,
        };
        state.step = step;
        match &skipped {
            None => (skipped_in_a_row, updated_once) = (0, true),
            Some(reason) => {
                skipped_in_a_row += 1;
                tracing::warn!("step {step} made no update: {reason}");
                // A threshold may legitimately empty batches once the model has moved; one that never
                // included anything, or numbers that keep overflowing, will not recover.
                let hopeless = matches!(reason, Skip::NonFinite(_)) || !updated_once;
                if hopeless && skipped_in_a_row >= config.train.max_skipped_steps {
                    bail!(
                        "steps {}-{step} made no update, the last because {reason}; stopping after {skipped_in_a_row} in a row ([train] max_skipped_steps)",
                        step + 1 - skipped_in_a_row
                    );
                }
            }
        }

        let loss = (loss_batches > 0).then(|| loss_sum / loss_batches as f64);
        first_loss = first_loss.or(loss);
        last_loss = loss.or(last_loss);
        tokens_seen += tokens;
        let step_seconds = step_started.elapsed().as_secs_f64();
        let tokens_per_second = tokens as f64 / step_seconds.max(1e-9);
        let scores = match &evaluation {
            Some(e) if e.due(step, total_steps) => {
                let aggregate = e.run(&model, &tokenizer, step)?;
                progress.note(&format!("step {step} eval: {}", describe_scores(&aggregate)));
                Some(aggregate)
            }
            _ => None,
        };
        metrics.write(&serde_json::json!({
            "step": step,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "skipped": skipped.as_ref().map(Skip::to_string),
            "tokens": tokens,
            "loss_tokens": loss_tokens,
            "padding_share": (padded_slots > 0).then(|| 1.0 - tokens as f64 / padded_slots as f64),
            "tokens_per_s": tokens_per_second,
            "epoch": (step as f64 * batch_size as f64) / n as f64,
            "tokens_by_set": by_set(&sets, &tokens_by_set),
            "examples_by_set": by_set(&sets, &examples_by_set),
            "eval": scores.map(|s| s.into_iter().collect::<serde_json::Map<String, serde_json::Value>>()),
        }))?;
        progress.step(step, loss, tokens_per_second);

        let save_every = config.train.save_every;
        let checkpoint = run_dir.checkpoint(step);
        if save_every > 0 && step.is_multiple_of(save_every) && step < total_steps {
            save_checkpoint(&model, &optimizer, &state, &checkpoint)?;
        }
        // A signal asked to stop: this step is done; keep it and leave (after the last step, finish instead).
        if let (Some(signal), true) = (stop.requested(), step < total_steps) {
            if !checkpoint.join(STATE_FILE).is_file() {
                save_checkpoint(&model, &optimizer, &state, &checkpoint)?;
            }
            progress.finish();
            return Err(crate::stop::stopped(format!(
                "stopped by {signal} after step {step} of {total_steps}; checkpoint {} (continue with --resume)",
                checkpoint.display()
            )));
        }
    }
    progress.finish();
    engine::release_training_buffers(); // what follows (a sweep's evaluation, the next run) needs none

    let final_dir = run_dir.final_dir();
    save_checkpoint(&model, &optimizer, &state, &final_dir)?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Summary {
        steps: state.step,
        first_loss,
        last_loss,
        tokens_per_second: tokens_seen as f64 / elapsed.max(1e-9),
        final_checkpoint: final_dir,
        resumed_from,
        peak_memory: memory.peak(),
    })
}

/// Why a step made no update.
enum Skip {
    NonFinite(String),
    NothingIncluded,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NonFinite(what) => f.write_str(what),
            Skip::NothingIncluded => f.write_str("the objective included no token of the batch"),
        }
    }
}

/// Evaluation during training: the evaluator, its data and generation settings, loaded up front so a
/// bad `[eval]` table fails before the first step.
struct Evaluation {
    evaluator: EvaluatorPlugin,
    records: Vec<data::Record>,
    settings: EvalSettings,
    every: u64,
}

impl Evaluation {
    fn load(config: &RunConfig, section: &EvalSection, search: &SearchPath) -> Result<Self> {
        let plugin = LoadedPlugin::load(search, &section.evaluator, PluginKind::Evaluator)?;
        let given: Vec<(String, toml::Value)> = section.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let params = ParamSet::from_toml(plugin.params(), &given, "[eval.params]")?;
        let evaluator = EvaluatorPlugin::create(plugin, &params)?;
        let path = section.data.as_ref().or(config.data.eval.as_ref()).context("[eval] needs `data`")?;
        let mut records = data::read_records(path, &config.data.prompt_key, &config.data.response_key)?;
        if section.limit > 0 {
            records.truncate(section.limit);
        }
        let settings = EvalSettings {
            samples: section.samples,
            temperature: section.temperature,
            top_p: section.top_p,
            max_new_tokens: section.max_new_tokens,
            seed: config.train.seed,
            stop: section.stop.clone(),
            chat_template: config.data.chat_template,
            ..EvalSettings::default()
        };
        settings.validate().context("[eval]")?;
        Ok(Self { evaluator, records, settings, every: section.every })
    }

    fn due(&self, step: u64, total_steps: u64) -> bool {
        step == total_steps || (self.every > 0 && step.is_multiple_of(self.every))
    }

    fn run(&self, model: &Model, tokenizer: &TextTokenizer, step: u64) -> Result<Vec<(String, serde_json::Value)>> {
        let report = evaluate(model, tokenizer, &self.records, &self.evaluator, &self.settings)
            .with_context(|| format!("evaluation at step {step}"))?;
        Ok(report.aggregate.into_iter().map(|(name, value)| (name, serde_json::json!(value))).collect())
    }
}

fn describe_scores(scores: &[(String, serde_json::Value)]) -> String {
    scores.iter().map(|(name, value)| format!("{name} {value}")).collect::<Vec<_>>().join(", ")
}

/// `{"set name": count, ...}` for metrics.jsonl.
fn by_set(sets: &[Dataset], counts: &[usize]) -> serde_json::Value {
    sets.iter().zip(counts).map(|(set, &count)| (set.name.clone(), serde_json::json!(count))).collect()
}

/// Reads and tokenises every training file as a named set (named by its file stem).
fn load_training_data(config: &RunConfig, tokenizer: &TextTokenizer) -> Result<Vec<Dataset>> {
    let mut sets: Vec<Dataset> = Vec::new();
    for file in config.data.train.files() {
        let records = data::read_records(&file, &config.data.prompt_key, &config.data.response_key)?;
        let stem = file.file_stem().map_or("train".to_string(), |s| s.to_string_lossy().into_owned());
        let name = if sets.iter().any(|s| s.name == stem) { format!("{stem}-{}", sets.len()) } else { stem };
        let shown = file.display().to_string();
        let set =
            data::tokenize(&name, &records, tokenizer, Some(config.data.max_length), config.data.encode_options())
                .with_context(|| shown.clone())?;
        if set.truncated > 0 || set.dropped > 0 {
            tracing::warn!(
                "{shown}: {} examples truncated and {} dropped at max_length {}",
                set.truncated,
                set.dropped,
                config.data.max_length
            );
        }
        sets.push(set);
    }
    Ok(sets)
}

/// The data mixer of `[mixer]` with its parameters.
fn load_mixer(config: &RunConfig, search: &SearchPath) -> Result<MixerPlugin> {
    let plugin = LoadedPlugin::load(search, &config.mixer.plugin, PluginKind::Mixer)?;
    let given: Vec<(String, toml::Value)> = config.mixer.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let params = ParamSet::from_toml(plugin.params(), &given, "[mixer.params]")?;
    MixerPlugin::create(plugin, &params)
}

/// The base model's log-probabilities on every training target (the loss positions, in order), per set and
/// example: scored on first use, at most once.
struct BaseLogp<'a> {
    model: &'a Model,
    sets: &'a [Dataset],
    pad_id: u32,
    scored: Option<Vec<Vec<Vec<f32>>>>,
}

impl<'a> BaseLogp<'a> {
    fn new(model: &'a Model, sets: &'a [Dataset], pad_id: u32) -> Self {
        Self { model, sets, pad_id, scored: None }
    }

    fn by_set(&mut self) -> Result<&[Vec<Vec<f32>>]> {
        if self.scored.is_none() {
            let scored = self
                .sets
                .iter()
                .map(|set| crate::score::response_logprobs(self.model, &set.examples, self.pad_id, 8))
                .collect::<Result<Vec<_>>>()?;
            self.scored = Some(scored);
        }
        Ok(self.scored.as_deref().unwrap_or_default())
    }

    fn into_by_set(mut self) -> Result<Vec<Vec<Vec<f32>>>> {
        self.by_set()?;
        Ok(self.scored.unwrap_or_default())
    }

    fn probabilities(&mut self) -> Result<Vec<f64>> {
        Ok(self.by_set()?.iter().flatten().flatten().map(|&lp| (lp as f64).exp()).collect())
    }
}

/// The seed of a micro-batch's LoRA dropout masks: a pure function of the run seed, the step and the
/// micro-batch, so a resumed run draws the masks the uninterrupted one drew.
fn dropout_seed(run_seed: u64, step: u64, micro_index: usize) -> u64 {
    let mut state = run_seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ (micro_index as u64).rotate_left(40);
    crate::data::splitmix64(&mut state)
}

/// A micro-batch's base log-probs laid out like its training pass's (`[B, T-1]` flattened, the loss
/// positions filled in order, 0 elsewhere).
fn lay_out_base_logp(by_set: &[Vec<Vec<f32>>], chunk: &[(usize, usize)], batch: &Batch) -> Result<Vec<f32>> {
    let mut flat = vec![0.0f32; batch.loss_mask.len()];
    for (row, &(set, index)) in chunk.iter().enumerate() {
        let mut scored = by_set[set][index].iter();
        let span = row * batch.positions..(row + 1) * batch.positions;
        for (slot, &mask) in flat[span.clone()].iter_mut().zip(&batch.loss_mask[span]) {
            if mask == 1 {
                *slot =
                    *scored.next().ok_or_else(|| anyhow!("base log-probs shorter than example {index}'s targets"))?;
            }
        }
    }
    Ok(flat)
}

/// Loads the objective plugin with the config's parameters; `percentile = K` becomes `q`, the K-th
/// percentile of the base model's probabilities on the training targets.
fn load_objective(
    config: &RunConfig,
    name: &str,
    search: &SearchPath,
    base: &mut BaseLogp<'_>,
) -> Result<ObjectivePlugin> {
    let plugin = LoadedPlugin::load(search, name, PluginKind::Objective)?;
    let given: Vec<(String, toml::Value)> =
        config.objective.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut params = ParamSet::from_toml(plugin.params(), &given, "[objective.params]")?;
    if let (Some(ParamValue::Float(k)), None) = (params.get("percentile").cloned(), params.get("q")) {
        let probabilities = base.probabilities()?;
        if let Some(q) = resolve_percentile(&mut params, &probabilities, "[objective.params]")? {
            tracing::info!("percentile {k} of the base model's token probabilities is q = {q:.6}");
        }
    }
    ObjectivePlugin::create(plugin, params)
}

/// Turns `percentile = K` (when no `q` is given) into `q`, the K-th percentile of `probabilities` (the base
/// model's on the training targets); returns that `q`. `origin` names the parameters in errors.
pub fn resolve_percentile(params: &mut ParamSet, probabilities: &[f64], origin: &str) -> Result<Option<f64>> {
    let (Some(ParamValue::Float(k)), None) = (params.get("percentile").cloned(), params.get("q")) else {
        return Ok(None);
    };
    if !(0.0..=100.0).contains(&k) {
        bail!("{origin} percentile must be in [0, 100], got {k}");
    }
    let q = crate::score::percentile(probabilities, k);
    params.set("q", ParamValue::Float(q));
    params.remove("percentile");
    Ok(Some(q))
}

/// The learning rate of step `step` (from 1), as Hugging Face's schedulers compute it at index step-1:
/// linear warmup over `warmup_ratio` of the steps, then constant, cosine to 0, or linear to 0.
pub fn learning_rate(config: &RunConfig, step: u64, total_steps: u64) -> f64 {
    let lr = config.optim.lr;
    let i = (step - 1) as f64;
    let warmup = (config.optim.warmup_ratio * total_steps as f64).ceil();
    if i < warmup {
        return lr * i / warmup.max(1.0);
    }
    let progress = (i - warmup) / (total_steps as f64 - warmup).max(1.0);
    match config.optim.lr_scheduler {
        LrScheduler::Constant => lr,
        LrScheduler::Cosine => lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        LrScheduler::Linear => lr * (1.0 - progress).max(0.0),
    }
}

const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// A Hugging Face checkpoint plus optimizer and trainer state, written atomically; a model trained in
/// bf16 saves the optimizer's float32 master weights.
fn save_checkpoint(model: &Model, optimizer: &AdamW, state: &TrainerState, dir: &Path) -> Result<()> {
    engine::checkpoint::save_with_master(
        model,
        dir,
        |name| optimizer.master(name).cloned(),
        |tmp| {
            optimizer.save_state(tmp.join(OPTIMIZER_FILE))?;
            std::fs::write(tmp.join(STATE_FILE), serde_json::to_string_pretty(state)?)?;
            Ok(())
        },
    )?;
    tracing::info!("saved {}", dir.display());
    Ok(())
}

/// The most optimizer steps a run may ask for (a typo such as `epochs = 1e30` is refused, not looped on).
const MAX_TOTAL_STEPS: u64 = 100_000_000;

/// What decides a run's trajectory, as JSON compared key by key on `--resume`: the resolved config (the
/// objective as this run loads it) minus what only says where or how often to write and evaluate, plus
/// the SHA-256 of every training file under `data.train_digests`.
pub fn trajectory_fingerprint(config: &RunConfig, objective: &str) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(config)?;
    value["objective"]["plugin"] = serde_json::json!(objective);
    let not_trajectory = [
        ("train", "out_dir"),
        ("train", "save_every"),
        ("train", "max_skipped_steps"),
        ("model", "device"),
        ("data", "eval"),
    ];
    for (section, key) in not_trajectory {
        if let Some(table) = value[section].as_object_mut() {
            table.remove(key);
        }
    }
    if let Some(table) = value.as_object_mut() {
        table.remove("eval");
    }
    let digests = config
        .data
        .train
        .files()
        .iter()
        .map(|file| Ok((file.display().to_string(), serde_json::json!(fingerprint::file_digest(file)?))))
        .collect::<Result<serde_json::Map<_, _>>>()?;
    value["data"]["train_digests"] = serde_json::Value::Object(digests);
    Ok(value)
}

fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// The checkpoint with the most steps in a run folder (`final` counts as done), if any.
pub fn latest_checkpoint(run_dir: &RunDir) -> Result<Option<PathBuf>> {
    run_dir.latest_checkpoint(|dir| Ok(read_state(dir)?.step))
}

/// `metrics.jsonl`, one line per optimizer step, only ever appended to: a resumed run first writes a
/// `{"resumed_from": N}` line, and the steps after N that follow it supersede any an interrupted attempt
/// had written (readers keep the last line of each step).
struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    fn open(path: &Path, resumed_from: Option<u64>) -> Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if let Some(step) = resumed_from {
            writeln!(file, "{}", serde_json::json!({ "resumed_from": step }))?;
        }
        Ok(Self { file })
    }

    fn write(&mut self, value: &serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}")?;
        self.file.flush()?;
        Ok(())
    }
}

/// The step lines of a metrics.jsonl in order, without those a resumed attempt superseded.
pub fn read_metrics(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut steps: Vec<serde_json::Value> = Vec::new();
    for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow!("{}: line {}: malformed ({e})", path.display(), number + 1))?;
        if let Some(from) = value["resumed_from"].as_u64() {
            steps.retain(|v| v["step"].as_u64().is_some_and(|s| s <= from));
        } else if value["step"].is_u64() {
            steps.push(value);
        }
    }
    Ok(steps)
}

/// A progress bar on a terminal; a log line per step otherwise (tagged when several runs share stderr).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    tag: String,
}

impl Progress {
    fn new(total: u64, done: u64, tag: Option<&str>) -> Self {
        let bar = (tag.is_none() && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_position(done);
            bar
        });
        Self { bar, total, tag: tag.map_or(String::new(), |t| format!("{t}: ")) }
    }

    fn step(&self, step: u64, loss: Option<f64>, tokens_per_second: f64) {
        let loss = loss.map_or("-".to_string(), |l| format!("{l:.4}"));
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(format!("loss {loss}  {tokens_per_second:.0} tok/s"));
            }
            None => eprintln!("{}step {step}/{}  loss {loss}  {tokens_per_second:.0} tok/s", self.tag, self.total),
        }
    }

    /// A line that stays visible above the bar.
    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{}{line}", self.tag),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
