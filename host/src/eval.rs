//! Evaluation: generate from a model for every prompt of a data set and score the generations with an
//! evaluator plugin.
//!
//! Used by `host eval`, and meant for evaluation during training. Per example, the prompt is encoded as
//! in training (`encode(prompt)`, or the chat template's rendering of it) and the model generates
//! `samples` continuations with the KV-cached [`engine::generate::generate_with_hook`], in chunks of
//! `batch_size` prompts. A continuation ends at the EOS token, at `max_new_tokens`, or at the first occurrence of a
//! stop string (the text is cut just before it). Greedy decoding is `temperature = 0` with one sample;
//! with several samples the evaluator's aggregate reports each score over first samples (`<name>`) and
//! over all samples (`<name>@mean`).
//!
//! The evaluator sees, per example, the prompt, the generations, the reference (the data's response) and
//! the whole data row as its metadata JSON (`{}` when there is none). Chat-format rows (`messages`) are
//! rendered through the chat template as in training.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use engine::{FinishReason, GenerationConfig, Model};
use plugin_api::ExampleScores;
use serde_json::{json, Map, Value};

use crate::data::{Record, TextTokenizer};
use crate::encode::{EncodeOptions, Encoder};
use crate::plugins::EvaluatorPlugin;

/// How to generate and score.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EvalSettings {
    /// Generations per prompt.
    pub samples: usize,
    /// Softmax temperature; 0 is greedy (and then `samples` must be 1).
    pub temperature: f64,
    /// Nucleus size in (0, 1].
    pub top_p: f64,
    /// Most tokens generated per continuation.
    pub max_new_tokens: usize,
    /// Seed of the sampling streams (unused when greedy).
    pub seed: u64,
    /// Strings that end a continuation; the text is cut just before the first one.
    pub stop: Vec<String>,
    /// Prompts per generation call (each contributes `samples` rows).
    pub batch_size: usize,
    /// Render each prompt through the tokenizer's chat template first.
    pub chat_template: bool,
}

impl Default for EvalSettings {
    /// Greedy, one sample, 512 new tokens, 8 prompts per batch, no stop strings, no chat template.
    fn default() -> Self {
        Self {
            samples: 1,
            temperature: 0.0,
            top_p: 1.0,
            max_new_tokens: 512,
            seed: 0,
            stop: Vec::new(),
            batch_size: 8,
            chat_template: false,
        }
    }
}

impl EvalSettings {
    /// Refuses values that cannot generate, or would only repeat one greedy generation.
    pub fn validate(&self) -> Result<()> {
        if self.samples == 0 {
            bail!("samples must be at least 1");
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            bail!("temperature must be finite and >= 0 (0 is greedy), got {}", self.temperature);
        }
        if self.temperature == 0.0 && self.samples > 1 {
            bail!(
                "samples = {} with temperature 0: greedy decoding would give {} identical generations; set a temperature > 0 or use 1 sample",
                self.samples,
                self.samples
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("top_p must be in (0, 1], got {}", self.top_p);
        }
        if self.max_new_tokens == 0 {
            bail!("max_new_tokens must be at least 1");
        }
        if self.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        if self.stop.iter().any(String::is_empty) {
            bail!("a stop string is empty (it would end every generation before it starts)");
        }
        Ok(())
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model produced an end-of-sequence token.
    Eos,
    /// A stop string appeared (the text is cut before it).
    Stop,
    /// `max_new_tokens` were generated.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Eos => "eos",
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }

    /// The reason [`Finish::as_str`] names (also vLLM's and OpenAI's `stop` and `length`).
    pub fn parse(name: &str) -> Option<Finish> {
        [Finish::Eos, Finish::Stop, Finish::Length].into_iter().find(|f| f.as_str() == name)
    }
}

/// The generations of one example and their scores.
#[derive(Clone, Debug, PartialEq)]
pub struct ExampleResult {
    /// Position in the evaluated set (0-based).
    pub index: usize,
    pub prompt: String,
    pub reference: String,
    pub generations: Vec<String>,
    pub finishes: Vec<Finish>,
    /// Per generation, the evaluator's named scores.
    pub scores: Vec<Vec<(String, f64)>>,
}

impl ExampleResult {
    /// The output line: `index`, `prompt`, `reference`, `generations`, `scores` (per generation
    /// `{name: value}`) and `finish_reasons` (left out when they are not known, as for generations
    /// graded by `host grade` without them).
    pub fn to_json(&self) -> Value {
        let scores: Vec<Value> = self
            .scores
            .iter()
            .map(|named| Value::Object(named.iter().map(|(name, value)| (name.clone(), json!(value))).collect()))
            .collect();
        let mut line = json!({
            "index": self.index,
            "prompt": self.prompt,
            "reference": self.reference,
            "generations": self.generations,
            "scores": scores,
        });
        if !self.finishes.is_empty() {
            let finishes: Vec<&str> = self.finishes.iter().map(|f| f.as_str()).collect();
            line["finish_reasons"] = json!(finishes);
        }
        line
    }
}

/// Everything an evaluation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    /// Per example, in input order.
    pub examples: Vec<ExampleResult>,
    /// The evaluator's aggregate, in its order.
    pub aggregate: Vec<(String, f64)>,
}

impl EvalReport {
    /// One JSON line per example.
    pub fn to_jsonl(&self) -> String {
        self.examples.iter().map(|e| e.to_json().to_string() + "\n").collect()
    }

    /// The aggregate with the settings that produced it.
    pub fn summary(&self, settings: &EvalSettings) -> Value {
        let aggregate = aggregate_json(&self.aggregate);
        json!({
            "examples": self.examples.len(),
            "samples": settings.samples,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_new_tokens": settings.max_new_tokens,
            "seed": settings.seed,
            "stop": settings.stop,
            "chat_template": settings.chat_template,
            "aggregate": aggregate,
        })
    }
}

/// An evaluator's aggregate as a JSON object, in its order.
pub fn aggregate_json(aggregate: &[(String, f64)]) -> Value {
    Value::Object(aggregate.iter().map(|(name, value)| (name.clone(), json!(value))).collect::<Map<String, Value>>())
}

/// Prints an aggregate as a table: `metric`, `value`, then one column per `(header, value)` of
/// `columns` (the same on every row).
pub fn print_aggregate(aggregate: &[(String, f64)], columns: &[(&str, String)]) {
    let width = aggregate.iter().map(|(name, _)| name.len()).chain(["metric".len()]).max().unwrap_or(0);
    let widths: Vec<usize> = columns.iter().map(|(header, value)| header.len().max(value.len())).collect();
    let mut header = format!("{:<width$}  {:>10}", "metric", "value");
    for ((name, _), w) in columns.iter().zip(&widths) {
        header.push_str(&format!("  {name:>w$}"));
    }
    println!("{header}");
    for (name, value) in aggregate {
        let mut row = format!("{name:<width$}  {value:>10.4}");
        for ((_, column), w) in columns.iter().zip(&widths) {
            row.push_str(&format!("  {column:>w$}"));
        }
        println!("{row}");
    }
}

/// Generates for every record (its response is the reference), scores the generations and aggregates.
pub fn evaluate(
    model: &Model,
    tokenizer: &TextTokenizer,
    records: &[Record],
    evaluator: &EvaluatorPlugin,
    settings: &EvalSettings,
) -> Result<EvalReport> {
    evaluate_with_progress(model, tokenizer, records, evaluator, settings, |_, _| {})
}

/// [`evaluate`], calling `progress(done, total)` after each chunk of prompts.
pub fn evaluate_with_progress(
    model: &Model,
    tokenizer: &TextTokenizer,
    records: &[Record],
    evaluator: &EvaluatorPlugin,
    settings: &EvalSettings,
    mut progress: impl FnMut(usize, usize),
) -> Result<EvalReport> {
    settings.validate()?;
    let encoder =
        Encoder::new(tokenizer, EncodeOptions { chat_template: settings.chat_template, ..Default::default() });
    let prompts = records
        .iter()
        .enumerate()
        .map(|(index, record)| {
            let ids = encoder.prompt_ids(record).with_context(|| format!("example {index} (line {})", record.line))?;
            if ids.is_empty() {
                bail!(
                    "example {index} (line {}): the prompt tokenises to nothing; generation needs a prompt",
                    record.line
                );
            }
            Ok(ids)
        })
        .collect::<Result<Vec<_>>>()?;
    let context = model.config().max_position_embeddings;
    let prompts = fit_prompts(prompts, context, settings.max_new_tokens, model.config().bos_token_id);
    let stopper = Stopper::new(tokenizer, &settings.stop)?;
    let mut stop_token_ids = vec![tokenizer.eos_id];
    stop_token_ids.extend(&model.config().eos_token_ids);
    stop_token_ids.extend(&stopper.token_ids);
    stop_token_ids.sort_unstable();
    stop_token_ids.dedup();
    let config = GenerationConfig {
        max_new_tokens: settings.max_new_tokens,
        temperature: settings.temperature,
        top_p: settings.top_p,
        seed: settings.seed,
        stop_token_ids,
        num_samples: settings.samples,
    };

    // Prompts of similar length share a chunk (less left padding); results go back in input order.
    // Sample j of a prompt draws from its own stream of the seed, so the order does not change them.
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let mut generated: Vec<Vec<(String, Finish)>> = vec![Vec::new(); records.len()];
    let mut done = 0;
    for chunk in order.chunks(settings.batch_size) {
        let chunk_prompts: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        let completions = engine::generate::generate_with_hook(model, &chunk_prompts, &config, |_, _, tokens| {
            stopper.hit(tokenizer, tokens)
        })?;
        for (&i, samples) in chunk.iter().zip(completions) {
            generated[i] = samples
                .iter()
                .map(|completion| {
                    let text = tokenizer.decode(&completion.tokens)?;
                    Ok(match stopper.cut(&text) {
                        Some(cut) => (cut.to_string(), Finish::Stop),
                        None => {
                            let finish = match completion.finish_reason {
                                FinishReason::Stop(id) if stopper.token_ids.contains(&id) => Finish::Stop,
                                FinishReason::Stop(_) => Finish::Eos,
                                FinishReason::Length | FinishReason::Hook => Finish::Length,
                            };
                            (text, finish)
                        }
                    })
                })
                .collect::<Result<_>>()?;
        }
        done += chunk.len();
        progress(done, records.len());
    }

    let mut results = Vec::with_capacity(records.len());
    let mut all_scores: Vec<ExampleScores> = Vec::with_capacity(records.len());
    for (index, (record, samples)) in records.iter().zip(generated).enumerate() {
        let (generations, finishes): (Vec<String>, Vec<Finish>) = samples.into_iter().unzip();
        let metadata = if record.row.is_object() { record.row.to_string() } else { "{}".to_string() };
        let scores = evaluator
            .score(&record.prompt, &generations, &record.response, &metadata)
            .with_context(|| format!("example {index} (line {})", record.line))?;
        let named = scores
            .per_generation
            .iter()
            .map(|generation| generation.iter().map(|s| (s.name.to_string(), s.value)).collect())
            .collect();
        all_scores.push(scores);
        results.push(ExampleResult {
            index,
            prompt: record.prompt.clone(),
            reference: record.response.clone(),
            generations,
            finishes,
            scores: named,
        });
    }
    let aggregate = evaluator.aggregate(&all_scores)?;
    Ok(EvalReport { examples: results, aggregate })
}

/// Stop strings: found in decoded text, or, for a string that is a single special token (which
/// decoding skips, such as `<|im_end|>`), as that token id.
struct Stopper {
    strings: Vec<String>,
    token_ids: Vec<u32>,
    /// Tokens decoded from the end of a continuation to look for a newly completed stop string: a
    /// string of `n` bytes spans at most `n` tokens, plus some context so that the window's first token
    /// decodes as it does in the whole text.
    window: usize,
}

impl Stopper {
    fn new(tokenizer: &TextTokenizer, stop: &[String]) -> Result<Self> {
        let mut token_ids = Vec::new();
        for string in stop {
            if let [id] = tokenizer.encode(string)?[..] {
                if tokenizer.decode(&[id])?.is_empty() {
                    token_ids.push(id);
                }
            }
        }
        let longest = stop.iter().map(String::len).max().unwrap_or(0);
        Ok(Self { strings: stop.to_vec(), token_ids, window: longest + 8 })
    }

    /// Whether the continuation `tokens` now contains a stop string.
    fn hit(&self, tokenizer: &TextTokenizer, tokens: &[u32]) -> bool {
        if self.strings.is_empty() {
            return false;
        }
        let tail = &tokens[tokens.len().saturating_sub(self.window)..];
        tokenizer.decode(tail).is_ok_and(|text| self.strings.iter().any(|s| text.contains(s.as_str())))
    }

    /// The text before the first stop string, when there is one.
    fn cut<'t>(&self, text: &'t str) -> Option<&'t str> {
        self.strings.iter().filter_map(|s| text.find(s.as_str())).min().map(|at| &text[..at])
    }
}

/// Cuts each prompt from the left so that it and `max_new_tokens` fit the model's context (a prompt keeps
/// at least one token, and a leading `bos` stays before the cut), with one warning counting them:
/// generation stays bounded whatever the input.
fn fit_prompts(mut prompts: Vec<Vec<u32>>, context: usize, max_new_tokens: usize, bos: Option<u32>) -> Vec<Vec<u32>> {
    let room = context.saturating_sub(max_new_tokens).max(1);
    let cut: Vec<usize> = (0..prompts.len()).filter(|&i| prompts[i].len() > room).collect();
    for &i in &cut {
        let from = usize::from(room > 1 && bos.is_some() && prompts[i].first() == bos.as_ref());
        let excess = prompts[i].len() - room;
        prompts[i].drain(from..from + excess);
    }
    if let Some(first) = cut.first() {
        tracing::warn!(
            "{} of {} prompts are longer than the model's context of {context} tokens less max_new_tokens \
             {max_new_tokens}; they lost their start to keep the last {room} tokens (the first: example {first})",
            cut.len(),
            prompts.len()
        );
    }
    prompts
}

/// `<dir>/<stem>.summary.json` for an output `<dir>/<stem>.jsonl`.
pub fn summary_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().map_or_else(|| "eval".into(), |s| s.to_string_lossy());
    out.with_file_name(format!("{stem}.summary.json"))
}

/// Refuses an output path that names the input file (`--out` equal to `--data`, through any spelling or
/// link): writing it would replace the data being read.
pub fn refuse_overwriting_input(out: &Path, input: &Path) -> Result<()> {
    let same = match (input.canonicalize(), out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        anyhow::bail!("--out {} is the --data file; choose another output path", out.display());
    }
    Ok(())
}

/// Writes `contents` beside `path` and renames it into place, so that a failure leaves no half-written
/// file.
pub fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(contents.as_bytes()).with_context(|| format!("cannot write {}", file.tmp.display()))?;
    file.commit()
}

/// A file written beside its destination (`<name>.<pid>.tmp`) and renamed into place by
/// [`AtomicFile::commit`]: until then the destination keeps its old contents, and a writer dropped
/// without committing (an error part-way) removes its temporary file.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<std::io::BufWriter<std::fs::File>>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<Self> {
        // A rename would replace a device or a pipe (`--out /dev/stdout`) by a plain file.
        if let Ok(meta) = std::fs::metadata(path) {
            if !meta.is_file() {
                bail!("cannot write {}: not a regular file", path.display());
            }
        }
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        // The process id keeps two writers of one destination apart; the last to commit wins whole.
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        Ok(Self { path: path.to_path_buf(), tmp, writer: Some(std::io::BufWriter::new(file)) })
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("an uncommitted file has its writer");
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        file.sync_all().with_context(|| format!("cannot write {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.path).with_context(|| format!("cannot write {}", self.path.display()))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.as_mut().expect("an uncommitted file has its writer").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.as_mut().expect("an uncommitted file has its writer").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_refuse_repeated_greedy_samples_and_bad_values() {
        let ok = EvalSettings::default();
        assert!(ok.validate().is_ok());
        let greedy_many = EvalSettings { samples: 4, ..ok.clone() };
        let message = greedy_many.validate().unwrap_err().to_string();
        assert!(message.contains("identical"), "{message}");
        assert!(EvalSettings { samples: 4, temperature: 1.0, ..ok.clone() }.validate().is_ok());
        for bad in [
            EvalSettings { temperature: -1.0, ..ok.clone() },
            EvalSettings { temperature: f64::NAN, ..ok.clone() },
            EvalSettings { top_p: 0.0, ..ok.clone() },
            EvalSettings { samples: 0, ..ok.clone() },
            EvalSettings { batch_size: 0, ..ok.clone() },
            EvalSettings { stop: vec![String::new()], ..ok.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_prompts_keep_their_end_within_the_context() {
        let prompts = vec![vec![1, 2, 3], (0..20).collect(), (0..9).collect()];
        let fitted = super::fit_prompts(prompts, 16, 8, None);
        assert_eq!(fitted[0], vec![1, 2, 3]);
        assert_eq!(fitted[1], (12..20).collect::<Vec<u32>>(), "the last 16 - 8 tokens");
        assert_eq!(fitted[2], (1..9).collect::<Vec<u32>>());
        assert_eq!(super::fit_prompts(vec![(0..5).collect()], 16, 40, None), vec![vec![4]], "at least one token");
        let with_bos = super::fit_prompts(vec![(0..20).collect()], 16, 8, Some(0));
        assert_eq!(with_bos[0], [0].into_iter().chain(13..20).collect::<Vec<u32>>(), "BOS, then the last 7");
    }

    #[test]
    fn summary_sits_beside_the_output() {
        assert_eq!(summary_path(Path::new("runs/x/preds.jsonl")), Path::new("runs/x/preds.summary.json"));
        assert_eq!(summary_path(Path::new("preds")), Path::new("preds.summary.json"));
    }

    #[test]
    fn stop_strings_cut_at_the_first_occurrence() {
        let stopper = Stopper { strings: vec!["\n\n".into(), "Q:".into()], token_ids: Vec::new(), window: 10 };
        assert_eq!(stopper.cut("42\nQ: next\n\nmore"), Some("42\n"));
        assert_eq!(stopper.cut("no stop here"), None);
    }

    #[test]
    fn stop_strings_end_generation_early() -> Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen2-tiny");
        let model = Model::load(&dir, &engine::Device::Cpu)?;
        let tokenizer = TextTokenizer::from_model_dir(&dir, model.config())?;
        let stopper = Stopper::new(&tokenizer, &["tar".into(), "<|im_end|>".into()])?;
        assert_eq!(stopper.token_ids, tokenizer.encode("<|im_end|>")?);
        assert!(stopper.hit(&tokenizer, &tokenizer.encode("x [tar")?));
        assert!(!stopper.hit(&tokenizer, &tokenizer.encode("x [ta")?));

        // The fixture's first prompt greedily continues with "...[tartar..." within 24 tokens.
        let config = GenerationConfig { max_new_tokens: 24, ..GenerationConfig::for_model(&model) };
        let prompt = tokenizer.encode("Q: 98+76\nA: ")?;
        let out =
            engine::generate::generate_with_hook(&model, &[prompt], &config, |_, _, t| stopper.hit(&tokenizer, t))?;
        let completion = &out[0][0];
        assert_eq!(completion.finish_reason, FinishReason::Hook);
        assert!(completion.tokens.len() < 24);
        let text = tokenizer.decode(&completion.tokens)?;
        assert!(text.ends_with("tar"), "{text:?}");
        assert_eq!(stopper.cut(&text), Some("\u{fffd}$\u{0788}\u{4}\u{4}\u{4}["));
        Ok(())
    }
}
