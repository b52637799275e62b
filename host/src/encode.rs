//! The one encoder: how a data row becomes the token ids and loss targets the model sees.
//!
//! Every verb goes through it (train, score, diagnose, eval, sweep, rollout, preview), so what is trained
//! is what is scored, diagnosed, evaluated and previewed. An example is a list of text segments, each
//! encoded without added special tokens (special-token text such as `<|im_end|>` still becomes its
//! token) and marked as loss or context; the token ids are the segments' encodings concatenated.
//!
//! - Plain rows: `prompt ++ response ++ eos`, loss on the response and the EOS (verl's rule). With the
//!   chat template on, the prompt is `template([user: prompt], generation prompt)`.
//! - `messages` rows (always through the chat template): full = `template(messages)`, prompt =
//!   `template(messages[:-1], generation prompt)`, loss on full minus prompt: the last assistant turn with
//!   its end-of-turn text (TRL's rule). The EOS is appended only when that text does not already contain
//!   it. With [`LossOn::AssistantTurns`] every assistant turn is a loss segment, cut the same way at each
//!   turn. A rendering that is not a prefix of the next is an error naming the row.
//!
//! Errors name neither file nor line: callers add `FILE:LINE: ` (the record's line).
//!
//! Generation prompts (eval) are the context segments before the first loss segment of the last turn:
//! exactly the prompt training conditions on.

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::{Record, TextTokenizer};

/// Which assistant turns of a `messages` row carry the loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum LossOn {
    /// Only the final assistant turn (TRL's default).
    #[default]
    LastTurn,
    /// Every assistant turn (TRL's `assistant_only_loss`).
    AssistantTurns,
}

/// How rows are rendered: the settings every verb shares (`[data] chat_template, loss_on` in a run config,
/// the same flags on the command line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct EncodeOptions {
    /// Render plain rows' prompts through the tokenizer's chat template (`messages` rows always are).
    #[arg(long)]
    pub chat_template: bool,
    /// Which assistant turns of `messages` rows carry the loss.
    #[arg(long, value_enum, default_value_t = LossOn::LastTurn)]
    pub loss_on: LossOn,
}

/// A piece of rendered text and whether its tokens are loss targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    pub loss: bool,
}

/// An encoded example: token ids, and per id whether it is a loss target.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub segments: Vec<Segment>,
    pub ids: Vec<u32>,
    pub targets: Vec<bool>,
    /// Whether the EOS id was appended after the segments.
    pub eos_appended: bool,
}

/// The encoder of one tokenizer under one set of options.
pub struct Encoder<'a> {
    pub tokenizer: &'a TextTokenizer,
    pub options: EncodeOptions,
}

impl<'a> Encoder<'a> {
    pub fn new(tokenizer: &'a TextTokenizer, options: EncodeOptions) -> Self {
        Self { tokenizer, options }
    }

    /// The rendered text of `record` as context and loss segments (no EOS).
    pub fn segments(&self, record: &Record) -> Result<Vec<Segment>> {
        match &record.messages {
            Some(messages) => self.chat_segments(record, messages),
            None => {
                let prompt = if self.options.chat_template {
                    let user = serde_json::json!({"role": "user", "content": record.prompt});
                    self.template(record)?.render(&[user], true)?
                } else {
                    record.prompt.clone()
                };
                Ok(vec![Segment { text: prompt, loss: false }, Segment { text: record.response.clone(), loss: true }])
            }
        }
    }

    /// Token ids and loss targets of `record`: its segments encoded and joined, then the EOS (a target)
    /// unless the last loss segment already contains it.
    pub fn encode(&self, record: &Record) -> Result<Encoded> {
        let segments = self.segments(record)?;
        let eos = self.tokenizer.eos_id;
        let mut ids = Vec::new();
        let mut targets = Vec::new();
        let mut last_loss_has_eos = false;
        for segment in &segments {
            let piece = self.tokenizer.encode(&segment.text)?;
            if segment.loss {
                if piece.is_empty() {
                    bail!("the response tokenises to nothing");
                }
                last_loss_has_eos = piece.contains(&eos);
            }
            targets.extend(std::iter::repeat_n(segment.loss, piece.len()));
            ids.extend(piece);
        }
        // A chat turn that ends with the end-of-turn token is complete; anything else gets the EOS.
        let eos_appended = !(record.messages.is_some() && last_loss_has_eos);
        if eos_appended {
            ids.push(eos);
            targets.push(true);
        }
        match targets.iter().position(|&t| t) {
            Some(0) | None => {
                bail!("empty prompt (the first response token would have no context)")
            }
            Some(_) => {}
        }
        Ok(Encoded { segments, ids, targets, eos_appended })
    }

    /// The token ids a generation continues from: everything before the last loss segment, encoded
    /// segment by segment as in training (the template's generation prompt for chat rows).
    pub fn prompt_ids(&self, record: &Record) -> Result<Vec<u32>> {
        let segments = self.segments(record)?;
        let last_loss = segments.iter().rposition(|s| s.loss).unwrap_or(segments.len());
        let mut ids = Vec::new();
        for segment in &segments[..last_loss] {
            ids.extend(self.tokenizer.encode(&segment.text)?);
        }
        Ok(ids)
    }

    fn template(&self, record: &Record) -> Result<&crate::chat::ChatTemplate> {
        self.tokenizer.chat_template().ok_or_else(|| {
            let why = if record.messages.is_some() { "a `messages` row" } else { "--chat-template (`[data] chat_template`)" };
            anyhow!(
                "{why} needs a chat template, and {} has none (no chat_template.jinja, no chat_template in tokenizer_config.json)",
                self.tokenizer.dir().display()
            )
        })
    }

    /// TRL's rule: each loss segment is `template(messages[:k+1])` minus `template(messages[:k], generation
    /// prompt)` for the assistant turns `k` that carry the loss; what lies between is context.
    fn chat_segments(&self, record: &Record, messages: &[Value]) -> Result<Vec<Segment>> {
        let template = self.template(record)?;
        let last = messages.len() - 1;
        let loss_turns: Vec<usize> = match self.options.loss_on {
            LossOn::LastTurn => vec![last],
            LossOn::AssistantTurns => (0..messages.len())
                .filter(|&k| k > 0 && messages[k].get("role").and_then(Value::as_str) == Some("assistant"))
                .collect(),
        };
        let mut segments = Vec::new();
        let mut done = 0; // bytes of the full rendering already in segments
        let mut previous = String::new();
        for k in loss_turns {
            let prompt = template.render(&messages[..k], true)?;
            let upto = template.render(&messages[..=k], false)?;
            let not_prefix = |what: &str| {
                anyhow!(
                    "the chat template's rendering of {what} is not a prefix of the conversation's; the loss cannot be cut at turn {k}"
                )
            };
            if !prompt.starts_with(&previous) {
                return Err(not_prefix(&format!("messages[:{k}] with the generation prompt")));
            }
            if !upto.starts_with(&prompt) {
                return Err(not_prefix(&format!(
                    "messages[:{k}] with the generation prompt, against messages[:{}]",
                    k + 1
                )));
            }
            if prompt.len() > done {
                segments.push(Segment { text: prompt[done..].to_string(), loss: false });
            }
            segments.push(Segment { text: upto[prompt.len()..].to_string(), loss: true });
            done = upto.len();
            previous = upto;
        }
        if segments.last().is_some_and(|s| s.text.is_empty()) {
            bail!("the chat template renders the last assistant turn as nothing");
        }
        Ok(segments)
    }
}
