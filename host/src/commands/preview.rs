//! `host preview --model DIR --data FILE [--chat-template] [--loss-on …] [--limit N] [--jsonl]`: exactly
//! what the trainer sees per example, through the same encoder as train, score, diagnose and eval.
//!
//! For people: the rendered text with the loss part coloured (marked `⟦…⟧` when stdout is not a
//! terminal), then the token ids with loss targets in brackets. With `--jsonl`: one line per example
//! with `index`, `line`, `text`, `ids`, `tokens`, `loss_mask` (0/1 per id), `prompt_text` (before the
//! first loss segment), `response_text` (from it on, the EOS included when appended) and `truncated`.
//! Only config.json and the tokenizer files are read: no weights.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use engine::ModelConfig;
use serde_json::json;

use crate::data::{self, TextTokenizer};
use crate::encode::{EncodeOptions, Encoder};

#[derive(Debug, clap::Args)]
pub struct PreviewArgs {
    /// Model directory (config.json and tokenizer files; weights are not read).
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL or Parquet data file.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "prompt")]
    pub prompt_key: String,
    #[arg(long, default_value = "response")]
    pub response_key: String,
    #[command(flatten)]
    pub encode: EncodeOptions,
    /// Cut ids as training does at this length (the text is shown whole).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Show only the first N examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// One JSON object per example instead of the coloured view.
    #[arg(long)]
    pub jsonl: bool,
}

pub fn run(args: &PreviewArgs) -> Result<()> {
    if !args.model.is_dir() {
        bail!("--model {}: no such model directory", args.model.display());
    }
    if args.max_length == Some(0) {
        bail!("--max-length must be at least 1");
    }
    let config = ModelConfig::from_hf_dir(&args.model)?;
    let tokenizer = TextTokenizer::from_model_dir(&args.model, &config)?;
    let mut records = data::read_records(&args.data, &args.prompt_key, &args.response_key)?;
    if let Some(limit) = args.limit {
        records.truncate(limit);
    }
    let encoder = Encoder::new(&tokenizer, args.encode);
    let shown = args.data.display().to_string();
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (index, record) in records.iter().enumerate() {
        let encoded = encoder.encode(record).with_context(|| format!("{shown}:{}", record.line))?;
        let (mut ids, mut targets) = (encoded.ids, encoded.targets);
        let truncated = args.max_length.is_some_and(|max| ids.len() > max);
        if let Some(max) = args.max_length {
            ids.truncate(max);
            targets.truncate(max);
        }
        let eos_text = if encoded.eos_appended {
            tokenizer.id_to_token(tokenizer.eos_id).unwrap_or_default()
        } else {
            String::new()
        };
        let first_loss = encoded.segments.iter().position(|s| s.loss).unwrap_or(encoded.segments.len());
        let prompt_text: String = encoded.segments[..first_loss].iter().map(|s| s.text.as_str()).collect();
        let response_text: String =
            encoded.segments[first_loss..].iter().map(|s| s.text.as_str()).chain([eos_text.as_str()]).collect();
        let result = if args.jsonl {
            let tokens: Vec<String> = ids.iter().map(|&id| tokenizer.id_to_token(id).unwrap_or_default()).collect();
            let line = json!({
                "index": index,
                "line": record.line,
                "text": format!("{prompt_text}{response_text}"),
                "ids": ids,
                "tokens": tokens,
                "loss_mask": targets.iter().map(|&t| u8::from(t)).collect::<Vec<_>>(),
                "prompt_text": prompt_text,
                "response_text": response_text,
                "truncated": truncated,
            });
            writeln!(out, "{line}")
        } else {
            let loss_tokens = targets.iter().filter(|&&t| t).count();
            let mut text = String::new();
            for segment in &encoded.segments {
                text.push_str(&mark(&segment.text, segment.loss, colour));
            }
            text.push_str(&mark(&eos_text, true, colour));
            let id_list: Vec<String> =
                ids.iter().zip(&targets).map(|(id, &t)| if t { format!("[{id}]") } else { id.to_string() }).collect();
            let cut = if truncated { format!(", cut to max_length {}", ids.len()) } else { String::new() };
            writeln!(
                out,
                "── example {index} ({shown}:{}): {} tokens, {loss_tokens} loss targets{cut}\n{text}\nids: {}\n",
                record.line,
                ids.len(),
                id_list.join(" ")
            )
        };
        if let Err(error) = result {
            // A closed pipe (`| head`) ends the preview quietly.
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(error).context("cannot write to stdout");
        }
    }
    out.flush().or_else(|e| if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e) })?;
    Ok(())
}

/// Loss text in green (context dimmed) on a terminal, else loss text inside `⟦ ⟧`.
fn mark(text: &str, loss: bool, colour: bool) -> String {
    match (text.is_empty(), loss, colour) {
        (true, _, _) => String::new(),
        (_, true, true) => format!("\x1b[1;32m{text}\x1b[0m"),
        (_, false, true) => format!("\x1b[2m{text}\x1b[0m"),
        (_, true, false) => format!("⟦{text}⟧"),
        (_, false, false) => text.to_string(),
    }
}
