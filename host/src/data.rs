//! Training data: reading JSONL and Parquet rows, tokenising them through [`crate::encode`], and cutting
//! padded batches.
//!
//! Examples longer than `max_length` lose their end (counted and reported); examples with no loss
//! target left within `max_length` are dropped (also counted).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use engine::{Device, ModelConfig, Tensor};
use serde_json::Value;

use crate::chat::ChatTemplate;
use crate::encode::{EncodeOptions, Encoder};

/// A tokenizer with the EOS id and chat template of its model directory.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    pub eos_id: u32,
    chat_template: Option<ChatTemplate>,
    dir: PathBuf,
}

impl TextTokenizer {
    /// Reads `tokenizer.json`, `tokenizer_config.json` (EOS token) and the chat template
    /// (`chat_template.jinja` or tokenizer_config.json's) from `dir`.
    pub fn from_model_dir(dir: &Path, config: &ModelConfig) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            bail!("{}: missing (the model directory needs a tokenizer)", path.display());
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow!("{}: cannot load tokenizer: {e}", path.display()))?;
        let (config_path, tokenizer_config) = crate::chat::read_tokenizer_config(dir)?;
        let special = crate::chat::special_tokens(&tokenizer_config);
        let eos_text = special.get("eos_token").and_then(Value::as_str).map(str::to_string);
        let eos_id = match eos_text {
            Some(text) => inner
                .token_to_id(&text)
                .ok_or_else(|| anyhow!("{}: eos_token {text:?} is not in the vocabulary", config_path.display()))?,
            None => *config.eos_token_ids.first().ok_or_else(|| {
                anyhow!("{}: no eos_token, and config.json has no eos_token_id", config_path.display())
            })?,
        };
        let vocab = inner.get_vocab_size(true);
        if vocab > config.vocab_size {
            bail!(
                "{}: the tokenizer has {vocab} tokens but the model's vocab_size is {}; they do not belong together",
                path.display(),
                config.vocab_size
            );
        }
        let chat_template = ChatTemplate::from_model_dir(dir, &tokenizer_config)?;
        Ok(Self { inner, eos_id, chat_template, dir: dir.to_path_buf() })
    }

    /// Token ids of `text`, without special tokens added (special-token text is still its token).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding =
            self.inner.encode(text, false).map_err(|e| anyhow!("{}: cannot tokenise: {e}", self.path().display()))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| anyhow!("{}: cannot decode: {e}", self.path().display()))
    }

    /// The text of one token id, special or not.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The model directory's chat template, if it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// The model directory the tokenizer was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
}

/// One example as read from a file: a prompt and response (for chat rows, the whole conversation too),
/// its 1-based line or row for error messages, and the whole row as metadata.
#[derive(Clone, Debug)]
pub struct Record {
    /// The prompt text; for a chat row, the content of its last message before the reply.
    pub prompt: String,
    /// For chat-format rows (`messages`): the whole conversation, ending with the assistant's reply.
    pub messages: Option<Vec<Value>>,
    /// The response; for a chat row, the content of the final assistant message.
    pub response: String,
    pub line: usize,
    pub row: Value,
}

/// Reads every example of a JSONL or Parquet file (by extension). Keys may be dotted paths into
/// nested objects or struct columns (`extra_info.question`, as in verl's parquet files). A row without
/// the prompt key but with `messages` is a chat row: the last message is the response.
pub fn read_records(path: &Path, prompt_key: &str, response_key: &str) -> Result<Vec<Record>> {
    let shown = path.display().to_string();
    let rows = Rows::open(path)?;
    let unit = rows.unit;
    let mut records = Vec::new();
    for row in rows {
        let (n, row) = row?;
        let at = |message: String| anyhow!("{shown}:{n}: {message}");
        let record = record_from_row(&row, n, prompt_key, response_key).map_err(&at)?;
        if record.response.trim().is_empty() {
            return Err(at(format!("empty response under `{response_key}`")));
        }
        records.push(record);
    }
    if records.is_empty() {
        bail!("{shown}: no examples (every {unit} is empty)");
    }
    Ok(records)
}

/// Kept for callers that read JSONL by name; reads any supported format.
pub fn read_jsonl(path: &Path, prompt_key: &str, response_key: &str) -> Result<Vec<Record>> {
    read_records(path, prompt_key, response_key)
}

/// The rows of a JSONL or Parquet file (by extension), read one at a time so that memory stays one
/// row whatever the file's size: each with its 1-based line (JSONL, blank lines skipped) or row
/// (Parquet) number. Errors name the file and the line or row.
pub struct Rows {
    inner: Box<dyn Iterator<Item = Result<(usize, Value)>>>,
    /// `line` or `row`, for messages.
    pub unit: &'static str,
}

impl Rows {
    pub fn open(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).with_context(|| format!("cannot read data file {shown}"))?;
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) {
            use parquet::file::reader::SerializedFileReader;
            let reader =
                SerializedFileReader::new(file).map_err(|e| anyhow!("{shown}: not a readable Parquet file: {e}"))?;
            let inner = reader.into_iter().enumerate().map(move |(i, row)| {
                let row = row.map_err(|e| anyhow!("{shown}: row {}: {e}", i + 1))?;
                Ok((i + 1, row.to_json_value()))
            });
            return Ok(Self { inner: Box::new(inner), unit: "row" });
        }
        let mut reader = std::io::BufReader::new(file);
        let mut n = 0;
        let inner = std::iter::from_fn(move || loop {
            n += 1;
            let line = match read_line_bounded(&mut reader, MAX_LINE_BYTES) {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(e) => return Some(Err(anyhow!("{shown}:{n}: {e}"))),
            };
            // Editors on Windows start UTF-8 files with a byte-order mark; it is not part of the first row.
            let line = if n == 1 { line.strip_prefix('\u{feff}').unwrap_or(&line) } else { &line };
            if line.trim().is_empty() {
                continue;
            }
            return Some(
                serde_json::from_str(line)
                    .map(|value| (n, value))
                    .map_err(|e| anyhow!("{shown}:{n}: malformed JSON: {e}")),
            );
        });
        Ok(Self { inner: Box::new(inner), unit: "line" })
    }
}

/// Longest JSONL line read (a row's memory is bounded whatever the file).
pub const MAX_LINE_BYTES: u64 = 256 << 20;

/// The next line without its newline, `None` at the end; an error for a line over `limit` bytes or
/// one that is not UTF-8.
fn read_line_bounded(reader: &mut impl std::io::BufRead, limit: u64) -> Result<Option<String>, String> {
    use std::io::{BufRead, Read};
    let mut bytes = Vec::new();
    let read = reader.take(limit + 1).read_until(b'\n', &mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if read == 0 {
        return Ok(None);
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    } else if bytes.len() as u64 > limit {
        return Err(format!("line longer than {limit} bytes"));
    }
    String::from_utf8(bytes).map(Some).map_err(|e| format!("not UTF-8: {e}"))
}

impl Iterator for Rows {
    type Item = Result<(usize, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

/// Follows a dotted key through nested objects.
pub fn lookup<'a>(row: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(row, |value, part| value.get(part))
}

fn string_at(row: &Value, key: &str) -> Result<String, String> {
    match lookup(row, key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("key `{key}` must be a string, got {other}")),
        None => {
            let keys: Vec<&str> = row.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
            Err(format!("missing key `{key}` (the row has: {})", keys.join(", ")))
        }
    }
}

fn record_from_row(row: &Value, line: usize, prompt_key: &str, response_key: &str) -> Result<Record, String> {
    if !row.is_object() {
        return Err(format!("expected a JSON object, got {row}"));
    }
    if lookup(row, prompt_key).is_none() {
        if let Some(messages) = row.get("messages") {
            return chat_record(row, messages, line);
        }
    }
    Ok(Record {
        prompt: string_at(row, prompt_key)?,
        messages: None,
        response: string_at(row, response_key)?,
        line,
        row: row.clone(),
    })
}

/// A chat row: `messages` ending with the assistant's reply, which is the response.
fn chat_record(row: &Value, messages: &Value, line: usize) -> Result<Record, String> {
    let list = messages.as_array().ok_or("`messages` must be a list of {role, content}")?;
    let Some((last, before)) = list.split_last() else { return Err("`messages` is empty".into()) };
    let content = |m: &Value| m.get("content").and_then(Value::as_str).map(str::to_string);
    if last.get("role").and_then(Value::as_str) != Some("assistant") {
        return Err("the last entry of `messages` must have role \"assistant\" (it is the response)".into());
    }
    let response = content(last).ok_or("the last message has no string `content`")?;
    if before.is_empty() {
        return Err("`messages` has no prompt before the assistant reply".into());
    }
    if let Some(i) = before.iter().position(|m| content(m).is_none() || m.get("role").and_then(Value::as_str).is_none())
    {
        return Err(format!("messages[{i}] needs a string `role` and `content`"));
    }
    Ok(Record {
        prompt: before.last().and_then(content).unwrap_or_default(),
        messages: Some(list.clone()),
        response,
        line,
        row: row.clone(),
    })
}

/// A tokenised example: `targets[i]` says whether token `i` is a loss target (response tokens and EOS).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub targets: Vec<bool>,
}

impl Example {
    /// A plain example: `prompt_len` context tokens, then loss targets.
    pub fn with_prompt_len(ids: Vec<u32>, prompt_len: usize) -> Self {
        let targets = (0..ids.len()).map(|i| i >= prompt_len).collect();
        Self { ids, targets }
    }
}

/// A tokenised training set.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub examples: Vec<Example>,
    pub truncated: usize,
    pub dropped: usize,
}

/// Tokenises records through the one [`Encoder`]; `max_length` of `None` keeps everything.
pub fn tokenize(
    name: &str,
    records: &[Record],
    tokenizer: &TextTokenizer,
    max_length: Option<usize>,
    options: EncodeOptions,
) -> Result<Dataset> {
    let encoder = Encoder::new(tokenizer, options);
    let mut dataset = Dataset { name: name.to_string(), examples: Vec::new(), truncated: 0, dropped: 0 };
    for record in records {
        let encoded = encoder.encode(record).map_err(|e| anyhow!("{name}:{}: {e:#}", record.line))?;
        let (mut ids, mut targets) = (encoded.ids, encoded.targets);
        if let Some(max) = max_length {
            if ids.len() > max {
                ids.truncate(max);
                targets.truncate(max);
                if !targets.iter().any(|&t| t) {
                    dataset.dropped += 1;
                    continue;
                }
                dataset.truncated += 1;
            }
        }
        dataset.examples.push(Example { ids, targets });
    }
    if dataset.examples.is_empty() {
        bail!("{name}: every example is longer than max_length in its prompt alone");
    }
    Ok(dataset)
}

/// Examples cut to fit a model's context by [`fit_to_context`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fitted {
    /// Indices of the examples whose prompt lost its start, ascending.
    pub prompt_cut: Vec<usize>,
    /// Indices of the examples whose loss targets alone were too long and lost their end, ascending.
    pub end_cut: Vec<usize>,
}

impl Fitted {
    pub fn any(&self) -> bool {
        !self.prompt_cut.is_empty() || !self.end_cut.is_empty()
    }

    /// The warning to print: how many examples of `name` were cut to `limit` tokens, and how.
    pub fn warning(&self, name: &str, total: usize, limit: usize) -> String {
        let cut =
            self.prompt_cut.len() + self.end_cut.iter().filter(|i| self.prompt_cut.binary_search(i).is_err()).count();
        format!(
            "{name}: {cut} of {total} examples are longer than the model's context of {limit} tokens and were cut to fit: \
             {} lost the start of their prompt, {} the end of their response (the first: example {})",
            self.prompt_cut.len(),
            self.end_cut.len(),
            self.prompt_cut.iter().chain(&self.end_cut).min().copied().unwrap_or_default()
        )
    }
}

/// Cuts every example to at most `limit` tokens so that scoring it stays within the model's context (and
/// its memory bounded): the prompt loses its start first, as a generation prompt would, so every loss
/// target keeps as much context as fits (at least one token before the first); only loss targets longer
/// than the context lose their end. A leading `bos` token (a chat template may render one) is kept: the
/// cut comes after it.
pub fn fit_to_context(examples: &mut [Example], limit: usize, bos: Option<u32>) -> Fitted {
    let limit = limit.max(2);
    let mut fitted = Fitted::default();
    for (index, example) in examples.iter_mut().enumerate() {
        let excess = example.ids.len().saturating_sub(limit);
        if excess == 0 {
            continue;
        }
        let first_target = example.targets.iter().position(|&t| t).unwrap_or(example.ids.len());
        let drop = excess.min(first_target.saturating_sub(1));
        if drop > 0 {
            let from = usize::from(bos.is_some() && example.ids.first() == bos.as_ref());
            example.ids.drain(from..from + drop);
            example.targets.drain(from..from + drop);
            fitted.prompt_cut.push(index);
        }
        if example.ids.len() > limit {
            example.ids.truncate(limit);
            example.targets.truncate(limit);
            fitted.end_cut.push(index);
        }
    }
    fitted
}

/// [`fit_to_context`] by the model's own context and BOS, with the one warning when anything was cut
/// (`name` names the data): what scoring and diagnosing do before the forward pass.
pub fn fit_to_model(name: &str, examples: &mut [Example], config: &ModelConfig) -> Fitted {
    let context = config.max_position_embeddings;
    let fitted = fit_to_context(examples, context, config.bos_token_id);
    if fitted.any() {
        tracing::warn!("{}", fitted.warning(name, examples.len(), context));
    }
    fitted
}

/// A padded micro-batch and where its loss positions are.
pub struct Batch {
    /// `[B, T]` token ids, right-padded.
    pub ids: Tensor,
    /// `B * (T-1)` flags over the flattened `[B, T-1]` log-probs: 1 where position `t` predicts a
    /// response token or the EOS.
    pub loss_mask: Vec<u8>,
    /// Offset of each row in the flattened log-probs.
    pub sequence_starts: Vec<u32>,
    /// Number of positions per row (`T - 1`).
    pub positions: usize,
    /// Real tokens of each row (the rest of the row is padding, which the CPU pass never computes).
    pub lengths: Vec<usize>,
}

impl Batch {
    pub fn new(examples: &[&Example], pad_id: u32, device: &Device) -> Result<Self> {
        let rows: Vec<Vec<u32>> = examples.iter().map(|e| e.ids.clone()).collect();
        let ids = engine::pad_batch(&rows, pad_id, device)?;
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        let positions = width.saturating_sub(1);
        let mut loss_mask = vec![0u8; examples.len() * positions];
        let mut sequence_starts = Vec::with_capacity(examples.len());
        for (b, example) in examples.iter().enumerate() {
            sequence_starts.push((b * positions) as u32);
            // Position t predicts token t + 1.
            for t in 0..example.ids.len() - 1 {
                loss_mask[b * positions + t] = u8::from(example.targets[t + 1]);
            }
        }
        let lengths = rows.iter().map(Vec::len).collect();
        Ok(Self { ids, loss_mask, sequence_starts, positions, lengths })
    }

    /// Real (non-padding) tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.lengths.iter().sum()
    }
}

/// splitmix64: a tiny, well-known generator, so data order is a pure function of the seed.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The order of `n` examples in `epoch`: a Fisher–Yates shuffle seeded by (seed, epoch), or the file
/// order when shuffling is off. Being a pure function, it needs no saved RNG state to resume.
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut state = seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03);
        for i in (1..n).rev() {
            let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_within_a_bound() {
        let mut reader = std::io::Cursor::new(b"short\r\n0123456789\nlast".to_vec());
        assert_eq!(read_line_bounded(&mut reader, 10).unwrap().as_deref(), Some("short"));
        assert_eq!(read_line_bounded(&mut reader, 10).unwrap().as_deref(), Some("0123456789"));
        assert_eq!(read_line_bounded(&mut reader, 10).unwrap().as_deref(), Some("last"));
        assert_eq!(read_line_bounded(&mut reader, 10).unwrap(), None);
        let mut long = std::io::Cursor::new(b"01234567890\n".to_vec());
        assert_eq!(read_line_bounded(&mut long, 10).unwrap_err(), "line longer than 10 bytes");
        let mut bad = std::io::Cursor::new(vec![0xff, b'\n']);
        assert!(read_line_bounded(&mut bad, 10).unwrap_err().starts_with("not UTF-8"));
    }

    #[test]
    fn fitting_to_the_context_cuts_the_prompt_start_first_then_the_end() {
        let ids = |n: u32| (0..n).collect::<Vec<u32>>();
        let mut examples = vec![
            Example::with_prompt_len(ids(6), 3),  // fits
            Example::with_prompt_len(ids(10), 7), // the prompt loses 4 of its 7 tokens
            Example::with_prompt_len(ids(12), 2), // the prompt keeps 1 token, the response loses its end
        ];
        let fitted = fit_to_context(&mut examples, 6, None);
        assert_eq!(fitted, Fitted { prompt_cut: vec![1, 2], end_cut: vec![2] });
        assert_eq!(examples[0].ids, ids(6));
        assert_eq!(examples[1].ids, vec![4, 5, 6, 7, 8, 9]);
        assert_eq!(examples[1].targets, vec![false, false, false, true, true, true], "every target kept");
        assert_eq!(examples[2].ids, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(examples[2].targets, vec![false, true, true, true, true, true]);
        let warning = fitted.warning("big.jsonl", 3, 6);
        assert!(warning.contains("2 of 3 examples") && warning.contains("example 1"), "{warning}");

        // A leading BOS (id 0 here) stays; the cut comes after it.
        let mut with_bos = vec![Example::with_prompt_len(ids(10), 7)];
        fit_to_context(&mut with_bos, 6, Some(0));
        assert_eq!(with_bos[0].ids, vec![0, 5, 6, 7, 8, 9]);
        assert_eq!(with_bos[0].targets, vec![false, false, false, true, true, true]);
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(50, 7, 0, true);
        assert_eq!(a, epoch_order(50, 7, 0, true));
        assert_ne!(a, epoch_order(50, 7, 1, true));
        assert_ne!(a, epoch_order(50, 8, 0, true));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(epoch_order(5, 7, 0, false), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn loss_mask_covers_response_and_eos_only() {
        let a = Example::with_prompt_len(vec![10, 11, 12, 13, 0], 2); // prompt 10 11, response 12 13, eos
        let b = Example::with_prompt_len(vec![10, 12, 0], 1);
        let batch = Batch::new(&[&a, &b], 0, &Device::Cpu).unwrap();
        assert_eq!(batch.positions, 4);
        // Row a: positions 1, 2, 3 predict 12, 13, eos. Row b: positions 0, 1 predict 12, eos.
        assert_eq!(batch.loss_mask, vec![0, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(batch.sequence_starts, vec![0, 4]);
        assert_eq!(batch.tokens(), 8);
    }
}
