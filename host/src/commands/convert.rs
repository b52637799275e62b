//! `host convert SRC DST`: a GGUF file (llama or qwen2) into a Hugging Face model directory that every
//! verb (and transformers) loads (`--dtype f32|bf16`), or a Hugging Face directory into a GGUF file that
//! llama.cpp loads (`--type f32|f16|bf16|q8_0`). The direction follows from SRC.

use std::path::PathBuf;

use anyhow::{bail, Result};
use engine::gguf::GgufType;

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// A .gguf file, or a Hugging Face model directory.
    pub src: PathBuf,
    /// What to write (must not exist): a Hugging Face directory from a .gguf, a .gguf from a directory.
    pub dst: PathBuf,
    /// GGUF to Hugging Face: dtype of the dequantized weights, f32 (default) or bf16.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Hugging Face to GGUF: tensor type, f16 (default), f32, bf16 or q8_0.
    #[arg(long = "type")]
    pub gguf_type: Option<String>,
}

pub fn run(args: &ConvertArgs) -> Result<()> {
    if args.src.is_dir() {
        return export(args);
    }
    if !args.src.is_file() {
        bail!("{}: no such file or directory", args.src.display());
    }
    if args.gguf_type.is_some() {
        bail!("--type applies to exporting a Hugging Face directory to GGUF; {} is a file", args.src.display());
    }
    let dtype = match args.dtype.as_deref().unwrap_or("f32") {
        "f32" => engine::DType::F32,
        "bf16" => engine::DType::BF16,
        other => bail!("--dtype {other}: expected f32 or bf16"),
    };
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
        args.dtype.as_deref().unwrap_or("f32")
    );
    Ok(())
}

fn export(args: &ConvertArgs) -> Result<()> {
    if args.dtype.is_some() {
        bail!("--dtype applies to converting a .gguf file; {} is a directory (use --type)", args.src.display());
    }
    let ty: GgufType = args.gguf_type.as_deref().unwrap_or("f16").parse()?;
    let done = crate::convert::hf_to_gguf(&args.src, &args.dst, ty)?;
    let types: Vec<String> = done.tensor_types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    println!(
        "exported {} ({:.1} M parameters, tensors {}) -> {} ({:.1} MB)",
        args.src.display(),
        done.parameters as f64 / 1e6,
        types.join(", "),
        args.dst.display(),
        done.bytes as f64 / 1e6
    );
    Ok(())
}
