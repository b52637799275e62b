//! `host score --model DIR --data FILE --out FILE.jsonl`: per example `{"index": i, "logp": [...]}`, plus
//! `"cut": [...]` for an example cut to the model's context ([`data::fit_to_context`]).

use std::io::Write;
use std::path::Path;

use anyhow::Result;

use crate::data;
use crate::encode::EncodeOptions;

pub struct ScoreArgs<'a> {
    pub model: &'a Path,
    /// A LoRA adapter to attach to `model`.
    pub adapter: Option<&'a Path>,
    pub data: &'a Path,
    pub out: &'a Path,
    pub prompt_key: &'a str,
    pub response_key: &'a str,
    pub batch_size: usize,
    pub encode: EncodeOptions,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: &'a str,
}

pub fn run(args: &ScoreArgs<'_>) -> Result<()> {
    crate::eval::refuse_overwriting_input(args.out, args.data)?;
    let model = crate::model_source::load(args.model, args.adapter, &engine::open_device(args.device)?)?;
    let tokenizer = crate::model_source::tokenizer(&model)?;
    let records = data::read_jsonl(args.data, args.prompt_key, args.response_key)?;
    let name = args.data.display().to_string();
    let mut dataset = data::tokenize(&name, &records, &tokenizer, None, args.encode)?;
    let fitted = data::fit_to_model(&name, &mut dataset.examples, model.config());
    let logp = crate::score::response_logprobs(&model, &dataset.examples, tokenizer.eos_id, args.batch_size)?;

    // Written beside the target and renamed, so a failure leaves no half-written file.
    let mut file = crate::eval::AtomicFile::create(args.out)?;
    for (index, values) in logp.iter().enumerate() {
        let mut row = serde_json::json!({ "index": index, "logp": values });
        // A row cut to the context: `prompt_start` (its logp had less context), `end` (fewer values).
        let cut: Vec<&str> = [(&fitted.prompt_cut, "prompt_start"), (&fitted.end_cut, "end")]
            .into_iter()
            .filter(|(which, _)| which.binary_search(&index).is_ok())
            .map(|(_, name)| name)
            .collect();
        if !cut.is_empty() {
            row["cut"] = serde_json::json!(cut);
        }
        writeln!(file, "{row}")?;
    }
    file.commit()?;
    let tokens: usize = logp.iter().map(Vec::len).sum();
    let mean_p = logp.iter().flatten().map(|&l| (l as f64).exp()).sum::<f64>() / tokens.max(1) as f64;
    println!("scored {} examples ({tokens} response tokens, mean p {mean_p:.4}) -> {}", logp.len(), args.out.display());
    Ok(())
}
