//! `host convert SRC.gguf DST [--dtype f32|bf16]`: a GGUF file (llama or qwen2) into a Hugging Face
//! model directory that every verb (and transformers) loads.

use std::path::PathBuf;

use anyhow::{bail, Result};

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// A .gguf file.
    pub src: PathBuf,
    /// The Hugging Face directory to write (must not exist).
    pub dst: PathBuf,
    /// Dtype of the dequantized weights: f32 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(args: &ConvertArgs) -> Result<()> {
    let dtype = match args.dtype.as_str() {
        "f32" => engine::DType::F32,
        "bf16" => engine::DType::BF16,
        other => bail!("--dtype {other}: expected f32 or bf16"),
    };
    if args.src.is_dir() {
        bail!(
            "{}: a Hugging Face directory; exporting to GGUF is not implemented yet (convert takes a .gguf file)",
            args.src.display()
        );
    }
    if !args.src.is_file() {
        bail!("{}: no such file", args.src.display());
    }
    let done = crate::convert::gguf_to_hf(&args.src, &args.dst, dtype)?;
    let types: Vec<String> = done.source_types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    println!(
        "converted {} ({}, {:.1} M parameters, vocab {}, tensors {}{}) -> {} ({})",
        args.src.display(),
        done.architecture,
        done.parameters as f64 / 1e6,
        done.vocab,
        types.join(", "),
        if done.chat_template { ", chat template" } else { "" },
        args.dst.display(),
        args.dtype
    );
    Ok(())
}
