//! `host diagnose --model DIR --data FILE [--out STEM]`: the table on stdout, STEM.json and STEM.svg.

use std::path::Path;

use anyhow::{bail, Result};
use engine::Device;

use crate::continuum::diagnose::{diagnose_records, table, write_outputs};
use crate::data;
use crate::encode::EncodeOptions;

pub struct DiagnoseArgs<'a> {
    pub model: &'a Path,
    /// A LoRA adapter to attach to `model`.
    pub adapter: Option<&'a Path>,
    pub data: &'a Path,
    pub out: &'a Path,
    pub prompt_key: &'a str,
    pub response_key: &'a str,
    pub encode: EncodeOptions,
    pub batch_size: usize,
}

pub fn run(args: &DiagnoseArgs<'_>) -> Result<()> {
    if !args.model.is_dir() {
        bail!("--model {}: no such model directory", args.model.display());
    }
    // Data first: a bad file is refused before the model is loaded.
    let records = data::read_records(args.data, args.prompt_key, args.response_key)?;
    let model = crate::model_source::load(args.model, args.adapter, &Device::Cpu)?;
    let tokenizer = crate::model_source::tokenizer(&model)?;
    let name = args.data.display().to_string();
    let diagnosis = diagnose_records(&model, &tokenizer, &name, &records, args.encode, args.batch_size)?;

    let json_path = args.out.with_extension("json");
    let svg_path = args.out.with_extension("svg");
    let title = format!(
        "Base-model confidence on {}",
        args.data.file_name().map_or(name.clone(), |f| f.to_string_lossy().into_owned())
    );
    write_outputs(&diagnosis, args.model, &name, &json_path, &svg_path, &title)?;
    print!("{}", table(&diagnosis));
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}
