//! `host init-model --tokenizer DIR --out DIR [shape flags] [--seed N]`: a randomly initialised Qwen2-shaped
//! model in Hugging Face layout, with the tokenizer files copied in, ready for `host train` to pretrain.
//! The weights are drawn as transformers draws them (N(0, 0.02²) matrices, unit norms), from `seed`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use engine::{Device, Model, ModelConfig};

use crate::bench::ModelShape;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Folder holding tokenizer.json (and tokenizer_config.json).
    #[arg(long)]
    pub tokenizer: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    #[arg(long, default_value_t = 512)]
    pub intermediate: usize,
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long = "kv-heads", default_value_t = 2)]
    pub kv_heads: usize,
    /// Embedding rows (default: the tokenizer's size rounded up to a multiple of 32).
    #[arg(long = "vocab-size")]
    pub vocab_size: Option<usize>,
    #[arg(long = "max-positions", default_value_t = 512)]
    pub max_positions: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Files taken from the tokenizer folder (the first is required).
const TOKENIZER_FILES: &[&str] = &["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

pub fn run(args: &InitArgs) -> Result<()> {
    let tokenizer_path = args.tokenizer.join(TOKENIZER_FILES[0]);
    let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path)
        .map_err(|e| anyhow::anyhow!("{}: cannot load tokenizer: {e}", tokenizer_path.display()))?;
    let tokens = tokenizer.get_vocab_size(true);
    let vocab = args.vocab_size.unwrap_or(tokens.div_ceil(32) * 32);
    if vocab < tokens {
        bail!("--vocab-size {vocab} is smaller than the tokenizer's {tokens} tokens ({})", tokenizer_path.display());
    }
    if args.heads == 0 || !args.hidden.is_multiple_of(args.heads) {
        bail!("--hidden {} must be a multiple of --heads {}", args.hidden, args.heads);
    }
    if args.kv_heads == 0 || !args.heads.is_multiple_of(args.kv_heads) {
        bail!("--heads {} must be a multiple of --kv-heads {}", args.heads, args.kv_heads);
    }
    if args.out.exists() {
        bail!("--out {}: already exists (refusing to overwrite a model)", args.out.display());
    }
    let shape = ModelShape {
        hidden: args.hidden,
        intermediate: args.intermediate,
        layers: args.layers,
        heads: args.heads,
        kv_heads: args.kv_heads,
        vocab,
    };
    let config = ModelConfig::from_json(shape.qwen2_config(args.max_positions), "init-model shape".as_ref())?;
    let model = Model::random(config, args.seed, &Device::Cpu)?;
    engine::checkpoint::save_with(&model, &args.out, |dir| {
        for name in TOKENIZER_FILES {
            let src = args.tokenizer.join(name);
            if src.is_file() {
                std::fs::copy(&src, dir.join(name)).with_context(|| format!("cannot copy {}", src.display()))?;
            }
        }
        Ok(())
    })?;
    println!(
        "wrote {}: {} parameters (hidden {}, {} layers, vocab {vocab}), seed {}",
        args.out.display(),
        model.num_params(),
        args.hidden,
        args.layers,
        args.seed
    );
    Ok(())
}
