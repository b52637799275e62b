//! `host merge --model BASE --adapter DIR --out DIR`: the base with the adapter folded into its weights
//! (`W + s·B·A`, in float32), written as a full Hugging Face model directory (float32, the base's
//! tokenizer files) that every verb, transformers and `host convert` load.

use std::path::PathBuf;

use anyhow::{bail, Result};

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The base model directory the adapter was trained on.
    #[arg(long)]
    pub model: PathBuf,
    /// The LoRA adapter directory (adapter_config.json, adapter_model.safetensors).
    #[arg(long)]
    pub adapter: PathBuf,
    /// Where to write the merged model (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &MergeArgs) -> Result<()> {
    if args.out.exists() {
        bail!("--out {} already exists; merge into a new folder", args.out.display());
    }
    let mut model = crate::model_source::load(&args.model, Some(&args.adapter), &engine::Device::Cpu)?;
    let Some(lora) = model.lora().cloned() else { bail!("--adapter {}: no adapter attached", args.adapter.display()) };
    model.merge_lora()?;
    engine::checkpoint::save(&model, &args.out)?;
    println!(
        "merged {} (r {}, {}) into {} -> {}",
        args.adapter.display(),
        lora.r,
        lora.target_modules.join(", "),
        args.model.display(),
        args.out.display()
    );
    Ok(())
}
